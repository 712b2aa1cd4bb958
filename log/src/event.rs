//! Events: one change to one URN. [`EventInput`] is what clients send; [`Event`] is what the
//! log stores after validation, in a compact binary encoding (see `docs/design/log-format.md`).
//!
//! Invariant: an `Event` exists only after [`EventInput::validate`] accepted it, so everything
//! the log holds has a valid URN, an op allowed for its model, and fields within their limits.
//! Client JSON (`data`, `metadata`) is stored as the exact text the client sent, once it passed
//! the rules of [`crate::json`] (what every view can store).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::{DecodeError, Reader, Writer};
use crate::urn::{Model, Urn};

/// A client-chosen event id (a UUID); retrying an append with the same ids is idempotent.
pub type EventId = uuid::Uuid;

/// What an event does to its URN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Replace the full state (`data`; a vector put carries `vector`).
    Put,
    /// Merge `data` into the state (RFC 7396 JSON merge patch).
    Patch,
    /// Remove the resource.
    Delete,
    /// Add the edge `urn -[label]-> to` (graph).
    Link,
    /// Remove the edge `urn -[label]-> to` (graph).
    Unlink,
    /// Append `points` to a series (timeseries).
    Points,
}

impl Op {
    /// Every op, in wire order.
    pub const ALL: [Op; 6] = [
        Op::Put,
        Op::Patch,
        Op::Delete,
        Op::Link,
        Op::Unlink,
        Op::Points,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Patch => "patch",
            Op::Delete => "delete",
            Op::Link => "link",
            Op::Unlink => "unlink",
            Op::Points => "points",
        }
    }

    /// The ops a model accepts.
    pub fn allowed_for(model: Model) -> &'static [Op] {
        match model {
            Model::Document | Model::Relational | Model::Vector => {
                &[Op::Put, Op::Patch, Op::Delete]
            }
            Model::Graph => &[Op::Put, Op::Patch, Op::Delete, Op::Link, Op::Unlink],
            Model::Timeseries => &[Op::Points, Op::Delete],
        }
    }

    fn code(self) -> u8 {
        match self {
            Op::Put => 0,
            Op::Patch => 1,
            Op::Delete => 2,
            Op::Link => 3,
            Op::Unlink => 4,
            Op::Points => 5,
        }
    }

    fn from_code(code: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.code() == code)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The revision a stream must have for an append to proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedRevision {
    /// No check.
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    Exists,
    /// The stream's revision must be exactly this.
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream at `current` (None = no stream) satisfies the expectation.
    pub fn admits(self, current: Option<u64>) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current.is_none(),
            ExpectedRevision::Exists => current.is_some(),
            ExpectedRevision::Exact(n) => current == Some(n),
        }
    }

    pub(crate) fn encode(self, w: &mut Writer) {
        match self {
            ExpectedRevision::Any => w.u8(0),
            ExpectedRevision::NoStream => w.u8(1),
            ExpectedRevision::Exists => w.u8(2),
            ExpectedRevision::Exact(n) => {
                w.u8(3);
                w.varint(n);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8("expected revision")? {
            0 => ExpectedRevision::Any,
            1 => ExpectedRevision::NoStream,
            2 => ExpectedRevision::Exists,
            3 => ExpectedRevision::Exact(r.varint("expected revision")?),
            other => return Err(r.error("expected revision", format!("unknown kind {other}"))),
        })
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no_stream"),
            ExpectedRevision::Exists => f.write_str("exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ExpectedRevision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedRevision::Exact(n) => s.serialize_u64(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedRevision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ExpectedRevision;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""any", "no_stream", "exists", -1 or a revision number >= 0"#)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ExpectedRevision::Exact(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match v {
                    -1 => Ok(ExpectedRevision::NoStream),
                    v if v >= 0 => Ok(ExpectedRevision::Exact(v as u64)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::str::FromStr for ExpectedRevision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedRevision::Any),
            "no_stream" | "-1" => Ok(ExpectedRevision::NoStream),
            "exists" => Ok(ExpectedRevision::Exists),
            n => n.parse().map(ExpectedRevision::Exact).map_err(|_| {
                format!(
                    "invalid expected revision {n:?}: use any, no_stream, exists or a number >= 0"
                )
            }),
        }
    }
}

