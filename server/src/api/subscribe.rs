//! Change streams over HTTP: `GET /v1/subscribe` as Server-Sent Events or NDJSON, and consumer
//! checkpoints (`/v1/consumers/{group}/checkpoint`) stored through the log.
//!
//! Invariant: every event, progress, caught_up and heartbeat message carries the cursor right
//! after everything sent before it (the SSE `id:`), so a client that resumes from the last cursor
//! it received, by `from=` or SSE's `Last-Event-ID`, misses nothing and receives nothing twice.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use themis_log::subscribe::{Cursor, Delivered, Delivery, Filter, From, Subscription};
use themis_log::{Consistency, EventInput, Urn};

use super::extract::{RequestBody, UrlPath};
use super::wire::{ExpectedRevisionSchema, GroupName};
use super::{AppState, NoParams, Problem};

/// Shortest and longest heartbeat period a subscriber may ask for.
const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
const HEARTBEAT_MAX: Duration = Duration::from_secs(300);
/// Progress messages (the filter rejected what passed) are sent at most this often; the
/// heartbeat carries the cursor in between.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A chunk of the response gathers what is ready, up to this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// The wire format of a subscription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Sse,
    Ndjson,
}

fn format(headers: &HeaderMap) -> Result<Format, Problem> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/event-stream") {
        return Ok(Format::Sse);
    }
    if accept.is_empty()
        || accept.contains("application/x-ndjson")
        || accept.contains("application/json")
        || accept.contains("*/*")
    {
        return Ok(Format::Ndjson);
    }
    Err(Problem::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!(
            "a subscription is sent as text/event-stream or application/x-ndjson, not {accept:?}"
        ),
    ))
}

