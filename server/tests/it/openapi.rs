//! The OpenAPI document the server serves (`GET /v1/openapi.json`): it passes a standard
//! validator, and it states the rules the server applies (the URN grammar, the enums, the one-of
//! query kinds) and the answers it gives (every error as problem+json, every status a route can
//! answer). scripts/fuzz-api then fuzzes the real server against it.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::api::get;
use crate::harness::Server;
use crate::python::python_with;

async fn document() -> (Server, tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let answer = get(&server.base, "/v1/openapi.json").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let doc = answer.json();
    (server, dir, doc)
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    out
}

fn statuses(operation: &Value) -> BTreeSet<u16> {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_passes_openapi_spec_validator() {
    let (_server, dir, doc) = document().await;
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let python = python_with("openapi_spec_validator", "openapi-spec-validator==0.9.0");
    let out = std::process::Command::new(python)
        .args(["-m", "openapi_spec_validator", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_answer_is_documented_as_problem_json() {
    let (_server, _dir, doc) = document().await;
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
    for (path, method, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status.parse::<u16>().unwrap() < 400 {
                continue;
            }
            assert_eq!(
                response["content"],
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}),
                "{method} {path} {status}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_names_every_status_a_route_answers() {
    let (_server, _dir, doc) = document().await;
    for (path, method, operation) in operations(&doc) {
        let statuses = statuses(&operation);
        // Any /v1 route refuses unknown query parameters and paths that are not UTF-8.
        if path.starts_with("/v1/") {
            assert!(statuses.contains(&400), "{method} {path}: {statuses:?}");
        }
        // Any body can be too large, stop arriving, or come encoded.
        if operation.get("requestBody").is_some() {
            for status in [408, 413, 415] {
                assert!(statuses.contains(&status), "{method} {path}: {statuses:?}");
            }
        }
    }
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let cases: [(&str, &str, &[u16]); 8] = [
        ("/v1/streams/{urn}", "post", &[201, 409, 421, 502, 503, 504]),
        ("/v1/streams/{urn}", "get", &[200, 404, 421, 503]),
        ("/v1/log/{shard}", "get", &[200, 404, 410]),
        ("/v1/resources/{urn}", "get", &[200, 404, 504]),
        ("/v1/query", "post", &[200, 404, 421, 503, 504]),
        ("/v1/write_lp", "post", &[201, 207, 503, 504]),
        ("/v1/admin/views/{kind}/rebuild", "post", &[202, 404, 421]),
        ("/v1/consumers/{group}/checkpoint", "get", &[200, 404]),
    ];
    for (path, method, wanted) in cases {
        let statuses = statuses(&op(path, method));
        for status in wanted {
            assert!(statuses.contains(status), "{method} {path}: {statuses:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_states_the_servers_rules() {
    let (_server, _dir, doc) = document().await;
    let schemas = &doc["components"]["schemas"];
    // write_lp's parameters are query parameters, with their values.
    let params = doc["paths"]["/v1/write_lp"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(param("wait")["in"], "query");
    assert_eq!(
        param("wait")["schema"]["enum"],
        json!(["committed", "applied"])
    );
    assert_eq!(param("precision")["in"], "query");
    assert_eq!(
        param("precision")["schema"]["enum"],
        json!(["ns", "us", "ms", "s"])
    );
    // The URN grammar of log/src/urn.rs (namespaces `.` and `..` excluded).
    assert_eq!(
        schemas["Urn"]["pattern"],
        r"^urn:themis:(relational|document|graph|vector|timeseries):(?:[a-z0-9_-][a-z0-9_.-]{0,63}|\.[a-z0-9_-][a-z0-9_.-]{0,62}|\.\.[a-z0-9_.-]{1,62}):[A-Za-z0-9._~-]{1,256}$"
    );
    let stream = &doc["paths"]["/v1/streams/{urn}"]["post"]["parameters"][0];
    assert_eq!(
        (&stream["in"], &stream["schema"]["$ref"]),
        (&json!("path"), &json!("#/components/schemas/Urn"))
    );
    assert_eq!(
        schemas["Model"]["enum"],
        json!(["relational", "document", "graph", "vector", "timeseries"])
    );
    assert_eq!(
        schemas["Namespace"]["pattern"],
        r"^(?:[a-z0-9-][a-z0-9_.-]{0,63}|\.[a-z0-9_-][a-z0-9_.-]{0,62}|\.\.[a-z0-9_.-]{1,62})$",
        "the URN's namespace grammar, less the names reserved for the database"
    );
    // Appends hold at least one event; checkpoints a cursor.
    for body in ["AppendStreamBody", "AppendBatchBody"] {
        assert_eq!(
            schemas[body]["properties"]["events"]["minItems"], 1,
            "{body}"
        );
        assert_eq!(
            schemas[body]["properties"]["events"]["items"]["$ref"],
            "#/components/schemas/EventInput"
        );
    }
    assert!(
        schemas["CheckpointInput"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("cursor"))
    );
    // An expected revision is a name or a number from -1.
    let kinds = schemas["ExpectedRevision"]["oneOf"].as_array().unwrap();
    assert_eq!(kinds.len(), 2);
    assert_eq!(kinds[0]["enum"], json!(["any", "no_stream", "exists"]));
    assert_eq!(
        (&kinds[1]["type"], &kinds[1]["minimum"]),
        (&json!("integer"), &json!(-1))
    );
    // A query is exactly one of its kinds.
    let kinds: BTreeSet<String> = schemas["QueryRequest"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| {
            assert_eq!(kind["additionalProperties"], false, "{kind}");
            kind["required"][0].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "sql",
        "aql",
        "cursor",
        "knn",
        "search",
        "hybrid",
        "traverse",
        "shortest_path",
        "ts_range",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds, expected);
    assert_eq!(
        doc["paths"]["/v1/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/QueryRequest"
    );
}