/// A time-series point: milliseconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point(pub i64, pub f64);

/// Size limits applied to every event before it is proposed.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// Bytes of `data` JSON text.
    pub data_bytes_max: usize,
    /// Bytes of `metadata` JSON text.
    pub metadata_bytes_max: usize,
    /// Characters of `type`.
    pub type_chars_max: usize,
    /// Characters of an edge `label`.
    pub label_chars_max: usize,
    /// Dimensions of a vector.
    pub vector_dims_max: usize,
    /// Points in one event.
    pub points_max: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            data_bytes_max: 1 << 20,
            metadata_bytes_max: 64 << 10,
            type_chars_max: 128,
            label_chars_max: 64,
            vector_dims_max: 4096,
            points_max: 100_000,
        }
    }
}

/// An event as a client sends it (JSON). Unknown fields are rejected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// Client-chosen id; the server draws a random one when absent.
    #[serde(default)]
    pub id: Option<EventId>,
    /// The target resource. Optional only where the URL names it.
    #[serde(default)]
    pub urn: Option<String>,
    /// Application-defined event type; defaults to the op's name.
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// What the event does.
    pub op: Op,
    /// Put: the full state; patch: a merge patch; link: edge properties. A JSON object.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    /// Vector put: the vector.
    #[serde(default)]
    pub vector: Option<Vec<f64>>,
    /// Link/unlink: the target vertex.
    #[serde(default)]
    pub to: Option<String>,
    /// Link/unlink: the edge label.
    #[serde(default)]
    pub label: Option<String>,
    /// Points: `[[ts_ms, value], ...]`.
    #[serde(default)]
    pub points: Option<Vec<Point>>,
    /// Application metadata, a JSON object.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    /// The revision this event's stream must have just before it.
    #[serde(default)]
    pub expected_revision: Option<ExpectedRevision>,
}

/// Why an event was refused before anything was proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEvent {
    /// Stable snake_case code for clients (`invalid_urn`, `invalid_op`, `invalid_field`, ...).
    pub code: &'static str,
    /// The offending field (`urn`, `data`, `vector[3]`, ...).
    pub field: String,
    /// Human-readable explanation.
    pub message: String,
}

impl InvalidEvent {
    fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated event, as the log stores it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Idempotency id.
    pub id: EventId,
    /// Target resource.
    pub urn: Urn,
    /// Application-defined type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// What the event does.
    pub op: Op,
    /// JSON object text, exactly as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// Vector components.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// Edge target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Urn>,
    /// Edge label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Series points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
    /// JSON object text, exactly as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        let text = |raw: &Option<Box<RawValue>>| raw.as_ref().map(|r| r.get().to_owned());
        self.id == other.id
            && self.urn == other.urn
            && self.event_type == other.event_type
            && self.op == other.op
            && text(&self.data) == text(&other.data)
            && self.vector == other.vector
            && self.to == other.to
            && self.label == other.label
            && self.points == other.points
            && text(&self.metadata) == text(&other.metadata)
    }
}

fn json_object(
    raw: Option<Box<RawValue>>,
    field: &str,
    max: usize,
) -> Result<Option<Box<RawValue>>, InvalidEvent> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err(InvalidEvent::new(
            "invalid_field",
            field,
            format!("`{field}` must be a JSON object"),
        ));
    }
    if text.len() > max {
        return Err(InvalidEvent::new(
            "field_too_large",
            field,
            format!("`{field}` is {} bytes; the limit is {max}", text.len()),
        ));
    }
    crate::json::check(text).map_err(|e| {
        InvalidEvent::new(
            "invalid_field",
            format!("{field}{}", e.path),
            format!("`{field}{}`: {}", e.path, e.message),
        )
    })?;
    Ok(Some(raw))
}

fn require<T>(value: Option<T>, field: &str, op: Op) -> Result<T, InvalidEvent> {
    value.ok_or_else(|| {
        InvalidEvent::new(
            "missing_field",
            field,
            format!("op `{op}` requires `{field}`"),
        )
    })
}

