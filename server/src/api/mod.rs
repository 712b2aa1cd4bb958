//! The HTTP API (DESIGN.md §6) on axum: routes, handlers, and the mapping of every failure to
//! problem+json.
//!
//! Invariant: a handler validates the whole request before anything is proposed, so a refused
//! request leaves no trace in the log; an append that times out is reported as such (its outcome
//! is unknown, and retrying with the same event ids is safe).

pub mod cursors;
mod extract;
mod lp;
pub mod openapi;
mod problem;
mod subscribe;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use themis_log::{Consistency, EventInput, Log, Lsn, ShardId, Urn};

use extract::{RequestBody, UrlPath};
pub use problem::{Problem, ProblemBody};
use wire::*;

use crate::metrics::Metrics;

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body accepted (413 above).
    pub body_bytes_max: usize,
    /// How long an append may wait for its commit before answering 504.
    pub request_timeout: Duration,
    /// Largest page of a stream or log read.
    pub read_limit_max: usize,
    /// Appends of one NDJSON bulk request in flight at once.
    pub bulk_in_flight_max: usize,
    /// Default heartbeat period of a subscription.
    pub heartbeat: Duration,
    /// Under load, a subscription writes at most once per this period.
    pub linger: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 16 << 20,
            request_timeout: Duration::from_secs(30),
            read_limit_max: 10_000,
            bulk_in_flight_max: 256,
            heartbeat: Duration::from_secs(15),
            linger: Duration::from_millis(5),
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node's shards.
    pub log: Arc<Log>,
    /// The node's views.
    pub views: Arc<themis_materializers::Materializer>,
    /// HTTP-layer metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: ApiLimits,
    /// Time source for latency measurements.
    pub clock: Arc<dyn themis_log::seam::Clock>,
    /// The cluster's metadata store (`None` on a single node).
    pub meta: Option<Arc<dyn themis_log::seam::MetaStore>>,
    /// SQL over the views.
    pub query: Arc<themis_query::QueryEngine>,
    /// Change-stream fan-out.
    pub subscriptions: Arc<themis_log::subscribe::Hub>,
    /// Becomes true when the server shuts down (open subscriptions end).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Open AQL cursors.
    pub cursors: Arc<cursors::Cursors>,
}

/// Default and largest AQL batch.
const AQL_BATCH_DEFAULT: usize = 1000;
const AQL_BATCH_MAX: usize = 100_000;

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.body_bytes_max;
    Router::new()
        .route("/v1/streams/{urn}", post(append_stream).get(read_stream))
        .route("/v1/events", post(append_events))
        .route("/v1/log/{shard}", get(read_log))
        .route("/v1/resources/{urn}", get(read_resource))
        .route("/v1/query", post(run_query))
        .route("/v1/write_lp", post(write_lp))
        .route("/v1/subscribe", get(subscribe::subscribe))
        .route(
            "/v1/consumers/{group}/checkpoint",
            axum::routing::put(subscribe::put_checkpoint).get(subscribe::get_checkpoint),
        )
        .route("/v1/namespaces", get(list_namespaces))
        .route(
            "/v1/namespaces/{model}/{ns}",
            axum::routing::put(put_namespace).get(get_namespace),
        )
        .route("/v1/admin/views", get(list_views))
        .route("/v1/admin/views/{kind}/rebuild", post(rebuild_view))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/move-replica", post(move_replica))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::openapi))
        .fallback(|| async {
            Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept this method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| Problem::from_json_error(&e))
}

fn parse_urn(text: &str) -> Result<Urn, Problem> {
    Urn::parse(text).map_err(|e| Problem::bad_request("invalid_urn", e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(q)| q)
        .map_err(|e| Problem::bad_request("invalid_query", e.body_text()))
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"))
}

fn is_ndjson_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"))
}

/// Makes serialized JSON one line: event data is stored exactly as sent, so it may hold line
/// breaks between tokens (never inside strings, where JSON requires them escaped), which would
/// split an NDJSON line or an SSE `data:` field. They become spaces; the JSON means the same.
pub(crate) fn one_line(json: &mut [u8]) {
    for b in json {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

fn ndjson<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    headers: &[(&str, String)],
) -> Response {
    let mut body = Vec::new();
    for item in items {
        let start = body.len();
        serde_json::to_writer(&mut body, &item).expect("json");
        one_line(&mut body[start..]);
        body.push(b'\n');
    }
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(*name),
            HeaderValue::try_from(value),
        ) {
            h.insert(name, value);
        }
    }
    response
}

/// Runs an append under the request timeout; a timeout leaves the outcome unknown.
/// Appends one event the database writes itself (a namespace config, a consumer checkpoint)
/// to its reserved stream.
async fn append_system(
    state: &AppState,
    input: EventInput,
) -> Result<themis_log::Appended, Problem> {
    let batch = state.log.validate_system(vec![input], None, None)?;
    let result = timed(state, state.log.append(batch, false)).await??;
    let (_, appended) = result
        .shards
        .into_iter()
        .next()
        .expect("one stream, one shard");
    Ok(appended?)
}

async fn timed<T>(state: &AppState, f: impl Future<Output = T>) -> Result<T, Problem> {
    tokio::time::timeout(state.limits.request_timeout, f).await.map_err(|_| {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the append did not commit within {:?}; its outcome is unknown, and retrying with the same event ids is safe",
                state.limits.request_timeout
            ),
        )
    })
}

/// Counts an error answer; a `not_leader` answer gains the leader's API address
/// (`leader_url`), so the client can send the request there.
fn count_error(state: &AppState, p: Problem) -> Problem {
    state
        .metrics
        .errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let leader = p.member("leader").and_then(serde_json::Value::as_u64);
    match leader.and_then(|l| state.log.node_info(l)) {
        Some(info) => p.with("leader_url", format!("http://{}", info.api)),
        None => p,
    }
}

/// The query parameters of an append.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AppendParams {
    /// `committed` (default: the answer comes once the entry is committed and applied by the
    /// log's state machine) or `applied` (also wait until this node's views have applied it, so
    /// a read of a view through this node without a token sees it).
    #[serde(default)]
    #[param(inline)]
    wait: Option<Wait>,
}

