//! The JSON shapes of the HTTP API (DESIGN.md §6): request bodies as clients send them and
//! answers as clients receive them. These types are the contract; the OpenAPI document is
//! generated from them.

use serde::{Deserialize, Serialize};
use themis_log::{Appended, AppendedEvent, EventInput, ExpectedRevision, Position, Token};
use utoipa::ToSchema;

/// `POST /v1/streams/{urn}`: events for one stream.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendStreamBody {
    /// The stream's revision before the first event: `any`, `no_stream` (or -1), `exists`, or N.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = "no_stream")]
    pub expected_revision: Option<ExpectedRevision>,
    /// The events, appended atomically. Each may omit `urn` (the URL names it).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventInput>,
}

/// `POST /v1/events` (JSON): a batch for any streams.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendBatchBody {
    /// The events; each carries its `urn` and may carry `expected_revision`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventInput>,
    /// Split a batch that spans shards into one atomic append per shard, instead of refusing it.
    #[serde(default)]
    pub per_shard_atomicity: bool,
}

/// A log position.
#[derive(Debug, Serialize, ToSchema)]
pub struct PositionBody {
    /// Shard id.
    pub shard: u32,
    /// Log sequence number within the shard.
    pub lsn: u64,
}

impl From<Position> for PositionBody {
    fn from(p: Position) -> Self {
        Self {
            shard: p.shard.0,
            lsn: p.lsn.0,
        }
    }
}

/// Where an appended event sits.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppendedEventBody {
    /// Event id.
    pub id: String,
    /// Its stream.
    pub urn: String,
    /// Its revision in the stream.
    pub revision: u64,
    /// LSN of its entry.
    pub lsn: u64,
    /// Index within the entry.
    pub index: u32,
}

impl From<AppendedEvent> for AppendedEventBody {
    fn from(e: AppendedEvent) -> Self {
        Self {
            id: e.id.to_string(),
            urn: e.urn.to_string(),
            revision: e.revision,
            lsn: e.lsn.0,
            index: e.index,
        }
    }
}

/// The answer to a successful append on one shard.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppendResponse {
    /// The entry holding the events (the original one for a retry).
    pub position: PositionBody,
    /// Consistency token covering the append; pass it as `min_token` to later reads.
    pub token: String,
    /// True when every event id had been appended before: nothing new was written.
    pub duplicate: bool,
    /// The events in request order.
    pub events: Vec<AppendedEventBody>,
}

impl AppendResponse {
    /// The answer for `appended`.
    pub fn new(appended: Appended) -> Self {
        let token = Token::from_position(appended.position).encode();
        Self {
            position: appended.position.into(),
            token,
            duplicate: appended.duplicate,
            events: appended.events.into_iter().map(Into::into).collect(),
        }
    }
}

/// The answer for one part of a request that is answered part by part: a shard's share of a
/// batch, or one line of an NDJSON bulk append.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartResult {
    /// HTTP status of this part (201, or the problem's status).
    pub status: u16,
    /// The append, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<AppendResponse>,
    /// The problem, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

impl PartResult {
    /// A successful part.
    pub fn ok(result: AppendResponse) -> Self {
        Self {
            status: 201,
            result: Some(result),
            error: None,
        }
    }

    /// A failed part.
    pub fn failed(problem: &super::Problem) -> Self {
        Self {
            status: problem.status().as_u16(),
            result: None,
            error: Some(problem.body()),
        }
    }
}

/// One shard's part of a batch answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardResult {
    /// The shard.
    pub shard: u32,
    /// How the part went.
    #[serde(flatten)]
    pub part: PartResult,
}

/// The answer to `POST /v1/events` (JSON).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Token covering every successful part.
    pub token: String,
    /// One result per shard touched, in shard order.
    pub results: Vec<ShardResult>,
}

/// The answer to `POST /v1/write_lp`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteLpResponse {
    /// Token covering every successful part.
    pub token: String,
    /// Lines with points.
    pub lines: usize,
    /// Points appended.
    pub points: usize,
    /// Series touched.
    pub series: usize,
    /// One result per shard touched, in shard order.
    pub results: Vec<ShardResult>,
}

/// A page of a stream (`GET /v1/streams/{urn}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamPageBody {
    /// The stream.
    pub urn: String,
    /// Its current revision.
    pub revision: u64,
    /// Events from `from_revision` on, each with `revision`, `position`, `index` and `ts_ms`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<themis_log::StoredEvent>,
    /// Where the next page starts, when there is more.
    pub next_revision: Option<u64>,
}

