//! Inputs real clients sent that crashed a node or stopped its views (issue 18), against the
//! real binary: event data the views cannot store, AQL expressions deep enough to overflow a
//! stack, values built past their bound, and namespace names that are directory names.
#![allow(clippy::disallowed_methods)] // test: raw requests on a real blocking socket

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::api::{Answer, get, post, send};
use crate::harness::Server;

async fn post_text(base: &str, path: &str, content_type: &str, body: String) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// `data` that the views could not store, and the field each refusal names.
fn poison() -> Vec<(String, &'static str)> {
    let nested = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    vec![
        (r#"{"name": "\ud800"}"#.into(), "data.name"),
        (r#"{"x": ["ok", "\udfff"]}"#.into(), "data.x[1]"),
        (r#"{"n": 1e999}"#.into(), "data.n"),
        (r#"{"n": -1e400}"#.into(), "data.n"),
        (format!(r#"{{"n": {}}}"#, "9".repeat(400)), "data.n"),
        (nested(65), "data"),
        (nested(129), "data"),
        (r#"{"a": 1, "a": 2}"#.into(), "data.a"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn event_data_no_view_can_store_is_refused_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let doc = "urn:themis:document:users:a";
    let vertex = "urn:themis:graph:g:v";
    for (data, field) in poison() {
        let check = |r: &Answer, what: &str| {
            let body = r.problem(400, "invalid_field");
            assert!(
                body["field"].as_str().unwrap().starts_with(field),
                "{what} {data:.60}: {}",
                r.text
            );
        };
        for (urn, op) in [
            (doc, "put"),
            (doc, "patch"),
            (vertex, "put"),
            (vertex, "patch"),
        ] {
            let r = post_text(
                b,
                &format!("/v1/streams/{urn}"),
                "application/json",
                format!(r#"{{"events": [{{"op": "{op}", "data": {data}}}]}}"#),
            )
            .await;
            check(&r, op);
        }
        // Edge data of a link, and metadata of any event.
        let r = post_text(
            b,
            &format!("/v1/streams/{vertex}"),
            "application/json",
            format!(
                r#"{{"events": [{{"op": "link", "to": "urn:themis:graph:g:w", "label": "l", "data": {data}}}]}}"#
            ),
        )
        .await;
        check(&r, "link");
        let r = post_text(
            b,
            &format!("/v1/streams/{doc}"),
            "application/json",
            format!(r#"{{"events": [{{"op": "put", "data": {{}}, "metadata": {data}}}]}}"#),
        )
        .await;
        let body = r.problem(400, "invalid_field");
        assert!(
            body["field"].as_str().unwrap().starts_with("metadata"),
            "{}",
            r.text
        );
        // A batch is refused whole, naming the event.
        let r = post_text(
            b,
            "/v1/events",
            "application/json",
            format!(
                r#"{{"events": [{{"urn": "{doc}", "op": "put", "data": {{}}}}, {{"urn": "{doc}", "op": "patch", "data": {data}}}]}}"#
            ),
        )
        .await;
        check(&r, "batch");
        assert_eq!(r.json()["event_index"], 1);
        // NDJSON bulk: that line fails, the others append.
        let good = json!({"urn": "urn:themis:document:users:ok", "op": "put", "data": {}});
        let lines = format!("{good}\n{{\"urn\": \"{doc}\", \"op\": \"put\", \"data\": {data}}}\n");
        let r = post_text(b, "/v1/events", "application/x-ndjson", lines).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items: Vec<Value> = r
            .text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(items[0]["status"], 201, "{}", r.text);
        assert_eq!(items[1]["status"], 400, "{}", r.text);
        assert_eq!(items[1]["error"]["code"], "invalid_field");
    }
    // Nothing of the refused appends reached the log: the stream does not exist, and the views
    // still apply what comes next.
    get(b, &format!("/v1/streams/{doc}"))
        .await
        .problem(404, "stream_not_found");
    let r = post(
        b,
        &format!("/v1/streams/{doc}?wait=applied"),
        &json!({"events": [{"op": "put", "data": {"name": "Zoë 😀", "big": 12345678901234567890u64,
            "deep": {"a": {"b": {"c": [1, [2, [3]]]}}}}}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Points at the ends of time and of the doubles apply (or are refused), never stop a view.
    let r = post_text(
        b,
        "/v1/streams/urn:themis:timeseries:cpu:h?wait=applied",
        "application/json",
        r#"{"events": [{"op": "points", "points": [[-9223372036854775808, 1.7976931348623157e308],
            [9223372036854775807, -1.7976931348623157e308], [0, -0.0], [1, 5e-324]]}]}"#
            .to_owned(),
    )
    .await;
    assert!(r.status == 201 || r.status == 400, "{}", r.text);
    assert_eq!(get(b, "/readyz").await.status, 200);
    let views = get(b, "/v1/admin/views").await.json();
    for v in views["views"].as_array().expect("views") {
        assert_eq!(v["state"], "running", "{v}");
        assert_eq!(v["entries_rejected"], 0, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aql_chains_deep_enough_to_overflow_a_stack_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    // About 64 KB of `+`, `AND`, `||`: this once aborted the whole process.
    for link in [" + 1", " AND 1", " || 1"] {
        let aql = format!("RETURN 1{}", link.repeat(16_000));
        let r = post(b, "/v1/query", &json!({"aql": aql})).await;
        let body = r.problem(400, "invalid_aql");
        assert!(
            body["detail"].as_str().unwrap().contains("levels high"),
            "{}",
            r.text
        );
    }
    // Just below the limit the query runs.
    let aql = format!("RETURN 1{}", " + 1".repeat(990));
    let r = post(b, "/v1/query", &json!({"aql": aql})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["result"], json!([991]));
    assert_eq!(get(b, "/livez").await.status, 200);
}

/// `repeat('x', 2147483647)` once took 8 GB and minutes, past its timeout (DataFusion folds
/// constants while planning): now refused before anything is built.
#[tokio::test(flavor = "multi_thread")]
async fn sql_and_aql_values_past_their_bound_are_refused_before_they_are_built() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    for sql in [
        "SELECT repeat('x', 2147483647)",
        "SELECT lpad('x', 2147483647) AS v",
        "SELECT range(0, 1000000000000)",
    ] {
        let r = post(b, "/v1/query", &json!({"sql": sql, "timeout": "5s"})).await;
        let body = r.problem(400, "value_too_large");
        assert!(
            body["detail"].as_str().unwrap().contains("bytes"),
            "{}",
            r.text
        );
    }
    let aql = "RETURN SUBSTITUTE(SUBSTITUTE(SUBSTITUTE('xxxxxxxxxx', 'x', @k), 'x', @k), 'x', @k)";
    let r = post(
        b,
        "/v1/query",
        &json!({"aql": aql, "params": {"k": "x".repeat(1000)}}),
    )
    .await;
    r.problem(400, "value_too_large");
    let r = post(
        b,
        "/v1/query",
        &json!({"sql": "SELECT repeat('ab', 2) AS v"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["rows"], json!([{"v": "abab"}]));
    assert_eq!(get(b, "/livez").await.status, 200);
}

/// Sends a raw request (HTTP clients normalize `.` and `..` path segments away) and returns
/// the status line and body.
fn raw(base: &str, request: &str) -> (String, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_that_name_directories_are_refused_and_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    for ns in [".", "..", "%2e", "%2E%2E"] {
        for (method, path, body) in [
            (
                "PUT",
                format!("/v1/namespaces/document/{ns}"),
                r#"{"text_fields": ["t"]}"#.to_owned(),
            ),
            (
                "PUT",
                format!("/v1/namespaces/vector/{ns}"),
                r#"{"dimension": 2}"#.to_owned(),
            ),
            (
                "POST",
                format!("/v1/streams/urn:themis:document:{ns}:x"),
                r#"{"events": [{"op": "put", "data": {"t": "hello"}}]}"#.to_owned(),
            ),
            (
                "POST",
                "/v1/events".to_owned(),
                format!(
                    r#"{{"events": [{{"urn": "urn:themis:vector:{ns}:x", "op": "put", "vector": [1, 2]}}]}}"#
                ),
            ),
        ] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let b2 = b.clone();
            let (status, answer) = tokio::task::spawn_blocking(move || raw(&b2, &request))
                .await
                .unwrap();
            // Refused (400), or for a percent-encoded `..` in the path not routed at all (404):
            // never accepted.
            assert!(
                status.contains(" 400 ") || status.contains(" 404 "),
                "{method} {path}: {status} {answer}"
            );
            if status.contains(" 400 ") {
                assert!(
                    answer.contains("invalid_urn") || answer.contains("invalid_namespace"),
                    "{method} {path}: {answer}"
                );
            }
        }
    }
    // Names with dots that are not directory names are fine, and survive a restart with the
    // indexes they made.
    for ns in ["...", "a..b", ".x"] {
        let r = send(
            reqwest::Client::new()
                .put(format!("{b}/v1/namespaces/document/{ns}?wait=applied"))
                .json(&json!({"text_fields": ["t"]})),
        )
        .await;
        assert!(r.status == 201 || r.status == 200, "{ns}: {}", r.text);
        let r = post(
            &b,
            &format!("/v1/streams/urn:themis:document:{ns}:x?wait=applied"),
            &json!({"events": [{"op": "put", "data": {"t": "hello world"}}]}),
        )
        .await;
        assert_eq!(r.status, 201, "{ns}: {}", r.text);
    }
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    for ns in ["...", "a..b", ".x"] {
        let r = post(
            &server.base,
            "/v1/query",
            &json!({"search": {"namespace": ns, "query": "hello"}}),
        )
        .await;
        assert_eq!(r.status, 200, "{ns}: {}", r.text);
        assert_eq!(
            r.json()["rows"].as_array().map(Vec::len),
            Some(1),
            "{ns}: {}",
            r.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn line_protocol_errors_are_counted_all_and_listed_up_to_a_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // A good line, then 200,000 bad ones: one answer, every error counted, 100 listed.
    let body = format!("cpu v=1 1\n{}", "cpu v=\n".repeat(200_000));
    let r = post_text(&server.base, "/v1/write_lp", "text/plain", body).await;
    let problem = r.problem(400, "invalid_line_protocol");
    assert_eq!(problem["error_count"], 200_000, "{:.300}", r.text);
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(100));
    assert_eq!(problem["errors"][0]["line"], 2);
}
