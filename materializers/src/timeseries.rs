//! The time-series view: per shard, every series (`urn:themis:timeseries:{ns}:{id}`) as
//! Gorilla-compressed blocks (`themis_storage::gorilla`), one per time window of the namespace's `block_ms`
//! (default two hours, aligned to the epoch), plus per-rule rollups for downsampling.
//!
//! Points of an event are applied in event order. A point at or after its window's last point
//! is appended to the block's bit stream; an earlier one (out of order) re-encodes its window
//! with the point in timestamp order. Equal timestamps are all kept, in arrival order.
//!
//! Time in this view is **log time**: the largest commit timestamp of the shard's entries
//! applied so far (`now`). Retention (`retention_ms`) hides raw points older than
//! `now - retention_ms` from reads at once and deletes their blocks when a whole window has
//! expired; a point older than that on arrival is dropped. Downsampling rules
//! (`downsample: [{step_ms, retention_ms}]`) keep, per epoch-aligned step, count, sum, min, max,
//! first and last of every point that arrives, with their own retention; a range query whose
//! start lies before the raw data's cutoff and whose step is a multiple of a rule's step
//! answers from that rule. Nothing reads the wall clock.
//!
//! Tables per shard: `ts/{shard}`: `"{urn}\0{window:016x}"` → block; `ts_series/{shard}`:
//! URN → JSON of [`Series`]; `ts_roll/{shard}`: `"{urn}\0{step:016x}\0{bucket:016x}"` →
//! [`Rollup`] (64 bytes); `ts_time/{shard}`: `"now"` → log time, `"swept/{ns}"` → the expiry
//! marks (raw and per rule) last swept up to. Windows and buckets are keyed with the sign bit flipped so
//! negative times sort first.
//!
//! Namespace configs are read from the registry when an entry is applied, as the other views
//! do: a config change takes effect in each shard from the entries applied after its registry
//! shows it (`docs/design/namespaces.md` explains why shards have no common order).

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::fulltext::ConfigShard;
use crate::namespaces::{self, TimeseriesSettings};
use crate::{Error, Result, View, get_json, read_table, storage, table};
use themis_storage::gorilla::Block;

/// The kind name.
pub const KIND: &str = "timeseries";

/// What the view knows of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Points stored (raw, after retention deletes).
    pub points: u64,
    /// Earliest and latest timestamp ever stored.
    pub first_ts: i64,
    /// Latest timestamp ever stored.
    pub last_ts: i64,
    /// Tags of the last event that carried them (`data.tags`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Aggregates of one downsampling bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// Points.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The earliest point (the first to arrive among equal timestamps).
    pub first: (i64, f64),
    /// The latest point (the last to arrive among equal timestamps).
    pub last: (i64, f64),
}

impl Rollup {
    fn of(ts: i64, v: f64) -> Rollup {
        Rollup {
            count: 1,
            sum: v,
            min: v,
            max: v,
            first: (ts, v),
            last: (ts, v),
        }
    }

    fn add(&mut self, ts: i64, v: f64) {
        self.merge(&Rollup::of(ts, v));
    }

    /// Folds `later` (whose points arrived after this one's) into this one.
    fn merge(&mut self, later: &Rollup) {
        self.count += later.count;
        self.sum += later.sum;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        if later.first.0 < self.first.0 {
            self.first = later.first;
        }
        if later.last.0 >= self.last.0 {
            self.last = later.last;
        }
    }

    fn to_bytes(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let words = [
            self.count,
            self.sum.to_bits(),
            self.min.to_bits(),
            self.max.to_bits(),
            self.first.0 as u64,
            self.first.1.to_bits(),
            self.last.0 as u64,
            self.last.1.to_bits(),
        ];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Rollup> {
        let word = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        Some(Rollup {
            count: word(0)?,
            sum: f64::from_bits(word(1)?),
            min: f64::from_bits(word(2)?),
            max: f64::from_bits(word(3)?),
            first: (word(4)? as i64, f64::from_bits(word(5)?)),
            last: (word(6)? as i64, f64::from_bits(word(7)?)),
        })
    }

    /// The aggregate `agg` of the bucket.
    pub fn value(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Avg => self.sum / self.count as f64,
            Agg::Sum => self.sum,
            Agg::Count => self.count as f64,
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
        }
    }
}

