//! SQL through the HTTP API against the real binary: answers in JSON, NDJSON and CSV with their
//! token, read-your-writes on 1,000 append → query pairs without sleeps (each bringing the
//! table forward, not rebuilding it), problems for bad queries, and a wait that times out.

use serde_json::{Value, json};

use crate::api::{Answer, post, send};
use crate::harness::{Server, cli};

async fn declare(base: &str, ns: &str, config: Value) {
    let r = send(
        reqwest::Client::new()
            .put(format!("{base}/v1/namespaces/relational/{ns}?wait=applied"))
            .json(&config),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn query(base: &str, body: Value, accept: &str) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{base}/v1/query"))
            .header("accept", accept)
            .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_over_http_reads_its_own_writes_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    declare(
        b,
        "events",
        json!({"columns": [
            {"name": "n", "type": "int64"},
            {"name": "label", "type": "string", "nullable": true},
            {"name": "at", "type": "timestamp", "nullable": true},
            {"name": "extra", "type": "json", "nullable": true}
        ]}),
    )
    .await;

    // Read-your-writes: each query at its append's token sees that append; no sleeps. The
    // rows land in different shards, so the token of one append covers only its shard and
    // the query must still wait for that shard's views.
    for n in 0..1000u64 {
        let urn = format!("urn:themis:relational:events:e{n:04}");
        let a = post(
            b,
            &format!("/v1/streams/{urn}"),
            &json!({"events": [{"op": "put", "data": {"n": n}}]}),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let token = a.json()["token"].as_str().unwrap().to_owned();
        let r = query(
            b,
            json!({"sql": format!("SELECT n FROM events WHERE id = 'e{n:04}'"), "min_token": token}),
            "application/json",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        assert_eq!(
            body["rows"],
            json!([{"n": n}]),
            "query {n} missed its own write"
        );
    }
    let r = query(
        b,
        json!({"sql": "SELECT count(*) AS c, sum(n) AS s FROM events"}),
        "application/json",
    )
    .await;
    assert_eq!(r.json()["rows"], json!([{"c": 1000, "s": 499_500}]));
    // Each of those queries brought the table forward by its one new row: nothing was read
    // whole but the first time (issue 19).
    let built = |how: &str| format!("themis_sql_partitions_built_total{{how=\"{how}\"}}");
    let whole = crate::api::metric(b, &built("whole")).await;
    let forward = crate::api::metric(b, &built("forward")).await;
    assert!(
        forward >= 900 && whole <= 8,
        "whole {whole}, forward {forward}"
    );

    // Every format carries the token; JSON values stay JSON, timestamps are RFC 3339.
    let a = post(
        b,
        "/v1/streams/urn:themis:relational:events:x?wait=applied",
        &json!({"events": [{"op": "put", "data": {"n": -1, "label": "a,\"b\"", "at": "2026-11-26T10:00:00+01:00", "extra": {"k": [1, 2]}}}]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let sql = json!({"sql": "SELECT id, n, label, at, extra FROM events WHERE n < 0"});
    let r = query(b, sql.clone(), "application/json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(
        body["columns"],
        json!([
            {"name": "id", "type": "string"},
            {"name": "n", "type": "int64"},
            {"name": "label", "type": "string"},
            {"name": "at", "type": "timestamp"},
            {"name": "extra", "type": "json"}
        ])
    );
    assert_eq!(
        body["rows"],
        json!([{"id": "x", "n": -1, "label": "a,\"b\"", "at": "2026-11-26T09:00:00.000Z", "extra": {"k": [1, 2]}}])
    );
    assert_eq!(body["row_count"], 1);
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["themis-token"], token.as_str());
    assert!(themis_log::Token::decode(&token).is_ok());

    let r = query(b, sql.clone(), "application/x-ndjson").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    assert!(r.headers.contains_key("themis-token"));
    assert_eq!(
        r.text,
        "{\"id\":\"x\",\"n\":-1,\"label\":\"a,\\\"b\\\"\",\"at\":\"2026-11-26T09:00:00.000Z\",\"extra\":{\"k\":[1,2]}}\n"
    );

    let r = query(b, sql, "text/csv").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        r.text,
        "id,n,label,at,extra\r\nx,-1,\"a,\"\"b\"\"\",2026-11-26T09:00:00.000Z,\"{\"\"k\"\":[1,2]}\"\r\n"
    );

    // Problems.
    for (body, status, code) in [
        (json!({"sql": "SELEC 1"}), 400, "invalid_sql"),
        (
            json!({"sql": "SELECT * FROM missing"}),
            400,
            "unknown_table",
        ),
        (json!({"sql": "DROP TABLE events"}), 400, "invalid_sql"),
        (
            json!({"sql": "SELECT n / 0 FROM events"}),
            400,
            "query_failed",
        ),
        (
            json!({"sql": "SELECT 1", "bogus": true}),
            400,
            "invalid_body",
        ),
        (json!({"query": "SELECT 1"}), 400, "invalid_body"),
        (
            json!({"sql": "SELECT 1", "min_token": "nope"}),
            400,
            "invalid_token",
        ),
        (
            json!({"sql": "SELECT 1", "timeout": "soon"}),
            400,
            "invalid_query",
        ),
    ] {
        let r = query(b, body.clone(), "application/json").await;
        r.problem(status, code);
    }
    let deep = format!("SELECT {}1", "1+".repeat(600));
    query(b, json!({"sql": deep}), "application/json")
        .await
        .problem(400, "invalid_sql");
    // The deepest accepted expression plans without exhausting the stack.
    let deepest = format!("SELECT {}1", "1+".repeat(themis_query::MAX_NESTING - 1));
    let r = query(b, json!({"sql": deepest}), "application/json").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The CLI: `themis sql`, in each format; a bad query exits non-zero with the problem.
    let s = ["--server", b.as_str()];
    let (code, out, err) = cli(&[
        &["sql", "SELECT count(*) AS c FROM events", "--format", "csv"][..],
        &s,
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "c\r\n1001\r\n");
    let (code, out, err) = cli(&[&["sql", "SELECT 1 AS one"][..], &s].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["rows"],
        json!([{"one": 1}])
    );
    let (code, _, err) = cli(&[&["sql", "SELECT * FROM nowhere"][..], &s].concat());
    assert_ne!(code, 0);
    assert!(err.contains("unknown_table"), "{err}");

    // A token the views cannot reach in time: 504 timeout.
    let far = themis_log::Token::from_position(themis_log::Position {
        shard: themis_log::ShardId(0),
        lsn: themis_log::Lsn(1_000_000),
    });
    query(
        b,
        json!({"sql": "SELECT 1", "min_token": far.encode(), "timeout": "100ms"}),
        "application/json",
    )
    .await
    .problem(504, "timeout");
}
