//! The OpenAPI document of the HTTP API (`GET /v1/openapi.json`): the handlers'
//! `#[utoipa::path]` annotations and the schemas of `wire`, completed by the rules every route
//! shares, so no annotation can forget them. Invariant: the document names every status a route
//! can answer, and every error answer is `application/problem+json` with the `Problem` schema
//! (a test validates the document and a fuzzer checks the server against it: scripts/fuzz-api).

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::subscribe;
use super::wire::*;
use super::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ThemisDB",
        description = "Log-centric, event-sourced, multi-model database: HTTP API v1"
    ),
    paths(
        append_stream,
        read_stream,
        append_events,
        read_log,
        read_resource,
        run_query,
        write_lp,
        put_namespace,
        get_namespace,
        list_namespaces,
        subscribe::subscribe,
        subscribe::put_checkpoint,
        subscribe::get_checkpoint,
        list_views,
        rebuild_view,
        cluster,
        move_replica,
        livez,
        readyz,
        metrics
    ),
    components(schemas(
        UrnText,
        DocumentUrnText,
        ModelName,
        NamespaceName,
        GroupName,
        TokenText,
        DurationText,
        ExpectedRevisionSchema,
        EventInputSchema,
        QueryRequestSchema,
        QueryAnswerSchema,
        subscribe::CheckpointInput,
        subscribe::CheckpointBody,
        AppendStreamBody,
        AppendBatchBody,
        AppendResponse,
        AppendedEventBody,
        PositionBody,
        BatchResponse,
        WriteLpResponse,
        ShardResult,
        PartResult,
        StreamPageBody,
        LogPageBody,
        ResourceBody,
        QueryColumnBody,
        QueryAnswerBody,
        AqlAnswerBody,
        NamespaceBody,
        NamespacesBody,
        ViewsBody,
        RejectionBody,
        RebuildBody,
        ClusterBody,
        ClusterNodeBody,
        MoveReplicaBody,
        BulkItemResult,
        ProblemBody
    )),
    modifiers(&SharedAnswers)
)]
struct ApiDoc;

/// The OpenAPI document of the routes of [`super::router`].
pub fn document() -> Document {
    ApiDoc::openapi()
}

pub(super) async fn openapi() -> Json<Document> {
    Json(document())
}

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What every route shares, added where an annotation does not already say it:
/// - every answer of status 400 or above is a problem+json `Problem`;
/// - every `/v1` operation may answer 400 (a path parameter that is not UTF-8, an unknown query
///   parameter) and 500 (the store failed; never expected);
/// - every operation with a request body may answer 408 (the body stopped arriving), 413 (above
///   `--body-bytes-max`) and 415 (a `Content-Encoding` other than identity).
struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, doc: &mut Document) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                shared_answers(path, operation);
            }
        }
    }
}

fn shared_answers(path: &str, operation: &mut Operation) {
    let mut add = |status: u16, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem(description)));
    };
    if path.starts_with("/v1/") {
        add(
            400,
            "invalid_query (an unknown or malformed query parameter), or a path parameter that \
             is not UTF-8 once percent-decoded",
        );
        add(
            500,
            "storage_error, view_storage, corrupted or internal: the store failed or found \
             damage, or a bug (never expected)",
        );
    }
    if operation.request_body.is_some() {
        add(408, "request_timeout: the body stopped arriving");
        add(413, "payload_too_large: the body exceeds --body-bytes-max");
        add(
            415,
            "unsupported_encoding: the body has a Content-Encoding other than identity",
        );
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        if let (Ok(400..), RefOr::T(response)) = (status.parse::<u16>(), response) {
            response.content.clear();
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name(ProblemBody::name()))))
                    .build(),
            );
        }
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new().description(description).build()
}