/// The query of a route that takes no parameters: any parameter is refused (`invalid_query`),
/// as on every other route, so a misspelt one is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Checks every relational event of `batch` against its namespace's config, from this node's
/// registry view, before anything is proposed.
fn check_schema(state: &AppState, batch: &themis_log::ValidatedBatch) -> Result<(), Problem> {
    let mut configs: std::collections::BTreeMap<
        String,
        Option<themis_materializers::namespaces::Registered>,
    > = std::collections::BTreeMap::new();
    for (index, event) in batch.events().enumerate() {
        let model = event.urn.model();
        if !matches!(
            model,
            themis_log::Model::Relational | themis_log::Model::Vector
        ) {
            continue;
        }
        let ns = event.urn.namespace();
        let key = format!("{model}/{ns}");
        let registered = match configs.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = state.views.namespace(model, ns)?;
                configs.insert(key, r.clone());
                r
            }
        };
        let Some(registered) = registered else {
            let what = if model == themis_log::Model::Vector {
                "its dimension (and metric)"
            } else {
                "its columns"
            };
            return Err(Problem::bad_request(
                "unknown_namespace",
                format!(
                    "event {index}: {model} namespace {ns:?} has no config; declare {what} \
                     first with PUT /v1/namespaces/{model}/{ns}"
                ),
            )
            .with("event_index", index));
        };
        let data =
            match &event.data {
                Some(d) => Some(serde_json::from_str::<serde_json::Value>(d.get()).map_err(
                    |e| Problem::bad_request("invalid_json", format!("event {index}: data: {e}")),
                )?),
                None => None,
            };
        let checked = if model == themis_log::Model::Vector {
            registered
                .config
                .check_vector_event(event.op, event.vector.as_deref(), data.as_ref())
        } else {
            registered.config.check_event(event.op, data.as_ref())
        };
        if let Err(v) = checked {
            let mut problem = Problem::bad_request(
                "schema_violation",
                format!(
                    "event {index} does not fit {model} namespace {ns:?} (config version {}): {}",
                    registered.version, v.message
                ),
            )
            .with("event_index", index);
            problem = if model == themis_log::Model::Vector {
                problem.with("field", v.column)
            } else {
                problem.with("column", v.column)
            };
            return Err(problem);
        }
    }
    Ok(())
}

/// Whether the append must also wait for the views (`wait=applied`).
fn waits_for_views(params: &AppendParams) -> bool {
    params.wait == Some(Wait::Applied)
}

/// For `wait=applied`: waits until every view of this node has applied `token` (shards this
/// node holds no replica of have no views here and are skipped). The append is committed
/// whatever happens here, so a timeout says so and carries the token.
async fn wait_views(state: &AppState, token: &themis_log::Token) -> Result<(), Problem> {
    let hosted: Vec<ShardId> = state.log.shards().iter().map(|s| s.id()).collect();
    let mut local = themis_log::Token::new();
    for p in token.iter().filter(|p| hosted.contains(&p.shard)) {
        local.observe(p);
    }
    state
        .views
        .wait_for_kinds(&state.views.kinds(), &local, state.limits.request_timeout)
        .await
        .map_err(|e| {
            Problem::from(e)
                .with("appended", true)
                .with("token", token.encode())
        })
}

/// Append events to one stream, atomically.
#[utoipa::path(
    post, path = "/v1/streams/{urn}",
    params(("urn" = UrnText, Path, description = "the stream"), AppendParams),
    request_body = AppendStreamBody,
    responses(
        (status = 201, body = AppendResponse, description = "appended (or an idempotent retry: duplicate = true)"),
        (status = 400, body = ProblemBody, description = "invalid_urn, invalid_json, unknown_field, invalid_batch, invalid_op, invalid_field, urn_mismatch, schema_violation, unknown_namespace, invalid_query ..."),
        (status = 409, body = ProblemBody, description = "wrong_expected_revision or idempotency_conflict"),
        (status = 421, body = ProblemBody, description = "not_leader (with leader_url) or not_hosted: send it to another node"),
        (status = 502, body = ProblemBody, description = "outcome_unknown: the leader changed before the append was answered; retry with the same event ids"),
        (status = 503, body = ProblemBody, description = "unavailable: the shard has no leader"),
        (status = 504, body = ProblemBody, description = "timeout: the append did not commit in time (outcome unknown), or wait=applied timed out")
    )
)]
async fn append_stream(
    State(state): State<AppState>,
    path: Result<UrlPath<String>, Problem>,
    params: Result<Query<AppendParams>, QueryRejection>,
    body: Result<RequestBody, Problem>,
) -> Response {
    let started = state.clock.monotonic();
    let result = async {
        let UrlPath(urn) = path?;
        let wait_applied = waits_for_views(&query(params)?);
        let urn = parse_urn(&urn)?;
        let RequestBody(bytes) = body?;
        let body: AppendStreamBody = parse_json(&bytes)?;
        let events = state
            .log
            .validate(body.events, Some(&urn), body.expected_revision)?;
        check_schema(&state, &events)?;
        let result = timed(&state, state.log.append(events, false)).await??;
        let (_, appended) = result
            .shards
            .into_iter()
            .next()
            .expect("one stream, one shard");
        let answer = AppendResponse::new(appended?);
        if wait_applied {
            wait_views(&state, &result.token).await?;
        }
        Ok::<_, Problem>(answer)
    }
    .await;
    match result {
        Ok(answer) => {
            state
                .metrics
                .append_latency
                .observe(state.clock.monotonic().saturating_sub(started));
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        Err(p) => count_error(&state, p).into_response(),
    }
}

/// The query parameters of a stream read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReadStreamParams {
    /// The first revision of the page (default 0).
    #[serde(default)]
    from_revision: u64,
    /// Most events in the page (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// `linearizable` (default) or `stale`.
    #[serde(default)]
    #[param(inline)]
    consistency: Option<ReadConsistency>,
}

