//! Change streams through the real binary: SSE and NDJSON, filters, control events, resuming
//! with `Last-Event-ID`, problems, the subscriber limit; consumer checkpoints and `themis tail`;
//! and the resume guarantee across a server killed with SIGKILL while a subscriber consumes.
#![allow(clippy::disallowed_methods)] // test: real processes, real time

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{get, post, send};
use crate::harness::{Server, binary, cli, free_port};

/// One SSE message: (event, id, data).
type Message = (String, String, Value);

/// Reads SSE messages from `response` until `stop` says so (at most 30 s).
async fn read_sse(
    response: reqwest::Response,
    mut stop: impl FnMut(&[Message]) -> bool,
) -> Vec<Message> {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut out: Vec<Message> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("SSE stalled; got {out:?}"))
            .expect("stream open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            out.push((event, id, data));
            if stop(&out) {
                return out;
            }
        }
    }
}

async fn sse(base: &str, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/v1/subscribe?{query}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

async fn append(base: &str, urn: &str, event_type: &str, id: Option<&str>) -> Value {
    let mut body = json!({"type": event_type, "op": "put", "data": {"n": 1}});
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    let answer = post(
        base,
        &format!("/v1/streams/{urn}"),
        &json!({"events": [body]}),
    )
    .await;
    assert!(
        answer.status == 200 || answer.status == 201,
        "{}",
        answer.text
    );
    answer.json()
}

fn events(messages: &[Message]) -> Vec<&Message> {
    messages.iter().filter(|m| m.0 == "event").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_and_ndjson_with_filters_control_events_resume_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--subscribers-max", "3"]);
    let base = &server.base;
    for i in 0..6 {
        append(
            base,
            &format!("urn:themis:document:users:u{i}"),
            "Registered",
            None,
        )
        .await;
        append(base, &format!("urn:themis:graph:g:v{i}"), "Added", None).await;
    }
    // From the beginning, documents only: six events, then caught_up.
    let all = read_sse(
        sse(
            base,
            "from=earliest&filter=model%3Ddocument&heartbeat=200ms",
            None,
        )
        .await,
        |m| m.iter().any(|m| m.0 == "caught_up"),
    )
    .await;
    let docs = events(&all);
    assert_eq!(docs.len(), 6, "{all:?}");
    for (_, id, data) in &docs {
        assert!(id.starts_with("r1."), "{id}");
        assert_eq!(data["type"], "event");
        assert_eq!(&data["cursor"], id);
        assert_eq!(data["event"]["type"], "Registered");
        assert!(
            data["event"]["urn"]
                .as_str()
                .unwrap()
                .starts_with("urn:themis:document:users:")
        );
    }
    let caught = all.iter().find(|m| m.0 == "caught_up").unwrap();
    assert!(caught.2["token"].as_str().unwrap().starts_with("t1."));

    // Resume after the third: exactly the other three (Last-Event-ID wins over from=).
    let third = &docs[2].1;
    let rest = read_sse(
        sse(base, "from=earliest&filter=model%3Ddocument", Some(third)).await,
        |m| m.iter().any(|m| m.0 == "caught_up"),
    )
    .await;
    // (Shards merge in arrival order: compare as sets; each shard's order is checked below.)
    let rest_ids: BTreeSet<String> = events(&rest)
        .iter()
        .map(|m| m.2["event"]["id"].to_string())
        .collect();
    let expected: BTreeSet<String> = docs[3..]
        .iter()
        .map(|m| m.2["event"]["id"].to_string())
        .collect();
    assert_eq!(rest_ids, expected);
    assert_eq!(events(&rest).len(), 3);

    // Live: a subscriber at the head gets a heartbeat when idle, and a new event at once;
    // a rejected event moves the cursor by a progress message.
    let live = sse(base, "from=latest&filter=type%3DPing&heartbeat=200ms", None).await;
    let writer = {
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            append(&base, "urn:themis:document:other:x", "Pong", None).await;
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            append(&base, "urn:themis:document:other:y", "Ping", None).await;
        })
    };
    let got = read_sse(live, |m| m.iter().any(|m| m.0 == "event")).await;
    writer.await.unwrap();
    let kinds: BTreeSet<&str> = got.iter().map(|m| m.0.as_str()).collect();
    assert!(
        kinds.contains("heartbeat") && kinds.contains("caught_up"),
        "{got:?}"
    );
    assert_eq!(events(&got)[0].2["event"]["type"], "Ping");
    assert!(
        got.iter().any(|m| m.0 == "progress")
            || got.iter().filter(|m| m.0 == "heartbeat").count() > 1,
        "the rejected Pong moved the cursor: {got:?}"
    );
    // Every message's id moves forward, never back (per shard, by its token).
    let ids: Vec<&String> = got.iter().map(|m| &m.1).collect();
    assert!(ids.iter().all(|id| id.starts_with("r1.")));

    // NDJSON: one JSON object per line.
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/v1/subscribe?from=earliest&filter=ns%3Dusers"
        ))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while text
        .lines()
        .filter(|l| l.contains("\"type\":\"event\""))
        .count()
        < 6
    {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["cursor"].as_str().unwrap().starts_with("r1."));
    }
    drop(body);

    // Problems before the stream starts.
    let problem = |q: &'static str, accept: &'static str| {
        let base = base.clone();
        async move {
            send(
                reqwest::Client::new()
                    .get(format!("{base}/v1/subscribe?{q}"))
                    .header("accept", accept),
            )
            .await
        }
    };
    problem("from=yesterday", "text/event-stream")
        .await
        .problem(400, "invalid_cursor");
    problem("from=r1.AAAAAB", "text/event-stream")
        .await
        .problem(400, "invalid_cursor");
    let p = problem("filter=colour%3Dred", "text/event-stream")
        .await
        .problem(400, "invalid_filter");
    assert!(p["detail"].as_str().unwrap().contains("colour"));
    problem("from=earliest", "text/csv")
        .await
        .problem(406, "not_acceptable");
    problem("since=0", "text/event-stream")
        .await
        .problem(400, "invalid_query");

    // The limit: three open, the fourth refused; closing one frees a slot.
    let open: Vec<reqwest::Response> =
        futures::future::join_all((0..3).map(|_| sse(base, "from=latest", None))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    problem("from=latest", "text/event-stream")
        .await
        .problem(503, "too_many_subscribers");
    let metrics = get(base, "/metrics").await.text;
    assert!(
        metrics.contains("themis_subscriptions_open 3\n")
            && metrics.contains("themis_subscriptions_max 3\n"),
        "{metrics}"
    );
    drop(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Only the status: a 200's body is the (endless) stream.
        let status = reqwest::Client::new()
            .get(format!("{base}/v1/subscribe?from=latest"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot freed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `themis tail` with `args` in the background; its stdout lines parsed.
pub fn spawn_tail(args: &[String]) -> std::process::Child {
    Command::new(binary())
        .arg("tail")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn themis tail")
}

pub fn wait_output(child: std::process::Child) -> (i32, Vec<Value>, String) {
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("tail prints JSON lines"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `themis tail` printed, as `log_events` gives the log: per shard, (lsn, index, id).
pub fn by_shard(printed: &[Value]) -> BTreeMap<u64, Vec<(u64, u64, String)>> {
    let mut out: BTreeMap<u64, Vec<(u64, u64, String)>> = BTreeMap::new();
    for p in printed {
        out.entry(p["shard"].as_u64().unwrap()).or_default().push((
            p["lsn"].as_u64().unwrap(),
            p["index"].as_u64().unwrap(),
            p["event"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// (shard, lsn, index, id) of every event of every shard's log, in log order per shard.
pub async fn log_events(base: &str, shards: u32) -> BTreeMap<u64, Vec<(u64, u64, String)>> {
    let mut out = BTreeMap::new();
    for shard in 0..shards {
        let mut from = 0u64;
        let list: &mut Vec<(u64, u64, String)> = out.entry(shard as u64).or_default();
        loop {
            let page = get(base, &format!("/v1/log/{shard}?from_lsn={from}&limit=1000")).await;
            let page = page.json();
            let entries = page["entries"].as_array().unwrap();
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                let lsn = entry["lsn"].as_u64().unwrap();
                let outcomes = entry["outcomes"].as_array().cloned().unwrap_or_default();
                let events = entry["events"].as_array().cloned().unwrap_or_default();
                // Every batch here is one event; idempotent retries that reached the log are
                // `duplicate` and were not appended again.
                assert_eq!(outcomes.len(), events.len(), "{entry}");
                for (index, (e, outcome)) in events.iter().zip(&outcomes).enumerate() {
                    if outcome["outcome"] == "appended" {
                        list.push((lsn, index as u64, e["id"].as_str().unwrap().to_owned()));
                    }
                }
                from = lsn + 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_resumes_across_a_killed_server_and_receives_the_log_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::try_start_on(dir.path(), &listen, &[]).unwrap();
    let base = server.base.clone();
    const EVENTS: usize = 600;
    // The tail runs from the beginning until it has printed every event.
    let tail = spawn_tail(&[
        "--from".into(),
        "earliest".into(),
        "--count".into(),
        EVENTS.to_string(),
        "--give-up-after".into(),
        "60s".into(),
        "--server".into(),
        base.clone(),
    ]);
    // A writer appends with client-chosen ids, retrying each until acknowledged (the retry of
    // an append whose answer was lost is idempotent).
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let base = base.clone();
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..EVENTS {
                let id = format!("00000000-0000-4000-8000-{:012}", i);
                let body =
                    json!({"events": [{"id": id, "type": "Step", "op": "put", "data": {"i": i}}]});
                let url = format!("{base}/v1/streams/urn:themis:document:steps:s{}", i % 17);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
                loop {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // Spread the appends over a few seconds, so the kills land while
                            // the subscriber consumes.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            break;
                        }
                        _ => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "append {i} never acknowledged"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        })
    };
    // Kill the server twice while both run, each time starting it again on the same address.
    let mut server = server;
    for at in [150, 400] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < at {
            assert!(tokio::time::Instant::now() < deadline, "the writer stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::try_start_on(dir.path(), &listen, &[]).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the writer finishes")
        .unwrap();
    let (code, printed, stderr) = tokio::task::spawn_blocking(move || wait_output(tail))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    // Per shard, what the tail printed is the log's sequence of accepted events, exactly.
    let log = log_events(&server.base, 4).await;
    let printed_by_shard = by_shard(&printed);
    let log_ids: BTreeSet<&String> = log.values().flatten().map(|e| &e.2).collect();
    assert_eq!(log_ids.len(), EVENTS, "the log holds each event once");
    assert_eq!(printed.len(), EVENTS);
    for (shard, expected) in &log {
        assert_eq!(
            printed_by_shard.get(shard).cloned().unwrap_or_default(),
            *expected,
            "shard {shard}"
        );
    }
    assert!(
        stderr.contains("reconnecting"),
        "the kill was noticed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_groups_checkpoint_through_the_log_and_tail_resumes_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let base = &server.base;
    get(base, "/v1/consumers/billing/checkpoint")
        .await
        .problem(404, "checkpoint_not_found");
    for i in 0..5 {
        append(
            base,
            &format!("urn:themis:document:orders:o{i}"),
            "Placed",
            None,
        )
        .await;
    }
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "--group",
            "billing",
            "--from",
            "earliest",
            "--until-caught-up",
            "--filter",
            "ns=orders",
            "--server",
            base,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (code, first, stderr) = wait_output(spawn_tail(&args(&[])));
    assert_eq!((code, first.len()), (0, 5), "{stderr}");
    let stored = get(base, "/v1/consumers/billing/checkpoint").await.json();
    assert!(stored["cursor"].as_str().unwrap().starts_with("r1."));
    assert!(stored["cursor_token"].as_str().unwrap().starts_with("t1."));
    // The checkpoint is an event of the log like any other (replicated with it).
    let stream = get(base, "/v1/streams/urn:themis:document:_consumer:billing").await;
    assert_eq!(stream.status, 200, "{}", stream.text);
    for i in 5..8 {
        append(
            base,
            &format!("urn:themis:document:orders:o{i}"),
            "Placed",
            None,
        )
        .await;
    }
    // Started again, the group continues where it stopped: only the new three.
    let (code, second, stderr) = wait_output(spawn_tail(&args(&[])));
    assert_eq!(code, 0, "{stderr}");
    let urns: Vec<&str> = second
        .iter()
        .map(|e| e["event"]["urn"].as_str().unwrap())
        .collect();
    let mut sorted = urns.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "urn:themis:document:orders:o5",
            "urn:themis:document:orders:o6",
            "urn:themis:document:orders:o7"
        ]
    );
    // Bad input is refused with a readable message and a non-zero exit.
    let bad = reqwest::Client::new()
        .put(format!("{base}/v1/consumers/billing/checkpoint"))
        .json(&json!({"cursor": "r1.nope"}));
    send(bad).await.problem(400, "invalid_cursor");
    let mut elsewhere = themis_log::subscribe::Cursor::new();
    elsewhere.set(
        themis_log::ShardId(9),
        themis_log::subscribe::Next {
            lsn: themis_log::Lsn(1),
            index: 0,
        },
    );
    let bad = reqwest::Client::new()
        .put(format!("{base}/v1/consumers/billing/checkpoint"))
        .json(&json!({"cursor": elsewhere.encode()}));
    let p = send(bad).await.problem(400, "invalid_cursor");
    assert!(p["detail"].as_str().unwrap().contains("shard 9"), "{p}");
    let bad = reqwest::Client::new()
        .put(format!("{base}/v1/consumers/bad%20group/checkpoint"))
        .json(&json!({"cursor": stored["cursor"]}));
    send(bad).await.problem(400, "invalid_group");
    let (code, _, stderr) = cli(&["tail", "--from", "nowhere", "--server", base]);
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid_cursor"), "{stderr}");
    // A refusal is not retried for ever: a bad group name ends the command.
    let (code, _, stderr) = cli(&["tail", "--group", "bad group", "--server", base]);
    assert_ne!(code, 0);
    assert!(stderr.contains("invalid_group"), "{stderr}");
}

/// Event data is stored exactly as sent, line breaks included: every line-oriented answer
/// (SSE, NDJSON subscriptions and NDJSON stream reads) still carries each event on one line,
/// with the data unchanged in meaning.
#[tokio::test(flavor = "multi_thread")]
async fn pretty_printed_event_data_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let base = &server.base;
    let body = "{\"events\": [{\"op\": \"put\", \"type\": \"Pretty\", \"data\": {\r\n  \"text\": \"a\\nb\",\n  \"n\": [1,\n 2]\n}}]}";
    let answer = send(
        reqwest::Client::new()
            .post(format!("{base}/v1/streams/urn:themis:document:p:x"))
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let expected = json!({"text": "a\nb", "n": [1, 2]});
    // SSE.
    let got = read_sse(sse(base, "from=earliest", None).await, |m| {
        m.iter().any(|m| m.0 == "event")
    })
    .await;
    assert_eq!(events(&got)[0].2["event"]["data"], expected);
    // NDJSON subscription and NDJSON stream read: every line is one JSON value.
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/subscribe?from=earliest"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"caught_up\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
        .collect();
    assert_eq!(lines[0]["event"]["data"], expected);
    let read = send(
        reqwest::Client::new()
            .get(format!("{base}/v1/streams/urn:themis:document:p:x"))
            .header("accept", "application/x-ndjson"),
    )
    .await;
    let line: Value = serde_json::from_str(read.text.lines().next().unwrap()).unwrap();
    assert_eq!(read.text.lines().count(), 1, "{}", read.text);
    assert_eq!(line["data"], expected);
}
