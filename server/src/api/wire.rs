//! The JSON shapes of the HTTP API (DESIGN.md §6): request bodies as clients send them and
//! answers as clients receive them. These types are the contract; the OpenAPI document is
//! generated from them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use themis_log::{Appended, AppendedEvent, EventInput, ExpectedRevision, Position, Token};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// `POST /v1/streams/{urn}`: events for one stream.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"expected_revision": "any", "events": [
    {"type": "UserRegistered", "op": "put", "data": {"name": "Alice"}}
]}))]
pub struct AppendStreamBody {
    /// The stream's revision before the first event: `any`, `no_stream` (or -1), `exists`, or N.
    #[serde(default)]
    #[schema(value_type = Option<ExpectedRevisionSchema>)]
    pub expected_revision: Option<ExpectedRevision>,
    /// The events, appended atomically. Each may omit `urn` (the URL names it).
    #[schema(value_type = Vec<EventInputSchema>, min_items = 1)]
    pub events: Vec<EventInput>,
}

/// `POST /v1/events` (JSON): a batch for any streams.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"per_shard_atomicity": true, "events": [
    {"urn": "urn:themis:document:users:alice", "op": "patch", "data": {"age": 31}},
    {"urn": "urn:themis:graph:social:alice", "op": "link", "to": "urn:themis:graph:social:bob",
     "label": "follows"},
    {"urn": "urn:themis:timeseries:cpu:load", "op": "points", "points": [[1_700_000_000_000_i64, 0.5]]}
]}))]
pub struct AppendBatchBody {
    /// The events; each carries its `urn` and may carry `expected_revision`.
    #[schema(value_type = Vec<EventInputSchema>, min_items = 1)]
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
    #[schema(value_type = Option<super::ProblemBody>)]
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

/// A query (its schema, `QueryRequest`, is written by hand: exactly one kind).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One SQL query (`SELECT`, `WITH ... SELECT`, `EXPLAIN`, `VALUES`).
    #[serde(default)]
    pub sql: Option<String>,
    /// A kNN search: `{"namespace", "vector", "k" (default 10), "filter", "ef"}`.
    #[serde(default)]
    pub knn: Option<themis_query::search::KnnArgs>,
    /// A fulltext search: `{"namespace", "query", "k" (default 10)}`.
    #[serde(default)]
    pub search: Option<themis_query::search::SearchArgs>,
    /// A hybrid search (reciprocal rank fusion): `{"knn": {...}, "search": {...}, "k",
    /// "rrf_k" (default 60), "candidates"}`.
    #[serde(default)]
    pub hybrid: Option<themis_query::search::HybridArgs>,
    /// A time-series range: `{"namespace", "series" | "field" + "tags", "from", "to",
    /// "step", "agg"}` (ms since the epoch; `to` exclusive).
    #[serde(default)]
    pub ts_range: Option<themis_query::timeseries::TsRangeArgs>,
    /// A graph traversal: `{"start", "min_depth" (1), "max_depth" (1), "direction"
    /// (outbound | inbound | any), "labels", "limit" (1000)}`.
    #[serde(default)]
    pub traverse: Option<themis_query::graph::TraverseArgs>,
    /// A shortest path: `{"from", "to", "direction", "labels", "weight"}` (hops without a
    /// weight property).
    #[serde(default)]
    pub shortest_path: Option<themis_query::graph::ShortestPathArgs>,
    /// An AQL query (docs/AQL.md); its answer is `{"result": [...], "count", "has_more",
    /// "cursor", "token"}`.
    #[serde(default)]
    pub aql: Option<String>,
    /// AQL bind parameters: `{"name": value}` for `@name`, `{"@coll": "users"}` for `@@coll`.
    #[serde(default)]
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

/// `wait`: when an append is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// Once the entry is committed and applied by the log's state machine (the default).
    #[default]
    Committed,
    /// Also once this node's views have applied it, so a read of a view through this node
    /// without a token sees it.
    Applied,
}

/// `precision`: the unit of line-protocol timestamps, as documented (the values
/// `lp::Precision::parse` accepts, which also takes `n` and `u` as InfluxDB 1 does).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Precision {
    /// Nanoseconds (the default).
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

/// `consistency` of a stream read: `linearizable` (the default) reflects every append
/// acknowledged before it; `stale` answers from this node's replica at once and reports how far
/// it may lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadConsistency {
    /// Reflects every append acknowledged before the read.
    #[default]
    Linearizable,
    /// This node's replica as it is.
    Stale,
}

// Schemas written by hand: the grammar of values whose Rust types live in other crates
// (`themis_log::Urn`, `EventInput`, `ExpectedRevision`) or whose rules serde does not show
// (a query is exactly one of its kinds). Each is a component named by `ToSchema::name`.

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// An integer of at least `minimum`.
fn at_least(minimum: i64) -> ObjectBuilder {
    integer().minimum(Some(minimum))
}

