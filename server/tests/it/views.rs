//! Views through the HTTP API against the real binary: the document view's states, reads at a
//! token (read-your-writes without sleeps), timeouts, restart and rebuild to the same digest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{get, post};
use crate::harness::Server;

async fn append(base: &str, urn: &str, events: Value) -> Value {
    let answer = post(
        base,
        &format!("/v1/streams/{urn}"),
        &json!({ "events": events }),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.json()
}

fn resource(urn: &str, token: &str) -> String {
    format!("/v1/resources/{urn}?min_token={token}&timeout=10s")
}

#[tokio::test(flavor = "multi_thread")]
async fn document_view_states_and_read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let urn = "urn:themis:document:users:alice";

    let a = append(
        b,
        urn,
        json!([{"op": "put", "data": {"name": "Alice", "tags": ["a"]}}]),
    )
    .await;
    let r = get(b, &resource(urn, a["token"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["data"], json!({"name": "Alice", "tags": ["a"]}));
    assert_eq!(body["revision"], 0);
    assert!(r.headers.contains_key("themis-token"));

    // RFC 7396: null removes a member, objects merge, anything else replaces.
    let a = append(
        b,
        urn,
        json!([{"op": "patch", "data": {"tags": null, "email": "a@example.org", "n": {"x": 1}}}]),
    )
    .await;
    let body = get(b, &resource(urn, a["token"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(
        body["data"],
        json!({"name": "Alice", "email": "a@example.org", "n": {"x": 1}})
    );
    assert_eq!(body["revision"], 1);

    // Read-your-writes: every read at the append's token sees that append; no sleeps.
    for n in 0..1000u64 {
        let a = append(b, urn, json!([{"op": "patch", "data": {"n": {"x": n}}}])).await;
        let r = get(b, &resource(urn, a["token"].as_str().unwrap())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        assert_eq!(
            body["data"]["n"]["x"], n,
            "read {n} missed its own write: {body}"
        );
        assert_eq!(body["revision"], n + 2);
    }

    // wait=applied: once the append answers, a read without a token sees it.
    let plain = format!("/v1/resources/{urn}");
    for n in 0..200u64 {
        let answer = post(
            b,
            &format!("/v1/streams/{urn}?wait=applied"),
            &json!({"events": [{"op": "patch", "data": {"w": n}}]}),
        )
        .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        let body = get(b, &plain).await.json();
        assert_eq!(body["data"]["w"], n, "wait=applied {n}: {body}");
    }

    // Deleted and absent resources are 404 problem+json.
    let a = append(b, urn, json!([{"op": "delete"}])).await;
    let p = get(b, &resource(urn, a["token"].as_str().unwrap()))
        .await
        .problem(404, "resource_not_found");
    assert_eq!(p["deleted_revision"], 1202);
    get(b, "/v1/resources/urn:themis:document:users:nobody")
        .await
        .problem(404, "resource_not_found");
    // A patch after a delete starts from an empty document.
    let a = append(b, urn, json!([{"op": "patch", "data": {"back": true}}])).await;
    let body = get(b, &resource(urn, a["token"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(body["data"], json!({"back": true}));

    // A token the view cannot reach in time: 504 timeout, naming the watermark.
    let shard = a["position"]["shard"].as_u64().unwrap() as u32;
    let lsn = a["position"]["lsn"].as_u64().unwrap();
    let far = themis_log::Token::from_position(themis_log::Position {
        shard: themis_log::ShardId(shard),
        lsn: themis_log::Lsn(lsn + 1_000_000),
    })
    .encode();
    let p = get(
        b,
        &format!("/v1/resources/{urn}?min_token={far}&timeout=200ms"),
    )
    .await
    .problem(504, "timeout");
    assert!(p["watermark"].as_u64().unwrap() >= lsn);

    // Bad tokens, timeouts and models are refused clearly.
    get(b, &format!("/v1/resources/{urn}?min_token=nonsense"))
        .await
        .problem(400, "invalid_token");
    get(b, &format!("/v1/resources/{urn}?timeout=soon"))
        .await
        .problem(400, "invalid_query");
    get(b, "/v1/resources/urn:themis:relational:orders:1")
        .await
        .problem(400, "unsupported_model");
    get(b, "/v1/resources/not-a-urn")
        .await
        .problem(400, "invalid_urn");

    // Watermarks and lag are in GET /v1/cluster and /metrics.
    let cluster = get(b, "/v1/cluster").await.json();
    // Six view kinds (document, graph, namespaces, relational, timeseries, vector) on each of
    // the 4 shards.
    assert_eq!(cluster["views"].as_array().unwrap().len(), 24, "{cluster}");
    assert_eq!(cluster["views"][0]["view"], "document");
    let metrics = get(b, "/metrics").await.text;
    assert!(
        metrics.contains("themis_view_watermark{shard=\"0\",view=\"document\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("themis_view_lag_seconds"));
}

/// Watermark and digest of every document view, once each has reached `marks` (bounded wait).
pub async fn digests(
    base: &str,
    marks: &BTreeMap<u64, u64>,
) -> BTreeMap<(u64, String), (u64, String)> {
    for _ in 0..600 {
        let views = get(base, "/v1/admin/views?digest=true").await.json();
        let list = views["views"].as_array().unwrap().clone();
        let caught_up = list.iter().all(|v| {
            v["watermark"].as_u64().unwrap()
                >= marks
                    .get(&v["shard"].as_u64().unwrap())
                    .copied()
                    .unwrap_or(0)
        });
        if caught_up {
            return list
                .iter()
                .map(|v| {
                    (
                        (
                            v["shard"].as_u64().unwrap(),
                            v["view"].as_str().unwrap().to_owned(),
                        ),
                        (
                            v["digest"]["watermark"].as_u64().unwrap(),
                            v["digest"]["digest"].as_str().unwrap().to_owned(),
                        ),
                    )
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the views did not reach {marks:?}");
}

/// The LSN every shard's replica has applied, per shard (from `GET /v1/admin/views`).
pub async fn applied(base: &str) -> BTreeMap<u64, u64> {
    let views = get(base, "/v1/admin/views").await.json();
    views["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["shard"].as_u64().unwrap(), v["applied"].as_u64().unwrap()))
        .collect()
}

/// After a crash the views must equal a rebuild from the log: waits until they caught up with
/// the log, rebuilds them, and compares the digests.
pub async fn assert_views_equal_a_rebuild(base: &str) {
    let marks = applied(base).await;
    let before = digests(base, &marks).await;
    let r = post(base, "/v1/admin/views/document/rebuild", &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        digests(base, &marks).await,
        before,
        "views differ from a rebuild"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn views_resume_after_restart_and_rebuild_to_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    // Puts, patches and deletes over many resources of every shard.
    let mut marks: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..300u64 {
        let urn = format!("urn:themis:document:items:i{}", i % 37);
        let event = match i % 5 {
            0 | 1 => json!({"op": "put", "data": {"i": i, "tags": ["x", i.to_string()]}}),
            2 | 3 => json!({"op": "patch", "data": {"p": i, "tags": null}}),
            _ => json!({"op": "delete"}),
        };
        let a = append(&b, &urn, json!([event])).await;
        let (shard, lsn) = (
            a["position"]["shard"].as_u64().unwrap(),
            a["position"]["lsn"].as_u64().unwrap(),
        );
        let m = marks.entry(shard).or_default();
        *m = (*m).max(lsn);
    }
    let before = digests(&b, &marks).await;
    assert!(before.len() >= 2, "{before:?}");

    // A restart resumes every view from its watermark: same content.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    assert_eq!(digests(&b, &marks).await, before, "after a restart");

    // A rebuild drops each view and replays the log to the same content.
    let r = post(&b, "/v1/admin/views/document/rebuild", &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["shards"].as_array().unwrap().len(), 4);
    assert_eq!(digests(&b, &marks).await, before, "after a rebuild");
    post(&b, "/v1/admin/views/nosuch/rebuild", &json!({}))
        .await
        .problem(404, "unknown_view");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_warms_its_tables_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let flush = ["--state-flush-rows", "16"];
    let server = Server::start(dir.path(), &flush);
    let b = server.base.clone();
    let config = json!({"columns": [{"name": "n", "type": "int64"}]});
    let r = put(&b, "/v1/namespaces/relational/warm?wait=applied", &config).await;
    assert_eq!(r.status, 201, "{}", r.text);
    for i in 0..200u64 {
        let urn = format!("urn:themis:relational:warm:w{i:03}");
        append(&b, &urn, json!([{"op": "put", "data": {"n": i}}])).await;
    }
    let sum = json!({"sql": "SELECT count(*) AS c, sum(n) AS s FROM warm"});
    let answer = json!([{"c": 200, "s": 19_900}]);
    let r = post(&b, "/v1/query", &sum).await;
    assert_eq!(r.json()["rows"], answer, "{}", r.text);

    // Started again: the table was taken from the blocks and its columns decoded before the
    // node listened, with no query asked.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &flush);
    let b = server.base.clone();
    let whole = "themis_sql_partitions_built_total{how=\"whole\"}";
    assert!(crate::api::metric(&b, whole).await >= 1);
    assert!(crate::api::metric(&b, "themis_sql_decoded_bytes").await > 0);
    let decoded = "themis_sql_columns_decoded_total";
    let warmed = crate::api::metric(&b, decoded).await;
    assert!(warmed > 0);
    let built = crate::api::metric(&b, whole).await;
    let r = post(&b, "/v1/query", &sum).await;
    assert_eq!(r.json()["rows"], answer, "{}", r.text);
    // The first query found the table taken and its columns decoded.
    assert_eq!(crate::api::metric(&b, whole).await, built);
    assert_eq!(crate::api::metric(&b, decoded).await, warmed);

    // Not asked to warm: nothing is taken until a query reads the table.
    assert!(server.terminate().success());
    let cold = [&flush[..], &["--warm-queries", "false"]].concat();
    let server = Server::start(dir.path(), &cold);
    let b = server.base.clone();
    assert_eq!(crate::api::metric(&b, whole).await, 0);
    assert_eq!(crate::api::metric(&b, decoded).await, 0);
    let r = post(&b, "/v1/query", &sum).await;
    assert_eq!(r.json()["rows"], answer, "{}", r.text);
    assert!(crate::api::metric(&b, whole).await >= 1);
    assert!(crate::api::metric(&b, decoded).await > 0);
}

async fn put(base: &str, path: &str, body: &Value) -> crate::api::Answer {
    crate::api::send(
        reqwest::Client::new()
            .put(format!("{base}{path}"))
            .json(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_configs_are_log_entries_and_relational_appends_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    let orders = json!({"columns": [
        {"name": "customer", "type": "string"},
        {"name": "total", "type": "float64"},
        {"name": "at", "type": "timestamp", "nullable": true}
    ]});
    let r = put(&b, "/v1/namespaces/relational/orders?wait=applied", &orders).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["version"], 0);
    let r = get(&b, "/v1/namespaces/relational/orders").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The answer spells every default out.
    assert_eq!(
        r.json()["config"],
        json!({"columns": [
            {"name": "customer", "type": "string", "nullable": false},
            {"name": "total", "type": "float64", "nullable": false},
            {"name": "at", "type": "timestamp", "nullable": true}
        ]})
    );
    // The same config again changes nothing.
    assert_eq!(
        put(&b, "/v1/namespaces/relational/orders", &orders)
            .await
            .status,
        200
    );

    // Rows are checked before they reach the log.
    let ok = append(
        &b,
        "urn:themis:relational:orders:o1",
        json!([{"op": "put", "data": {"customer": "c1", "total": 9.5, "at": "2026-11-26T10:00:00Z"}}]),
    )
    .await;
    let lsn = ok["position"]["lsn"].as_u64().unwrap();
    let bad = [
        (json!({"customer": "c1"}), "total"),
        (json!({"customer": 7, "total": 1}), "customer"),
        (
            json!({"customer": "c", "total": 1, "color": "red"}),
            "color",
        ),
        (json!({"customer": "c", "total": 1, "at": "noon"}), "at"),
    ];
    for (data, column) in bad {
        let p = post(
            &b,
            "/v1/streams/urn:themis:relational:orders:o2",
            &json!({"events": [{"op": "put", "data": data}]}),
        )
        .await
        .problem(400, "schema_violation");
        assert_eq!(p["column"], column, "{p}");
        assert_eq!(p["event_index"], 0);
    }
    // In a batch the offending event is named; nothing of the batch is appended.
    let p = post(
        &b,
        "/v1/events",
        &json!({"events": [
            {"urn": "urn:themis:relational:orders:o3", "op": "patch", "data": {"total": 2}},
            {"urn": "urn:themis:relational:orders:o3", "op": "patch", "data": {"customer": null}}
        ]}),
    )
    .await
    .problem(400, "schema_violation");
    assert_eq!(p["event_index"], 1);
    post(
        &b,
        "/v1/streams/urn:themis:relational:nosuch:x",
        &json!({"events": [{"op": "put", "data": {"a": 1}}]}),
    )
    .await
    .problem(400, "unknown_namespace");
    let log = get(&b, &format!("/v1/log/{}", ok["position"]["shard"]))
        .await
        .json();
    assert_eq!(
        log["entries"].as_array().unwrap().last().unwrap()["lsn"]
            .as_u64()
            .unwrap(),
        lsn,
        "refused appends left no entry"
    );

    // Configs evolve compatibly only.
    let mut added = orders.clone();
    added["columns"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "note", "type": "string", "nullable": true}));
    let r = put(&b, "/v1/namespaces/relational/orders?wait=applied", &added).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["version"], 1);
    append(
        &b,
        "urn:themis:relational:orders:o4",
        json!([{"op": "put", "data": {"customer": "c", "total": 1, "note": "new column"}}]),
    )
    .await;
    put(
        &b,
        "/v1/namespaces/relational/orders",
        &json!({"columns": [{"name": "customer", "type": "string"}]}),
    )
    .await
    .problem(400, "incompatible_config");

    // Bad configs, names and reserved namespaces are refused.
    put(
        &b,
        "/v1/namespaces/relational/empty",
        &json!({"columns": []}),
    )
    .await
    .problem(400, "invalid_config");
    put(
        &b,
        "/v1/namespaces/relational/x",
        &json!({"columns": [{"name": "a", "type": "decimal"}]}),
    )
    .await
    .problem(400, "invalid_config");
    put(&b, "/v1/namespaces/nomodel/x", &json!({}))
        .await
        .problem(400, "invalid_model");
    put(&b, "/v1/namespaces/relational/Bad!", &orders)
        .await
        .problem(400, "invalid_namespace");
    put(&b, "/v1/namespaces/relational/_x", &orders)
        .await
        .problem(400, "reserved_namespace");
    post(
        &b,
        "/v1/streams/urn:themis:relational:_namespace:orders",
        &json!({"events": [{"op": "delete"}]}),
    )
    .await
    .problem(400, "reserved_namespace");
    get(&b, "/v1/namespaces/relational/nosuch")
        .await
        .problem(404, "namespace_not_found");
    get(&b, "/v1/namespaces/relational/Bad!")
        .await
        .problem(400, "invalid_namespace");

    // Document namespaces take an empty config; the list shows both; a restart keeps them.
    assert_eq!(
        put(&b, "/v1/namespaces/document/notes?wait=applied", &json!({}))
            .await
            .status,
        201
    );
    let list = get(&b, "/v1/namespaces").await.json();
    let names: Vec<String> = list["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}/{}@{}",
                n["model"].as_str().unwrap(),
                n["namespace"].as_str().unwrap(),
                n["version"]
            )
        })
        .collect();
    assert_eq!(names, ["document/notes@0", "relational/orders@1"]);
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let again = get(&server.base, "/v1/namespaces").await.json();
    assert_eq!(again["namespaces"].as_array().unwrap().len(), 2, "{again}");
}
