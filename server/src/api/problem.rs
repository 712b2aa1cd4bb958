//! RFC 9457 problem details: the one error body of the HTTP API. Every failure, from a malformed
//! body to an unknown route, reaches the client as `application/problem+json` with a stable
//! snake_case `code` to branch on.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use themis_log::{BatchError, Error as LogError};

/// A problem+json answer.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    extra: Map<String, Value>,
    /// Response headers beside the content type (`Accept-Encoding` on a 415).
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The body of every error answer (RFC 9457), sent as `application/problem+json`. Some problems
/// add members (`event_index`, `field`, `leader_url`, `errors`, ...: docs/API.md).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// Always `about:blank`: the `code` member identifies the problem.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub problem_type: String,
    /// Short summary of the status.
    pub title: String,
    /// HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// Stable snake_case code clients branch on.
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: String,
    /// What went wrong, for humans.
    pub detail: String,
}

impl Problem {
    /// A problem with `status`, `code` and a human-readable `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds a member to the body.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).expect("json value"),
        );
        self
    }

    /// A member added with [`Problem::with`].
    pub fn member(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body as JSON.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), "about:blank".into());
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("code".into(), self.code.into());
        body.insert("detail".into(), self.detail.clone().into());
        body.extend(self.extra.clone());
        Value::Object(body)
    }

    /// Malformed or unacceptable request bodies.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A JSON body that serde refused: unknown fields get their own code.
    pub fn from_json_error(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let code = if text.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_json"
        };
        Self::bad_request(code, format!("invalid request body: {text}"))
            .with("line", e.line())
            .with("column", e.column())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("problem serializes");
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<LogError> for Problem {
    fn from(e: LogError) -> Self {
        let status = match &e {
            LogError::WrongExpectedRevision { .. } | LogError::IdempotencyConflict { .. } => {
                StatusCode::CONFLICT
            }
            LogError::CrossShardBatch { .. }
            | LogError::UnknownShard { .. }
            | LogError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            LogError::NotLeader { .. } | LogError::NotHosted { .. } => {
                StatusCode::MISDIRECTED_REQUEST
            }
            LogError::OutcomeUnknown { .. } => StatusCode::BAD_GATEWAY,
            LogError::Unavailable { .. } | LogError::TooManySubscribers { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LogError::PositionExpired { .. } => StatusCode::GONE,
            LogError::Corrupted { .. } | LogError::Storage(_) | LogError::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let problem = Problem::new(status, e.code(), e.to_string());
        match e {
            LogError::WrongExpectedRevision {
                urn,
                expected,
                actual,
            } => problem
                .with("urn", urn)
                .with("expected_revision", expected)
                .with("current_revision", actual.map_or(-1, |r| r as i64)),
            LogError::IdempotencyConflict { id, .. } => problem.with("event_id", id),
            LogError::CrossShardBatch { shards } => problem.with("shards", shards),
            LogError::NotLeader { shard, leader } => {
                problem.with("shard", shard).with("leader", leader)
            }
            LogError::NotHosted { shard, replicas } => {
                problem.with("shard", shard).with("replicas", replicas)
            }
            LogError::PositionExpired {
                shard,
                requested,
                first,
            } => problem
                .with("shard", shard)
                .with("requested_lsn", requested.0)
                .with("first_lsn", first.0),
            LogError::TooManySubscribers { limit } => problem.with("limit", limit),
            LogError::Unavailable { shard, .. }
            | LogError::UnknownShard { shard, .. }
            | LogError::OutcomeUnknown { shard, .. } => problem.with("shard", shard),
            _ => problem,
        }
    }
}

impl From<themis_materializers::Error> for Problem {
    fn from(e: themis_materializers::Error) -> Self {
        use themis_materializers::Error as ViewError;
        let status = match &e {
            ViewError::Log(inner) => return Problem::from(inner.clone()),
            ViewError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ViewError::UnknownView(_) => StatusCode::NOT_FOUND,
            ViewError::InvalidNamespace(_) => StatusCode::BAD_REQUEST,
            ViewError::NotHosted(_) => StatusCode::MISDIRECTED_REQUEST,
            ViewError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ViewError::UnknownNamespace(_) => StatusCode::NOT_FOUND,
            ViewError::InvalidSearch(_) => StatusCode::BAD_REQUEST,
            ViewError::Stopped { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let problem = Problem::new(status, e.code(), e.to_string());
        match e {
            ViewError::Timeout { shard, at, .. } => {
                problem.with("shard", shard).with("watermark", at)
            }
            ViewError::NotHosted(shard) => problem.with("shard", shard),
            ViewError::Stopped { kind, shard, .. } => {
                problem.with("view", kind).with("shard", shard)
            }
            _ => problem,
        }
    }
}

impl From<BatchError> for Problem {
    fn from(e: BatchError) -> Self {
        Problem::bad_request(e.source.code, e.to_string())
            .with("event_index", e.index)
            .with("field", &e.source.field)
    }
}

impl From<themis_query::Error> for Problem {
    fn from(e: themis_query::Error) -> Self {
        use themis_query::Error as QueryError;
        let status = match &e {
            QueryError::View(inner) => return Problem::from(inner.clone()),
            QueryError::Log(inner) => return Problem::from(inner.clone()),
            QueryError::InvalidSql(_)
            | QueryError::UnknownTable(_)
            | QueryError::AqlSyntax(_)
            | QueryError::InvalidAql(_)
            | QueryError::Failed(_)
            | QueryError::TooLarge { .. }
            | QueryError::AnswerTooLarge { .. }
            | QueryError::ValueTooLarge(_) => StatusCode::BAD_REQUEST,
            // The pool is shared: the same query may fit once others finish.
            QueryError::MemoryExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let problem = Problem::new(status, e.code(), e.to_string());
        match e {
            QueryError::TooLarge { max } => problem.with("rows_max", max),
            QueryError::AnswerTooLarge { bytes_max } => problem.with("bytes_max", bytes_max),
            QueryError::AqlSyntax(s) => problem.with("line", s.line).with("column", s.column),
            _ => problem,
        }
    }
}