/// Read a stream's events in revision order.
#[utoipa::path(
    get, path = "/v1/streams/{urn}",
    params(("urn" = UrnText, Path, description = "the stream"), ReadStreamParams),
    responses(
        (status = 200, description = "JSON, or one event per line with Accept: application/x-ndjson (the page's revisions in the themis-stream-revision and themis-next-revision headers)",
         content((StreamPageBody = "application/json"), (String = "application/x-ndjson"))),
        (status = 400, body = ProblemBody, description = "invalid_urn, invalid_query"),
        (status = 404, body = ProblemBody, description = "stream_not_found"),
        (status = 421, body = ProblemBody, description = "not_leader or not_hosted (linearizable reads ask the shard's leader)"),
        (status = 503, body = ProblemBody, description = "unavailable: the shard has no leader")
    )
)]
async fn read_stream(
    State(state): State<AppState>,
    UrlPath(urn): UrlPath<String>,
    params: Result<Query<ReadStreamParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let params = query(params)?;
    let urn = parse_urn(&urn)?;
    let limit = read_limit(&state, params.limit)?;
    let consistency = match params.consistency.unwrap_or_default() {
        ReadConsistency::Linearizable => Consistency::Linearizable,
        ReadConsistency::Stale => Consistency::Stale,
    };
    let page = state
        .log
        .read_stream(&urn, params.from_revision, limit, consistency)
        .await?;
    let replica = replica_headers(&state, &urn)?;
    let Some(revision) = page.revision else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "stream_not_found",
            format!("stream {urn} has no events"),
        ));
    };
    if wants_ndjson(&headers) {
        let mut meta = vec![("themis-stream-revision", revision.to_string())];
        if let Some(next) = page.next_revision {
            meta.push(("themis-next-revision", next.to_string()));
        }
        meta.extend(replica);
        return Ok(ndjson(page.events, &meta));
    }
    let body = StreamPageBody {
        urn: urn.to_string(),
        revision,
        events: page.events,
        next_revision: page.next_revision,
    };
    let mut response = Json(body).into_response();
    for (name, value) in replica {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// Headers saying which replica answered and how far behind its local log it has applied:
/// `themis-node`, `themis-applied-lsn` and `themis-replica-lag` (entries this replica holds but
/// has not applied yet).
fn replica_headers(state: &AppState, urn: &Urn) -> Result<Vec<(&'static str, String)>, Problem> {
    let shard = state.log.shard(state.log.shard_id_for(urn))?;
    let metrics = shard.raft().metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let lag = metrics.last_log_index.unwrap_or(0).saturating_sub(applied);
    Ok(vec![
        ("themis-node", state.log.node_id().to_string()),
        ("themis-applied-lsn", applied.to_string()),
        ("themis-replica-lag", lag.to_string()),
    ])
}

fn read_limit(state: &AppState, limit: Option<usize>) -> Result<usize, Problem> {
    let max = state.limits.read_limit_max;
    match limit.unwrap_or(100.min(max)) {
        0 => Err(Problem::bad_request(
            "invalid_query",
            "limit must be at least 1",
        )),
        n if n > max => Err(Problem::bad_request(
            "invalid_query",
            format!("limit must be at most {max}"),
        )),
        n => Ok(n),
    }
}

/// Append a batch: JSON (atomic within one shard) or NDJSON bulk (every line on its own).
#[utoipa::path(
    post, path = "/v1/events",
    params(AppendParams),
    request_body(description = "a JSON batch, or NDJSON bulk (Content-Type application/x-ndjson): one event per line, each appended on its own",
        content((AppendBatchBody = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 201, body = BatchResponse, description = "every part appended"),
        (status = 207, body = BatchResponse, description = "per-shard atomicity: some parts failed (see results)"),
        (status = 200, body = BulkItemResult, content_type = "application/x-ndjson", description = "NDJSON bulk: one result line per request line, in order"),
        (status = 400, body = ProblemBody, description = "invalid_json, unknown_field, invalid_batch, cross_shard_batch, invalid_urn, invalid_op, invalid_field, schema_violation, unknown_namespace, invalid_query ..."),
        (status = 409, body = ProblemBody, description = "wrong_expected_revision or idempotency_conflict (a batch of one shard)"),
        (status = 421, body = ProblemBody, description = "not_leader or not_hosted (a batch of one shard)"),
        (status = 502, body = ProblemBody, description = "outcome_unknown (a batch of one shard)"),
        (status = 503, body = ProblemBody, description = "unavailable (a batch of one shard)"),
        (status = 504, body = ProblemBody, description = "timeout: outcome unknown, or wait=applied timed out")
    )
)]
async fn append_events(
    State(state): State<AppState>,
    params: Result<Query<AppendParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<RequestBody, Problem>,
) -> Response {
    let started = state.clock.monotonic();
    let result = async {
        let wait_applied = waits_for_views(&query(params)?);
        let RequestBody(bytes) = body?;
        if is_ndjson_body(&headers) {
            return Ok(bulk(&state, &bytes, wait_applied).await);
        }
        let body: AppendBatchBody = parse_json(&bytes)?;
        let events = state.log.validate(body.events, None, None)?;
        check_schema(&state, &events)?;
        let result = timed(&state, state.log.append(events, body.per_shard_atomicity)).await??;
        let (status, token, results) = shard_results(&state, result, wait_applied).await?;
        Ok((status, Json(BatchResponse { token, results })).into_response())
    }
    .await;
    match result {
        Ok(response) => {
            state
                .metrics
                .append_latency
                .observe(state.clock.monotonic().saturating_sub(started));
            response
        }
        Err(p) => count_error(&state, p).into_response(),
    }
}

/// Per shard, how a batch append went: `201` when every part was appended, `207` when some
/// failed; a batch of one shard is one atomic part, whose failure is the answer's error. With
/// `wait_applied`, answers once this node's views cover the token.
async fn shard_results(
    state: &AppState,
    result: themis_log::AppendResult,
    wait_applied: bool,
) -> Result<(StatusCode, String, Vec<ShardResult>), Problem> {
    let single = result.shards.len() == 1;
    let mut all_ok = true;
    let mut results = Vec::with_capacity(result.shards.len());
    for (shard, r) in result.shards {
        match r {
            Ok(appended) => results.push(ShardResult {
                shard: shard.0,
                part: PartResult::ok(AppendResponse::new(appended)),
            }),
            Err(e) if single => return Err(Problem::from(e)),
            Err(e) => {
                all_ok = false;
                results.push(ShardResult {
                    shard: shard.0,
                    part: PartResult::failed(&Problem::from(e)),
                });
            }
        }
    }
    if wait_applied {
        wait_views(state, &result.token).await?;
    }
    let status = if all_ok {
        StatusCode::CREATED
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, result.token.encode(), results))
}

