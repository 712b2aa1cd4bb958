//! The graph view: vertices (`urn:themis:graph:{g}:{id}`, put / patch / delete) and labelled
//! edges with properties (`link` / `unlink` on the source vertex's stream, `to` the target).
//! An edge lives in its source vertex's shard, with an entry in that shard's in-index keyed by
//! the target, so both directions are one prefix scan per shard.
//!
//! Deleting a vertex removes its out-edges and the in-edges stored in its own shard at once.
//! In-edges stored in other shards cannot be touched by this shard's log (shards have no
//! common order), so reads apply one rule everywhere: **an edge is visible while both its
//! endpoints exist and neither was (re)created after the edge was linked** (by commit time,
//! ms; a vertex's `born_ms` is the commit time of the put or patch that created it last). A
//! deleted and re-created vertex therefore starts without the edges other shards kept for it.
//!
//! Tables per shard: `g_v/{shard}`: URN → JSON of [`Vertex`]; `g_out/{shard}`:
//! `"{from}\0{label}\0{to}"` → JSON of [`EdgeState`]; `g_in/{shard}`: `"{to}\0{label}\0{from}"`
//! → empty.
//!
//! Reads ([`Graph`]) run in one read transaction of the views database, which holds every
//! shard's view: a traversal that crosses shards sees one consistent state.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use themis_log::event::Op;
use themis_log::{CommittedEntry, Model, ShardId, Urn};

use crate::document::{event_data, merge_patch};
use crate::{Error, Result, View, get_json, read_table, storage, table};

/// The kind name.
pub const KIND: &str = "graph";

/// A vertex's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vertex {
    /// Its properties.
    pub data: Value,
    /// Revision of the last event applied to it.
    pub revision: u64,
    /// Commit time of the event that created it last (ms).
    pub born_ms: u64,
}

/// An edge's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeState {
    /// Its properties (`{}` when the link had none).
    pub data: Value,
    /// Commit time of its link (ms).
    pub linked_ms: u64,
}

/// An edge as reads return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// Source vertex.
    pub from: String,
    /// Label.
    pub label: String,
    /// Target vertex.
    pub to: String,
    /// Properties.
    pub data: Value,
}

/// Which edges a traversal follows from a vertex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Edges leaving the vertex.
    Outbound,
    /// Edges arriving at the vertex.
    Inbound,
    /// Both.
    Any,
}

impl Direction {
    /// Parses `outbound`/`out`, `inbound`/`in` or `any`.
    pub fn parse(text: &str) -> Option<Direction> {
        Some(match text.to_ascii_lowercase().as_str() {
            "outbound" | "out" => Direction::Outbound,
            "inbound" | "in" => Direction::Inbound,
            "any" | "both" => Direction::Any,
            _ => return None,
        })
    }
}

/// Deepest traversal.
pub const DEPTH_MAX: usize = 16;
/// Most vertices one traversal returns.
pub const RESULTS_MAX: usize = 100_000;

/// A traversal ([`Graph::traverse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Traversal {
    /// The start vertex.
    pub start: Urn,
    /// Vertices nearer than this are not returned (0 returns the start).
    pub min_depth: usize,
    /// Vertices farther than this are not visited.
    pub max_depth: usize,
    /// Which edges to follow.
    pub direction: Direction,
    /// Only edges with one of these labels (all when empty).
    pub labels: Vec<String>,
    /// Most vertices returned.
    pub limit: usize,
}

/// A vertex a traversal reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reached {
    /// The vertex.
    pub urn: String,
    /// Its properties.
    pub data: Value,
    /// Hops from the start.
    pub depth: usize,
    /// The edge it was first reached by (`None` for the start).
    pub edge: Option<Edge>,
    /// The vertices from the start to it.
    pub path: Vec<String>,
}

/// A traversal's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Traversed {
    /// In breadth-first order (by depth; within a depth, in the order they were reached, each
    /// vertex's edges in (label, other vertex) order).
    pub vertices: Vec<Reached>,
    /// Whether `limit` cut the answer.
    pub truncated: bool,
}

