//! AQL through the HTTP API against the real binary: JSON rows (objects, never JSON text),
//! bind parameters, read-your-writes with `min_token`, cursors over a large answer, and
//! problem+json for syntax errors (with line and column) and bad requests.

use serde_json::{Value, json};

use crate::api::{append_events, post, send};
use crate::harness::Server;

#[tokio::test(flavor = "multi_thread")]
async fn aql_over_http_with_params_tokens_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let events: Vec<Value> = (0..2500)
        .map(|i| {
            json!({"urn": format!("urn:themis:document:pets:p{i:04}"), "op": "put",
                "data": {"n": i, "kind": if i % 2 == 0 { "cat" } else { "dog" }}})
        })
        .collect();
    let token = append_events(b, events).await;

    // Objects as JSON, bind parameters, the token waited for.
    let r = post(
        b,
        "/v1/query",
        &json!({"aql": "FOR p IN pets FILTER p.n < @max COLLECT kind = p.kind WITH COUNT INTO n RETURN {kind, n}",
            "params": {"max": 10}, "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(
        body["result"],
        json!([{"kind": "cat", "n": 5}, {"kind": "dog", "n": 5}])
    );
    assert_eq!(body["has_more"], json!(false));
    assert!(body.get("cursor").is_none());
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));

    // 2,500 rows in batches of 1,000 through a cursor, all in order, then the cursor is gone.
    let r = post(
        b,
        "/v1/query",
        &json!({"aql": "FOR p IN pets SORT p.n RETURN p.n", "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut body = r.json();
    let mut all: Vec<Value> = Vec::new();
    let mut batches = 0;
    loop {
        batches += 1;
        assert_eq!(body["count"], json!(2500));
        all.extend(body["result"].as_array().unwrap().iter().cloned());
        if body["has_more"] != json!(true) {
            break;
        }
        let cursor = body["cursor"].as_str().unwrap().to_owned();
        let r = post(b, "/v1/query", &json!({"cursor": cursor})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        body = r.json();
        if body["has_more"] == json!(false) {
            let again = post(b, "/v1/query", &json!({"cursor": cursor})).await;
            again.problem(404, "cursor_not_found");
        }
    }
    assert_eq!(batches, 3);
    assert_eq!(all, (0..2500).map(|i| json!(i)).collect::<Vec<_>>());

    // A smaller batch size.
    let r = post(
        b,
        "/v1/query",
        &json!({"aql": "FOR i IN 1..5 RETURN {i}", "batch_size": 2}),
    )
    .await;
    assert_eq!(r.json()["result"], json!([{"i": 1}, {"i": 2}]));
    assert_eq!(r.json()["has_more"], json!(true));

    // Problems: a syntax error with its position, a missing parameter, bad combinations.
    let r = post(
        b,
        "/v1/query",
        &json!({"aql": "FOR p IN pets\n  FILTER p.n >\n  RETURN p"}),
    )
    .await;
    let p = r.problem(400, "invalid_aql");
    assert_eq!(
        (p["line"].clone(), p["column"].clone()),
        (json!(3), json!(3))
    );
    let r = post(b, "/v1/query", &json!({"aql": "RETURN @x"})).await;
    r.problem(400, "invalid_aql");
    for bad in [
        json!({"aql": "RETURN 1", "sql": "SELECT 1"}),
        json!({"sql": "SELECT 1", "params": {}}),
        json!({"aql": "RETURN 1", "batch_size": 0}),
        json!({"cursor": "x", "batch_size": 5}),
        json!({"sql": "SELECT 1", "plans": false}),
        json!({"aql": "RETURN 1", "plans": "no"}),
    ] {
        post(b, "/v1/query", &bad)
            .await
            .problem(400, "invalid_body");
    }
}

/// A query over a relational table answers the same through a DataFusion plan (the default)
/// and through the interpreter alone (`"plans": false`).
#[tokio::test(flavor = "multi_thread")]
async fn aql_over_tables_answers_the_same_with_and_without_plans() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let declared = send(
        reqwest::Client::new()
            .put(format!("{b}/v1/namespaces/relational/sales"))
            .json(&json!({"columns": [
                {"name": "region", "type": "string"},
                {"name": "amount", "type": "int64", "nullable": true}
            ]})),
    )
    .await;
    assert!(declared.status < 300, "{}", declared.text);
    let events: Vec<Value> = (0..300)
        .map(|i| {
            let amount = if i % 7 == 0 {
                Value::Null
            } else {
                json!(i % 50)
            };
            let region = ["eu", "us", "apac"][i % 3];
            json!({"urn": format!("urn:themis:relational:sales:s{i:03}"), "op": "put",
                "data": {"region": region, "amount": amount}})
        })
        .collect();
    let token = append_events(b, events).await;
    let query = "FOR s IN sales FILTER s.amount < 40 COLLECT region = s.region \
        AGGREGATE n = COUNT(), total = SUM(s.amount) SORT total DESC RETURN {region, n, total}";
    let mut answers = Vec::new();
    for plans in [true, false] {
        let r = post(
            b,
            "/v1/query",
            &json!({"aql": query, "plans": plans, "min_token": token}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        answers.push(r.json()["result"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    // Nulls are less than 40: every region has its rows with no amount counted.
    let n: u64 = answers[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["n"].as_u64().unwrap())
        .sum();
    let expected = (0..300).filter(|i| i % 7 == 0 || i % 50 < 40).count() as u64;
    assert_eq!(n, expected);
}
