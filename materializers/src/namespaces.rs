//! Namespace configs and their registry view.
//!
//! A namespace config is an event of the log: a `put` on `urn:themis:{model}:_namespace:{ns}`
//! (the `_` namespaces are reserved for the database), so every replica derives the same
//! registry. Its stream revision is the config's version. The registry view folds those events
//! per shard: table `ns/{shard}`: `"{model}/{ns}"` → JSON of [`Registered`].
//!
//! Relational configs declare columns; [`NamespaceConfig::check_event`] is what the node checks
//! before an append reaches the log (see `docs/design/namespaces.md` for why views never
//! re-check).

use redb::{ReadTransaction, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId};

use crate::{Result, View, all_json, digest_table, get_json, storage, table};

/// The kind name.
pub const KIND: &str = "namespaces";
/// The reserved namespace holding configs.
pub const CONFIG_NAMESPACE: &str = themis_log::event::CONFIG_NAMESPACE;

/// Column types of relational namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `true` / `false`.
    Bool,
    /// A JSON integer in the i64 range.
    Int64,
    /// Any JSON number.
    Float64,
    /// A JSON string.
    String,
    /// Milliseconds since the Unix epoch (a JSON integer), or an RFC 3339 string with a time
    /// zone (`2026-11-26T10:00:00Z`, `...+01:00`, optional fraction).
    Timestamp,
    /// Any JSON value.
    Json,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name (`[a-z_][a-z0-9_]{0,62}`).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Whether it may be absent or null.
    #[serde(default)]
    pub nullable: bool,
}

/// How a vector namespace measures distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `1 - cos(a, b)` (vectors are compared by direction; a zero vector is refused).
    Cosine,
    /// Euclidean distance.
    L2,
    /// `-(a · b)`: the larger the inner product, the nearer.
    Dot,
}

impl Metric {
    /// Its name in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }
}

/// How the fulltext view analyses a namespace's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// English: lower case, English stop words removed (Lucene's list), Porter stemming.
    En,
    /// German: lower case, German stop words removed, Snowball German stemming.
    De,
    /// Lower case only.
    None,
}

impl Language {
    /// Its name in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
            Language::None => "none",
        }
    }
}

/// Most text fields one namespace may declare.
pub const TEXT_FIELDS_MAX: usize = 32;

fn valid_text_field(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | 'A'..='Z'))
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Defaults of vector namespaces (hnswlib's defaults for M and ef_construction).
pub const VECTOR_DEFAULT_M: usize = 16;
/// See [`VECTOR_DEFAULT_M`].
pub const VECTOR_DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Candidates a kNN search keeps by default (at least `k`).
pub const VECTOR_DEFAULT_EF_SEARCH: usize = 64;
/// Largest `m` (hnsw_rs keeps at most 256 neighbours per layer, and 2m in layer 0).
pub const VECTOR_M_MAX: usize = 64;
/// Largest `ef_construction` and `ef_search`.
pub const VECTOR_EF_MAX: usize = 4096;

/// A namespace's declared options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Relational namespaces: the columns (besides the implicit `id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    /// Document and relational namespaces: top-level fields (string values, or arrays of
    /// strings) the fulltext view indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_fields: Vec<String>,
    /// How text fields are analysed (default `en`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// Vector namespaces: dimensions of every vector (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<usize>,
    /// Vector namespaces: the distance (default cosine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Vector namespaces: HNSW neighbours per node and layer (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// Vector namespaces: candidates kept while inserting (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// Vector namespaces: candidates a search keeps unless the query says otherwise (default
    /// 64; a search keeps at least `k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
    /// Time-series namespaces: width of a compressed block's time window in ms (default two
    /// hours, at most a day; cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_ms: Option<u64>,
    /// Time-series namespaces: raw points older than this (ms, against the log's time) are
    /// dropped; kept for ever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Time-series namespaces: downsampling rules (cannot change once declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downsample: Vec<Downsample>,
}