/// NDJSON bulk: every line is its own append; answers keep the request's line order.
async fn bulk(state: &AppState, bytes: &Bytes, wait_applied: bool) -> Response {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .chain([bytes.len()])
    {
        if start > end {
            break;
        }
        let line = bytes.slice(start..end);
        start = end + 1;
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
    }
    let items = futures::stream::iter(lines.into_iter().enumerate())
        .map(|(index, line): (usize, Bytes)| async move {
            let result = async {
                let input: EventInput = parse_json(&line)?;
                let events = state.log.validate(vec![input], None, None)?;
                check_schema(state, &events)?;
                let result = timed(state, state.log.append(events, false)).await??;
                let (_, appended) = result
                    .shards
                    .into_iter()
                    .next()
                    .expect("one event, one shard");
                let answer = AppendResponse::new(appended?);
                if wait_applied {
                    wait_views(state, &result.token).await?;
                }
                Ok::<_, Problem>(answer)
            }
            .await;
            match result {
                Ok(r) => BulkItemResult {
                    index,
                    part: PartResult::ok(r),
                },
                Err(p) => BulkItemResult {
                    index,
                    part: PartResult::failed(&p),
                },
            }
        })
        .buffered(state.limits.bulk_in_flight_max)
        .collect::<Vec<_>>()
        .await;
    ndjson(items, &[])
}

/// The query parameters of a log read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReadLogParams {
    /// The first LSN of the page (default 0).
    #[serde(default)]
    from_lsn: u64,
    /// Most entries in the page (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// Read a shard's committed log, with each entry's outcome and chain hash.
#[utoipa::path(
    get, path = "/v1/log/{shard}",
    params(("shard" = u32, Path), ReadLogParams),
    responses(
        (status = 200, description = "JSON, or one entry per line with Accept: application/x-ndjson",
         content((LogPageBody = "application/json"), (String = "application/x-ndjson"))),
        (status = 400, body = ProblemBody, description = "invalid_shard, invalid_query"),
        (status = 404, body = ProblemBody, description = "unknown_shard"),
        (status = 410, body = ProblemBody, description = "position_expired: the log before from_lsn was purged after a snapshot"),
        (status = 421, body = ProblemBody, description = "not_hosted: this node holds no replica of the shard")
    )
)]
async fn read_log(
    State(state): State<AppState>,
    UrlPath(shard): UrlPath<String>,
    params: Result<Query<ReadLogParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let params = query(params)?;
    let shard: u32 = shard.parse().map_err(|_| {
        Problem::bad_request(
            "invalid_shard",
            format!("shard must be a number, not {shard:?}"),
        )
    })?;
    let shard = state.log.shard(ShardId(shard)).map_err(|e| match e {
        themis_log::Error::UnknownShard { .. } => {
            Problem::new(StatusCode::NOT_FOUND, e.code(), e.to_string())
        }
        other => Problem::from(other),
    })?;
    let limit = read_limit(&state, params.limit)?;
    let (entries, applied) = shard.read_log(Lsn(params.from_lsn), limit)?;
    let applied = applied.0;
    let next_lsn = entries
        .last()
        .map(|e| e.lsn.0 + 1)
        .filter(|&n| n <= applied);
    if wants_ndjson(&headers) {
        let meta: Vec<_> = next_lsn
            .map(|n| ("themis-next-lsn", n.to_string()))
            .into_iter()
            .collect();
        return Ok(ndjson(entries, &meta));
    }
    Ok(Json(LogPageBody {
        shard: shard.id().0,
        applied_lsn: applied,
        entries,
        next_lsn,
    })
    .into_response())
}

/// The cluster: nodes, and every shard's leader, replicas and replication lag.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterBody)))]
async fn cluster(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<ClusterBody>, Problem> {
    query(params)?;
    Ok(Json(cluster_body(&state).await))
}

async fn cluster_body(state: &AppState) -> ClusterBody {
    let topology = state.log.topology();
    let nodes = match &topology {
        Some(t) => t
            .nodes
            .values()
            .map(|n| ClusterNodeBody {
                id: n.id,
                api: n.api.clone(),
                peer: n.peer.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    ClusterBody {
        mode: if topology.is_some() {
            "cluster"
        } else {
            "single"
        },
        node: state.log.node_id(),
        nodes,
        shards: state.log.status().await,
        views: state.views.status(),
    }
}

/// Move a shard's replica from one node to another without making the shard unavailable:
/// the new node joins as a learner, catches up, becomes a voter, and the old one leaves.
#[utoipa::path(
    post, path = "/v1/cluster/move-replica",
    request_body = MoveReplicaBody,
    responses(
        (status = 200, body = ClusterBody, description = "moved; the cluster as it is now"),
        (status = 400, body = ProblemBody, description = "invalid_request (unknown node, no such replica, not a cluster), unknown_shard, invalid_json, unknown_field"),
        (status = 421, body = ProblemBody, description = "not_leader: the shard's leader must make the change"),
        (status = 503, body = ProblemBody, description = "unavailable or metadata_unavailable (no leader, etcd unreachable, the new replica did not catch up in time)")
    )
)]
async fn move_replica(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
    body: Result<RequestBody, Problem>,
) -> Result<Json<ClusterBody>, Problem> {
    query(params)?;
    let RequestBody(bytes) = body?;
    let body: MoveReplicaBody = parse_json(&bytes)?;
    let Some(meta) = &state.meta else {
        return Err(Problem::bad_request(
            "invalid_request",
            "this node runs alone (no --etcd): there are no replicas to move",
        ));
    };
    if body.shard >= state.log.shard_count() {
        return Err(themis_log::Error::UnknownShard {
            shard: ShardId(body.shard),
            shards: state.log.shard_count(),
        }
        .into());
    }
    let catch_up = Duration::from_secs(body.catch_up_seconds.unwrap_or(60));
    themis_log::cluster::move_replica(
        meta.as_ref(),
        &state.log,
        ShardId(body.shard),
        body.from,
        body.to,
        catch_up,
    )
    .await
    .map_err(|e| match e {
        themis_log::cluster::MoveError::Invalid(m) => Problem::bad_request("invalid_request", m),
        themis_log::cluster::MoveError::Cluster(c) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metadata_unavailable",
            c.to_string(),
        ),
        themis_log::cluster::MoveError::Log(e) => Problem::from(e),
    })
    .map_err(|p| count_error(&state, p))?;
    Ok(Json(cluster_body(&state).await))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/livez", responses((status = 200, body = Object, example = json!({"status": "ok"}))))]
async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store accepts writes, every view runs and every shard has a leader.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Object, example = json!({"status": "ready", "shards": 4, "hosted": 4})),
    (status = 503, body = ProblemBody, description = "store_failed, view_stopped (with the view and shard), or not_ready (with the leaderless shards)")
))]
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    if let Some(reason) = state.log.shards().first().and_then(|s| s.store().failure()) {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            format!(
                "the store stopped after an error and refuses writes until restarted: {reason}"
            ),
        ));
    }
    if let Some((kind, shard, reason)) = state.views.stopped().into_iter().next() {
        return Err(Problem::from(themis_materializers::Error::Stopped {
            kind,
            shard: shard.0,
            reason,
        }));
    }
    let leaderless: Vec<u32> = state
        .log
        .shards()
        .into_iter()
        .filter(|s| s.raft().metrics().borrow().current_leader.is_none())
        .map(|s| s.id().0)
        .collect();
    if leaderless.is_empty() {
        Ok(Json(
            serde_json::json!({"status": "ready", "shards": state.log.shard_count(), "hosted": state.log.shards().len()}),
        ))
    } else {
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "some shards have no leader",
        )
        .with("shards", leaderless))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain", description = "Prometheus text format 0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(&state.log, &state.views);
    state
        .metrics
        .render_subscriptions(&mut text, &state.subscriptions);
    state.metrics.render_tables(&mut text, &state.query);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The query parameters of a resource read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ResourceParams {
    /// Wait until the view covers this token (from an append's answer).
    #[param(value_type = Option<TokenText>)]
    min_token: Option<String>,
    /// How long to wait for `min_token`, like `5s` (at most the request timeout).
    #[param(value_type = Option<DurationText>)]
    timeout: Option<String>,
}

