//! Vector search through the HTTP API against the real binary: namespace configs, appends
//! checked against them, kNN as a query of its own and as the SQL table function `knn`
//! (joined with a document table), filters, read-your-writes by token, problems, and the
//! index surviving a restart.

use serde_json::{Value, json};

use crate::api::{append_events, ids, post, send};
use crate::harness::Server;

async fn put_config(base: &str, model: &str, ns: &str, config: Value) -> crate::api::Answer {
    send(
        reqwest::Client::new()
            .put(format!("{base}/v1/namespaces/{model}/{ns}?wait=applied"))
            .json(&config),
    )
    .await
}

async fn query(base: &str, body: Value) -> crate::api::Answer {
    post(base, "/v1/query", &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn knn_over_http_with_configs_filters_sql_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;

    // Configs: defaults are spelled out; bad ones are refused with reasons.
    let r = put_config(
        b,
        "vector",
        "items",
        json!({"dimension": 3, "metric": "l2"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["config"],
        json!({"dimension": 3, "metric": "l2", "m": 16, "ef_construction": 200, "ef_search": 64})
    );
    for (config, needle) in [
        (json!({}), "declares its `dimension`"),
        (json!({"dimension": 0}), "dimension must be 1 to"),
        (
            json!({"dimension": 3, "metric": "hamming"}),
            "unknown variant",
        ),
        (json!({"dimension": 3, "m": 1}), "m must be 2 to"),
        (
            json!({"dimension": 3, "columns": [{"name": "a", "type": "int64"}]}),
            "no columns",
        ),
    ] {
        let r = put_config(b, "vector", "bad", config.clone()).await;
        assert_eq!(r.status, 400, "{config}: {}", r.text);
        assert!(r.text.contains(needle), "{config}: {}", r.text);
    }
    let r = put_config(
        b,
        "vector",
        "items",
        json!({"dimension": 4, "metric": "l2"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("dimension cannot change"), "{}", r.text);
    let r = put_config(b, "document", "docs", json!({"dimension": 4})).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Appends are checked against the config before the log.
    let r = post(
        b,
        "/v1/streams/urn:themis:vector:items:x",
        &json!({"events": [{"op": "put", "vector": [1.0, 2.0]}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["code"], "schema_violation");
    assert!(
        r.text.contains("3 dimensions, this one has 2"),
        "{}",
        r.text
    );
    let r = post(
        b,
        "/v1/streams/urn:themis:vector:nowhere:x",
        &json!({"events": [{"op": "put", "vector": [1.0, 2.0, 3.0]}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["code"], "unknown_namespace");
    let r = post(
        b,
        "/v1/streams/urn:themis:vector:items:x",
        &json!({"events": [{"op": "put", "vector": [1.0, 2.0, 1e39]}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("not a finite 32-bit float"), "{}", r.text);

    // 60 points on a line, payload says odd or even; documents describe some of them.
    let mut events = Vec::new();
    for i in 0..60 {
        events.push(json!({
            "urn": format!("urn:themis:vector:items:p{i:02}"),
            "op": "put",
            "vector": [i as f64, 0.0, 0.0],
            "data": {"n": i, "odd": i % 2 == 1}
        }));
    }
    for i in [10, 11, 12] {
        events.push(json!({
            "urn": format!("urn:themis:document:labels:p{i:02}"),
            "op": "put",
            "data": {"label": format!("label {i}")}
        }));
    }
    let token = append_events(b, events).await;

    // kNN as a query of its own, at the append's token.
    let r = query(
        b,
        json!({"knn": {"namespace": "items", "vector": [10.2, 0, 0], "k": 3}, "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(ids(&body["rows"]), ["p10", "p11", "p09"]);
    let first = &body["rows"][0];
    assert_eq!(first["rank"], 1);
    assert_eq!(first["urn"], "urn:themis:vector:items:p10");
    assert_eq!(first["data"], json!({"n": 10, "odd": false}));
    assert!((first["distance"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert!(body["token"].as_str().is_some());

    // A filter keeps k answers.
    let r = query(
        b,
        json!({"knn": {"namespace": "items", "vector": [10.2, 0, 0], "k": 3,
                        "filter": {"odd": true, "n": {"$gte": 11}}}, "min_token": token}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["p11", "p13", "p15"]);

    // The same through SQL, joined with documents, and ordered by distance.
    let r = query(
        b,
        json!({"sql": "SELECT k.id, k.rank, l.label FROM knn('items', [10.2, 0, 0], 3) k \
                       LEFT JOIN document.labels l ON l.id = k.id ORDER BY k.rank",
               "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["rows"],
        json!([
            {"id": "p10", "rank": 1, "label": "label 10"},
            {"id": "p11", "rank": 2, "label": "label 11"},
            {"id": "p09", "rank": 3, "label": null}
        ])
    );
    let r = query(
        b,
        json!({"sql": "SELECT id FROM knn('items', '[50, 0, 0]', 2, '{\"odd\": false}')",
               "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.json()["rows"]), ["p50", "p48"]);

    // Read-your-writes: move p59 next to the origin, delete p00; the next query at the token
    // sees both.
    let r = post(
        b,
        "/v1/events",
        &json!({"events": [
            {"urn": "urn:themis:vector:items:p59", "op": "put", "vector": [0.1, 0, 0], "data": {"moved": true}}
        ]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r1_token = r.json()["token"].as_str().unwrap().to_owned();
    let r = post(
        b,
        "/v1/streams/urn:themis:vector:items:p00",
        &json!({"events": [{"op": "delete"}]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let t2 = r.json()["token"].as_str().unwrap().to_owned();
    let mut both = themis_log::Token::decode(&t2).unwrap();
    both.merge(&themis_log::Token::decode(r1_token.as_str()).unwrap());
    let r = query(
        b,
        json!({"knn": {"namespace": "items", "vector": [0, 0, 0], "k": 2}, "min_token": both.encode()}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["p59", "p01"]);

    // Problems.
    for (body, status, code) in [
        (
            json!({"knn": {"namespace": "items", "vector": [1, 2], "k": 3}}),
            400,
            "invalid_search",
        ),
        (
            json!({"knn": {"namespace": "items", "vector": [1, 2, 3], "k": 0}}),
            400,
            "invalid_search",
        ),
        (
            json!({"knn": {"namespace": "nope", "vector": [1, 2, 3]}}),
            404,
            "unknown_namespace",
        ),
        (
            json!({"knn": {"namespace": "items", "vector": [1, 2, 3], "filter": {"$x": 1}}}),
            400,
            "invalid_search",
        ),
        (
            json!({"knn": {"namespace": "items", "vector": [1, 2, 3]}, "sql": "SELECT 1"}),
            400,
            "invalid_body",
        ),
        (
            json!({"sql": "SELECT * FROM knn('items', [1, 2], 3)"}),
            400,
            "invalid_search",
        ),
        (
            json!({"sql": "SELECT * FROM knn('items', [1, 2, 3])"}),
            400,
            "invalid_search",
        ),
        (
            json!({"sql": "SELECT * FROM knn('items', 'x', 3)"}),
            400,
            "invalid_search",
        ),
        (
            json!({"sql": "SELECT * FROM knn('nope', [1, 2, 3], 3)"}),
            404,
            "unknown_namespace",
        ),
    ] {
        let r = query(b, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json()["code"], code, "{body}: {}", r.text);
    }

    // A restart loads the index from its dump and answers the same.
    let before = query(
        b,
        json!({"knn": {"namespace": "items", "vector": [30, 0, 0], "k": 5}}),
    )
    .await;
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(dir.path(), &[]);
    let after = query(
        &server.base,
        json!({"knn": {"namespace": "items", "vector": [30, 0, 0], "k": 5}, "min_token": both.encode()}),
    )
    .await;
    assert_eq!(after.json()["rows"], before.json()["rows"]);
    assert!(
        dir.path().join("indexes/vector").exists(),
        "the index was dumped at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fulltext_and_hybrid_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = &server.base;
    let r = put_config(
        b,
        "document",
        "notes",
        json!({"text_fields": ["title", "body"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["config"]["language"],
        "en",
        "the default is spelled out"
    );
    for (config, needle) in [
        (json!({"text_fields": ["a.b"]}), "not valid"),
        (json!({"text_fields": ["a", "a"]}), "twice"),
        (json!({"language": "de"}), "declare those too"),
        (
            json!({"text_fields": ["a"], "language": "fr"}),
            "unknown variant",
        ),
    ] {
        let r = put_config(b, "document", "bad", config.clone()).await;
        assert_eq!(r.status, 400, "{config}: {}", r.text);
        assert!(r.text.contains(needle), "{config}: {}", r.text);
    }
    let r = put_config(b, "document", "notes", json!({"text_fields": ["title"]})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("cannot change"), "{}", r.text);
    let r = put_config(
        b,
        "vector",
        "notes",
        json!({"dimension": 2, "metric": "l2"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let mut events = Vec::new();
    for (i, (title, body)) in [
        ("Foxes", "The quick brown fox jumps over the lazy dog"),
        ("Logs", "An append-only log of events"),
        ("Dogs", "Lazy dogs sleep"),
        ("Search", "Ranking documents by BM25"),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(
            json!({"urn": format!("urn:themis:document:notes:n{i}"), "op": "put",
                           "data": {"title": title, "body": body}}),
        );
        events.push(
            json!({"urn": format!("urn:themis:vector:notes:n{i}"), "op": "put",
                           "vector": [i as f64, 0.0]}),
        );
    }
    let token = append_events(b, events).await;

    let r = query(
        b,
        json!({"search": {"namespace": "notes", "query": "lazy dogs", "k": 5}, "min_token": token}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(ids(&body["rows"]), ["n2", "n0"]);
    assert_eq!(body["rows"][0]["data"]["title"], "Dogs");
    assert!(
        body["rows"][0]["score"].as_f64().unwrap() > body["rows"][1]["score"].as_f64().unwrap()
    );
    for (q, want) in [
        ("\"append-only log\"", vec!["n1"]),
        ("rank*", vec!["n3"]),
        ("fox -lazy", vec![]),
    ] {
        let r = query(
            b,
            json!({"search": {"namespace": "document.notes", "query": q}, "min_token": token}),
        )
        .await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(ids(&r.json()["rows"]), want, "{q}");
    }

    // Read-your-writes: a patch is searchable at its token.
    let r = post(
        b,
        "/v1/streams/urn:themis:document:notes:n3",
        &json!({"events": [{"op": "patch", "data": {"body": "zebras"}}]}),
    )
    .await;
    let t = r.json()["token"].as_str().unwrap().to_owned();
    let r = query(
        b,
        json!({"search": {"namespace": "notes", "query": "zebras"}, "min_token": t}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["n3"]);

    // SQL: search joined with a document table.
    let r = query(
        b,
        json!({"sql": "SELECT s.id, n.title FROM search('notes', 'lazy', 3) s JOIN document.notes n ON n.id = s.id ORDER BY s.rank",
               "min_token": t}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["rows"],
        json!([{"id": "n2", "title": "Dogs"}, {"id": "n0", "title": "Foxes"}])
    );

    // Hybrid: n0 is second by text and first by vector; n2 first by text, third by vector.
    let r = query(
        b,
        json!({"hybrid": {"knn": {"namespace": "notes", "vector": [0.0, 0.0]},
                          "search": {"namespace": "notes", "query": "lazy"}, "k": 3},
               "min_token": t}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = r.json()["rows"].clone();
    assert_eq!(ids(&rows), ["n0", "n2", "n1"]);
    assert_eq!(rows[0]["knn_rank"], 1);
    assert_eq!(rows[0]["search_rank"], 2);
    let want = 1.0 / 61.0 + 1.0 / 62.0;
    assert!((rows[0]["score"].as_f64().unwrap() - want).abs() < 1e-12);
    assert_eq!(rows[2]["search_rank"], Value::Null);
    assert_eq!(rows[0]["data"]["title"], "Foxes");
    let r = query(
        b,
        json!({"sql": "SELECT id, knn_rank, search_rank FROM hybrid('notes', [0, 0], 'notes', 'lazy', 2)", "min_token": t}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["rows"],
        json!([{"id": "n0", "knn_rank": 1, "search_rank": 2}, {"id": "n2", "knn_rank": 3, "search_rank": 1}])
    );

    for (body, status, code) in [
        (
            json!({"search": {"namespace": "nope", "query": "x"}}),
            404,
            "unknown_namespace",
        ),
        (
            json!({"search": {"namespace": "notes", "query": "title:"}}),
            400,
            "invalid_search",
        ),
        (
            json!({"search": {"namespace": "notes", "query": "x", "k": 0}}),
            400,
            "invalid_search",
        ),
        (
            json!({"sql": "SELECT * FROM search('notes', 'x')"}),
            400,
            "invalid_search",
        ),
        (
            json!({"hybrid": {"knn": {"namespace": "notes", "vector": [0, 0]}, "search": {"namespace": "notes", "query": "x"}, "rrf_k": -1}}),
            400,
            "invalid_search",
        ),
    ] {
        let r = query(b, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json()["code"], code, "{body}: {}", r.text);
    }

    // A restart reopens the index from disk.
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(dir.path(), &[]);
    let r = query(
        &server.base,
        json!({"search": {"namespace": "notes", "query": "zebras"}, "min_token": t}),
    )
    .await;
    assert_eq!(ids(&r.json()["rows"]), ["n3"]);
    assert!(dir.path().join("indexes/fulltext/document").exists());
}