/// A downsampling rule: aggregates per `step_ms`, kept for `retention_ms` (for ever when
/// absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downsample {
    /// Bucket width in ms (aligned to the epoch).
    pub step_ms: u64,
    /// How long buckets are kept (ms of log time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

/// Default block window of time-series namespaces: two hours, as in the Gorilla paper.
pub const TIMESERIES_DEFAULT_BLOCK_MS: u64 = 2 * 3600 * 1000;
/// Largest block window: a day (keeps every delta of delta within 32 bits).
pub const TIMESERIES_BLOCK_MS_MAX: u64 = 24 * 3600 * 1000;

/// A time-series namespace's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeseriesSettings {
    /// Block window (ms).
    pub block_ms: u64,
    /// Raw retention (ms).
    pub retention_ms: Option<u64>,
    /// Downsampling rules.
    pub downsample: Vec<Downsample>,
}

impl Default for TimeseriesSettings {
    fn default() -> Self {
        TimeseriesSettings {
            block_ms: TIMESERIES_DEFAULT_BLOCK_MS,
            retention_ms: None,
            downsample: Vec::new(),
        }
    }
}

/// A vector namespace's index settings, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSettings {
    /// Dimensions.
    pub dimension: usize,
    /// Distance.
    pub metric: Metric,
    /// HNSW neighbours per node and layer.
    pub m: usize,
    /// Candidates kept while inserting.
    pub ef_construction: usize,
    /// Candidates a search keeps by default.
    pub ef_search: usize,
}

/// A config as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// `relational`, `document`, ...
    pub model: String,
    /// The namespace.
    pub namespace: String,
    /// The config.
    pub config: NamespaceConfig,
    /// Its version (the config stream's revision).
    pub version: u64,
    /// LSN of the config event.
    pub lsn: u64,
    /// Its commit timestamp (ms).
    pub updated_ms: u64,
}

/// Columns every relational table has without declaring them.
pub const IMPLICIT_COLUMNS: [&str; 5] = ["id", "_revision", "_lsn", "_shard", "_updated_ms"];

/// Why an event does not fit its namespace's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The column (or `data`).
    pub column: String,
    /// What is wrong.
    pub message: String,
}