fn number() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
}

fn array(items: impl Into<RefOr<Schema>>) -> ArrayBuilder {
    ArrayBuilder::new().items(ArrayItems::RefOrSchema(Box::new(items.into())))
}

/// A JSON object with any members.
fn any_object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// An object with exactly the listed members (serde's `deny_unknown_fields`).
fn closed_object() -> ObjectBuilder {
    any_object().additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// The grammar of `themis_log::Urn`: `urn:themis:{model}:{namespace}:{id}`, the namespace 1 to
/// 64 characters of `[a-z0-9_.-]` but `.` and `..`, the id 1 to 256 RFC 3986 unreserved characters. (The log
/// may refuse more, such as reserved namespace names; this pattern never admits less.)
pub fn urn_pattern(models: &[themis_log::Model]) -> String {
    let models: Vec<&str> = models.iter().map(|m| m.as_str()).collect();
    format!(
        "^urn:themis:({}):{}:{}$",
        models.join("|"),
        namespace_class(),
        id_class()
    )
}

/// 1 to 64 characters of `[a-z0-9_.-]` but `.` and `..` (without lookahead, which not every
/// validator has): no dot first, one dot then a non-dot, or two dots then anything.
fn namespace_class() -> String {
    let max = themis_log::urn::NAMESPACE_LEN_MAX;
    format!(
        "(?:[a-z0-9_-][a-z0-9_.-]{{0,{}}}|\\.[a-z0-9_-][a-z0-9_.-]{{0,{}}}|\\.\\.[a-z0-9_.-]{{1,{}}})",
        max - 1,
        max - 2,
        max - 2
    )
}

fn id_class() -> String {
    format!("[A-Za-z0-9._~-]{{1,{}}}", themis_log::urn::ID_LEN_MAX)
}

/// A resource name of any model (component `Urn`).
#[derive(Debug)]
pub struct UrnText;

impl PartialSchema for UrnText {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some(urn_pattern(&themis_log::Model::ALL)))
            .description(Some("urn:themis:{model}:{namespace}:{id}"))
            .examples(["urn:themis:document:users:alice"])
            .into()
    }
}

impl ToSchema for UrnText {
    fn name() -> Cow<'static, str> {
        "Urn".into()
    }
}

/// A document resource's name (component `DocumentUrn`): `GET /v1/resources/{urn}` reads the
/// document view only.
#[derive(Debug)]
pub struct DocumentUrnText;

impl PartialSchema for DocumentUrnText {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some(urn_pattern(&[themis_log::Model::Document])))
            .examples(["urn:themis:document:users:alice"])
            .into()
    }
}

impl ToSchema for DocumentUrnText {
    fn name() -> Cow<'static, str> {
        "DocumentUrn".into()
    }
}

/// A data model's name (component `Model`).
#[derive(Debug)]
pub struct ModelName;

impl PartialSchema for ModelName {
    fn schema() -> RefOr<Schema> {
        string()
            .enum_values(Some(themis_log::Model::ALL.map(|m| m.as_str())))
            .into()
    }
}

impl ToSchema for ModelName {
    fn name() -> Cow<'static, str> {
        "Model".into()
    }
}

/// A namespace's name as a URL names it (component `Namespace`): names starting with `_` are
/// reserved for the database.
#[derive(Debug)]
pub struct NamespaceName;

impl PartialSchema for NamespaceName {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some(format!(
                "^(?:[a-z0-9-][a-z0-9_.-]{{0,{}}}|\\.[a-z0-9_-][a-z0-9_.-]{{0,{}}}|\\.\\.[a-z0-9_.-]{{1,{}}})$",
                themis_log::urn::NAMESPACE_LEN_MAX - 1,
                themis_log::urn::NAMESPACE_LEN_MAX - 2,
                themis_log::urn::NAMESPACE_LEN_MAX - 2
            )))
            .into()
    }
}

impl ToSchema for NamespaceName {
    fn name() -> Cow<'static, str> {
        "Namespace".into()
    }
}

/// A consistency token, `t1.` and base64url (component `Token`).
#[derive(Debug)]
pub struct TokenText;

impl PartialSchema for TokenText {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some("^t1\\.[A-Za-z0-9_-]*$"))
            .description(Some("a consistency token from an earlier answer"))
            .into()
    }
}

impl ToSchema for TokenText {
    fn name() -> Cow<'static, str> {
        "Token".into()
    }
}

/// A duration as `themis_log::units::parse_duration` reads it, not zero: a number and `ms`, `s`
/// (the default), `m` or `h` (component `Duration`).
#[derive(Debug)]
pub struct DurationText;