/// A page of a shard's committed log (`GET /v1/log/{shard}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPageBody {
    /// The shard.
    pub shard: u32,
    /// The highest LSN applied on this node.
    pub applied_lsn: u64,
    /// Entries from `from_lsn` on.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<themis_log::LogEntryView>,
    /// Where the next page starts, when there is more.
    pub next_lsn: Option<u64>,
}

/// One line of the answer to an NDJSON bulk append.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkItemResult {
    /// Line number in the request, from 0.
    pub index: usize,
    /// How the line went.
    #[serde(flatten)]
    pub part: PartResult,
}

/// `GET /v1/cluster`: the nodes and every shard's replicas as the leaders see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterBody {
    /// `single` (one node, embedded metadata) or `cluster` (metadata in etcd).
    pub mode: &'static str,
    /// The node that answered.
    pub node: u64,
    /// Registered nodes (and nodes whose registration lapsed but that hold replicas).
    pub nodes: Vec<ClusterNodeBody>,
    /// Every shard: leader, term, commit and apply LSNs, replicas with their lag (entries behind
    /// the leader's last LSN); `error` says why the leader could not be asked.
    #[schema(value_type = Vec<Object>)]
    pub shards: Vec<themis_log::ShardStatus>,
    /// The answering node's views: watermark and lag per (view, shard).
    #[schema(value_type = Vec<Object>)]
    pub views: Vec<themis_materializers::ViewStatus>,
}

/// A node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterNodeBody {
    /// Node id.
    pub id: u64,
    /// HTTP API address.
    pub api: String,
    /// Peer address.
    pub peer: String,
}

/// `POST /v1/cluster/move-replica`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveReplicaBody {
    /// The shard.
    pub shard: u32,
    /// The node whose replica leaves.
    pub from: u64,
    /// The node that receives the replica (registered, running).
    pub to: u64,
    /// How long the new replica may take to catch up before the move fails (default 60).
    #[serde(default)]
    pub catch_up_seconds: Option<u64>,
}

/// A resource's current state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceBody {
    /// The resource.
    pub urn: String,
    /// Revision of the last event applied to it.
    pub revision: u64,
    /// Its state.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Where that event is in the log.
    pub position: PositionBody,
    /// Commit timestamp of that event (ms since the Unix epoch).
    pub updated_ms: u64,
    /// The view's watermark as a token: the answer reflects every append it covers.
    pub token: String,
}

/// A view's content digest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ViewDigestBody {
    /// The watermark the digest was taken at.
    pub watermark: u64,
    /// xxh3 of the view's content (hex).
    pub digest: String,
}

/// One view of one shard on this node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ViewBody {
    /// View kind.
    pub view: String,
    /// Shard.
    pub shard: u32,
    /// LSN applied.
    pub watermark: u64,
    /// LSN the shard's replica has applied.
    pub applied: u64,
    /// Entries behind the replica.
    pub lag_entries: u64,
    /// Age of the oldest entry not applied yet (ms; 0 when caught up).
    pub lag_ms: u64,
    /// Entries applied since the node started.
    pub entries_applied: u64,
    /// Entries the view did not apply because their client JSON breaks the rules every view
    /// needs (only entries committed by an older version can), since the view was built.
    pub entries_rejected: u64,
    /// The latest of them, newest first (at most 5).
    pub rejections: Vec<RejectionBody>,
    /// `running`, or `stopped`: the view's worker ended with an error (see `error`); reads of
    /// the view answer 503 `view_stopped` until it is rebuilt or the node restarts.
    pub state: &'static str,
    /// Why a stopped view stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `digest=true` (not for a stopped view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<ViewDigestBody>,
}

/// An entry a view rejected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectionBody {
    /// The entry's LSN.
    pub lsn: u64,
    /// Its commit timestamp (ms since the Unix epoch).
    pub ts_ms: u64,
    /// Which event, which field, which rule.
    pub reason: String,
}

/// The views of this node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ViewsBody {
    /// One per (view, shard).
    pub views: Vec<ViewBody>,
}

/// A rebuild started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildBody {
    /// View kind.
    pub view: String,
    /// Shards whose view is being rebuilt.
    pub shards: Vec<u32>,
}