/// A shortest-path search ([`Graph::shortest_path`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PathSearch {
    /// From this vertex.
    pub from: Urn,
    /// To this one.
    pub to: Urn,
    /// Which edges to follow.
    pub direction: Direction,
    /// Only edges with one of these labels (all when empty).
    pub labels: Vec<String>,
    /// A numeric edge property to minimise the sum of (Dijkstra); hops when `None`.
    pub weight: Option<String>,
}

/// A path: the vertices and the edges between them, and its length.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FoundPath {
    /// From the start to the end.
    pub vertices: Vec<(String, Value)>,
    /// `edges[i]` joins `vertices[i]` and `vertices[i + 1]`.
    pub edges: Vec<Edge>,
    /// Hops, or the sum of the weights.
    pub distance: f64,
}

fn names(shard: ShardId) -> [String; 3] {
    [
        format!("g_v/{}", shard.0),
        format!("g_out/{}", shard.0),
        format!("g_in/{}", shard.0),
    ]
}

fn edge_key(a: &str, label: &str, b: &str) -> String {
    format!("{a}\0{label}\0{b}")
}

/// The view.
#[derive(Debug, Clone, Copy, Default)]
pub struct GraphView;

impl GraphView {
    fn remove_vertex_edges(&self, tx: &WriteTransaction, shard: ShardId, urn: &str) -> Result<()> {
        let [_, out_name, in_name] = names(shard);
        let mut out = tx.open_table(table(&out_name)).map_err(storage)?;
        let mut inn = tx.open_table(table(&in_name)).map_err(storage)?;
        let (lo, hi) = (format!("{urn}\0"), format!("{urn}\u{1}"));
        let outs: Vec<String> = out
            .range(lo.as_str()..hi.as_str())
            .map_err(storage)?
            .map(|i| i.map(|(k, _)| k.value().to_owned()).map_err(storage))
            .collect::<Result<_>>()?;
        for k in outs {
            out.remove(k.as_str()).map_err(storage)?;
            if let [from, label, to] = k.split('\0').collect::<Vec<_>>()[..] {
                inn.remove(edge_key(to, label, from).as_str())
                    .map_err(storage)?;
            }
        }
        let ins: Vec<String> = inn
            .range(lo.as_str()..hi.as_str())
            .map_err(storage)?
            .map(|i| i.map(|(k, _)| k.value().to_owned()).map_err(storage))
            .collect::<Result<_>>()?;
        for k in ins {
            inn.remove(k.as_str()).map_err(storage)?;
            if let [to, label, from] = k.split('\0').collect::<Vec<_>>()[..] {
                out.remove(edge_key(from, label, to).as_str())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Every vertex of `shard` (URN, vertex), in URN order.
    pub fn vertices(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(String, Vertex)>> {
        crate::all_json(tx, &names(shard)[0])
    }

    /// Every edge stored in `shard` (out-edges of its vertices), in (from, label, to) order.
    pub fn edges(&self, tx: &ReadTransaction, shard: ShardId) -> Result<Vec<(Edge, EdgeState)>> {
        Ok(crate::all_json::<EdgeState>(tx, &names(shard)[1])?
            .into_iter()
            .filter_map(|(k, state)| {
                let mut parts = k.splitn(3, '\0');
                let (from, label, to) = (parts.next()?, parts.next()?, parts.next()?);
                Some((
                    Edge {
                        from: from.to_owned(),
                        label: label.to_owned(),
                        to: to.to_owned(),
                        data: state.data.clone(),
                    },
                    state,
                ))
            })
            .collect())
    }
}

impl View for GraphView {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn apply(&self, tx: &WriteTransaction, shard: ShardId, entry: &CommittedEntry) -> Result<()> {
        let [v_name, out_name, in_name] = names(shard);
        for e in &entry.events {
            let event = &e.event;
            if event.urn.model() != Model::Graph
                || event.urn.namespace() == themis_log::event::CONFIG_NAMESPACE
            {
                continue;
            }
            let urn = event.urn.as_str();
            match event.op {
                Op::Put | Op::Patch => {
                    let mut vertices = tx.open_table(table(&v_name)).map_err(storage)?;
                    let previous: Option<Vertex> = vertices
                        .get(urn)
                        .map_err(storage)?
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()
                        .map_err(storage)?;
                    let born_ms = previous.as_ref().map_or(entry.ts_ms, |v| v.born_ms);
                    let data = if event.op == Op::Put {
                        event_data(event)?
                    } else {
                        let mut state = previous
                            .map(|v| v.data)
                            .unwrap_or_else(|| Value::Object(Default::default()));
                        merge_patch(&mut state, &event_data(event)?);
                        state
                    };
                    let vertex = Vertex {
                        data,
                        revision: e.revision,
                        born_ms,
                    };
                    vertices
                        .insert(
                            urn,
                            serde_json::to_vec(&vertex).map_err(storage)?.as_slice(),
                        )
                        .map_err(storage)?;
                }
                Op::Delete => {
                    {
                        let mut vertices = tx.open_table(table(&v_name)).map_err(storage)?;
                        vertices.remove(urn).map_err(storage)?;
                    }
                    self.remove_vertex_edges(tx, shard, urn)?;
                }
                Op::Link | Op::Unlink => {
                    let (Some(to), Some(label)) = (&event.to, &event.label) else {
                        continue; // refused before the log
                    };
                    let mut out = tx.open_table(table(&out_name)).map_err(storage)?;
                    let mut inn = tx.open_table(table(&in_name)).map_err(storage)?;
                    let key = edge_key(urn, label, to.as_str());
                    let back = edge_key(to.as_str(), label, urn);
                    if event.op == Op::Link {
                        let state = EdgeState {
                            data: event_data(event)?,
                            linked_ms: entry.ts_ms,
                        };
                        out.insert(
                            key.as_str(),
                            serde_json::to_vec(&state).map_err(storage)?.as_slice(),
                        )
                        .map_err(storage)?;
                        inn.insert(back.as_str(), &[][..]).map_err(storage)?;
                    } else {
                        out.remove(key.as_str()).map_err(storage)?;
                        inn.remove(back.as_str()).map_err(storage)?;
                    }
                }
                Op::Points => {}
            }
        }
        Ok(())
    }

    fn clear(&self, tx: &WriteTransaction, shard: ShardId) -> Result<()> {
        crate::clear_tables(tx, &names(shard))
    }

    fn digest(&self, tx: &ReadTransaction, shard: ShardId) -> Result<u64> {
        crate::digest_tables(tx, &names(shard))
    }
}

/// Reads of the graph over every shard, in one read transaction.
pub struct Graph<'a> {
    tx: &'a ReadTransaction,
    placement: &'a themis_log::Ring,
    shards: u32,
    vertices: std::cell::RefCell<BTreeMap<String, Option<Vertex>>>,
}

impl std::fmt::Debug for Graph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<'a> Graph<'a> {
    /// Reads in `tx`; vertices are placed by the ring `placement` over `shards` shards.
    pub fn new(tx: &'a ReadTransaction, placement: &'a themis_log::Ring, shards: u32) -> Self {
        Graph {
            tx,
            placement,
            shards,
            vertices: Default::default(),
        }
    }

    /// Vertex `urn`, if it exists.
    pub fn vertex(&self, urn: &str) -> Result<Option<Vertex>> {
        if let Some(v) = self.vertices.borrow().get(urn) {
            return Ok(v.clone());
        }
        let parsed = Urn::parse(urn).map_err(|e| Error::InvalidSearch(e.to_string()))?;
        let shard = self.placement.shard_for_urn(&parsed);
        let v: Option<Vertex> = get_json(self.tx, &names(shard)[0], urn)?;
        self.vertices.borrow_mut().insert(urn.to_owned(), v.clone());
        Ok(v)
    }

    /// The visible edges at `urn` in `direction` with one of `labels` (all when empty), as
    /// (edge, the vertex at the other end), in (label, other end) order per direction.
    pub fn edges(
        &self,
        urn: &str,
        direction: Direction,
        labels: &[String],
    ) -> Result<Vec<(Edge, String)>> {
        let Some(here) = self.vertex(urn)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let wanted = |label: &str| labels.is_empty() || labels.iter().any(|l| l == label);
        let prefix = format!("{urn}\0");
        if matches!(direction, Direction::Outbound | Direction::Any) {
            let parsed = Urn::parse(urn).map_err(|e| Error::InvalidSearch(e.to_string()))?;
            let shard = self.placement.shard_for_urn(&parsed);
            if let Some(t) = read_table(self.tx, &names(shard)[1])? {
                for item in t.range(prefix.as_str()..).map_err(storage)? {
                    let (k, v) = item.map_err(storage)?;
                    let Some(rest) = k.value().strip_prefix(&prefix) else {
                        break;
                    };
                    let Some((label, to)) = rest.split_once('\0') else {
                        continue;
                    };
                    if !wanted(label) {
                        continue;
                    }
                    let state: EdgeState = serde_json::from_slice(v.value()).map_err(storage)?;
                    if self.visible(&here, to, state.linked_ms)? {
                        out.push((
                            Edge {
                                from: urn.to_owned(),
                                label: label.to_owned(),
                                to: to.to_owned(),
                                data: state.data,
                            },
                            to.to_owned(),
                        ));
                    }
                }
            }
        }
        if matches!(direction, Direction::Inbound | Direction::Any) {
            let mut found = Vec::new();
            for s in 0..self.shards {
                let shard = ShardId(s);
                let Some(inn) = read_table(self.tx, &names(shard)[2])? else {
                    continue;
                };
                let Some(edges) = read_table(self.tx, &names(shard)[1])? else {
                    continue;
                };
                for item in inn.range(prefix.as_str()..).map_err(storage)? {
                    let (k, _) = item.map_err(storage)?;
                    let Some(rest) = k.value().strip_prefix(&prefix) else {
                        break;
                    };
                    let Some((label, from)) = rest.split_once('\0') else {
                        continue;
                    };
                    if !wanted(label) {
                        continue;
                    }
                    let Some(v) = edges
                        .get(edge_key(from, label, urn).as_str())
                        .map_err(storage)?
                    else {
                        continue;
                    };
                    let state: EdgeState = serde_json::from_slice(v.value()).map_err(storage)?;
                    if self.visible(&here, from, state.linked_ms)? {
                        found.push((
                            Edge {
                                from: from.to_owned(),
                                label: label.to_owned(),
                                to: urn.to_owned(),
                                data: state.data,
                            },
                            from.to_owned(),
                        ));
                    }
                }
            }
            found.sort_by(|a, b| (&a.0.label, &a.1).cmp(&(&b.0.label, &b.1)));
            out.extend(found);
        }
        Ok(out)
    }

    /// The edge rule: both ends exist, neither was created after the link.
    fn visible(&self, here: &Vertex, other: &str, linked_ms: u64) -> Result<bool> {
        Ok(
            here.born_ms <= linked_ms
                && self.vertex(other)?.is_some_and(|v| v.born_ms <= linked_ms),
        )
    }

    /// Breadth-first from `t.start`, each vertex once (at its smallest depth).
    pub fn traverse(&self, t: &Traversal) -> Result<Traversed> {
        if t.min_depth > t.max_depth || t.max_depth > DEPTH_MAX {
            return Err(Error::InvalidSearch(format!(
                "depths must satisfy 0 <= min ({}) <= max ({}) <= {DEPTH_MAX}",
                t.min_depth, t.max_depth
            )));
        }
        if t.limit == 0 || t.limit > RESULTS_MAX {
            return Err(Error::InvalidSearch(format!(
                "limit must be 1 to {RESULTS_MAX}, not {}",
                t.limit
            )));
        }
        let mut answer = Traversed::default();
        let start = t.start.as_str().to_owned();
        let Some(v) = self.vertex(&start)? else {
            return Ok(answer);
        };
        // vertex → (depth, edge it was reached by, predecessor)
        let mut seen: BTreeMap<String, (usize, Option<Edge>, Option<String>)> = BTreeMap::new();
        seen.insert(start.clone(), (0, None, None));
        let mut queue = VecDeque::from([(start.clone(), 0usize)]);
        let path_of = |seen: &BTreeMap<String, (usize, Option<Edge>, Option<String>)>,
                       urn: &str| {
            let mut path = vec![urn.to_owned()];
            let mut at = urn.to_owned();
            while let Some((_, _, Some(prev))) = seen.get(&at) {
                path.push(prev.clone());
                at = prev.clone();
            }
            path.reverse();
            path
        };
        if t.min_depth == 0 {
            answer.vertices.push(Reached {
                urn: start.clone(),
                data: v.data,
                depth: 0,
                edge: None,
                path: vec![start.clone()],
            });
        }
        while let Some((urn, depth)) = queue.pop_front() {
            if depth == t.max_depth {
                continue;
            }
            for (edge, next) in self.edges(&urn, t.direction, &t.labels)? {
                if seen.contains_key(&next) {
                    continue;
                }
                seen.insert(
                    next.clone(),
                    (depth + 1, Some(edge.clone()), Some(urn.clone())),
                );
                queue.push_back((next.clone(), depth + 1));
                if depth + 1 >= t.min_depth {
                    if answer.vertices.len() == t.limit {
                        answer.truncated = true;
                        return Ok(answer);
                    }
                    let data = self.vertex(&next)?.map_or(Value::Null, |v| v.data);
                    answer.vertices.push(Reached {
                        urn: next.clone(),
                        data,
                        depth: depth + 1,
                        edge: Some(edge),
                        path: path_of(&seen, &next),
                    });
                }
            }
        }
        Ok(answer)
    }

    /// The shortest path by hops (breadth-first) or by the sum of a numeric edge property
    /// (Dijkstra; the property must be a finite number ≥ 0 on every edge followed). Ties go
    /// to the path found first in (label, vertex) order. `None` when `to` is unreachable.
    pub fn shortest_path(&self, p: &PathSearch) -> Result<Option<FoundPath>> {
        let (from, to) = (p.from.as_str(), p.to.as_str());
        if self.vertex(from)?.is_none() || self.vertex(to)?.is_none() {
            return Ok(None);
        }
        // vertex → (distance, edge it was reached by, predecessor)
        let mut best: BTreeMap<String, (f64, Option<Edge>, Option<String>)> = BTreeMap::new();
        best.insert(from.to_owned(), (0.0, None, None));
        let mut done: BTreeSet<String> = BTreeSet::new();
        // Max-heap of (negated distance, order of insertion reversed) for a deterministic
        // min-first order.
        let mut heap: BinaryHeap<(Ordered, std::cmp::Reverse<u64>, String)> = BinaryHeap::new();
        let mut pushed = 0u64;
        heap.push((Ordered(-0.0), std::cmp::Reverse(0), from.to_owned()));
        while let Some((Ordered(neg), _, urn)) = heap.pop() {
            if !done.insert(urn.clone()) {
                continue;
            }
            if urn == to {
                break;
            }
            let here = -neg;
            for (edge, next) in self.edges(&urn, p.direction, &p.labels)? {
                if done.contains(&next) {
                    continue;
                }
                let w = match &p.weight {
                    None => 1.0,
                    Some(name) => weight(&edge, name)?,
                };
                let d = here + w;
                if best.get(&next).is_none_or(|(old, _, _)| d < *old) {
                    best.insert(next.clone(), (d, Some(edge), Some(urn.clone())));
                    pushed += 1;
                    heap.push((Ordered(-d), std::cmp::Reverse(pushed), next));
                }
            }
        }
        let Some((distance, _, _)) = best.get(to).cloned() else {
            return Ok(None);
        };
        let mut vertices = Vec::new();
        let mut edges = Vec::new();
        let mut at = to.to_owned();
        loop {
            let (_, edge, prev) = best.get(&at).cloned().expect("on the path");
            let data = self.vertex(&at)?.map_or(Value::Null, |v| v.data);
            vertices.push((at.clone(), data));
            match (edge, prev) {
                (Some(e), Some(prev)) => {
                    edges.push(e);
                    at = prev;
                }
                _ => break,
            }
        }
        vertices.reverse();
        edges.reverse();
        Ok(Some(FoundPath {
            vertices,
            edges,
            distance,
        }))
    }
}

/// An f64 ordered totally (distances are finite).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f64);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn weight(edge: &Edge, name: &str) -> Result<f64> {
    let w = edge.data.get(name).and_then(Value::as_f64);
    match w {
        Some(w) if w.is_finite() && w >= 0.0 => Ok(w),
        _ => Err(Error::InvalidSearch(format!(
            "edge {} -[{}]-> {} has no weight {name:?} that is a number >= 0 (it has {})",
            edge.from,
            edge.label,
            edge.to,
            edge.data
                .get(name)
                .map_or("none".to_owned(), Value::to_string)
        ))),
    }
}