impl PartialSchema for DurationText {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some("^0*[1-9][0-9]{0,11}(ms|s|m|h)?$"))
            .examples(["500ms", "5s"])
            .into()
    }
}

impl ToSchema for DurationText {
    fn name() -> Cow<'static, str> {
        "Duration".into()
    }
}

/// A consumer group's name: a URN id (component `ConsumerGroup`).
#[derive(Debug)]
pub struct GroupName;

impl PartialSchema for GroupName {
    fn schema() -> RefOr<Schema> {
        string().pattern(Some(format!("^{}$", id_class()))).into()
    }
}

impl ToSchema for GroupName {
    fn name() -> Cow<'static, str> {
        "ConsumerGroup".into()
    }
}

/// `themis_log::ExpectedRevision` (component `ExpectedRevision`).
#[derive(Debug)]
pub struct ExpectedRevisionSchema;

impl PartialSchema for ExpectedRevisionSchema {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                string()
                    .enum_values(Some(["any", "no_stream", "exists"]))
                    .description(Some(
                        "any: no check; no_stream: the stream has no events; exists: it has some",
                    )),
            )
            .item(at_least(-1).description(Some(
                "the stream's exact revision before the first event (-1: no_stream)",
            )))
            .description(Some(
                "the revision the stream must have just before the events",
            ))
            .into()
    }
}

impl ToSchema for ExpectedRevisionSchema {
    fn name() -> Cow<'static, str> {
        "ExpectedRevision".into()
    }
}

/// `themis_log::EventInput`: an event as a client sends it (component `EventInput`).
#[derive(Debug)]
pub struct EventInputSchema;

impl PartialSchema for EventInputSchema {
    fn schema() -> RefOr<Schema> {
        let limits = themis_log::EventLimits::default();
        let point = ArrayBuilder::new()
            .items(ArrayItems::False)
            .prefix_items([Schema::from(integer()), Schema::from(number())])
            .min_items(Some(2))
            .max_items(Some(2))
            .description(Some("[ts_ms, value]"));
        closed_object()
            .property(
                "id",
                string()
                    .format(Some(SchemaFormat::Custom("uuid".into())))
                    .description(Some("idempotency id; the server draws one when absent")),
            )
            .property("urn", reference::<UrnText>())
            .property(
                "type",
                string()
                    .min_length(Some(1))
                    .max_length(Some(limits.type_chars_max))
                    .description(Some("application event type (default: the op)")),
            )
            .property(
                "op",
                string().enum_values(Some(themis_log::event::Op::ALL.map(|o| o.as_str()))),
            )
            .property(
                "data",
                any_object().description(Some(
                    "put: the state; patch: a merge patch; link: edge properties",
                )),
            )
            .property(
                "vector",
                array(number())
                    .min_items(Some(1))
                    .max_items(Some(limits.vector_dims_max))
                    .description(Some("vector put")),
            )
            .property("to", reference::<UrnText>())
            .property(
                "label",
                string()
                    .min_length(Some(1))
                    .max_length(Some(limits.label_chars_max))
                    .description(Some("link, unlink: the edge label")),
            )
            .property(
                "points",
                array(point)
                    .min_items(Some(1))
                    .max_items(Some(limits.points_max))
                    .description(Some("points: [[ts_ms, value], ...]")),
            )
            .property("metadata", any_object())
            .property("expected_revision", reference::<ExpectedRevisionSchema>())
            .required("op")
            .into()
    }
}

impl ToSchema for EventInputSchema {
    fn name() -> Cow<'static, str> {
        "EventInput".into()
    }
}

/// `QueryBody` as it is accepted: exactly one kind, with `min_token` and `timeout` beside it
/// (component `QueryRequest`).
#[derive(Debug)]
pub struct QueryRequestSchema;