/// How long a read waits for a token: `timeout` (like `5s`), at most the request timeout. A
/// zero timeout could only ever answer 504, so it is refused as a bad request.
fn wait_timeout(state: &AppState, timeout: Option<&str>) -> Result<Duration, Problem> {
    let max = state.limits.request_timeout;
    match timeout {
        None => Ok(max),
        Some(text) => {
            let t = themis_log::units::parse_duration(text)
                .map_err(|e| Problem::bad_request("invalid_query", e))?;
            if t.is_zero() {
                return Err(Problem::bad_request(
                    "invalid_query",
                    format!("timeout {text:?} is zero; give at least 1ms"),
                ));
            }
            Ok(t.min(max))
        }
    }
}

fn parse_token(text: Option<&str>) -> Result<themis_log::Token, Problem> {
    match text {
        None => Ok(themis_log::Token::new()),
        Some(t) => themis_log::Token::decode(t)
            .map_err(|e| Problem::bad_request(e.code(), format!("invalid min_token: {e}"))),
    }
}

/// The current state of a document resource, from this node's document view.
///
/// With `min_token` it first waits (up to `timeout`) until the view has applied the token's
/// position in the resource's shard, so it reflects every append that token covers
/// (read-your-writes). The answer's `token` is the view's watermark.
#[utoipa::path(
    get, path = "/v1/resources/{urn}",
    params(("urn" = DocumentUrnText, Path, description = "a document resource"), ResourceParams),
    responses(
        (status = 200, body = ResourceBody),
        (status = 400, body = ProblemBody, description = "invalid_urn, unsupported_model (not a document), invalid_token, invalid_query"),
        (status = 404, body = ProblemBody, description = "resource_not_found (absent or deleted)"),
        (status = 421, body = ProblemBody, description = "not_hosted: this node holds no replica of the resource's shard"),
        (status = 503, body = ProblemBody, description = "the view cannot answer (stopped)"),
        (status = 504, body = ProblemBody, description = "timeout: the view did not reach min_token")
    )
)]
async fn read_resource(
    State(state): State<AppState>,
    UrlPath(urn): UrlPath<String>,
    params: Result<Query<ResourceParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query(params)?;
    let urn = parse_urn(&urn)?;
    if urn.model() != themis_log::Model::Document {
        return Err(Problem::bad_request(
            "unsupported_model",
            format!(
                "{urn} is a {} resource; resources of this model are read through their own view \
                 (today only document resources have one)",
                urn.model()
            ),
        ));
    }
    let timeout = wait_timeout(&state, params.timeout.as_deref())?;
    let shard = state.log.shard_id_for(&urn);
    let mut wanted = themis_log::Token::new();
    if let Some(lsn) = parse_token(params.min_token.as_deref())?.get(shard) {
        wanted.observe(themis_log::Position { shard, lsn });
    }
    let kind = themis_materializers::document::KIND;
    state
        .views
        .wait_for(kind, &wanted, &[shard], timeout)
        .await?;
    let (doc, watermark) = state.views.read(kind, shard, |tx| {
        themis_materializers::document::get(tx, shard, urn.as_str())
    })?;
    let token = themis_log::Token::from_position(themis_log::Position {
        shard,
        lsn: watermark,
    })
    .encode();
    let doc = match doc {
        Some(d) if !d.deleted => d,
        Some(d) => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                format!(
                    "{urn} was deleted at revision {} (LSN {})",
                    d.revision, d.lsn
                ),
            )
            .with("token", token)
            .with("deleted_revision", d.revision));
        }
        None => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "resource_not_found",
                format!(
                    "{urn} has no state in the document view (as of LSN {})",
                    watermark.0
                ),
            )
            .with("token", token));
        }
    };
    let body = ResourceBody {
        urn: urn.to_string(),
        revision: doc.revision,
        data: doc.data,
        position: PositionBody {
            shard: shard.0,
            lsn: doc.lsn,
        },
        updated_ms: doc.updated_ms,
        token: token.clone(),
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("themis-token", value);
    }
    Ok(response)
}

