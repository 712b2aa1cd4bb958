//! Time series through the HTTP API against the real binary: namespace configs, line protocol
//! with per-line errors (all or nothing), `ts_range` as a query of its own (raw, per step,
//! by series id or field and tags) and as the SQL table function, read-your-writes by token,
//! and the data surviving a restart.

use serde_json::{Value, json};

use crate::api::{post, send};
use crate::harness::Server;

async fn write_lp(base: &str, query: &str, body: &str) -> crate::api::Answer {
    send(
        reqwest::Client::new()
            .post(format!("{base}/v1/write_lp{query}"))
            .body(body.to_owned()),
    )
    .await
}

fn rows(answer: &crate::api::Answer) -> Vec<(i64, f64)> {
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ts"].as_i64().unwrap(), r["value"].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn line_protocol_and_ts_range_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();

    // A config with a one-minute rollup; defaults are spelled out; bad ones are refused.
    let r = send(
        reqwest::Client::new()
            .put(format!("{b}/v1/namespaces/timeseries/cpu?wait=applied"))
            .json(&json!({"downsample": [{"step_ms": 60000}]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["config"],
        json!({"block_ms": 7200000, "downsample": [{"step_ms": 60000}]})
    );
    for (config, needle) in [
        (json!({"block_ms": 10}), "block_ms must be"),
        (json!({"retention_ms": 0}), "retention_ms must be positive"),
        (json!({"dimension": 3}), "declare only"),
    ] {
        let r = send(
            reqwest::Client::new()
                .put(format!("{b}/v1/namespaces/timeseries/bad"))
                .json(&config),
        )
        .await;
        let p = r.problem(400, "invalid_config");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }

    // A bad line fails the whole request, naming every bad line; nothing is written.
    let r = write_lp(
        &b,
        "?precision=ms",
        "cpu,host=a usage=1 1000\ncpu,host=a usage=\"high\" 2000\ncpu usage= 3000\n",
    )
    .await;
    let p = r.problem(400, "invalid_line_protocol");
    assert_eq!(p["error_count"], 2);
    assert_eq!(p["errors"][0]["line"], 2);
    assert_eq!(p["errors"][0]["column"], 18);
    assert_eq!(p["errors"][1]["line"], 3);
    let r = post(
        &b,
        "/v1/query",
        &json!({"ts_range": {"namespace": "cpu", "field": "usage", "tags": {"host": "a"},
                             "from": 0, "to": 10000}}),
    )
    .await;
    assert!(rows(&r).is_empty(), "nothing written: {}", r.text);
    // InfluxData's whitespace rules: repeated and trailing spaces pass; a tab is no
    // whitespace, so a line starting with one fails at its first column.
    let r = write_lp(
        &b,
        "?precision=ms&wait=applied",
        "spaced,host=a  v=1   1000  \n  spaced v=2 2000\r\n",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["points"], 2);
    let r = write_lp(&b, "?precision=ms", "spaced v=3 3000\n\tspaced v=4 4000\n").await;
    let p = r.problem(400, "invalid_line_protocol");
    assert_eq!(p["error_count"], 1);
    assert_eq!(
        (&p["errors"][0]["line"], &p["errors"][0]["column"]),
        (&json!(2), &json!(1))
    );

    // Two hosts, two fields, ten-second points over three minutes (ms precision), sent out
    // of order in two requests; the second waits for the views.
    let mut first = String::new();
    let mut second = String::new();
    for i in 0..18i64 {
        let line = format!(
            "cpu,host=a,dc=x usage={}.5,idle={}i {}\ncpu,host=b usage={} {}\n",
            i,
            100 - i,
            i * 10_000,
            i * 2,
            i * 10_000
        );
        if i % 2 == 0 {
            second.push_str(&line);
        } else {
            first.push_str(&line);
        }
    }
    let r = write_lp(&b, "?precision=ms", &first).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["points"], 27);
    let r = write_lp(&b, "?precision=ms", &second).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["series"], 3);
    let token = r.json()["token"].as_str().unwrap().to_owned();

    // Raw points by field and tags at the token: in time order.
    let by_field = json!({"ts_range": {"namespace": "cpu", "field": "usage",
        "tags": {"host": "a", "dc": "x"}, "from": 0, "to": 1_000_000}, "min_token": token});
    let raw = rows(&post(&b, "/v1/query", &by_field).await);
    let expected: Vec<(i64, f64)> = (0..18).map(|i| (i * 10_000, i as f64 + 0.5)).collect();
    assert_eq!(raw, expected);
    // Per minute: avg, count, first, last, min, max, sum.
    for (agg, expected) in [
        ("avg", vec![3.0, 9.0, 15.0]),
        ("count", vec![6.0, 6.0, 6.0]),
        ("first", vec![0.5, 6.5, 12.5]),
        ("last", vec![5.5, 11.5, 17.5]),
        ("min", vec![0.5, 6.5, 12.5]),
        ("max", vec![5.5, 11.5, 17.5]),
        ("sum", vec![18.0, 54.0, 90.0]),
    ] {
        let mut q = by_field.clone();
        q["ts_range"]["step"] = json!(60000);
        q["ts_range"]["agg"] = json!(agg);
        let got = rows(&post(&b, "/v1/query", &q).await);
        let want: Vec<(i64, f64)> = expected
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 60_000, v))
            .collect();
        assert_eq!(got, want, "{agg}");
    }
    // The untagged series of host b, through SQL, by its series id.
    let id = {
        // Host b's series, by field and tags.
        let q = json!({"ts_range": {"namespace": "cpu", "field": "usage", "tags": {"host": "b"},
                                    "from": 0, "to": 30000}});
        assert_eq!(
            rows(&post(&b, "/v1/query", &q).await),
            vec![(0, 0.0), (10000, 2.0), (20000, 4.0)]
        );
        themis_materializers::timeseries::series_id(
            "usage",
            &[("host".to_owned(), "b".to_owned())].into_iter().collect(),
        )
    };
    let sql = format!(
        "SELECT ts, value FROM ts_range('cpu', '{id}', 0, 60000, 20000, 'max') ORDER BY ts"
    );
    let r = post(&b, "/v1/query", &json!({"sql": sql})).await;
    assert_eq!(rows(&r), vec![(0, 2.0), (20000, 6.0), (40000, 10.0)]);

    // Problems: unknown aggregate, empty range, both series and field, agg without step.
    for (args, needle) in [
        (
            json!({"series": "x", "from": 0, "to": 1, "step": 10, "agg": "median"}),
            "unknown aggregate",
        ),
        (json!({"series": "x", "from": 5, "to": 5}), "empty range"),
        (
            json!({"series": "x", "field": "y", "from": 0, "to": 1}),
            "not both",
        ),
        (
            json!({"series": "x", "from": 0, "to": 1, "agg": "max"}),
            "needs a `step`",
        ),
    ] {
        let mut args = args;
        args["namespace"] = json!("cpu");
        let r = post(&b, "/v1/query", &json!({"ts_range": args})).await;
        let p = r.problem(400, "invalid_search");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    // The downsampling steps cannot be declared after the points.
    let r = send(
        reqwest::Client::new()
            .put(format!("{b}/v1/namespaces/timeseries/late"))
            .json(&json!({"downsample": [{"step_ms": 60000}]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text); // no points yet: fine
    let r = write_lp(&b, "?precision=s&wait=applied", "mem used=1 1\n").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(
        reqwest::Client::new()
            .put(format!("{b}/v1/namespaces/timeseries/mem"))
            .json(&json!({"block_ms": 60000})),
    )
    .await;
    r.problem(400, "incompatible_config");

    // A restart keeps everything.
    let before: Value = post(&b, "/v1/query", &by_field).await.json()["rows"].clone();
    assert_eq!(server.terminate().code(), Some(0));
    let server = Server::start(dir.path(), &[]);
    let b = server.base.clone();
    let after = post(&b, "/v1/query", &by_field).await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.json()["rows"], before);
}