/// Aggregates of a range query with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Mean.
    Avg,
    /// Sum.
    Sum,
    /// Number of points.
    Count,
    /// Value of the earliest point.
    First,
    /// Value of the latest point.
    Last,
}

impl Agg {
    /// Parses an aggregate's name.
    pub fn parse(name: &str) -> Option<Agg> {
        serde_json::from_value(serde_json::Value::String(name.to_ascii_lowercase())).ok()
    }
}

/// A range query ([`TimeseriesView::range`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// From this timestamp (ms, inclusive).
    pub from: i64,
    /// To this timestamp (ms, exclusive).
    pub to: i64,
    /// Bucket width (ms, buckets aligned to the epoch) and aggregate; raw points when `None`.
    pub step: Option<(i64, Agg)>,
}

/// Largest number of raw points one range query returns.
pub const RANGE_POINTS_MAX: usize = 1_000_000;

/// A range query's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RangeAnswer {
    /// `(timestamp, value)`: raw points, or bucket starts and their aggregate.
    pub points: Vec<(i64, f64)>,
    /// Where the answer came from: `raw` or `rollup:{step_ms}`.
    pub source: String,
    /// Raw points older than this are gone (retention); `None` without retention.
    pub cutoff: Option<i64>,
}

/// The view.
pub struct TimeseriesView {
    config_shard: ConfigShard,
}

impl std::fmt::Debug for TimeseriesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeseriesView").finish_non_exhaustive()
    }
}

fn sortable(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn block_key(urn: &str, window: i64) -> String {
    format!("{urn}\0{:016x}", sortable(window))
}

fn roll_key(urn: &str, step: i64, bucket: i64) -> String {
    format!("{urn}\0{:016x}\0{:016x}", sortable(step), sortable(bucket))
}

/// The start of `ts`'s window of `width` ms (`i64::MIN` for the times before the first whole
/// window).
fn window_of(ts: i64, width: i64) -> i64 {
    ts.checked_sub(ts.rem_euclid(width)).unwrap_or(i64::MIN)
}

fn names(shard: ShardId) -> [String; 4] {
    [
        format!("ts/{}", shard.0),
        format!("ts_series/{}", shard.0),
        format!("ts_roll/{}", shard.0),
        format!("ts_time/{}", shard.0),
    ]
}

/// Tags carried by a points event (`data.tags`, an object of strings; checked before the log).
fn event_tags(event: &themis_log::Event) -> Result<Option<BTreeMap<String, String>>> {
    let data = crate::document::event_data(event)?;
    Ok(data
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok()))
}

impl TimeseriesView {
    /// A view that finds namespace configs through `config_shard`.
    pub fn new(config_shard: ConfigShard) -> TimeseriesView {
        TimeseriesView { config_shard }
    }

    fn settings_write(&self, tx: &WriteTransaction, ns: &str) -> Result<TimeseriesSettings> {
        let shard = (self.config_shard)(Model::Timeseries, ns);
        Ok(namespaces::get_in_write(tx, shard, Model::Timeseries, ns)?
            .map(|r| r.config.timeseries())
            .unwrap_or_default())
    }

    /// The settings of `ns` (defaults when it has no config).
    pub fn settings(&self, tx: &ReadTransaction, ns: &str) -> Result<TimeseriesSettings> {
        let shard = (self.config_shard)(Model::Timeseries, ns);
        Ok(namespaces::get(tx, shard, Model::Timeseries, ns)?
            .map(|r| r.config.timeseries())
            .unwrap_or_default())
    }