/// Runs one SQL query over this node's views (DataFusion).
///
/// Tables are namespaces: `orders` (or `relational.orders`) is the relational namespace
/// `orders`, `document.users` the document namespace `users` (docs/API.md says how documents
/// appear as rows). With `min_token` it first waits until the views cover the token. The answer
/// is JSON (default), NDJSON (`Accept: application/x-ndjson`) or CSV (`Accept: text/csv`); its
/// token (`token` in JSON, the `themis-token` header always) is the views' state it reflects.
#[utoipa::path(
    post, path = "/v1/query",
    request_body = QueryRequestSchema,
    responses(
        (status = 200, description = "JSON (rows, or an AQL batch), NDJSON (Accept: application/x-ndjson) or CSV (Accept: text/csv); the themis-token header carries the answer's token",
         content((QueryAnswerSchema = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = ProblemBody, description = "invalid_body, invalid_sql, invalid_aql, unknown_table, invalid_search, query_failed, result_too_large, invalid_token ..."),
        (status = 404, body = ProblemBody, description = "unknown_namespace (a search's namespace), cursor_not_found (expired or unknown cursor)"),
        (status = 421, body = ProblemBody, description = "not_hosted: this node lacks a shard's replica"),
        (status = 503, body = ProblemBody, description = "a view the query reads cannot answer (stopped)"),
        (status = 504, body = ProblemBody, description = "timeout: the views did not reach min_token, or the query ran too long")
    )
)]
async fn run_query(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<RequestBody, Problem>,
) -> Result<Response, Problem> {
    query(params)?;
    let RequestBody(bytes) = body?;
    let request: QueryBody = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request("invalid_body", format!("invalid query body: {e}")))?;
    let timeout = wait_timeout(&state, request.timeout.as_deref())?;
    let min_token = parse_token(request.min_token.as_deref())?;
    if request.aql.is_some() || request.cursor.is_some() {
        return run_aql(&state, request, &min_token, timeout).await;
    }
    if request.params.is_some() || request.batch_size.is_some() || request.plans.is_some() {
        return Err(Problem::bad_request(
            "invalid_body",
            "`params`, `batch_size` and `plans` go with `aql`",
        ));
    }
    if request.other_kinds() != 1 {
        return Err(Problem::bad_request("invalid_body", wire::ONE_QUERY_KIND));
    }
    let q = &state.query;
    let answer = if let Some(sql) = request.sql {
        q.sql(&sql, &min_token, timeout).await?
    } else if let Some(knn) = request.knn {
        q.knn(&knn, &min_token, timeout).await?
    } else if let Some(search) = request.search {
        q.search(&search, &min_token, timeout).await?
    } else if let Some(hybrid) = request.hybrid {
        q.hybrid(&hybrid, &min_token, timeout).await?
    } else if let Some(args) = request.ts_range {
        q.ts_range(&args, &min_token, timeout).await?
    } else if let Some(args) = request.traverse {
        q.traverse(&args, &min_token, timeout).await?
    } else {
        let args = request.shortest_path.expect("counted");
        q.shortest_path(&args, &min_token, timeout).await?
    };
    let format = themis_query::encode::Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let body = themis_query::encode::encode(&answer, format);
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&answer.token.encode()) {
        h.insert("themis-token", value);
    }
    if answer.truncated {
        h.insert("themis-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `POST /v1/query {"aql", "params", "batch_size", "plans"}` or `{"cursor"}`: JSON answers
/// only.
async fn run_aql(
    state: &AppState,
    request: QueryBody,
    min_token: &themis_log::Token,
    timeout: Duration,
) -> Result<Response, Problem> {
    if request.other_kinds() > 0 || (request.aql.is_some() && request.cursor.is_some()) {
        return Err(Problem::bad_request("invalid_body", wire::ONE_QUERY_KIND));
    }
    let now_ms = state.clock.wall_ms();
    let body = if let Some(id) = request.cursor {
        if request.params.is_some() || request.batch_size.is_some() || request.plans.is_some() {
            return Err(Problem::bad_request(
                "invalid_body",
                "a cursor continues a query: send only `cursor`",
            ));
        }
        state.cursors.next(&id, now_ms)?
    } else {
        let batch = request.batch_size.unwrap_or(AQL_BATCH_DEFAULT);
        if batch == 0 || batch > AQL_BATCH_MAX {
            return Err(Problem::bad_request(
                "invalid_body",
                format!("batch_size must be from 1 to {AQL_BATCH_MAX}, not {batch}"),
            ));
        }
        let text = request.aql.expect("checked");
        let outcome = state
            .query
            .aql(
                &text,
                request.params.unwrap_or_default(),
                themis_query::AqlOptions {
                    plans: request.plans.unwrap_or(true),
                },
                min_token,
                timeout,
            )
            .await?;
        state
            .cursors
            .start(outcome.rows, batch, outcome.token.encode(), now_ms)
    };
    let mut response = Json(&body).into_response();
    if let Ok(value) = HeaderValue::from_str(&body.token) {
        response.headers_mut().insert("themis-token", value);
    }
    Ok(response)
}

/// The query parameters of `write_lp`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WriteLpParams {
    /// `committed` (default) or `applied` (also wait for this node's views).
    #[serde(default)]
    #[param(inline)]
    wait: Option<Wait>,
    /// Timestamp unit: `ns` (default), `us`, `ms` or `s` (parsed by `lp::Precision::parse`).
    #[serde(default)]
    #[param(value_type = Option<Precision>, inline)]
    precision: Option<String>,
}

/// Most line errors listed in one answer (the count is always complete).
const LP_ERRORS_LISTED: usize = 100;

/// InfluxDB line protocol into time-series namespaces: the measurement is the namespace, each
/// field a series (`field`, or `field~hash` with tags), tags in the series' `data.tags`.
/// All or nothing per request: any bad line fails the request with every line's error
/// (`errors`: line, column, message) and nothing is written. Each shard's part is atomic.
#[utoipa::path(
    post, path = "/v1/write_lp",
    params(WriteLpParams),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 201, body = WriteLpResponse, description = "every point appended"),
        (status = 207, body = WriteLpResponse, description = "some shards failed (see results)"),
        (status = 400, body = ProblemBody, description = "invalid_line_protocol (with errors), schema_violation, invalid_query"),
        (status = 421, body = ProblemBody, description = "not_leader or not_hosted (points of one shard)"),
        (status = 502, body = ProblemBody, description = "outcome_unknown (points of one shard)"),
        (status = 503, body = ProblemBody, description = "unavailable (points of one shard)"),
        (status = 504, body = ProblemBody, description = "timeout: outcome unknown, or wait=applied timed out")
    )
)]
async fn write_lp(
    State(state): State<AppState>,
    params: Result<Query<WriteLpParams>, QueryRejection>,
    body: Result<RequestBody, Problem>,
) -> Result<Response, Problem> {
    let params = query(params)?;
    let wait_applied = params.wait == Some(Wait::Applied);
    let precision = match params.precision.as_deref() {
        None => lp::Precision::Ns,
        Some(p) => lp::Precision::parse(p).ok_or_else(|| {
            Problem::bad_request(
                "invalid_query",
                format!("precision must be ns, us, ms or s, not {p:?}"),
            )
        })?,
    };
    let RequestBody(bytes) = body?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Problem::bad_request(
            "invalid_line_protocol",
            format!("the body is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let now = state.clock.wall_ms() as i64;
    // Series in order of first appearance, with their tags and points.
    let mut series: Vec<(
        String,
        BTreeMap<String, String>,
        Vec<themis_log::event::Point>,
    )> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut points = 0usize;
    let mut line_count = 0usize;
    // Errors of series the lines name (the first LP_ERRORS_LISTED, and how many).
    let mut errors = Vec::new();
    let mut series_errors = 0usize;
    let (parse_errors, parse_error_count) =
        lp::parse_each(text, precision, LP_ERRORS_LISTED, true, |number, line| {
            line_count += 1;
            let ts = line.ts_ms.unwrap_or(now);
            for (field, value) in &line.fields {
                let id = themis_materializers::timeseries::series_id(field, &line.tags);
                let urn = format!("urn:themis:timeseries:{}:{id}", line.measurement);
                let problem = match Urn::parse(&urn) {
                    Err(e) => Some(format!(
                        "measurement {:?} / field {field:?} make no valid series: {e}",
                        line.measurement
                    )),
                    Ok(_) if line.measurement.starts_with('_') => {
                        Some(format!("measurement {:?} is reserved", line.measurement))
                    }
                    Ok(_) => None,
                };
                if let Some(message) = problem {
                    series_errors += 1;
                    if errors.len() < LP_ERRORS_LISTED {
                        errors.push(lp::LineError {
                            line: number,
                            column: 1,
                            message,
                        });
                    }
                    continue;
                }
                let i = *index.entry(urn.clone()).or_insert_with(|| {
                    series.push((urn, line.tags.clone(), Vec::new()));
                    series.len() - 1
                });
                series[i].2.push(themis_log::event::Point(ts, *value));
                points += 1;
            }
        });
    let count = parse_error_count + series_errors;
    if count > 0 {
        errors.extend(parse_errors);
        errors.sort_by_key(|e| (e.line, e.column));
        errors.truncate(LP_ERRORS_LISTED);
        let first = &errors[0];
        return Err(Problem::bad_request(
            "invalid_line_protocol",
            format!(
                "{count} line error(s), nothing written; line {} column {}: {}",
                first.line, first.column, first.message
            ),
        )
        .with("error_count", count)
        .with("errors", &errors));
    }
    if points == 0 {
        return Err(Problem::bad_request(
            "invalid_line_protocol",
            "the body holds no points",
        ));
    }
    let points_max = themis_log::event::EventLimits::default().points_max;
    let mut inputs = Vec::new();
    let series_count = series.len();
    for (urn, tags, all) in series {
        for chunk in all.chunks(points_max) {
            let data = (!tags.is_empty()).then(|| {
                serde_json::value::to_raw_value(&serde_json::json!({ "tags": tags }))
                    .expect("tags serialize")
            });
            inputs.push(EventInput {
                id: None,
                urn: Some(urn.clone()),
                event_type: None,
                op: themis_log::event::Op::Points,
                data,
                vector: None,
                to: None,
                label: None,
                points: Some(chunk.to_vec()),
                metadata: None,
                expected_revision: None,
            });
        }
    }
    let events = state.log.validate(inputs, None, None)?;
    check_schema(&state, &events)?;
    let result = timed(&state, state.log.append(events, true)).await??;
    let (status, token, results) = shard_results(&state, result, wait_applied).await?;
    Ok((
        status,
        Json(WriteLpResponse {
            token,
            lines: line_count,
            points,
            series: series_count,
            results,
        }),
    )
        .into_response())
}

fn parse_model(model: &str) -> Result<themis_log::Model, Problem> {
    model.parse().map_err(|_| {
        Problem::bad_request(
            "invalid_model",
            format!(
                "unknown model {model:?}: use relational, document, graph, vector or timeseries"
            ),
        )
    })
}

/// Checks a namespace name as URNs do, and that it is not reserved.
fn parse_namespace(model: themis_log::Model, ns: &str) -> Result<(), Problem> {
    Urn::parse(&format!("urn:themis:{model}:{ns}:x")).map_err(|e| {
        Problem::bad_request(
            "invalid_namespace",
            format!("invalid namespace {ns:?}: {e}"),
        )
    })?;
    if ns.starts_with('_') {
        return Err(Problem::bad_request(
            "reserved_namespace",
            format!(
                "namespace {ns:?} is reserved (names starting with `_` belong to the database)"
            ),
        ));
    }
    Ok(())
}

fn namespace_body(
    r: themis_materializers::namespaces::Registered,
    token: Option<String>,
) -> NamespaceBody {
    NamespaceBody {
        model: r.model,
        namespace: r.namespace,
        version: r.version,
        config: serde_json::to_value(&r.config).expect("config serializes"),
        lsn: r.lsn,
        updated_ms: r.updated_ms,
        token,
    }
}

/// Declare (or evolve) a namespace's config: for relational namespaces, its columns. The
/// config is an event of the log, so every replica's views see it at the same position. A
/// config may only evolve compatibly (add nullable columns, widen a column to `json`).
#[utoipa::path(
    put, path = "/v1/namespaces/{model}/{ns}",
    params(("model" = ModelName, Path), ("ns" = NamespaceName, Path), AppendParams),
    request_body(content = Object, description = "the config: `columns` for relational namespaces, `dimension` and `metric` for vector ones, `block_ms` and `downsample` for time series (docs/API.md)"),
    responses(
        (status = 201, body = NamespaceBody, description = "declared or changed"),
        (status = 200, body = NamespaceBody, description = "unchanged (the same config was declared)"),
        (status = 400, body = ProblemBody, description = "invalid_config, incompatible_config, invalid_model, invalid_namespace, reserved_namespace, invalid_query"),
        (status = 409, body = ProblemBody, description = "a concurrent change won; read and retry"),
        (status = 421, body = ProblemBody, description = "not_leader or not_hosted"),
        (status = 502, body = ProblemBody, description = "outcome_unknown"),
        (status = 503, body = ProblemBody, description = "unavailable: the shard has no leader"),
        (status = 504, body = ProblemBody, description = "timeout: outcome unknown, or wait=applied timed out")
    )
)]
async fn put_namespace(
    State(state): State<AppState>,
    UrlPath((model, ns)): UrlPath<(String, String)>,
    params: Result<Query<AppendParams>, QueryRejection>,
    body: Result<RequestBody, Problem>,
) -> Result<Response, Problem> {
    let wait_applied = waits_for_views(&query(params)?);
    let model = parse_model(&model)?;
    parse_namespace(model, &ns)?;
    let RequestBody(bytes) = body?;
    let config: themis_materializers::namespaces::NamespaceConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request("invalid_config", format!("invalid config: {e}")))?;
    config
        .validate(model)
        .map_err(|e| Problem::bad_request("invalid_config", e))?;
    // The log holds every default spelled out.
    let config = config.with_defaults(model);
    let existing = state.views.namespace(model, &ns)?;
    if let Some(r) = &existing {
        if r.config == config {
            return Ok((StatusCode::OK, Json(namespace_body(r.clone(), None))).into_response());
        }
        r.config.evolves_to(&config).map_err(|e| {
            Problem::bad_request(
                "incompatible_config",
                format!(
                    "the config of {model}/{ns} (version {}) cannot change so: {e}",
                    r.version
                ),
            )
        })?;
    }
    if existing.is_none()
        && model == themis_log::Model::Timeseries
        && (config.timeseries().block_ms
            != themis_materializers::namespaces::TIMESERIES_DEFAULT_BLOCK_MS
            || !config.downsample.is_empty())
        && state.views.timeseries_in_use(&ns)?
    {
        return Err(Problem::bad_request(
            "incompatible_config",
            format!(
                "timeseries/{ns} already holds points stored with the default settings \
                 (block_ms {}, no downsampling); declare block_ms and downsample before the \
                 first points, or use a new namespace",
                themis_materializers::namespaces::TIMESERIES_DEFAULT_BLOCK_MS
            ),
        ));
    }
    let urn = themis_materializers::Materializer::config_urn(model, &ns)?;
    let expected = match &existing {
        Some(r) => serde_json::json!(r.version),
        None => serde_json::json!("no_stream"),
    };
    let input: EventInput = serde_json::from_value(serde_json::json!({
        "urn": urn.as_str(),
        "type": "NamespaceConfigured",
        "op": "put",
        "data": config,
        "expected_revision": expected,
    }))
    .map_err(|e| Problem::bad_request("invalid_config", e.to_string()))?;
    let appended = append_system(&state, input).await?;
    let token = themis_log::Token::from_position(appended.position);
    if wait_applied {
        wait_views(&state, &token).await?;
    }
    let body = namespace_body(
        themis_materializers::namespaces::Registered {
            model: model.to_string(),
            namespace: ns,
            config,
            version: appended.events[0].revision,
            lsn: appended.position.lsn.0,
            updated_ms: 0,
        },
        Some(token.encode()),
    );
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// One namespace's config.
#[utoipa::path(
    get, path = "/v1/namespaces/{model}/{ns}",
    params(("model" = ModelName, Path), ("ns" = NamespaceName, Path)),
    responses(
        (status = 200, body = NamespaceBody),
        (status = 400, body = ProblemBody, description = "invalid_model, invalid_namespace, reserved_namespace, invalid_query"),
        (status = 404, body = ProblemBody, description = "namespace_not_found")
    )
)]
async fn get_namespace(
    State(state): State<AppState>,
    UrlPath((model, ns)): UrlPath<(String, String)>,
    params: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<NamespaceBody>, Problem> {
    query(params)?;
    let model = parse_model(&model)?;
    parse_namespace(model, &ns)?;
    match state.views.namespace(model, &ns)? {
        Some(r) => Ok(Json(namespace_body(r, None))),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "namespace_not_found",
            format!("no config was declared for {model}/{ns}"),
        )),
    }
}