/// `GET /v1/subscribe?from=&filter=key=value&heartbeat=`: events of every shard from `from`
/// (`earliest`, `latest` (the default), a cursor `r1.…`, or a token `t1.…`), SSE's
/// `Last-Event-ID` taking precedence.
#[utoipa::path(
    get, path = "/v1/subscribe",
    params(
        ("from" = Option<String>, Query, description = "earliest, latest (default), a resume cursor r1.… or a token t1.…"),
        ("filter" = Option<Vec<String>>, Query, description = "key=value, repeatable; keys urn, model, ns, type"),
        ("heartbeat" = Option<String>, Query, description = "heartbeat period, 100ms to 5m"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume cursor; wins over from"),
    ),
    responses(
        (status = 200, description = "text/event-stream or application/x-ndjson: event, progress, caught_up, heartbeat and error messages, each with its resume cursor (docs/API.md)"),
        (status = 400, body = super::ProblemBody, description = "invalid_cursor, invalid_filter, invalid_query"),
        (status = 406, body = super::ProblemBody, description = "not_acceptable"),
        (status = 410, body = super::ProblemBody, description = "position_expired"),
        (status = 421, body = super::ProblemBody, description = "not_hosted"),
        (status = 503, body = super::ProblemBody, description = "too_many_subscribers"),
    )
)]
pub(super) async fn subscribe(
    State(state): State<AppState>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let params = super::query(params)?;
    let format = format(&headers)?;
    let mut from_text: Option<String> = None;
    let mut filters = Vec::new();
    let mut heartbeat = state.limits.heartbeat;
    for (key, value) in &params {
        match key.as_str() {
            "from" => from_text = Some(value.clone()),
            "filter" => filters.push(value.as_str()),
            "heartbeat" => {
                heartbeat = themis_log::units::parse_duration(value).map_err(|e| {
                    Problem::bad_request("invalid_query", format!("heartbeat: {e}"))
                })?;
                if !(HEARTBEAT_MIN..=HEARTBEAT_MAX).contains(&heartbeat) {
                    return Err(Problem::bad_request(
                        "invalid_query",
                        format!(
                            "heartbeat must be between {HEARTBEAT_MIN:?} and {HEARTBEAT_MAX:?}"
                        ),
                    ));
                }
            }
            other => {
                return Err(Problem::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}; parameters are from, filter, heartbeat"),
                ));
            }
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().map_err(|_| {
            Problem::bad_request("invalid_cursor", "Last-Event-ID is not visible ASCII")
        })?;
        from_text = Some(last.to_owned());
    }
    let from = From::parse(from_text.as_deref().unwrap_or("latest"))
        .map_err(|e| Problem::bad_request("invalid_cursor", e.to_string()))?;
    let filter = Filter::parse(filters)
        .map_err(|e| Problem::bad_request("invalid_filter", e.to_string()))?;
    // Every shard, hosted here (`not_hosted` names the first that is not).
    let shards = (0..state.log.shard_count())
        .map(|s| state.log.shard(themis_log::ShardId(s)))
        .collect::<themis_log::Result<Vec<_>>>()?;
    let subscription = state.subscriptions.subscribe(shards, from, filter)?;
    let stream = Stream {
        subscription,
        format,
        heartbeat,
        linger: state.limits.linger,
        last_write: Duration::ZERO,
        next_heartbeat: state.clock.monotonic() + heartbeat,
        last_progress: state.clock.monotonic(),
        clock: state.clock.clone(),
        closing: state.closing.clone(),
        done: false,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        let chunk = s.chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    }));
    let content_type = match format {
        Format::Sse => "text/event-stream",
        Format::Ndjson => "application/x-ndjson",
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer (nginx) must pass each message on at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A subscription being written out.
struct Stream {
    subscription: Subscription,
    format: Format,
    heartbeat: Duration,
    linger: Duration,
    /// On `clock`'s monotonic scale.
    last_write: Duration,
    next_heartbeat: Duration,
    last_progress: Duration,
    clock: std::sync::Arc<dyn themis_log::seam::Clock>,
    closing: tokio::sync::watch::Receiver<bool>,
    done: bool,
}

impl Stream {
    /// The next chunk: what is ready now, or a heartbeat when nothing was for a period. None
    /// once the stream ended (after an error message, or at shutdown).
    async fn chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        let first = tokio::select! {
            d = self.subscription.next() => Some(d),
            _ = tokio::time::sleep(self.next_heartbeat.saturating_sub(self.clock.monotonic())) => None,
            _ = self.closing.wait_for(|&c| c) => {
                self.done = true;
                return None;
            }
        };
        match first {
            None => {
                let cursor = self.subscription.cursor().clone();
                self.control(&mut out, "heartbeat", &cursor);
            }
            Some(d) => {
                self.push(&mut out, d);
                self.drain(&mut out);
                // Under load (the previous write was less than `linger` ago), wait until
                // `linger` after it, so what arrives meanwhile shares one write; after a quiet
                // spell the first message goes out at once.
                let since = self.clock.monotonic().saturating_sub(self.last_write);
                if since < self.linger && !self.done && out.len() < CHUNK_BYTES {
                    tokio::time::sleep(self.linger - since).await;
                    self.drain(&mut out);
                }
            }
        }
        self.last_write = self.clock.monotonic();
        self.next_heartbeat = self.last_write + self.heartbeat;
        Some(Bytes::from(out))
    }

    /// Adds whatever else is ready to `out`, up to a chunk's size.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while !self.done && out.len() < CHUNK_BYTES {
            match self.subscription.try_next() {
                Some(d) => self.push(out, d),
                None => break,
            }
        }
    }

    fn push(&mut self, out: &mut Vec<u8>, delivery: themis_log::Result<Delivery>) {
        match delivery {
            Ok(Delivery::Event(d, cursor)) => self.event(out, &d, &cursor),
            Ok(Delivery::Progress(cursor)) => {
                if self.clock.monotonic().saturating_sub(self.last_progress) >= PROGRESS_EVERY {
                    self.control(out, "progress", &cursor);
                }
            }
            Ok(Delivery::CaughtUp(cursor)) => self.control(out, "caught_up", &cursor),
            Err(e) => {
                // The stream ends with the reason; the client resumes from its last cursor.
                let problem = Problem::from(e);
                let body = serde_json::to_string(&problem.body()).expect("problem serializes");
                match self.format {
                    Format::Sse => {
                        out.extend_from_slice(b"event: error\ndata: ");
                        out.extend_from_slice(body.as_bytes());
                        out.extend_from_slice(b"\n\n");
                    }
                    Format::Ndjson => {
                        let mut value: serde_json::Value =
                            serde_json::from_str(&body).expect("json");
                        value["type"] = "error".into();
                        out.extend_from_slice(value.to_string().as_bytes());
                        out.push(b'\n');
                    }
                }
                self.done = true;
            }
        }
    }

    fn event(&mut self, out: &mut Vec<u8>, d: &Delivered, cursor: &Cursor) {
        use std::io::Write;
        let cursor = cursor.encode();
        if self.format == Format::Sse {
            out.extend_from_slice(b"event: event\nid: ");
            out.extend_from_slice(cursor.as_bytes());
            out.extend_from_slice(b"\ndata: ");
        }
        // Written by hand around the event's JSON, which is rendered once per entry and shared
        // by the subscribers: type, cursor, shard, lsn, index, revision, ts_ms, event.
        let _ = write!(
            out,
            "{{\"type\":\"event\",\"cursor\":\"{cursor}\",\"shard\":{},\"lsn\":{},\"index\":{},\
             \"revision\":{},\"ts_ms\":{},\"event\":",
            d.shard.0, d.lsn.0, d.index, d.revision, d.ts_ms
        );
        out.extend_from_slice(d.event_json().as_bytes());
        out.push(b'}');
        out.extend_from_slice(match self.format {
            Format::Sse => b"\n\n",
            Format::Ndjson => b"\n",
        });
        self.last_progress = self.clock.monotonic();
    }

    fn control(&mut self, out: &mut Vec<u8>, kind: &'static str, cursor: &Cursor) {
        let text = cursor.encode();
        let message = ControlMessage {
            kind,
            cursor: &text,
            token: cursor.token().encode(),
        };
        self.write(out, kind, &text, &message);
        self.last_progress = self.clock.monotonic();
    }

    fn write(&self, out: &mut Vec<u8>, kind: &str, cursor: &str, message: &impl Serialize) {
        match self.format {
            Format::Sse => {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(kind.as_bytes());
                out.extend_from_slice(b"\nid: ");
                out.extend_from_slice(cursor.as_bytes());
                out.extend_from_slice(b"\ndata: ");
                serde_json::to_writer(&mut *out, message).expect("message serializes");
                out.extend_from_slice(b"\n\n");
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut *out, message).expect("message serializes");
                out.push(b'\n');
            }
        }
    }
}