fn valid_column_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 63
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Whether `text` is an RFC 3339 date-time with a time zone.
pub fn is_rfc3339(text: &str) -> bool {
    rfc3339_ms(text).is_some()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the Unix epoch of an RFC 3339 date-time with a time zone
/// (`2026-11-26T10:00:00Z`, `...+01:00`, an optional fraction, truncated to milliseconds);
/// `None` when `text` is not one.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && (at(10, b'T') || at(10, b't'))
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return None;
    }
    // Only ASCII digits were checked above, so these parse.
    let num = |r: std::ops::Range<usize>| -> u32 {
        b[r].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-'))
            if i + 6 == b.len()
                && digits(i + 1..i + 3)
                && at(i + 3, b':')
                && digits(i + 4..i + 6) =>
        {
            let (h, m) = (num(i + 1..i + 3), num(i + 4..i + 6));
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = i64::from(h * 60 + m);
            if sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn fits(t: ColumnType, v: &Value) -> bool {
    match t {
        ColumnType::Bool => v.is_boolean(),
        ColumnType::Int64 => v.is_i64() || v.as_u64().is_some_and(|n| n <= i64::MAX as u64),
        ColumnType::Float64 => v.is_number(),
        ColumnType::String => v.is_string(),
        ColumnType::Timestamp => v.is_i64() || v.as_str().is_some_and(is_rfc3339),
        ColumnType::Json => true,
    }
}

impl NamespaceConfig {
    /// The fulltext settings: fields and language (`None` without text fields).
    pub fn text(&self) -> Option<(Vec<String>, Language)> {
        if self.text_fields.is_empty() {
            None
        } else {
            Some((
                self.text_fields.clone(),
                self.language.unwrap_or(Language::En),
            ))
        }
    }

    fn validate_text(&self, model: Model) -> std::result::Result<(), String> {
        if self.text_fields.is_empty() {
            if self.language.is_some() {
                return Err("`language` applies to `text_fields`; declare those too".into());
            }
            return Ok(());
        }
        if !matches!(model, Model::Document | Model::Relational) {
            return Err(format!(
                "text_fields belong to document and relational namespaces, not {model} ones"
            ));
        }
        if self.text_fields.len() > TEXT_FIELDS_MAX {
            return Err(format!("at most {TEXT_FIELDS_MAX} text_fields"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.text_fields {
            if !valid_text_field(f) {
                return Err(format!(
                    "text field {f:?} is not valid: a top-level field name, [A-Za-z][A-Za-z0-9_]{{0,63}}"
                ));
            }
            if !seen.insert(f) {
                return Err(format!("text field {f:?} is declared twice"));
            }
            if model == Model::Relational
                && !self.columns.iter().any(|c| {
                    &c.name == f && matches!(c.column_type, ColumnType::String | ColumnType::Json)
                })
            {
                return Err(format!(
                    "text field {f:?} must be a declared string or json column"
                ));
            }
        }
        Ok(())
    }

    /// The config with every default spelled out, as it is written to the log (so a later
    /// change of a default does not change existing namespaces).
    pub fn with_defaults(mut self, model: Model) -> NamespaceConfig {
        if !self.text_fields.is_empty() {
            self.language.get_or_insert(Language::En);
        }
        if model == Model::Timeseries {
            self.block_ms.get_or_insert(TIMESERIES_DEFAULT_BLOCK_MS);
        }
        if model == Model::Vector {
            self.metric.get_or_insert(Metric::Cosine);
            self.m.get_or_insert(VECTOR_DEFAULT_M);
            self.ef_construction
                .get_or_insert(VECTOR_DEFAULT_EF_CONSTRUCTION);
            self.ef_search.get_or_insert(VECTOR_DEFAULT_EF_SEARCH);
        }
        self
    }

    /// A time-series namespace's settings.
    pub fn timeseries(&self) -> TimeseriesSettings {
        TimeseriesSettings {
            block_ms: self.block_ms.unwrap_or(TIMESERIES_DEFAULT_BLOCK_MS),
            retention_ms: self.retention_ms,
            downsample: self.downsample.clone(),
        }
    }

    fn has_timeseries_options(&self) -> bool {
        self.block_ms.is_some() || self.retention_ms.is_some() || !self.downsample.is_empty()
    }

    fn validate_timeseries(&self) -> std::result::Result<(), String> {
        if !self.columns.is_empty() || !self.text_fields.is_empty() || self.has_vector_options() {
            return Err(
                "time-series namespaces declare only block_ms, retention_ms and downsample".into(),
            );
        }
        let block = self.block_ms.unwrap_or(TIMESERIES_DEFAULT_BLOCK_MS);
        if !(1000..=TIMESERIES_BLOCK_MS_MAX).contains(&block) {
            return Err(format!(
                "block_ms must be 1000 to {TIMESERIES_BLOCK_MS_MAX} (a day), not {block}"
            ));
        }
        if self.retention_ms == Some(0) {
            return Err("retention_ms must be positive (omit it to keep points for ever)".into());
        }
        let mut steps = std::collections::BTreeSet::new();
        for rule in &self.downsample {
            if !(1000..=365 * 24 * 3600 * 1000).contains(&rule.step_ms) {
                return Err(format!(
                    "a downsample step_ms must be 1000 (a second) to a year, not {}",
                    rule.step_ms
                ));
            }
            if rule.retention_ms == Some(0) {
                return Err("a downsample retention_ms must be positive".into());
            }
            if !steps.insert(rule.step_ms) {
                return Err(format!(
                    "downsample step_ms {} is declared twice",
                    rule.step_ms
                ));
            }
        }
        if self.downsample.len() > 8 {
            return Err("at most 8 downsample rules".into());
        }
        Ok(())
    }

    /// A vector namespace's settings (`None` without a dimension).
    pub fn vector(&self) -> Option<VectorSettings> {
        Some(VectorSettings {
            dimension: self.dimension?,
            metric: self.metric.unwrap_or(Metric::Cosine),
            m: self.m.unwrap_or(VECTOR_DEFAULT_M),
            ef_construction: self
                .ef_construction
                .unwrap_or(VECTOR_DEFAULT_EF_CONSTRUCTION),
            ef_search: self.ef_search.unwrap_or(VECTOR_DEFAULT_EF_SEARCH),
        })
    }

    fn has_vector_options(&self) -> bool {
        self.dimension.is_some()
            || self.metric.is_some()
            || self.m.is_some()
            || self.ef_construction.is_some()
            || self.ef_search.is_some()
    }

    fn validate_vector(&self, dims_max: usize) -> std::result::Result<(), String> {
        if !self.columns.is_empty() {
            return Err(
                "vector namespaces declare no columns (their payload is schemaless)".into(),
            );
        }
        let Some(dimension) = self.dimension else {
            return Err("a vector namespace declares its `dimension`".into());
        };
        if dimension == 0 || dimension > dims_max {
            return Err(format!(
                "dimension must be 1 to {dims_max}, not {dimension}"
            ));
        }
        if let Some(m) = self.m
            && !(2..=VECTOR_M_MAX).contains(&m)
        {
            return Err(format!("m must be 2 to {VECTOR_M_MAX}, not {m}"));
        }
        for (name, value) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if let Some(ef) = value
                && !(1..=VECTOR_EF_MAX).contains(&ef)
            {
                return Err(format!("{name} must be 1 to {VECTOR_EF_MAX}, not {ef}"));
            }
        }
        Ok(())
    }

    /// Checks a config for `model`: relational namespaces need at least one column, with valid
    /// and distinct names; vector namespaces a dimension (at most `dims_max`) and sane index
    /// settings; document namespaces declare nothing (yet).
    pub fn validate(&self, model: Model) -> std::result::Result<(), String> {
        self.validate_text(model)?;
        if model == Model::Vector {
            return self.validate_vector(themis_log::event::EventLimits::default().vector_dims_max);
        }
        if model == Model::Timeseries {
            return self.validate_timeseries();
        }
        if self.has_timeseries_options() {
            return Err(format!(
                "block_ms, retention_ms and downsample belong to timeseries namespaces, not \
                 {model} ones"
            ));
        }
        if self.has_vector_options() {
            return Err(format!(
                "dimension, metric, m, ef_construction and ef_search belong to vector \
                 namespaces, not {model} ones"
            ));
        }
        match model {
            Model::Relational => {
                if self.columns.is_empty() {
                    return Err("a relational namespace declares at least one column".into());
                }
                let mut seen = std::collections::BTreeSet::new();
                for c in &self.columns {
                    if !valid_column_name(&c.name) {
                        return Err(format!(
                            "column name {:?} is not valid: use [a-z_][a-z0-9_]{{0,62}}",
                            c.name
                        ));
                    }
                    if IMPLICIT_COLUMNS.contains(&c.name.as_str()) {
                        return Err(format!(
                            "column {:?} is implicit (every table has {})",
                            c.name,
                            IMPLICIT_COLUMNS.join(", ")
                        ));
                    }
                    if !seen.insert(c.name.as_str()) {
                        return Err(format!("column {:?} is declared twice", c.name));
                    }
                }
                Ok(())
            }
            Model::Document => {
                if self.columns.is_empty() {
                    Ok(())
                } else {
                    Err("document namespaces are schemaless: they declare no columns".into())
                }
            }
            other => Err(format!(
                "namespace configs for {other} namespaces are not supported yet"
            )),
        }
    }

    /// Whether `next` may replace this config: columns may be added (nullable ones only) and
    /// widened to `json`; nothing may be removed, renamed, narrowed or made required.
    pub fn evolves_to(&self, next: &NamespaceConfig) -> std::result::Result<(), String> {
        if self.text().is_some() && self.text() != next.text() {
            return Err(
                "text_fields and language cannot change once declared (the index is built \
                 with them); declare a new namespace"
                    .into(),
            );
        }
        if self.has_timeseries_options() || next.has_timeseries_options() {
            let (old, new) = (self.timeseries(), next.timeseries());
            if old.block_ms != new.block_ms {
                return Err(format!(
                    "block_ms cannot change ({} → {}): stored blocks use it",
                    old.block_ms, new.block_ms
                ));
            }
            if old
                .downsample
                .iter()
                .map(|r| r.step_ms)
                .ne(new.downsample.iter().map(|r| r.step_ms))
            {
                return Err(
                    "downsample steps cannot change once declared (rollups are built as points \
                     arrive); their retention_ms may"
                        .into(),
                );
            }
        }
        if let (Some(old), Some(new)) = (self.vector(), next.vector()) {
            // The index is built with these; only the search default may change.
            for (name, a, b) in [
                ("dimension", old.dimension, new.dimension),
                ("m", old.m, new.m),
                ("ef_construction", old.ef_construction, new.ef_construction),
            ] {
                if a != b {
                    return Err(format!(
                        "{name} cannot change ({a} → {b}); declare a new namespace and re-append"
                    ));
                }
            }
            if old.metric != new.metric {
                return Err(format!(
                    "metric cannot change ({} → {}); declare a new namespace and re-append",
                    old.metric.as_str(),
                    new.metric.as_str()
                ));
            }
        }
        for old in &self.columns {
            let Some(new) = next.columns.iter().find(|c| c.name == old.name) else {
                return Err(format!("column {:?} cannot be removed", old.name));
            };
            if new.column_type != old.column_type && new.column_type != ColumnType::Json {
                return Err(format!(
                    "column {:?} cannot change from {:?} to {:?} (only widening to json is allowed)",
                    old.name, old.column_type, new.column_type
                ));
            }
            if old.nullable && !new.nullable {
                return Err(format!("column {:?} cannot become required", old.name));
            }
        }
        for new in &next.columns {
            if !new.nullable && !self.columns.iter().any(|c| c.name == new.name) {
                return Err(format!(
                    "new column {:?} must be nullable (existing rows have no value for it)",
                    new.name
                ));
            }
        }
        Ok(())
    }

    /// Checks one event of a vector namespace: a put carries a vector of the declared
    /// dimension (not all zeros under cosine); put and patch payloads are JSON objects.
    pub fn check_vector_event(
        &self,
        op: Op,
        vector: Option<&[f32]>,
        data: Option<&Value>,
    ) -> std::result::Result<(), Violation> {
        let violation = |field: &str, message: String| Violation {
            column: field.to_owned(),
            message,
        };
        let Some(settings) = self.vector() else {
            return Err(violation(
                "dimension",
                "the namespace declares no dimension".into(),
            ));
        };
        if let Some(d) = data
            && !d.is_object()
        {
            return Err(violation(
                "data",
                "a vector's payload is a JSON object".into(),
            ));
        }
        if op == Op::Put {
            let vector = vector.unwrap_or_default();
            if vector.len() != settings.dimension {
                return Err(violation(
                    "vector",
                    format!(
                        "the namespace's vectors have {} dimensions, this one has {}",
                        settings.dimension,
                        vector.len()
                    ),
                ));
            }
            if settings.metric == Metric::Cosine && vector.iter().all(|&x| x == 0.0) {
                return Err(violation(
                    "vector",
                    "a zero vector has no direction, so cosine distance is undefined for it".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks one event of a relational namespace: a put carries every required column and
    /// only declared ones, with values of their types; a patch may set declared columns (null
    /// only for nullable ones); a delete carries nothing to check.
    pub fn check_event(&self, op: Op, data: Option<&Value>) -> std::result::Result<(), Violation> {
        let violation = |column: &str, message: String| Violation {
            column: column.to_owned(),
            message,
        };
        let fields = match (op, data) {
            (Op::Delete, _) => return Ok(()),
            (Op::Put | Op::Patch, Some(Value::Object(fields))) => fields,
            (Op::Put | Op::Patch, _) => {
                return Err(violation("data", "a row is a JSON object".into()));
            }
            (other, _) => {
                return Err(violation(
                    "op",
                    format!("relational rows take put, patch or delete, not {other:?}"),
                ));
            }
        };
        for (name, value) in fields {
            let Some(c) = self.columns.iter().find(|c| &c.name == name) else {
                return Err(violation(
                    name,
                    format!(
                        "no column {name:?} (declared: {})",
                        self.columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if value.is_null() {
                if !c.nullable {
                    return Err(violation(name, format!("column {name:?} is required")));
                }
            } else if !fits(c.column_type, value) {
                return Err(violation(
                    name,
                    format!(
                        "column {name:?} holds {:?} values, not {value}",
                        c.column_type
                    ),
                ));
            }
        }
        if op == Op::Put
            && let Some(c) = self
                .columns
                .iter()
                .find(|c| !c.nullable && !fields.contains_key(&c.name))
        {
            return Err(violation(
                &c.name,
                format!("column {:?} is required", c.name),
            ));
        }
        Ok(())
    }
}

/// The registry view.
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespacesView;

fn table_name(shard: ShardId) -> String {
    format!("ns/{}", shard.0)
}

impl View for NamespacesView {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let name = table_name(shard);
        let mut registry = tx.open_table(table(&name)).map_err(storage)?;
        for e in &entry.events {
            let urn = &e.event.urn;
            if urn.namespace() != CONFIG_NAMESPACE {
                continue;
            }
            let key = format!("{}/{}", urn.model(), urn.id());
            match e.event.op {
                Op::Put => {
                    // Configs were checked before the log; one that does not parse (written by
                    // a later version?) is skipped rather than stopping the view.
                    let Some(config) = e
                        .event
                        .data
                        .as_ref()
                        .and_then(|d| serde_json::from_str::<NamespaceConfig>(d.get()).ok())
                    else {
                        continue;
                    };
                    let registered = Registered {
                        model: urn.model().to_string(),
                        namespace: urn.id().to_owned(),
                        config,
                        version: e.revision,
                        lsn: entry.lsn.0,
                        updated_ms: entry.ts_ms,
                    };
                    let bytes = serde_json::to_vec(&registered).map_err(storage)?;
                    registry
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(storage)?;
                }
                Op::Delete => {
                    registry.remove(key.as_str()).map_err(storage)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        let name = table_name(shard);
        tx.delete_table(table(&name)).map_err(storage)?;
        Ok(())
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        digest_table(tx, &table_name(shard))
    }
}

/// The registered config of `model`/`namespace` in `shard`'s registry, read inside a write
/// transaction (what another view's `apply` sees: the latest committed registry).
pub(crate) fn get_in_write(
    tx: &WriteTransaction,
    shard: ShardId,
    model: Model,
    namespace: &str,
) -> Result<Option<Registered>> {
    use redb::ReadableTable;
    let t = tx.open_table(table(&table_name(shard))).map_err(storage)?;
    let found = t
        .get(format!("{model}/{namespace}").as_str())
        .map_err(storage)?;
    found
        .map(|v| serde_json::from_slice(v.value()))
        .transpose()
        .map_err(storage)
}

/// The registered config of `model`/`namespace` in `shard`'s registry.
pub fn get(
    tx: &ReadTransaction,
    shard: ShardId,
    model: Model,
    namespace: &str,
) -> Result<Option<Registered>> {
    get_json(tx, &table_name(shard), &format!("{model}/{namespace}"))
}

/// Every config in `shard`'s registry.
pub fn all(tx: &ReadTransaction, shard: ShardId) -> Result<Vec<Registered>> {
    Ok(all_json(tx, &table_name(shard))?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

#[cfg(test)]
mod tests;
