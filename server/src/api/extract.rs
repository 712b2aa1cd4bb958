//! Extractors for the parts of a request that axum would otherwise refuse in its own plain-text
//! words: the path parameters and the body. Invariant: every rejection is a problem+json with a
//! stable `code`, the same code a handler gives for a bad value of that part (a path that is not
//! UTF-8 once percent-decoded is an `invalid_urn` on a URN route), so clients branch on one code
//! per mistake whichever layer caught it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{AppState, Problem};

/// Path parameters, percent-decoded (`400` problem+json when they are not UTF-8).
pub(crate) struct UrlPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for UrlPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(UrlPath(value)),
            Err(rejection) => Err(path_problem(&rejection)),
        }
    }
}

/// The code of a bad path parameter: the one its handler uses for a bad value.
fn path_code(key: &str) -> &'static str {
    match key {
        "urn" => "invalid_urn",
        "model" => "invalid_model",
        "ns" => "invalid_namespace",
        "shard" => "invalid_shard",
        "group" => "invalid_group",
        _ => "invalid_path",
    }
}

fn path_problem(rejection: &PathRejection) -> Problem {
    use axum::extract::path::ErrorKind;
    let key = match rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::InvalidUtf8InPathParam { key }
            | ErrorKind::ParseErrorAtKey { key, .. }
            | ErrorKind::DeserializeError { key, .. } => Some(key.as_str()),
            _ => None,
        },
        _ => None,
    };
    let problem = Problem::bad_request(
        key.map_or("invalid_path", path_code),
        format!("invalid path: {}", rejection.body_text()),
    );
    match key {
        Some(key) => problem.with("parameter", key),
        None => problem,
    }
}

/// A request body, read whole: `413` above the size limit, `408` when it stops arriving, and
/// `415` when the client says it is encoded. The server decodes no content coding, so a
/// compressed body would otherwise be parsed as if it were plain text.
pub(crate) struct RequestBody(pub Bytes);

impl FromRequest<AppState> for RequestBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        check_encoding(request.headers())?;
        let body = Bytes::from_request(request, state).await;
        body_bytes(body, state.limits.body_bytes_max).map(RequestBody)
    }
}

/// Refuses a body with a content coding other than `identity` (RFC 9110 §8.4; the answer names
/// the codings accepted in `Accept-Encoding`, as §15.5.16 asks).
fn check_encoding(headers: &HeaderMap) -> Result<(), Problem> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let refused = match value.to_str() {
            Ok(text) => text
                .split(',')
                .map(str::trim)
                .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
                .map(str::to_owned),
            Err(_) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        };
        if let Some(coding) = refused {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!(
                    "the request body is sent with Content-Encoding {coding:?}; this server \
                     decodes no content coding: send the body as it is (identity)"
                ),
            )
            .with_header(header::ACCEPT_ENCODING, "identity"));
        }
    }
    Ok(())
}

/// The body, or why it could not be read.
pub(super) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds the limit of {limit} bytes"),
            )
        } else if timed_out(&rejection) {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive in time: {rejection}"),
            )
        } else {
            Problem::bad_request(
                "invalid_body",
                format!("cannot read the request body: {rejection}"),
            )
        }
    })
}

/// Whether reading the body failed because it stopped arriving (a read timeout of the
/// connection, as an I/O error, or a tokio timeout wrapped around the body).
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.is::<tokio::time::error::Elapsed>()
        {
            return true;
        }
        source = e.source();
    }
    false
}
