//! The graph through the HTTP API against the real binary: vertices and weighted edges
//! appended as events, traversals (depths, directions, labels, paths) and shortest paths (hops
//! and weights) as queries of their own and as SQL table functions joined with nothing else,
//! tokens, problems, and a restart.

use serde_json::{Value, json};

use crate::api::{append_events, ids, post};
use crate::harness::Server;

fn g(id: &str) -> String {
    format!("urn:themis:graph:roads:{id}")
}

fn edge(from: &str, to: &str, label: &str, km: f64) -> Value {
    json!({"urn": g(from), "op": "link", "to": g(to), "label": label, "data": {"km": km}})
}

#[tokio::test(flavor = "multi_thread")]
async fn traversals_and_shortest_paths_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    // a -road-> b -road-> c -road-> d, a -ferry-> d (long), c -road-> a (a cycle), e alone.
    let mut events: Vec<Value> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|v| json!({"urn": g(v), "op": "put", "data": {"name": v.to_uppercase()}}))
        .collect();
    append_events(b, events.split_off(0)).await;
    let token = append_events(
        b,
        vec![
            edge("a", "b", "road", 10.0),
            edge("b", "c", "road", 10.0),
            edge("c", "d", "road", 10.0),
            edge("a", "d", "ferry", 50.0),
            edge("c", "a", "road", 5.0),
        ],
    )
    .await;

    // Depth 1..2 outbound from a: d (ferry) and b (road) at 1, in (label, vertex) order, then c
    // at 2; each once, with its path.
    let r = post(
        b,
        "/v1/query",
        &json!({"traverse": {"start": g("a"), "min_depth": 1, "max_depth": 2}, "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = r.json()["rows"].clone();
    assert_eq!(ids(&rows), ["d", "b", "c"]);
    assert_eq!(rows[1]["depth"], 1);
    assert_eq!(rows[1]["data"], json!({"name": "B"}));
    assert_eq!(rows[1]["edge_label"], "road");
    assert_eq!(rows[1]["edge_data"], json!({"km": 10.0}));
    assert_eq!(rows[2]["path"], json!([g("a"), g("b"), g("c")]));
    assert!(r.json().get("truncated").is_none());
    assert!(r.headers.get("themis-truncated").is_none());
    // A limit that cuts the answer says so, in the body and in a header (CSV and NDJSON too).
    let r = post(
        b,
        "/v1/query",
        &json!({"traverse": {"start": g("a"), "min_depth": 1, "max_depth": 2, "limit": 2}}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["d", "b"]);
    assert_eq!(r.json()["truncated"], json!(true));
    assert_eq!(r.headers["themis-truncated"], "true");
    // Exactly as many as the limit: not cut.
    let r = post(
        b,
        "/v1/query",
        &json!({"traverse": {"start": g("a"), "min_depth": 1, "max_depth": 2, "limit": 3}}),
    )
    .await;
    assert!(r.json().get("truncated").is_none());
    // Only roads, inbound to a: c (by road), then b.
    let r = post(
        b,
        "/v1/query",
        &json!({"traverse": {"start": g("a"), "max_depth": 3, "direction": "inbound", "labels": ["road"]}}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["c", "b"]);
    // Shortest a → d: by hops the ferry, by km the roads (30 < 50).
    let r = post(
        b,
        "/v1/query",
        &json!({"shortest_path": {"from": g("a"), "to": g("d")}}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["a", "d"]);
    let r = post(
        b,
        "/v1/query",
        &json!({"shortest_path": {"from": g("a"), "to": g("d"), "weight": "km"}}),
    )
    .await;
    let rows = r.json()["rows"].clone();
    assert_eq!(ids(&rows), ["a", "b", "c", "d"]);
    assert_eq!(rows[3]["distance"], 30.0);
    // Unreachable: no rows.
    let r = post(
        b,
        "/v1/query",
        &json!({"shortest_path": {"from": g("a"), "to": g("e")}}),
    )
    .await;
    assert_eq!(r.json()["rows"], json!([]));
    // SQL: the table functions compose with SQL.
    let sql = format!(
        "SELECT id, depth FROM traverse('{}', 1, 3, 'any', 'road') ORDER BY id",
        g("b")
    );
    let r = post(b, "/v1/query", &json!({"sql": sql})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.json()["rows"]), ["a", "c", "d"]);
    let sql = format!(
        "SELECT max(distance) AS km FROM shortest_path('{}', '{}', 'km')",
        g("a"),
        g("d")
    );
    let r = post(b, "/v1/query", &json!({"sql": sql})).await;
    assert_eq!(r.json()["rows"][0]["km"], 30.0, "{}", r.text);

    // Deleting c removes its edges: a reaches d only by ferry now.
    let r = post(
        b,
        "/v1/events",
        &json!({"events": [{"urn": g("c"), "op": "delete"}]}),
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = post(
        b,
        "/v1/query",
        &json!({"shortest_path": {"from": g("a"), "to": g("d"), "weight": "km"}, "min_token": token}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["a", "d"]);

    // Problems: a bad direction, depths out of order, a weight that is not a number.
    for (body, needle) in [
        (
            json!({"traverse": {"start": g("a"), "direction": "up"}}),
            "direction must be",
        ),
        (
            json!({"traverse": {"start": g("a"), "min_depth": 3, "max_depth": 1}}),
            "depths must",
        ),
        (
            json!({"traverse": {"start": "urn:themis:document:d:x"}}),
            "not a graph vertex",
        ),
        (
            json!({"shortest_path": {"from": g("a"), "to": g("d"), "weight": "name"}}),
            "no weight",
        ),
    ] {
        let r = post(b, "/v1/query", &body).await;
        let p = r.problem(400, "invalid_search");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }

    // A restart keeps the graph.
    let query = json!({"traverse": {"start": g("a"), "max_depth": 2, "direction": "any"}});
    let before = post(b, "/v1/query", &query).await.json()["rows"].clone();
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(dir.path(), &[]);
    let after = post(&server.base, "/v1/query", &query).await;
    assert_eq!(after.json()["rows"], before);
}