/// Every declared namespace config (document namespaces without a config exist on first
/// write and are not listed).
#[utoipa::path(
    get, path = "/v1/namespaces",
    responses((status = 200, body = NamespacesBody))
)]
async fn list_namespaces(
    State(state): State<AppState>,
    params: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<NamespacesBody>, Problem> {
    query(params)?;
    let namespaces = state
        .views
        .namespaces()?
        .into_iter()
        .map(|r| namespace_body(r, None))
        .collect();
    Ok(Json(NamespacesBody { namespaces }))
}

/// The query parameters of the views' status.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ViewsParams {
    /// Also compute each view's content digest.
    #[serde(default)]
    digest: bool,
}

/// Every view of every shard this node holds: watermark, lag, and (with `digest=true`) a
/// digest of its content.
#[utoipa::path(
    get, path = "/v1/admin/views",
    params(ViewsParams),
    responses(
        (status = 200, body = ViewsBody),
        (status = 400, body = ProblemBody, description = "invalid_query")
    )
)]
async fn list_views(
    State(state): State<AppState>,
    params: Result<Query<ViewsParams>, QueryRejection>,
) -> Result<Json<ViewsBody>, Problem> {
    let params = query(params)?;
    let mut views = Vec::new();
    for v in state.views.status() {
        let digest = if params.digest && v.state == "running" {
            let (lsn, digest) = state.views.digest(v.view, ShardId(v.shard))?;
            Some(ViewDigestBody {
                watermark: lsn.0,
                digest: format!("{digest:016x}"),
            })
        } else {
            None
        };
        views.push(ViewBody {
            view: v.view.to_owned(),
            shard: v.shard,
            watermark: v.watermark,
            applied: v.applied,
            lag_entries: v.lag_lsn,
            lag_ms: v.lag_ms,
            entries_applied: v.entries_applied,
            entries_rejected: v.entries_rejected,
            rejections: v
                .rejections
                .into_iter()
                .map(|r| RejectionBody {
                    lsn: r.lsn,
                    ts_ms: r.ts_ms,
                    reason: r.reason,
                })
                .collect(),
            state: v.state,
            error: v.error,
            digest,
        });
    }
    Ok(Json(ViewsBody { views }))
}

/// The query parameters of a view rebuild.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RebuildParams {
    /// Rebuild this shard's view only (default: every shard this node holds).
    shard: Option<u32>,
}

/// Drops a view (of one shard, or of every shard this node holds) and replays it from the
/// log. Answers at once; `GET /v1/admin/views` shows it catching up.
#[utoipa::path(
    post, path = "/v1/admin/views/{kind}/rebuild",
    params(("kind" = String, Path, description = "document, relational, namespaces, vector, timeseries or graph"), RebuildParams),
    responses(
        (status = 202, body = RebuildBody),
        (status = 400, body = ProblemBody, description = "invalid_query"),
        (status = 404, body = ProblemBody, description = "unknown_view"),
        (status = 421, body = ProblemBody, description = "not_hosted: this node holds no replica of the shard")
    )
)]
async fn rebuild_view(
    State(state): State<AppState>,
    UrlPath(kind): UrlPath<String>,
    params: Result<Query<RebuildParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query(params)?;
    let shards = state.views.rebuild(&kind, params.shard.map(ShardId))?;
    let body = RebuildBody {
        view: kind,
        shards: shards.into_iter().map(|s| s.0).collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
