//! The HTTP contract of DESIGN.md §6 against the real binary: appends, reads, idempotency,
//! expected revisions, batches, and problem+json for every kind of bad request.

use serde_json::{Value, json};

use crate::harness::{Server, cli};

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not json ({e}): {}", self.text))
    }

    /// Asserts a problem+json answer with `status` and `code`.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(
            (self.status, body["code"].as_str().unwrap()),
            (status, code),
            "{}",
            self.text
        );
        assert_eq!(body["status"], status);
        assert!(!body["detail"].as_str().unwrap().is_empty());
        body
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        headers,
        text: response.text().await.unwrap(),
    }
}

pub async fn post(base: &str, path: &str, body: &Value) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{base}{path}"))
            .json(body),
    )
    .await
}

/// Appends `events` (`POST /v1/events`, atomic per shard), expects 201 and returns the token.
pub async fn append_events(base: &str, events: Vec<Value>) -> String {
    let r = post(
        base,
        "/v1/events",
        &serde_json::json!({"events": events, "per_shard_atomicity": true}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

pub async fn get(base: &str, path: &str) -> Answer {
    send(reqwest::Client::new().get(format!("{base}{path}"))).await
}

/// The value of the `/metrics` line of `name` (labels included in `name`).
pub async fn metric(base: &str, name: &str) -> u64 {
    let metrics = get(base, "/metrics").await.text;
    let line = format!("{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn append_read_retry_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let urn = "urn:themis:document:users:alice";
    let id = "6b1f6c0e-3f2a-4c41-9a57-0d3c1a2b4c5d";
    let body = json!({"expected_revision": "no_stream", "events": [
        {"id": id, "type": "UserRegistered", "op": "put", "data": {"name": "Alice", "tags": ["a", "b"]}},
        {"id": "0b7c2d1e-5f4a-4b3c-8d2e-1f0a9b8c7d6e", "type": "EmailChanged", "op": "patch", "data": {"email": "a@example.org"}, "metadata": {"by": "test"}}
    ]});
    let first = post(b, &format!("/v1/streams/{urn}"), &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let first = first.json();
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["events"][0]["revision"], 0);
    assert_eq!(first["events"][1]["revision"], 1);
    assert_eq!(first["events"][0]["lsn"], first["position"]["lsn"]);
    assert!(first["token"].as_str().unwrap().starts_with("t1."));

    // A retry with the same ids appends nothing and answers the original positions.
    let again = post(b, &format!("/v1/streams/{urn}"), &body).await;
    assert_eq!(again.status, 201, "{}", again.text);
    let again = again.json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["position"], first["position"]);
    assert_eq!(again["events"], first["events"]);

    // The same first id with a new second event is neither a retry nor new: refused.
    let mut mixed = body.clone();
    mixed["expected_revision"] = json!("any");
    mixed["events"][1]["id"] = json!("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a");
    post(b, &format!("/v1/streams/{urn}"), &mixed)
        .await
        .problem(409, "idempotency_conflict");

    // Expected revision conflicts report the current revision.
    let stale = json!({"expected_revision": 0, "events": [{"op": "delete"}]});
    let p = post(b, &format!("/v1/streams/{urn}"), &stale)
        .await
        .problem(409, "wrong_expected_revision");
    assert_eq!(p["current_revision"], 1);
    let ok = json!({"expected_revision": 1, "events": [{"op": "delete"}]});
    assert_eq!(
        post(b, &format!("/v1/streams/{urn}"), &ok).await.status,
        201
    );

    // Reads return exactly what was appended, JSON text included.
    let page = get(b, &format!("/v1/streams/{urn}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let page = page.json();
    assert_eq!(page["revision"], 2);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["type"], "UserRegistered");
    assert_eq!(
        events[0]["data"],
        json!({"name": "Alice", "tags": ["a", "b"]})
    );
    assert_eq!(events[1]["metadata"], json!({"by": "test"}));
    assert_eq!(events[2]["op"], "delete");
    assert!(events[0]["ts_ms"].as_u64().unwrap() > 0);

    // Paging and NDJSON.
    let page = get(b, &format!("/v1/streams/{urn}?from_revision=1&limit=1"))
        .await
        .json();
    assert_eq!(page["events"][0]["revision"], 1);
    assert_eq!(page["next_revision"], 2);
    let nd = send(
        reqwest::Client::new()
            .get(format!("{b}/v1/streams/{urn}"))
            .header("accept", "application/x-ndjson"),
    )
    .await;
    assert_eq!(nd.content_type, "application/x-ndjson");
    assert_eq!(nd.text.lines().count(), 3);
    assert_eq!(nd.headers["themis-stream-revision"], "2");

    // The raw log shows the entries with their outcomes and chain hashes.
    let shard = first["position"]["shard"].as_u64().unwrap();
    let log = get(b, &format!("/v1/log/{shard}?from_lsn=0&limit=100"))
        .await
        .json();
    let entries = log["entries"].as_array().unwrap();
    let appended: Vec<_> = entries.iter().filter(|e| e["kind"] == "events").collect();
    assert_eq!(
        appended.len(),
        2,
        "the retry and the conflict never reached the log: {log}"
    );
    assert_eq!(appended[0]["outcomes"][0]["outcome"], "appended");
    assert!(
        entries
            .iter()
            .all(|e| e["chain"].as_str().unwrap().len() == 32)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_bulk_and_per_shard_atomicity() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let events: Vec<Value> = (0..12)
        .map(|i| json!({"urn": format!("urn:themis:document:items:i{i}"), "op": "put", "data": {"i": i}}))
        .collect();
    post(b, "/v1/events", &json!({"events": events}))
        .await
        .problem(400, "cross_shard_batch");
    let split = post(
        b,
        "/v1/events",
        &json!({"events": events, "per_shard_atomicity": true}),
    )
    .await;
    assert_eq!(split.status, 201, "{}", split.text);
    let split = split.json();
    let results = split["results"].as_array().unwrap();
    assert!(results.len() > 1);
    let total: usize = results
        .iter()
        .map(|r| r["result"]["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 12);

    // One failing shard part does not undo the others, and says why.
    let mixed = json!({"per_shard_atomicity": true, "events": [
        {"urn": "urn:themis:document:items:i0", "op": "put", "data": {}, "expected_revision": "no_stream"},
        {"urn": "urn:themis:document:items:fresh-1", "op": "put", "data": {}},
        {"urn": "urn:themis:document:items:fresh-2", "op": "put", "data": {}},
        {"urn": "urn:themis:document:items:fresh-3", "op": "put", "data": {}}
    ]});
    let answer = post(b, "/v1/events", &mixed).await;
    assert_eq!(answer.status, 207, "{}", answer.text);
    let failed: Vec<_> = answer.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 409)
        .cloned()
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"]["code"], "wrong_expected_revision");

    // NDJSON bulk: one answer line per request line, in order, each on its own.
    let lines = [
        r#"{"urn":"urn:themis:timeseries:cpu:host-1","op":"points","points":[[1000,0.5],[2000,0.75]]}"#,
        r#"{"urn":"urn:themis:document:items:x","op":"link"}"#,
        r#"not json"#,
        r#"{"urn":"urn:themis:graph:social:a","op":"link","to":"urn:themis:graph:social:b","label":"follows"}"#,
    ]
    .join("\n");
    let bulk = send(
        reqwest::Client::new()
            .post(format!("{b}/v1/events"))
            .header("content-type", "application/x-ndjson")
            .body(lines),
    )
    .await;
    assert_eq!(bulk.status, 200, "{}", bulk.text);
    let items: Vec<Value> = bulk
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<_> = items
        .iter()
        .map(|i| (i["index"].as_u64().unwrap(), i["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(statuses, [(0, 201), (1, 400), (2, 400), (3, 201)]);
    assert_eq!(items[1]["error"]["code"], "invalid_op");
    assert_eq!(items[2]["error"]["code"], "invalid_json");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_is_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-bytes-max", "4096"]);
    let b = &server.base;
    let c = reqwest::Client::new();
    let stream = format!("{b}/v1/streams/urn:themis:document:users:bob");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.post(&stream).body("{\"events\": [").header("content-type", "application/json"), 400, "invalid_json"),
        (c.post(&stream).json(&json!({"events": [{"op": "put", "dta": {}}]})), 400, "unknown_field"),
        (c.post(&stream).json(&json!({"events": [], "extra": 1})), 400, "unknown_field"),
        (c.post(&stream).json(&json!({"events": []})), 400, "invalid_batch"),
        (c.post(format!("{b}/v1/streams/urn:themis:doc:users:bob")).json(&json!({"events": [{"op": "delete"}]})), 400, "invalid_urn"),
        (c.post(&stream).json(&json!({"events": [{"op": "points", "points": [[1, 2.0]]}]})), 400, "invalid_op"),
        (c.post(&stream).json(&json!({"events": [{"op": "put", "data": "text"}]})), 400, "invalid_field"),
        (c.post(&stream).json(&json!({"events": [{"op": "put", "data": {}, "urn": "urn:themis:document:users:eve"}]})), 400, "urn_mismatch"),
        (c.post(&stream).json(&json!({"events": [{"op": "put", "data": {"x": "y".repeat(5000)}}]})), 413, "payload_too_large"),
        (c.post(format!("{stream}?wait=forever")).json(&json!({"events": [{"op": "delete"}]})), 400, "invalid_query"),
        (c.get(format!("{stream}?limit=0")), 400, "invalid_query"),
        (c.get(format!("{stream}?limit=x")), 400, "invalid_query"),
        (c.get(&stream), 404, "stream_not_found"),
        (c.get(format!("{b}/v1/log/99")), 404, "unknown_shard"),
        (c.get(format!("{b}/v1/log/minus-one")), 400, "invalid_shard"),
        (c.get(format!("{b}/v1/nowhere")), 404, "route_not_found"),
        (c.delete(&stream), 405, "method_not_allowed"),
    ];
    for (request, status, code) in cases {
        send(request).await.problem(status, code);
    }
    // Nothing above reached the log.
    for shard in 0..4 {
        let log = get(b, &format!("/v1/log/{shard}")).await.json();
        assert!(
            log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["kind"] != "events"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn path_encoding_and_unknown_parameters_are_refused_as_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let c = reqwest::Client::new();
    let events = json!({"events": [{"op": "put", "data": {"a": 1}}]});
    let stream = format!("{b}/v1/streams/urn:themis:document:edge:one");
    // A path parameter that is not UTF-8 once percent-decoded gets the code of a bad value of
    // that parameter.
    let not_utf8 = "%FF%FE";
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(format!(
                "{b}/v1/streams/urn:themis:document:edge:{not_utf8}"
            ))
            .json(&events),
            400,
            "invalid_urn",
        ),
        (
            c.get(format!(
                "{b}/v1/streams/urn:themis:document:edge:{not_utf8}"
            )),
            400,
            "invalid_urn",
        ),
        (
            c.get(format!(
                "{b}/v1/resources/urn:themis:document:edge:{not_utf8}"
            )),
            400,
            "invalid_urn",
        ),
        (
            c.get(format!("{b}/v1/namespaces/relational/{not_utf8}")),
            400,
            "invalid_namespace",
        ),
        (
            c.put(format!("{b}/v1/namespaces/{not_utf8}/x"))
                .json(&json!({})),
            400,
            "invalid_model",
        ),
        (
            c.get(format!("{b}/v1/log/{not_utf8}")),
            400,
            "invalid_shard",
        ),
        (
            c.get(format!("{b}/v1/consumers/{not_utf8}/checkpoint")),
            400,
            "invalid_group",
        ),
        (
            c.post(format!("{b}/v1/admin/views/{not_utf8}/rebuild")),
            400,
            "invalid_path",
        ),
        // A body the client says is compressed is refused, not parsed as if it were plain.
        (
            c.post(&stream)
                .header("content-encoding", "gzip")
                .json(&events),
            415,
            "unsupported_encoding",
        ),
        (
            c.post(&stream)
                .header("content-encoding", "identity, br")
                .json(&events),
            415,
            "unsupported_encoding",
        ),
        (
            c.post(format!("{b}/v1/write_lp"))
                .header("content-encoding", "gzip")
                .body("cpu v=1 1\n"),
            415,
            "unsupported_encoding",
        ),
        (
            c.post(format!("{b}/v1/query"))
                .header("content-encoding", "deflate")
                .json(&json!({"sql": "SELECT 1"})),
            415,
            "unsupported_encoding",
        ),
        // Every /v1 route refuses query parameters it does not know, write_lp included.
        (
            c.post(format!("{b}/v1/write_lp?precison=ms"))
                .body("cpu v=1 1\n"),
            400,
            "invalid_query",
        ),
        (
            c.post(format!("{b}/v1/query?sql=SELECT"))
                .json(&json!({"sql": "SELECT 1"})),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{b}/v1/cluster?verbose=1")),
            400,
            "invalid_query",
        ),
        (
            c.get(format!("{b}/v1/namespaces?model=relational")),
            400,
            "invalid_query",
        ),
        (
            c.put(format!("{b}/v1/consumers/g/checkpoint?force=1"))
                .json(&json!({"cursor": "r1.x"})),
            400,
            "invalid_query",
        ),
    ];
    for (request, status, code) in cases {
        let answer = send(request).await;
        answer.problem(status, code);
        if status == 415 {
            assert_eq!(answer.headers["accept-encoding"], "identity");
        }
    }
    // Nothing above was written; an identity encoding is no encoding.
    send(c.get(&stream)).await.problem(404, "stream_not_found");
    let series = format!("{b}/v1/streams/urn:themis:timeseries:cpu:v");
    send(c.get(&series)).await.problem(404, "stream_not_found");
    let plain = send(
        c.post(&stream)
            .header("content-encoding", "identity")
            .json(&events),
    )
    .await;
    assert_eq!(plain.status, 201, "{}", plain.text);
    let lp = send(
        c.post(format!("{b}/v1/write_lp?precision=s"))
            .body("cpu v=1 1\n"),
    )
    .await;
    assert_eq!(lp.status, 201, "{}", lp.text);
}

/// Found by scripts/fuzz-api: `"timeout": "0"` ran the query and answered 504.
#[tokio::test(flavor = "multi_thread")]
async fn a_zero_timeout_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    for timeout in ["0", "0ms", "00s"] {
        post(
            b,
            "/v1/query",
            &json!({"sql": "SELECT 1", "timeout": timeout}),
        )
        .await
        .problem(400, "invalid_query");
        let read = format!("/v1/resources/urn:themis:document:users:alice?timeout={timeout}");
        get(b, &read).await.problem(400, "invalid_query");
    }
    let answer = post(b, "/v1/query", &json!({"sql": "SELECT 1", "timeout": "5s"})).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_openapi_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    assert_eq!(get(&b, "/livez").await.status, 200);
    assert_eq!(get(&b, "/readyz").await.json()["status"], "ready");
    let urn = "urn:themis:relational:orders:o-1";
    // Relational namespaces are declared before rows are appended.
    let declared = send(
        reqwest::Client::new()
            .put(format!("{b}/v1/namespaces/relational/orders?wait=applied"))
            .json(&json!({"columns": [{"name": "total", "type": "int64"}]})),
    )
    .await;
    assert_eq!(declared.status, 201, "{}", declared.text);
    assert_eq!(
        post(
            &b,
            &format!("/v1/streams/{urn}"),
            &json!({"events": [{"op": "put", "data": {"total": 5}}]})
        )
        .await
        .status,
        201
    );
    let metrics = get(&b, "/metrics").await;
    assert!(metrics.content_type.starts_with("text/plain"));
    let appends: u64 = metrics
        .text
        .lines()
        .filter(|l| l.starts_with("themis_append_events_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    // The row and the namespace config (itself an event of the log).
    assert_eq!(appends, 2);
    assert!(
        metrics
            .text
            .contains("themis_append_duration_seconds_count 1"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("themis_commit_index{shard=\"0\"}"));
    assert!(
        metrics
            .text
            .contains("themis_log_bytes_written_total{shard=\"0\"}")
    );
    let openapi = get(&b, "/v1/openapi.json").await.json();
    for path in [
        "/v1/streams/{urn}",
        "/v1/events",
        "/v1/log/{shard}",
        "/v1/subscribe",
        "/v1/consumers/{group}/checkpoint",
        "/livez",
        "/readyz",
        "/metrics",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(openapi["components"]["schemas"]["Problem"].is_object());

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    let server = Server::start(dir.path(), &[]);
    let page = get(&server.base, &format!("/v1/streams/{urn}"))
        .await
        .json();
    assert_eq!(page["events"][0]["data"], json!({"total": 5}));
}

#[test]
fn the_shard_count_of_a_data_directory_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    Server::start(dir.path(), &["--shards", "4"]).terminate();
    let err = Server::try_start(dir.path(), &["--shards", "8"])
        .err()
        .expect("refused");
    assert!(err.contains("created with 4 shards"), "{err}");
}

#[test]
fn a_corrupted_log_file_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "1"]);
    let base = server.base.clone();
    let marker = "corruption-marker-0123456789";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..20 {
            let body = json!({"events": [{"op": "put", "type": marker, "data": {"i": i}}]});
            assert_eq!(
                post(
                    &base,
                    &format!("/v1/streams/urn:themis:document:c:k{i}"),
                    &body
                )
                .await
                .status,
                201
            );
        }
    });
    assert!(server.terminate().success());
    let file = dir.path().join("log.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    // redb writes copy-on-write, so stale copies of a record may sit in freed pages; flipping
    // one byte in every copy guarantees the live one is hit.
    let places: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert!(!places.is_empty(), "marker in file");
    for at in places {
        bytes[at + 5] ^= 0x20;
    }
    std::fs::write(&file, &bytes).unwrap();
    let err = Server::try_start(dir.path(), &["--shards", "1"])
        .err()
        .expect("refused");
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn cli_appends_reads_and_fails_readably() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let s = ["--server", server.base.as_str()];
    let urn = "urn:themis:document:cli:one";
    let (code, out, err) = cli(&[
        &[
            "append",
            urn,
            "--op",
            "put",
            "--data",
            r#"{"a":1}"#,
            "--expected-revision",
            "no_stream",
        ][..],
        &s,
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["events"][0]["revision"],
        0
    );
    let (code, out, _) = cli(&[&["read", urn][..], &s].concat());
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["events"][0]["data"],
        json!({"a": 1})
    );
    let (code, out, _) = cli(&[&["log", "0"][..], &s].concat());
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["entries"].is_array());
    // The document view, at the append's token.
    let (_, out, _) = cli(&[
        &["append", urn, "--op", "patch", "--data", r#"{"b":2}"#][..],
        &s,
    ]
    .concat());
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, err) = cli(&[&["get", urn, "--min-token", &token][..], &s].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["data"],
        json!({"a": 1, "b": 2})
    );
    let (code, out, err) = cli(&[&["admin", "views", "--digest"][..], &s].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["views"]
            .as_array()
            .unwrap()
            .len(),
        24,
        "six view kinds on each of 4 shards"
    );
    let (code, out, err) = cli(&[
        &["admin", "rebuild-view", "document", "--shard", "1"][..],
        &s,
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["shards"],
        json!([1])
    );

    let failures: [(&[&str], &str); 8] = [
        (
            &["get", "urn:themis:document:cli:none"],
            "resource_not_found",
        ),
        (&["admin", "rebuild-view", "nosuch"], "unknown_view"),
        (
            &["admin", "rebuild-view", "document", "--shard", "9"],
            "not_hosted",
        ),
        (
            &["append", urn, "--op", "put", "--data", "{a:1}"],
            "--data is not valid JSON",
        ),
        (
            &[
                "append",
                urn,
                "--op",
                "put",
                "--data",
                "{}",
                "--expected-revision",
                "no_stream",
            ],
            "wrong_expected_revision",
        ),
        (
            &["read", "urn:themis:document:cli:none"],
            "stream_not_found",
        ),
        (&["log", "77"], "unknown_shard"),
        (
            &["append", "not-a-urn", "--op", "put", "--data", "{}"],
            "invalid_urn",
        ),
    ];
    for (args, needle) in failures {
        let (code, _, err) = cli(&[args, &s].concat());
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = cli(&["read", urn, "--server", "http://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the server"), "{err}");
}

/// The `id` column of answer rows.
pub fn ids(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}