/// A progress, caught_up or heartbeat message.
#[derive(Serialize)]
struct ControlMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    cursor: &'a str,
    /// The consistency token of everything delivered (a query's `min_token`).
    token: String,
}

/// The reserved namespace of consumer checkpoints.
const CONSUMER_NAMESPACE: &str = "_consumer";

fn checkpoint_urn(group: &str) -> Result<Urn, Problem> {
    Urn::parse(&format!("urn:themis:document:{CONSUMER_NAMESPACE}:{group}")).map_err(|e| {
        Problem::bad_request(
            "invalid_group",
            format!(
                "consumer group {group:?} is not valid: it must be 1 to 256 characters of \
                 A-Z a-z 0-9 - . _ ~ ({e})"
            ),
        )
    })
}

/// `PUT /v1/consumers/{group}/checkpoint`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointInput {
    /// The resume cursor to store (`r1.…`, from a subscription message).
    cursor: String,
    /// The checkpoint's revision this write replaces (fencing between consumers of a group).
    #[serde(default)]
    #[schema(value_type = Option<ExpectedRevisionSchema>)]
    expected_revision: Option<serde_json::Value>,
}

/// A stored checkpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CheckpointBody {
    group: String,
    cursor: String,
    /// Consistency token of everything the cursor has passed.
    cursor_token: String,
    revision: u64,
    /// The token of the checkpoint's own write (PUT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// `PUT /v1/consumers/{group}/checkpoint {"cursor": "r1.…"}`: stores the group's resume cursor