impl PartialSchema for QueryRequestSchema {
    fn schema() -> RefOr<Schema> {
        let direction = || string().enum_values(Some(["outbound", "inbound", "any"]));
        let labels = || array(string());
        let knn = || {
            closed_object()
                .property("namespace", string())
                .property("vector", array(number()).min_items(Some(1)))
                .property("k", at_least(0))
                .property("filter", any_object())
                .property("ef", at_least(0))
                .required("namespace")
                .required("vector")
        };
        let search = || {
            closed_object()
                .property("namespace", string())
                .property("query", string())
                .property("k", at_least(0))
                .required("namespace")
                .required("query")
        };
        let hybrid = closed_object()
            .property("knn", knn())
            .property("search", search())
            .property("k", at_least(0))
            .property("rrf_k", number())
            .property("candidates", at_least(0))
            .required("knn")
            .required("search");
        let ts_range = closed_object()
            .property("namespace", string())
            .property("series", string())
            .property("field", string())
            .property(
                "tags",
                any_object()
                    .additional_properties(Some(AdditionalProperties::RefOr(string().into()))),
            )
            .property("from", integer())
            .property("to", integer())
            .property("step", integer())
            .property(
                "agg",
                string().enum_values(Some(["min", "max", "avg", "sum", "count", "first", "last"])),
            )
            .required("namespace")
            .required("from")
            .required("to");
        let traverse = closed_object()
            .property("start", reference::<UrnText>())
            .property("min_depth", at_least(0))
            .property("max_depth", at_least(0))
            .property("direction", direction())
            .property("labels", labels())
            .property("limit", at_least(0))
            .required("start");
        let shortest_path = closed_object()
            .property("from", reference::<UrnText>())
            .property("to", reference::<UrnText>())
            .property("direction", direction())
            .property("labels", labels())
            .property("weight", string())
            .required("from")
            .required("to");
        // Every kind takes `min_token` and `timeout` beside it.
        let kind = |name: &str, schema: RefOr<Schema>, description: &str| {
            closed_object()
                .title(Some(name))
                .description(Some(description))
                .examples(query_example(name))
                .property(name, schema)
                .property("min_token", reference::<TokenText>())
                .property("timeout", reference::<DurationText>())
                .required(name)
        };
        let aql = kind(
            "aql",
            string().into(),
            "an AQL query (docs/AQL.md), answered in batches",
        )
        .property(
            "params",
            any_object().description(Some(
                "bind parameters: {\"name\": value, \"@coll\": \"users\"}",
            )),
        )
        .property("batch_size", at_least(1).maximum(Some(100_000)))
        .property("plans", ObjectBuilder::new().schema_type(Type::Boolean));
        OneOfBuilder::new()
            .item(kind("sql", string().into(), "one SQL query"))
            .item(aql)
            .item(kind(
                "cursor",
                string().min_length(Some(1)).into(),
                "the next batch of an AQL answer",
            ))
            .item(kind("knn", knn().into(), "a nearest-neighbour search"))
            .item(kind("search", search().into(), "a fulltext search"))
            .item(kind(
                "hybrid",
                hybrid.into(),
                "kNN and fulltext fused by reciprocal rank",
            ))
            .item(kind("traverse", traverse.into(), "a graph traversal"))
            .item(kind(
                "shortest_path",
                shortest_path.into(),
                "a shortest path",
            ))
            .item(kind("ts_range", ts_range.into(), "a time-series range"))
            .description(Some(ONE_QUERY_KIND))
            .into()
    }
}

impl ToSchema for QueryRequestSchema {
    fn name() -> Cow<'static, str> {
        "QueryRequest".into()
    }
}

/// An example of each query kind, over the data of docs/API.md's examples.
fn query_example(kind: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    let example = match kind {
        "sql" => json!({"sql": "SELECT id, total FROM orders WHERE total > 1 ORDER BY id"}),
        "aql" => {
            json!({"aql": "FOR u IN users FILTER u.age > @age RETURN u", "params": {"age": 18}})
        }
        "cursor" => return Vec::new(),
        "knn" => json!({"knn": {"namespace": "items", "vector": [1.0, 0.0, 0.0], "k": 5}}),
        "search" => json!({"search": {"namespace": "notes", "query": "alice", "k": 5}}),
        "hybrid" => json!({"hybrid": {
            "knn": {"namespace": "items", "vector": [1.0, 0.0, 0.0]},
            "search": {"namespace": "notes", "query": "alice"}, "k": 5}}),
        "traverse" => {
            json!({"traverse": {"start": "urn:themis:graph:social:alice", "max_depth": 2}})
        }
        "shortest_path" => json!({"shortest_path": {
            "from": "urn:themis:graph:social:alice", "to": "urn:themis:graph:social:bob"}}),
        "ts_range" => json!({"ts_range": {
            "namespace": "cpu", "series": "load", "from": 0, "to": 4_102_444_800_000_i64,
            "step": 60000, "agg": "avg"}}),
        _ => return Vec::new(),
    };
    vec![example]
}

/// The JSON answer of `POST /v1/query`: rows (`sql` and the searches) or an AQL batch
/// (component `QueryAnswer`).
#[derive(Debug)]
pub struct QueryAnswerSchema;

impl PartialSchema for QueryAnswerSchema {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(reference::<QueryAnswerBody>())
            .item(reference::<AqlAnswerBody>())
            .into()
    }
}

impl ToSchema for QueryAnswerSchema {
    fn name() -> Cow<'static, str> {
        "QueryAnswer".into()
    }
}

#[cfg(test)]
mod tests;