    /// Log time of `shard`'s view (0 before any entry).
    pub fn now(&self, tx: &ReadTransaction, shard: ShardId) -> Result<i64> {
        Ok(get_json(tx, &names(shard)[3], "now")?.unwrap_or(0))
    }

    /// What the view knows of series `urn` (`None`: no points, or deleted).
    pub fn series(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        urn: &str,
    ) -> Result<Option<Series>> {
        get_json(tx, &names(shard)[1], urn)
    }

    /// Whether namespace `ns` has series in `shard`.
    pub fn has_series(&self, tx: &ReadTransaction, shard: ShardId, ns: &str) -> Result<bool> {
        let Some(t) = read_table(tx, &names(shard)[1])? else {
            return Ok(false);
        };
        let prefix = format!("urn:themis:timeseries:{ns}:");
        let first = t.range(prefix.as_str()..).map_err(storage)?.next();
        match first {
            Some(item) => Ok(item.map_err(storage)?.0.value().starts_with(&prefix)),
            None => Ok(false),
        }
    }

    /// Every series of `shard` (URN, series), in URN order.
    pub fn all_series(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
    ) -> Result<Vec<(String, Series)>> {
        crate::all_json(tx, &names(shard)[1])
    }

    /// Every raw point of series `urn` still stored, in order (retention not applied).
    pub fn stored_points(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        urn: &str,
    ) -> Result<Vec<(i64, f64)>> {
        let Some(t) = read_table(tx, &names(shard)[0])? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let prefix = format!("{urn}\0");
        for item in t.range(prefix.as_str()..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.extend(decode_block(v.value())?.iter());
        }
        Ok(out)
    }