/// as an event of `urn:themis:document:_consumer:{group}`, replicated like any other.
#[utoipa::path(
    put, path = "/v1/consumers/{group}/checkpoint",
    params(("group" = GroupName, Path)),
    request_body = CheckpointInput,
    responses(
        (status = 200, body = CheckpointBody),
        (status = 400, body = super::ProblemBody, description = "invalid_cursor, invalid_group, invalid_revision, invalid_json, unknown_field, invalid_query"),
        (status = 409, body = super::ProblemBody, description = "wrong_expected_revision"),
        (status = 421, body = super::ProblemBody, description = "not_leader or not_hosted"),
        (status = 502, body = super::ProblemBody, description = "outcome_unknown"),
        (status = 503, body = super::ProblemBody, description = "unavailable: the shard has no leader"),
        (status = 504, body = super::ProblemBody, description = "timeout: the write's outcome is unknown"),
    )
)]
pub(super) async fn put_checkpoint(
    State(state): State<AppState>,
    UrlPath(group): UrlPath<String>,
    params: Result<Query<NoParams>, QueryRejection>,
    RequestBody(bytes): RequestBody,
) -> Result<Response, Problem> {
    super::query(params)?;
    let urn = checkpoint_urn(&group)?;
    let input: CheckpointInput =
        serde_json::from_slice(&bytes).map_err(|e| Problem::from_json_error(&e))?;
    let cursor = Cursor::decode(&input.cursor)
        .map_err(|e| Problem::bad_request("invalid_cursor", e.to_string()))?;
    if let Some(shard) = cursor.shards().find(|s| s.0 >= state.log.shard_count()) {
        return Err(Problem::bad_request(
            "invalid_cursor",
            format!(
                "the cursor names shard {shard}; this database has shards 0 to {}",
                state.log.shard_count() - 1
            ),
        ));
    }
    let mut event = serde_json::json!({
        "urn": urn.as_str(),
        "type": "ConsumerCheckpointed",
        "op": "put",
        "data": {"cursor": cursor.encode()},
    });
    if let Some(expected) = input.expected_revision {
        event["expected_revision"] = expected;
    }
    let event: EventInput = serde_json::from_value(event)
        .map_err(|e| Problem::bad_request("invalid_revision", e.to_string()))?;
    let appended = super::append_system(&state, event).await?;
    let body = CheckpointBody {
        group,
        cursor_token: cursor.token().encode(),
        cursor: cursor.encode(),
        revision: appended.events[0].revision,
        token: Some(themis_log::Token::from_position(appended.position).encode()),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `GET /v1/consumers/{group}/checkpoint`: the group's last stored cursor (linearizable).
#[utoipa::path(
    get, path = "/v1/consumers/{group}/checkpoint",
    params(("group" = GroupName, Path)),
    responses(
        (status = 200, body = CheckpointBody),
        (status = 400, body = super::ProblemBody, description = "invalid_group, invalid_query"),
        (status = 404, body = super::ProblemBody, description = "checkpoint_not_found"),
        (status = 421, body = super::ProblemBody, description = "not_leader or not_hosted (the read is linearizable)"),
        (status = 503, body = super::ProblemBody, description = "unavailable: the shard has no leader"),
    )
)]
pub(super) async fn get_checkpoint(
    State(state): State<AppState>,
    UrlPath(group): UrlPath<String>,
    params: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, Problem> {
    super::query(params)?;
    let urn = checkpoint_urn(&group)?;
    // The stream's current revision, then the event at it.
    let head = state
        .log
        .read_stream(&urn, 0, 1, Consistency::Linearizable)
        .await?;
    let last = match head.revision {
        None => None,
        Some(revision) => state
            .log
            .read_stream(&urn, revision, 1, Consistency::Stale)
            .await?
            .events
            .pop(),
    };
    let Some(stored) = last else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
            format!("consumer group {group:?} has no checkpoint"),
        ));
    };
    let cursor = stored
        .event
        .data
        .as_ref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
        .and_then(|v| v["cursor"].as_str().map(str::to_owned))
        .and_then(|c| Cursor::decode(&c).ok())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupted",
                format!("the checkpoint of {group:?} holds no valid cursor"),
            )
        })?;
    let body = CheckpointBody {
        group,
        cursor_token: cursor.token().encode(),
        cursor: cursor.encode(),
        revision: stored.revision,
        token: None,
    };
    Ok(Json(body).into_response())
}