fn forbid<T>(value: &Option<T>, field: &str, op: Op, model: Model) -> Result<(), InvalidEvent> {
    match value {
        Some(_) => Err(InvalidEvent::new(
            "unexpected_field",
            field,
            format!("`{field}` is not allowed for op `{op}` on a {model} urn"),
        )),
        None => Ok(()),
    }
}

/// A points event's optional `data`: `{"tags": {"name": "value", ...}}` and nothing else.
fn check_series_tags(data: &serde_json::value::RawValue) -> Result<(), InvalidEvent> {
    let bad = |field: &str, message: String| InvalidEvent::new("invalid_field", field, message);
    let value: serde_json::Value = serde_json::from_str(data.get())
        .map_err(|e| bad("data", format!("`data` is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("data", "`data` of a points event must be an object".into()))?;
    for (key, tags) in object {
        if key != "tags" {
            return Err(bad(
                &format!("data.{key}"),
                format!("a points event's `data` holds only `tags`, not `{key}`"),
            ));
        }
        let tags = tags
            .as_object()
            .ok_or_else(|| bad("data.tags", "`tags` must be an object of strings".into()))?;
        for (name, v) in tags {
            if !v.is_string() {
                return Err(bad(
                    &format!("data.tags.{name}"),
                    format!("tag `{name}` must be a string, not {v}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_label(label: &str, limits: &EventLimits) -> Result<(), InvalidEvent> {
    let chars = label.chars().count();
    if chars == 0 || chars > limits.label_chars_max {
        return Err(InvalidEvent::new(
            "invalid_field",
            "label",
            format!(
                "`label` must have 1 to {} characters, not {chars}",
                limits.label_chars_max
            ),
        ));
    }
    if let Some(c) = label.chars().find(|c| c.is_control()) {
        return Err(InvalidEvent::new(
            "invalid_field",
            "label",
            format!("`label` contains the control character {c:?}"),
        ));
    }
    Ok(())
}

impl EventInput {
    /// Validates the event, filling in the URN from the URL (`url_urn`) and a random id from
    /// `draw_id` when absent. Returns the event and its expected revision.
    pub fn validate(
        self,
        url_urn: Option<&Urn>,
        limits: &EventLimits,
        draw_id: &mut dyn FnMut() -> EventId,
    ) -> Result<(Event, Option<ExpectedRevision>), InvalidEvent> {
        let urn = match (self.urn, url_urn) {
            (Some(text), url) => {
                let urn = Urn::parse(&text)
                    .map_err(|e| InvalidEvent::new("invalid_urn", "urn", e.to_string()))?;
                if let Some(url) = url.filter(|url| **url != urn) {
                    return Err(InvalidEvent::new(
                        "urn_mismatch",
                        "urn",
                        format!("event urn {urn} differs from the stream in the url, {url}"),
                    ));
                }
                urn
            }
            (None, Some(url)) => url.clone(),
            (None, None) => {
                return Err(InvalidEvent::new(
                    "missing_field",
                    "urn",
                    "every event needs a `urn`",
                ));
            }
        };
        let model = urn.model();
        let op = self.op;
        if urn.namespace() == CONFIG_NAMESPACE {
            // Namespace configs of every model are JSON objects put (or deleted) as documents.
            if !matches!(op, Op::Put | Op::Delete) {
                return Err(InvalidEvent::new(
                    "invalid_op",
                    "op",
                    format!("a namespace config takes put or delete, not `{op}`"),
                ));
            }
            let config = ["vector", "to", "label", "points"]
                .into_iter()
                .zip([
                    self.vector.is_some(),
                    self.to.is_some(),
                    self.label.is_some(),
                    self.points.is_some(),
                ])
                .find(|(_, present)| *present);
            if let Some((field, _)) = config {
                return Err(InvalidEvent::new(
                    "unexpected_field",
                    field,
                    format!("a namespace config carries no `{field}`"),
                ));
            }
            let data = json_object(self.data, "data", limits.data_bytes_max)?;
            let metadata = json_object(self.metadata, "metadata", limits.metadata_bytes_max)?;
            if op == Op::Delete {
                forbid(&data, "data", op, model)?;
            }
            let data = if op == Op::Put {
                Some(require(data, "data", op)?)
            } else {
                None
            };
            let event = Event {
                id: self.id.unwrap_or_else(draw_id),
                urn,
                event_type: self.event_type.unwrap_or_else(|| op.as_str().to_owned()),
                op,
                data,
                vector: None,
                to: None,
                label: None,
                points: None,
                metadata,
            };
            return Ok((event, self.expected_revision));
        }
        if !Op::allowed_for(model).contains(&op) {
            let allowed: Vec<_> = Op::allowed_for(model).iter().map(|o| o.as_str()).collect();
            return Err(InvalidEvent::new(
                "invalid_op",
                "op",
                format!(
                    "op `{op}` is not valid for {model} urns; allowed: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let event_type = self.event_type.unwrap_or_else(|| op.as_str().to_owned());
        let type_chars = event_type.chars().count();
        if type_chars == 0 || type_chars > limits.type_chars_max {
            return Err(InvalidEvent::new(
                "invalid_field",
                "type",
                format!("`type` must have 1 to {} characters", limits.type_chars_max),
            ));
        }
        let data = json_object(self.data, "data", limits.data_bytes_max)?;
        let metadata = json_object(self.metadata, "metadata", limits.metadata_bytes_max)?;

        let mut event = Event {
            id: self.id.unwrap_or_else(draw_id),
            urn,
            event_type,
            op,
            data: None,
            vector: None,
            to: None,
            label: None,
            points: None,
            metadata,
        };
        let is_vertex_op = matches!(op, Op::Put | Op::Patch | Op::Delete);
        if is_vertex_op || op == Op::Points {
            forbid(&self.to, "to", op, model)?;
            forbid(&self.label, "label", op, model)?;
        }
        if op != Op::Points {
            forbid(&self.points, "points", op, model)?;
        }
        if !(model == Model::Vector && op == Op::Put) {
            forbid(&self.vector, "vector", op, model)?;
        }
        match op {
            Op::Put | Op::Patch => {
                if model == Model::Vector && op == Op::Put {
                    event.vector = Some(check_vector(require(self.vector, "vector", op)?, limits)?);
                    event.data = data;
                } else {
                    event.data = Some(require(data, "data", op)?);
                }
            }
            Op::Delete => forbid(&data, "data", op, model)?,
            Op::Link | Op::Unlink => {
                let to = require(self.to, "to", op)?;
                let to = Urn::parse(&to)
                    .map_err(|e| InvalidEvent::new("invalid_urn", "to", e.to_string()))?;
                if to.model() != Model::Graph {
                    return Err(InvalidEvent::new(
                        "invalid_field",
                        "to",
                        format!("an edge must point to a graph urn, not {to}"),
                    ));
                }
                let label = require(self.label, "label", op)?;
                check_label(&label, limits)?;
                if op == Op::Unlink {
                    forbid(&data, "data", op, model)?;
                }
                event.to = Some(to);
                event.label = Some(label);
                event.data = data;
            }
            Op::Points => {
                if let Some(d) = &data {
                    check_series_tags(d)?;
                }
                event.data = data;
                let points = require(self.points, "points", op)?;
                if points.is_empty() || points.len() > limits.points_max {
                    return Err(InvalidEvent::new(
                        "invalid_field",
                        "points",
                        format!("`points` must hold 1 to {} points", limits.points_max),
                    ));
                }
                event.points = Some(points);
            }
        }
        Ok((event, self.expected_revision))
    }
}

/// The reserved namespace of every model holding namespace configs
/// (`urn:themis:{model}:_namespace:{ns}`).
pub const CONFIG_NAMESPACE: &str = "_namespace";

fn check_vector(vector: Vec<f64>, limits: &EventLimits) -> Result<Vec<f32>, InvalidEvent> {
    if vector.is_empty() || vector.len() > limits.vector_dims_max {
        return Err(InvalidEvent::new(
            "invalid_field",
            "vector",
            format!(
                "a vector must have 1 to {} dimensions, not {}",
                limits.vector_dims_max,
                vector.len()
            ),
        ));
    }
    vector
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let v = x as f32;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(InvalidEvent::new(
                    "invalid_field",
                    format!("vector[{i}]"),
                    format!("vector component {i} ({x}) is not a finite 32-bit float"),
                ))
            }
        })
        .collect()
}

// Presence bits of the optional fields in the binary encoding.
const HAS_DATA: u8 = 1;
const HAS_VECTOR: u8 = 2;
const HAS_EDGE: u8 = 4;
const HAS_POINTS: u8 = 8;
const HAS_METADATA: u8 = 16;

/// Upper bound on element counts read from the log; far above any validated event.
const DECODE_COUNT_MAX: usize = 1 << 24;

impl Event {
    /// Appends the binary encoding (see `docs/design/log-format.md`).
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.raw(self.id.as_bytes());
        w.str(self.urn.as_str());
        w.str(&self.event_type);
        w.u8(self.op.code());
        let flag = |present: bool, bit: u8| if present { bit } else { 0 };
        let flags = flag(self.data.is_some(), HAS_DATA)
            | flag(self.vector.is_some(), HAS_VECTOR)
            | flag(self.to.is_some(), HAS_EDGE)
            | flag(self.points.is_some(), HAS_POINTS)
            | flag(self.metadata.is_some(), HAS_METADATA);
        w.u8(flags);
        if let Some(data) = &self.data {
            w.str(data.get());
        }
        if let Some(vector) = &self.vector {
            w.varint(vector.len() as u64);
            vector.iter().for_each(|&x| w.f32(x));
        }
        if let (Some(to), Some(label)) = (&self.to, &self.label) {
            w.str(to.as_str());
            w.str(label);
        }
        if let Some(points) = &self.points {
            w.varint(points.len() as u64);
            for p in points {
                w.i64(p.0);
                w.f64(p.1);
            }
        }
        if let Some(metadata) = &self.metadata {
            w.str(metadata.get());
        }
    }

    /// Reads one event written by [`Event::encode`].
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
        let id = EventId::from_bytes(r.raw("event id")?);
        let urn_text = r.str("event urn")?;
        let urn = Urn::parse_logged(urn_text).map_err(|e| r.error("event urn", e.to_string()))?;
        let event_type = r.str("event type")?.to_owned();
        let op = r.u8("event op")?;
        let op =
            Op::from_code(op).ok_or_else(|| r.error("event op", format!("unknown op {op}")))?;
        let flags = r.u8("event flags")?;
        let raw_json = |r: &mut Reader<'_>, what| -> Result<Box<RawValue>, DecodeError> {
            let text = r.str(what)?;
            RawValue::from_string(text.to_owned()).map_err(|e| r.error(what, e.to_string()))
        };
        let data = if flags & HAS_DATA != 0 {
            Some(raw_json(r, "event data")?)
        } else {
            None
        };
        let vector = if flags & HAS_VECTOR != 0 {
            let n = r.len("vector length", DECODE_COUNT_MAX)?;
            Some(
                (0..n)
                    .map(|_| r.f32("vector component"))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        } else {
            None
        };
        let (to, label) = if flags & HAS_EDGE != 0 {
            let to = r.str("edge target")?;
            let to = Urn::parse_logged(to).map_err(|e| r.error("edge target", e.to_string()))?;
            (Some(to), Some(r.str("edge label")?.to_owned()))
        } else {
            (None, None)
        };
        let points = if flags & HAS_POINTS != 0 {
            let n = r.len("point count", DECODE_COUNT_MAX)?;
            Some(
                (0..n)
                    .map(|_| Ok(Point(r.i64("point time")?, r.f64("point value")?)))
                    .collect::<Result<Vec<_>, DecodeError>>()?,
            )
        } else {
            None
        };
        let metadata = if flags & HAS_METADATA != 0 {
            Some(raw_json(r, "event metadata")?)
        } else {
            None
        };
        Ok(Event {
            id,
            urn,
            event_type,
            op,
            data,
            vector,
            to,
            label,
            points,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests;