    /// The rollup buckets of series `urn` for the rule of `step` ms, in time order.
    pub fn rollups(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        urn: &str,
        step: i64,
    ) -> Result<Vec<(i64, Rollup)>> {
        let Some(t) = read_table(tx, &names(shard)[2])? else {
            return Ok(Vec::new());
        };
        let prefix = format!("{urn}\0{:016x}\0", sortable(step));
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let Some(hex) = k.value().strip_prefix(&prefix) else {
                break;
            };
            let bucket = (u64::from_str_radix(hex, 16).map_err(storage)? ^ (1 << 63)) as i64;
            let r = Rollup::from_bytes(v.value())
                .ok_or_else(|| Error::Storage(format!("a malformed rollup of {urn}")))?;
            out.push((bucket, r));
        }
        Ok(out)
    }

    /// Stored bytes and points of every block of `shard` (for benchmarks and stats).
    pub fn stored_bytes(&self, tx: &ReadTransaction, shard: ShardId) -> Result<(u64, u64)> {
        let Some(t) = read_table(tx, &names(shard)[0])? else {
            return Ok((0, 0));
        };
        let (mut bytes, mut points) = (0u64, 0u64);
        for item in t.iter().map_err(storage)? {
            let (_, v) = item.map_err(storage)?;
            bytes += v.value().len() as u64;
            points += decode_block(v.value())?.len() as u64;
        }
        Ok((bytes, points))
    }

    /// Series `urn`'s points in `[from, to)`, raw or aggregated per step, as the view holds
    /// them in `tx`.
    pub fn range(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        urn: &themis_log::Urn,
        range: &Range,
    ) -> Result<RangeAnswer> {
        let settings = self.settings(tx, urn.namespace())?;
        let now = self.now(tx, shard)?;
        let cutoff = settings.retention_ms.map(|r| now.saturating_sub(r as i64));
        let from = range.from.max(cutoff.unwrap_or(i64::MIN));
        if let Some((step, agg)) = range.step
            && cutoff.is_some_and(|c| range.from < c)
        {
            // The raw points before the cutoff are gone: the finest rule whose step divides
            // the query's and that still covers `from` answers, if any does.
            let rule = settings
                .downsample
                .iter()
                .filter(|r| step % r.step_ms as i64 == 0)
                .filter(|r| {
                    r.retention_ms
                        .is_none_or(|ret| now.saturating_sub(ret as i64) <= range.from)
                })
                .min_by_key(|r| r.step_ms);
            if let Some(rule) = rule {
                let points = self.rollup_range(
                    tx,
                    shard,
                    urn.as_str(),
                    rule.step_ms as i64,
                    range,
                    step,
                    agg,
                )?;
                return Ok(RangeAnswer {
                    points,
                    source: format!("rollup:{}", rule.step_ms),
                    cutoff,
                });
            }
        }
        let mut raw = Vec::new();
        if let Some(t) = read_table(tx, &names(shard)[0])? {
            let width = settings.block_ms as i64;
            let lo = block_key(urn.as_str(), window_of(from, width));
            let prefix = format!("{}\0", urn.as_str());
            for item in t.range(lo.as_str()..).map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                let block = decode_block(v.value())?;
                if block.first_ts() >= range.to {
                    break;
                }
                if block.last_ts() < from {
                    continue;
                }
                raw.extend(block.iter().filter(|&(t, _)| t >= from && t < range.to));
                if range.step.is_none() && raw.len() > RANGE_POINTS_MAX {
                    return Err(Error::InvalidSearch(format!(
                        "the range holds more than {RANGE_POINTS_MAX} points: narrow it or \
                         aggregate with a step"
                    )));
                }
            }
        }
        let points = match range.step {
            None => raw,
            Some((step, agg)) => {
                let mut buckets: Vec<(i64, Rollup)> = Vec::new();
                for (t, v) in raw {
                    let b = window_of(t, step);
                    match buckets.last_mut() {
                        Some((start, r)) if *start == b => r.add(t, v),
                        _ => buckets.push((b, Rollup::of(t, v))),
                    }
                }
                buckets
                    .into_iter()
                    .map(|(b, r)| (b, r.value(agg)))
                    .collect()
            }
        };
        Ok(RangeAnswer {
            points,
            source: "raw".into(),
            cutoff,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn rollup_range(
        &self,
        tx: &ReadTransaction,
        shard: ShardId,
        urn: &str,
        rule_step: i64,
        range: &Range,
        step: i64,
        agg: Agg,
    ) -> Result<Vec<(i64, f64)>> {
        let Some(t) = read_table(tx, &names(shard)[2])? else {
            return Ok(Vec::new());
        };
        let lo = roll_key(urn, rule_step, window_of(range.from, rule_step));
        let prefix = format!("{urn}\0{:016x}\0", sortable(rule_step));
        let mut buckets: Vec<(i64, Rollup)> = Vec::new();
        for item in t.range(lo.as_str()..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let Some(hex) = k.value().strip_prefix(&prefix) else {
                break;
            };
            let bucket = u64::from_str_radix(hex, 16).map_err(storage)? ^ (1 << 63);
            let bucket = bucket as i64;
            if bucket >= range.to {
                break;
            }
            let r = Rollup::from_bytes(v.value())
                .ok_or_else(|| Error::Storage(format!("a malformed rollup of {urn}")))?;
            let b = window_of(bucket, step);
            match buckets.last_mut() {
                Some((start, acc)) if *start == b => acc.merge(&r),
                _ => buckets.push((b, r)),
            }
        }
        Ok(buckets
            .into_iter()
            .map(|(b, r)| (b, r.value(agg)))
            .collect())
    }

    /// Deletes the blocks and rollups of `ns` in `shard` that retention expired at log time
    /// `now`, when the cutoff entered a new window since the last sweep.
    fn sweep(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        ns: &str,
        settings: &TimeseriesSettings,
        now: i64,
    ) -> Result<()> {
        let [blocks_name, series_name, roll_name, time_name] = names(shard);
        let mut time = tx.open_table(table(&time_name)).map_err(storage)?;
        let swept_key = format!("swept/{ns}");
        let swept: Option<Vec<u8>> = time
            .get(swept_key.as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        let width = settings.block_ms as i64;
        // Expired windows end at or before the cutoff: sweep when the cutoff's window moved.
        let mark = |retention: Option<u64>, width: i64| {
            retention.map(|r| window_of(now.saturating_sub(r as i64), width))
        };
        let raw_mark = mark(settings.retention_ms, width);
        let marks: Vec<(i64, Option<i64>)> = settings
            .downsample
            .iter()
            .map(|r| (r.step_ms as i64, mark(r.retention_ms, r.step_ms as i64)))
            .collect();
        // The marks themselves are recorded: a sweep runs exactly when one of them moved.
        let current = serde_json::to_vec(&(raw_mark, &marks)).map_err(storage)?;
        if swept.as_deref() == Some(current.as_slice()) {
            return Ok(());
        }
        time.insert(swept_key.as_str(), current.as_slice())
            .map_err(storage)?;
        let urns: Vec<String> = {
            let series = tx.open_table(table(&series_name)).map_err(storage)?;
            let prefix = format!("urn:themis:timeseries:{ns}:");
            let mut urns = Vec::new();
            for item in series.range(prefix.as_str()..).map_err(storage)? {
                let (k, _) = item.map_err(storage)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                urns.push(k.value().to_owned());
            }
            urns
        };
        let mut blocks = tx.open_table(table(&blocks_name)).map_err(storage)?;
        let mut rolls = tx.open_table(table(&roll_name)).map_err(storage)?;
        let mut series = tx.open_table(table(&series_name)).map_err(storage)?;
        for urn in &urns {
            if let Some(m) = raw_mark {
                // Windows starting before `m - width` ended by the cutoff's window start.
                let lo = format!("{urn}\0");
                let hi = block_key(urn, m.saturating_sub(width).saturating_add(1));
                let expired: Vec<(String, u64)> = blocks
                    .range(lo.as_str()..hi.as_str())
                    .map_err(storage)?
                    .map(|item| {
                        let (k, v) = item.map_err(storage)?;
                        Ok((k.value().to_owned(), decode_block(v.value())?.len() as u64))
                    })
                    .collect::<Result<_>>()?;
                if !expired.is_empty() {
                    let mut meta: Series = series
                        .get(urn.as_str())
                        .map_err(storage)?
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()
                        .map_err(storage)?
                        .unwrap_or_default();
                    for (k, n) in expired {
                        blocks.remove(k.as_str()).map_err(storage)?;
                        meta.points = meta.points.saturating_sub(n);
                    }
                    series
                        .insert(
                            urn.as_str(),
                            serde_json::to_vec(&meta).map_err(storage)?.as_slice(),
                        )
                        .map_err(storage)?;
                }
            }
            for &(step, m) in &marks {
                let Some(m) = m else { continue };
                let lo = format!("{urn}\0{:016x}\0", sortable(step));
                let hi = roll_key(urn, step, m.saturating_sub(step).saturating_add(1));
                let expired: Vec<String> = rolls
                    .range(lo.as_str()..hi.as_str())
                    .map_err(storage)?
                    .map(|item| item.map(|(k, _)| k.value().to_owned()).map_err(storage))
                    .collect::<Result<_>>()?;
                for k in expired {
                    rolls.remove(k.as_str()).map_err(storage)?;
                }
            }
        }
        Ok(())
    }

    /// Applies one points event to series `urn`.
    #[allow(clippy::too_many_arguments)]
    fn add_points(
        &self,
        tx: &WriteTransaction,
        shard: ShardId,
        urn: &str,
        points: &[themis_log::event::Point],
        tags: Option<BTreeMap<String, String>>,
        settings: &TimeseriesSettings,
        now: i64,
    ) -> Result<()> {
        let [blocks_name, series_name, roll_name, _] = names(shard);
        let cutoff = settings
            .retention_ms
            .map_or(i64::MIN, |r| now.saturating_sub(r as i64));
        let width = settings.block_ms as i64;
        let mut by_window: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
        for p in points.iter().filter(|p| p.0 >= cutoff) {
            by_window
                .entry(window_of(p.0, width))
                .or_default()
                .push((p.0, p.1));
        }
        let mut series = tx.open_table(table(&series_name)).map_err(storage)?;
        let mut meta: Series = series
            .get(urn)
            .map_err(storage)?
            .map(|v| serde_json::from_slice(v.value()))
            .transpose()
            .map_err(storage)?
            .unwrap_or(Series {
                points: 0,
                first_ts: i64::MAX,
                last_ts: i64::MIN,
                tags: BTreeMap::new(),
            });
        if let Some(tags) = tags {
            meta.tags = tags;
        }
        let mut blocks = tx.open_table(table(&blocks_name)).map_err(storage)?;
        for (&window, new) in &by_window {
            let key = block_key(urn, window);
            let existing = blocks
                .get(key.as_str())
                .map_err(storage)?
                .map(|v| decode_block(v.value()))
                .transpose()?;
            let block = match existing {
                Some(mut block)
                    if new.iter().all(|&(t, _)| t >= block.last_ts()) && sorted(new) =>
                {
                    for &(t, v) in new {
                        block.push(t, v).map_err(|e| {
                            Error::Storage(format!("gorilla push {t} to {urn}: {e:?}"))
                        })?;
                    }
                    block
                }
                existing => {
                    // Out of order: merge by timestamp, earlier arrivals first among equals.
                    let mut all = existing.map(|b| b.decode()).unwrap_or_default();
                    all.extend_from_slice(new);
                    all.sort_by_key(|&(t, _)| t);
                    Block::encode(&all).ok_or_else(|| {
                        Error::Storage(format!("cannot encode window {window} of {urn}"))
                    })?
                }
            };
            blocks
                .insert(key.as_str(), block.to_bytes().as_slice())
                .map_err(storage)?;
            meta.points += new.len() as u64;
            meta.first_ts = meta
                .first_ts
                .min(new.iter().map(|p| p.0).min().expect("non-empty"));
            meta.last_ts = meta
                .last_ts
                .max(new.iter().map(|p| p.0).max().expect("non-empty"));
        }
        if !settings.downsample.is_empty() {
            let mut rolls = tx.open_table(table(&roll_name)).map_err(storage)?;
            for rule in &settings.downsample {
                let step = rule.step_ms as i64;
                let rule_cutoff = rule
                    .retention_ms
                    .map_or(i64::MIN, |r| now.saturating_sub(r as i64));
                let mut buckets: BTreeMap<i64, Rollup> = BTreeMap::new();
                for p in points.iter().filter(|p| p.0 >= rule_cutoff) {
                    match buckets.entry(window_of(p.0, step)) {
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(Rollup::of(p.0, p.1));
                        }
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            e.get_mut().add(p.0, p.1)
                        }
                    }
                }
                for (bucket, r) in buckets {
                    let key = roll_key(urn, step, bucket);
                    let merged = match rolls.get(key.as_str()).map_err(storage)? {
                        Some(v) => {
                            let mut old = Rollup::from_bytes(v.value()).ok_or_else(|| {
                                Error::Storage(format!("a malformed rollup of {urn}"))
                            })?;
                            old.merge(&r);
                            old
                        }
                        None => r,
                    };
                    rolls
                        .insert(key.as_str(), merged.to_bytes().as_slice())
                        .map_err(storage)?;
                }
            }
        }
        if meta.points > 0 || !by_window.is_empty() {
            series
                .insert(urn, serde_json::to_vec(&meta).map_err(storage)?.as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Deletes series `urn`: its blocks, rollups and entry.
    fn delete_series(&self, tx: &WriteTransaction, shard: ShardId, urn: &str) -> Result<()> {
        let [blocks_name, series_name, roll_name, _] = names(shard);
        let prefix = format!("{urn}\0");
        let end = format!("{urn}\u{1}");
        for name in [&blocks_name, &roll_name] {
            let mut t = tx.open_table(table(name)).map_err(storage)?;
            let keys: Vec<String> = t
                .range(prefix.as_str()..end.as_str())
                .map_err(storage)?
                .map(|item| item.map(|(k, _)| k.value().to_owned()).map_err(storage))
                .collect::<Result<_>>()?;
            for k in keys {
                t.remove(k.as_str()).map_err(storage)?;
            }
        }
        let mut series = tx.open_table(table(&series_name)).map_err(storage)?;
        series.remove(urn).map_err(storage)?;
        Ok(())
    }
}

fn sorted(points: &[(i64, f64)]) -> bool {
    points.windows(2).all(|w| w[0].0 <= w[1].0)
}

fn decode_block(bytes: &[u8]) -> Result<Block> {
    Block::from_bytes(bytes).ok_or_else(|| Error::Storage("a malformed time-series block".into()))
}

impl View for TimeseriesView {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let time_name = &names(shard)[3];
        let previous: i64 = {
            let t = tx.open_table(table(time_name)).map_err(storage)?;
            let v = t.get("now").map_err(storage)?;
            v.map(|v| serde_json::from_slice(v.value()))
                .transpose()
                .map_err(storage)?
                .unwrap_or(0)
        };
        let now = previous.max(entry.ts_ms as i64);
        if now != previous {
            let mut t = tx.open_table(table(time_name)).map_err(storage)?;
            t.insert("now", serde_json::to_vec(&now).map_err(storage)?.as_slice())
                .map_err(storage)?;
        }
        let mut touched: BTreeMap<String, TimeseriesSettings> = BTreeMap::new();
        for e in &entry.events {
            let event = &e.event;
            if event.urn.model() != Model::Timeseries
                || event.urn.namespace() == namespaces::CONFIG_NAMESPACE
            {
                continue;
            }
            let ns = event.urn.namespace();
            if !touched.contains_key(ns) {
                touched.insert(ns.to_owned(), self.settings_write(tx, ns)?);
            }
            let settings = &touched[ns];
            match event.op {
                Op::Points => {
                    let points = event.points.as_deref().unwrap_or_default();
                    self.add_points(
                        tx,
                        shard,
                        event.urn.as_str(),
                        points,
                        event_tags(event)?,
                        settings,
                        now,
                    )?;
                }
                Op::Delete => self.delete_series(tx, shard, event.urn.as_str())?,
                _ => {}
            }
        }
        if now != previous {
            // Log time moved: every namespace with series here may have expired windows.
            let namespaces: Vec<String> = {
                let t = tx.open_table(table(time_name)).map_err(storage)?;
                let mut out = Vec::new();
                for item in t.range("swept/".."swept0").map_err(storage)? {
                    let (k, _) = item.map_err(storage)?;
                    out.push(k.value()["swept/".len()..].to_owned());
                }
                out
            };
            for ns in namespaces {
                if let std::collections::btree_map::Entry::Vacant(e) = touched.entry(ns) {
                    let settings = self.settings_write(tx, e.key())?;
                    e.insert(settings);
                }
            }
        }
        for (ns, settings) in &touched {
            self.sweep(tx, shard, ns, settings, now)?;
        }
        Ok(())
    }

    fn reads_configs(&self) -> bool {
        true
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        crate::clear_tables(tx, &names(shard))
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        crate::digest_tables(tx, &names(shard))
    }
}

/// The series id the line protocol gives field `field` of a measurement with `tags`: the field
/// alone without tags, else `{field}~{16 hex digits of xxh3 over the sorted tags}`. Reads
/// that name a field and tags find the series by the same function.
pub fn series_id(field: &str, tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return field.to_owned();
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (k, v) in tags {
        hasher.update(k.as_bytes());
        hasher.update(&[0]);
        hasher.update(v.as_bytes());
        hasher.update(&[0]);
    }
    format!("{field}~{:016x}", hasher.digest())
}
