//! `ts_range`: a series' points in a time range, raw or aggregated per step, as the query API
//! (`POST /v1/query {"ts_range": ...}`) and the SQL table function
//! `ts_range(namespace, series, from, to [, step, agg])` answer it: columns `ts` (ms since the
//! epoch; a bucket's start with a step) and `value`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Float64Builder, Int64Builder, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use themis_log::Urn;
use themis_materializers::timeseries::{self, Agg, Range, RangeAnswer};

use crate::search::invalid;
use crate::{Error, Result};

/// A range query's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsRangeArgs {
    /// The time-series namespace.
    pub namespace: String,
    /// The series id (the URN's last part); or give `field` (and `tags`) as line protocol
    /// wrote them.
    #[serde(default)]
    pub series: Option<String>,
    /// A line-protocol field.
    #[serde(default)]
    pub field: Option<String>,
    /// The line-protocol tags of `field`'s series.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// From this timestamp (ms since the epoch, inclusive).
    pub from: i64,
    /// To this timestamp (ms, exclusive).
    pub to: i64,
    /// Bucket width in ms (buckets aligned to the epoch); raw points without it.
    #[serde(default)]
    pub step: Option<i64>,
    /// The aggregate per bucket: min, max, avg (default), sum, count, first, last.
    #[serde(default)]
    pub agg: Option<String>,
}

impl TsRangeArgs {
    /// The series URN and the range, checked.
    pub fn resolve(&self) -> Result<(Urn, Range)> {
        let id = match (&self.series, &self.field) {
            (Some(id), None) if self.tags.is_empty() => id.clone(),
            (None, Some(field)) => timeseries::series_id(field, &self.tags),
            _ => {
                return Err(invalid(
                    "name the series by `series` (its id) or by `field` and optional `tags`, \
                     not both"
                        .into(),
                ));
            }
        };
        let urn =
            Urn::parse(&format!("urn:themis:timeseries:{}:{id}", self.namespace)).map_err(|e| {
                Error::View(themis_materializers::Error::InvalidNamespace(e.to_string()))
            })?;
        let agg = match &self.agg {
            None => Agg::Avg,
            Some(name) => Agg::parse(name).ok_or_else(|| {
                invalid(format!(
                    "unknown aggregate {name:?}: use min, max, avg, sum, count, first or last"
                ))
            })?,
        };
        if self.agg.is_some() && self.step.is_none() {
            return Err(invalid(
                "an aggregate needs a `step` (ms per bucket)".into(),
            ));
        }
        Ok((
            urn,
            Range {
                from: self.from,
                to: self.to,
                step: self.step.map(|s| (s, agg)),
            },
        ))
    }
}

/// The answer's columns.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// An answer as one batch.
pub fn batch(answer: &RangeAnswer) -> Result<RecordBatch> {
    let mut ts = Int64Builder::with_capacity(answer.points.len());
    let mut value = Float64Builder::with_capacity(answer.points.len());
    for &(t, v) in &answer.points {
        ts.append_value(t);
        value.append_value(v);
    }
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(ts.finish()), Arc::new(value.finish())],
    )
    .map_err(|e| Error::Internal(e.to_string()))
}