/// A namespace's declared config.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NamespaceBody {
    /// Model.
    pub model: String,
    /// Namespace.
    pub namespace: String,
    /// Version (the config stream's revision).
    pub version: u64,
    /// The config (`columns` for relational namespaces).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// LSN of the config event in its shard.
    pub lsn: u64,
    /// Commit timestamp of the config event (ms; 0 in the answer to the PUT itself).
    pub updated_ms: u64,
    /// For a change: the token of the config event (wait for it before relying on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Declared namespace configs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NamespacesBody {
    /// Sorted by model and namespace.
    pub namespaces: Vec<NamespaceBody>,
}

/// A query.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One SQL query (`SELECT`, `WITH ... SELECT`, `EXPLAIN`, `VALUES`).
    #[serde(default)]
    pub sql: Option<String>,
    /// A kNN search: `{"namespace", "vector", "k" (default 10), "filter", "ef"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub knn: Option<themis_query::search::KnnArgs>,
    /// A fulltext search: `{"namespace", "query", "k" (default 10)}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub search: Option<themis_query::search::SearchArgs>,
    /// A hybrid search (reciprocal rank fusion): `{"knn": {...}, "search": {...}, "k",
    /// "rrf_k" (default 60), "candidates"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub hybrid: Option<themis_query::search::HybridArgs>,
    /// A time-series range: `{"namespace", "series" | "field" + "tags", "from", "to",
    /// "step", "agg"}` (ms since the epoch; `to` exclusive).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ts_range: Option<themis_query::timeseries::TsRangeArgs>,
    /// A graph traversal: `{"start", "min_depth" (1), "max_depth" (1), "direction"
    /// (outbound | inbound | any), "labels", "limit" (1000)}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub traverse: Option<themis_query::graph::TraverseArgs>,
    /// A shortest path: `{"from", "to", "direction", "labels", "weight"}` (hops without a
    /// weight property).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub shortest_path: Option<themis_query::graph::ShortestPathArgs>,
    /// An AQL query (docs/AQL.md); its answer is `{"result": [...], "count", "has_more",
    /// "cursor", "token"}`.
    #[serde(default)]
    pub aql: Option<String>,
    /// AQL bind parameters: `{"name": value}` for `@name`, `{"@coll": "users"}` for `@@coll`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// AQL: rows per answer (default 1000, at most 100000); more come through `cursor`.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// AQL: run the leading part of a query over relational tables as a DataFusion plan
    /// (default true); `false` interprets everything (the same answer, to compare).
    #[serde(default)]
    pub plans: Option<bool>,
    /// The next batch of an AQL answer: the `cursor` the previous batch gave.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Wait until every view the query reads covers this token.
    #[serde(default)]
    pub min_token: Option<String>,
    /// How long to wait for `min_token` and to run, like `5s` (at most the request timeout).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A column of an answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryColumnBody {
    /// Name.
    pub name: String,
    /// Type: bool, int64, float64, string, timestamp, json, or DataFusion's name of another.
    #[serde(rename = "type")]
    pub column_type: String,
}

/// An answer (`Accept: application/json`, the default).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryAnswerBody {
    /// The columns, in order.
    pub columns: Vec<QueryColumnBody>,
    /// Rows in the answer.
    pub row_count: usize,
    /// The rows, one object per row (column name → value).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
    /// Per shard, the view watermarks the answer reflects (also the `themis-token` header).
    pub token: String,
}

impl QueryBody {
    /// How many of the kinds other than AQL (`sql`, `knn`, `search`, `hybrid`, `ts_range`,
    /// `traverse`, `shortest_path`) the request holds.
    pub fn other_kinds(&self) -> usize {
        [
            self.sql.is_some(),
            self.knn.is_some(),
            self.search.is_some(),
            self.hybrid.is_some(),
            self.ts_range.is_some(),
            self.traverse.is_some(),
            self.shortest_path.is_some(),
        ]
        .iter()
        .filter(|&&k| k)
        .count()
    }
}

/// The problem detail when a query request holds no kind or several.
pub const ONE_QUERY_KIND: &str = "a query is exactly one of `sql`, `aql`, `knn`, `search`, \
     `hybrid`, `ts_range`, `traverse` or `shortest_path` (or a `cursor`)";

/// An AQL answer (one batch).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AqlAnswerBody {
    /// The rows of this batch: JSON values as `RETURN` made them.
    #[schema(value_type = Vec<Object>)]
    pub result: Vec<serde_json::Value>,
    /// Rows of the whole answer.
    pub count: usize,
    /// Whether more batches follow.
    pub has_more: bool,
    /// Send `{"cursor": ...}` to `POST /v1/query` for the next batch (present while
    /// `has_more`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The views' state the whole answer reflects.
    pub token: String,
}
