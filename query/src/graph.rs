//! Graph queries: `traverse` and `shortest_path`, as the query API (`POST /v1/query
//! {"traverse": ...}` / `{"shortest_path": ...}`) and the SQL table functions
//! `traverse(start, min_depth, max_depth, direction [, label])` and
//! `shortest_path(from, to [, weight])` answer them.
//!
//! A traversal's rows: `urn`, `id`, `depth`, `data` (JSON), and the edge the vertex was first
//! reached by: `edge_from`, `edge_label`, `edge_to`, `edge_data` (NULL for the start), and
//! `path` (a JSON array of URNs from the start). A path's rows, one per vertex from `from` to
//! `to`: `step` (0..), `urn`, `id`, `data`, the edge that led there (`edge_label`,
//! `edge_data`, NULL at step 0) and `distance` (hops or summed weight so far); no rows when
//! `to` cannot be reached.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use themis_log::Urn;
use themis_materializers::graph::{
    Direction, FoundPath, PathSearch, RESULTS_MAX, Traversal, Traversed,
};

use crate::search::{id_of, invalid, json_field};
use crate::{Error, Result};

fn default_limit() -> usize {
    1000
}

/// Most vertices the SQL table function `traverse` returns.
pub const SQL_LIMIT: usize = RESULTS_MAX;

/// A traversal's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraverseArgs {
    /// The start vertex's URN.
    pub start: String,
    /// Nearest depth returned (default 1).
    #[serde(default = "one")]
    pub min_depth: usize,
    /// Farthest depth visited (default 1).
    #[serde(default = "one")]
    pub max_depth: usize,
    /// `outbound` (default), `inbound` or `any`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Follow only edges with one of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Most vertices returned (default 1,000).
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn one() -> usize {
    1
}

fn urn(text: &str, what: &str) -> Result<Urn> {
    let urn = Urn::parse(text).map_err(|e| invalid(format!("{what}: {e}")))?;
    if urn.model() != themis_log::Model::Graph {
        return Err(invalid(format!(
            "{what} {urn} is not a graph vertex (urn:themis:graph:...)"
        )));
    }
    Ok(urn)
}

fn direction(text: Option<&str>) -> Result<Direction> {
    match text {
        None => Ok(Direction::Outbound),
        Some(d) => Direction::parse(d).ok_or_else(|| {
            invalid(format!(
                "direction must be outbound, inbound or any, not {d:?}"
            ))
        }),
    }
}

impl TraverseArgs {
    /// The checked traversal.
    pub fn resolve(&self) -> Result<Traversal> {
        if self.limit == 0 || self.limit > RESULTS_MAX {
            return Err(invalid(format!("limit must be 1 to {RESULTS_MAX}")));
        }
        Ok(Traversal {
            start: urn(&self.start, "start")?,
            min_depth: self.min_depth,
            max_depth: self.max_depth,
            direction: direction(self.direction.as_deref())?,
            labels: self.labels.clone(),
            limit: self.limit,
        })
    }
}

/// A shortest-path search's arguments as the query API takes them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortestPathArgs {
    /// From this vertex.
    pub from: String,
    /// To this vertex.
    pub to: String,
    /// `outbound` (default), `inbound` or `any`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Follow only edges with one of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A numeric edge property to minimise the sum of; hops when absent.
    #[serde(default)]
    pub weight: Option<String>,
}

impl ShortestPathArgs {
    /// The checked search.
    pub fn resolve(&self) -> Result<PathSearch> {
        Ok(PathSearch {
            from: urn(&self.from, "from")?,
            to: urn(&self.to, "to")?,
            direction: direction(self.direction.as_deref())?,
            labels: self.labels.clone(),
            weight: self.weight.clone(),
        })
    }
}

/// A traversal's columns.
pub fn traverse_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("urn", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("depth", DataType::Int64, false),
        json_field("data"),
        Field::new("edge_from", DataType::Utf8, true),
        Field::new("edge_label", DataType::Utf8, true),
        Field::new("edge_to", DataType::Utf8, true),
        json_field("edge_data"),
        json_field("path"),
    ]))
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

/// A traversal as one batch.
pub fn traverse_batch(t: &Traversed) -> Result<RecordBatch> {
    let mut urn = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut depth = Int64Builder::new();
    let mut data = StringBuilder::new();
    let (mut from, mut label, mut to, mut edge_data) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut path = StringBuilder::new();
    for r in &t.vertices {
        urn.append_value(&r.urn);
        id.append_value(id_of(&r.urn));
        depth.append_value(r.depth as i64);
        data.append_value(json(&r.data));
        match &r.edge {
            Some(e) => {
                from.append_value(&e.from);
                label.append_value(&e.label);
                to.append_value(&e.to);
                edge_data.append_value(json(&e.data));
            }
            None => {
                from.append_null();
                label.append_null();
                to.append_null();
                edge_data.append_null();
            }
        }
        path.append_value(json(&r.path));
    }
    RecordBatch::try_new(
        traverse_schema(),
        vec![
            Arc::new(urn.finish()),
            Arc::new(id.finish()),
            Arc::new(depth.finish()),
            Arc::new(data.finish()),
            Arc::new(from.finish()),
            Arc::new(label.finish()),
            Arc::new(to.finish()),
            Arc::new(edge_data.finish()),
            Arc::new(path.finish()),
        ],
    )
    .map_err(|e| Error::Internal(e.to_string()))
}

/// A path's columns.
pub fn path_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("step", DataType::Int64, false),
        Field::new("urn", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        json_field("data"),
        Field::new("edge_label", DataType::Utf8, true),
        json_field("edge_data"),
        Field::new("distance", DataType::Float64, false),
    ]))
}

/// A path as one batch (empty when there is none).
pub fn path_batch(p: Option<&FoundPath>, weight: Option<&str>) -> Result<RecordBatch> {
    let mut step = Int64Builder::new();
    let mut urn = StringBuilder::new();
    let mut id = StringBuilder::new();
    let mut data = StringBuilder::new();
    let mut label = StringBuilder::new();
    let mut edge_data = StringBuilder::new();
    let mut distance = Float64Builder::new();
    if let Some(p) = p {
        let mut so_far = 0.0;
        for (i, (u, d)) in p.vertices.iter().enumerate() {
            step.append_value(i as i64);
            urn.append_value(u);
            id.append_value(id_of(u));
            data.append_value(json(d));
            if i == 0 {
                label.append_null();
                edge_data.append_null();
            } else {
                let e = &p.edges[i - 1];
                label.append_value(&e.label);
                edge_data.append_value(json(&e.data));
                so_far += weight.map_or(1.0, |w| {
                    e.data.get(w).and_then(|v| v.as_f64()).unwrap_or(0.0)
                });
            }
            distance.append_value(so_far);
        }
    }
    RecordBatch::try_new(
        path_schema(),
        vec![
            Arc::new(step.finish()),
            Arc::new(urn.finish()),
            Arc::new(id.finish()),
            Arc::new(data.finish()),
            Arc::new(label.finish()),
            Arc::new(edge_data.finish()),
            Arc::new(distance.finish()),
        ],
    )
    .map_err(|e| Error::Internal(e.to_string()))
}
