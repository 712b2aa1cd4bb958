//! Entries no view can apply, and views that stop. An older version let client JSON into the
//! log that the views cannot store (lone surrogates, numbers beyond a double, nesting deeper
//! than serde_json parses); each such entry stopped its shard's views for good, and a restart
//! or rebuild replayed it and stopped again. Now every view rejects such an entry (recorded,
//! the same on every rebuild) and goes on; and a view whose storage fails says so to readers at
//! once instead of letting them wait for a watermark that never moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use themis_log::event::Op;
use themis_log::seam::{NoPeers, SeededEntropy, SystemClock};
use themis_log::{
    Event, ExpectedRevision, Log, LogConfig, ProposedEvent, Token, Urn, ValidatedBatch,
};
use themis_materializers::{Materializer, MaterializerConfig};
use themis_storage::{Disk, MemoryBackend, MemoryDisk};

use crate::{applied, digests, open, wait_all};

/// An event as an older version might have stored it: `data` is taken as it is.
fn raw_event(n: u128, urn: &str, op: Op, data: &str) -> ProposedEvent {
    ProposedEvent {
        event: Event {
            id: themis_log::EventId::from_u128(n),
            urn: Urn::parse(urn).expect("urn"),
            event_type: op.as_str().to_owned(),
            op,
            data: Some(serde_json::value::RawValue::from_string(data.to_owned()).expect("syntax")),
            vector: None,
            to: None,
            label: None,
            points: None,
            metadata: None,
        },
        expected: ExpectedRevision::Any,
        client_id: false,
    }
}

async fn append_raw(log: &Log, events: Vec<ProposedEvent>) -> Token {
    let result = log
        .append(ValidatedBatch::unchecked(events), false)
        .await
        .expect("append");
    result.token
}

fn doc(log: &Log, views: &Materializer, urn: &str) -> Option<serde_json::Value> {
    let urn = Urn::parse(urn).unwrap();
    let shard = log.shard_id_for(&urn);
    let (found, _) = views
        .read("document", shard, |tx| {
            themis_materializers::document::get(tx, shard, urn.as_str())
        })
        .expect("read");
    found.filter(|d| !d.deleted).map(|d| d.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_no_view_can_apply_are_rejected_and_the_views_go_on() {
    {
        let disk = MemoryDisk::new();
        let (log, views) = open(&disk).await;
        let a = "urn:themis:document:users:a";
        let good = append_raw(&log, vec![raw_event(1, a, Op::Put, r#"{"name": "Ann"}"#)]).await;
        wait_all(&views, &good).await;
        // What real clients once got past the append path, each in an entry of its own with a
        // good patch of the same stream: the entry is rejected whole.
        let poison = [
            r#"{"name": "\ud800"}"#.to_owned(),
            r#"{"n": 1e999}"#.to_owned(),
            r#"{"n": -1e400}"#.to_owned(),
            r#"{"a": 1, "a": 2}"#.to_owned(),
            format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
            format!(r#"{{"n": {}}}"#, "9".repeat(400)),
        ];
        let mut bad = Token::new();
        for (i, data) in poison.iter().enumerate() {
            let n = 10 + 2 * i as u128;
            let t = append_raw(
                &log,
                vec![
                    raw_event(n, a, Op::Patch, data),
                    raw_event(n + 1, a, Op::Patch, r#"{"age": 7}"#),
                ],
            )
            .await;
            bad.merge(&t);
        }
        // The graph view reads vertex data too.
        let v = "urn:themis:graph:g:v";
        bad.merge(&append_raw(&log, vec![raw_event(50, v, Op::Put, r#"{"w": 1e999}"#)]).await);
        wait_all(&views, &bad).await;
        let after = append_raw(
            &log,
            vec![raw_event(60, a, Op::Patch, r#"{"city": "Oslo"}"#)],
        )
        .await;
        // Every view passes the rejected entries: waits end at once, no timeout.
        wait_all(&views, &after).await;
        assert_eq!(
            doc(&log, &views, a),
            Some(json!({"name": "Ann", "city": "Oslo"})),
            "no part of a rejected entry applies"
        );
        let shard_a = log.shard_id_for(&Urn::parse(a).unwrap());
        let shard_v = log.shard_id_for(&Urn::parse(v).unwrap());
        let of = |views: &Materializer, kind: &str, shard: u32| {
            views
                .status()
                .into_iter()
                .find(|s| s.view == kind && s.shard == shard)
                .expect("status")
        };
        // The check is the entry's, not the view's: every view of the shard rejects the same.
        let expected = 6 + u64::from(shard_v == shard_a);
        for kind in views.kinds() {
            let s = of(&views, kind, shard_a.0);
            assert_eq!(s.state, "running", "{kind}");
            assert_eq!(s.entries_rejected, expected, "{kind}: {:?}", s.rejections);
            assert_eq!(s.rejections.len(), 5, "{kind}");
        }
        let reasons: Vec<String> = of(&views, "document", shard_a.0)
            .rejections
            .iter()
            .filter(|r| !r.reason.contains(v))
            .map(|r| r.reason.clone())
            .collect();
        // Newest first: the 400-digit integer, the nesting, the repeated name, -1e400, 1e999
        // (the surrogate, the oldest, is counted but not among the latest five).
        for (reason, needle) in reasons.iter().zip([
            "out of range",
            "nested deeper",
            "appears twice",
            "out of range",
        ]) {
            assert!(reason.contains(needle), "{needle}: {reason}");
            assert!(reason.contains(a) && reason.contains("`data"), "{reason}");
        }
        assert!(reasons[0].contains("`data.n`"), "{}", reasons[0]);
        assert!(of(&views, "graph", shard_v.0).entries_rejected >= 1);

        // A rebuild rejects the same entries and reaches the same state; so does a restart.
        let before = digests(&views);
        for kind in views.kinds() {
            views.rebuild(kind, None).expect("rebuild");
        }
        wait_all(&views, &applied(&log)).await;
        assert_eq!(digests(&views), before);
        assert_eq!(of(&views, "document", shard_a.0).entries_rejected, expected);
        views.shutdown().await.expect("shutdown");
        drop(views);
        log.shutdown().await;
        drop(log);
        let (log, views) = open(&disk).await;
        wait_all(&views, &applied(&log)).await;
        assert_eq!(digests(&views), before);
        assert_eq!(
            doc(&log, &views, a),
            Some(json!({"name": "Ann", "city": "Oslo"}))
        );
        assert_eq!(
            of(&views, "relational", shard_a.0).entries_rejected,
            expected
        );
        views.shutdown().await.expect("shutdown");
        log.shutdown().await;
    }
}

/// A backend whose writes fail once `fail` is set (the views database's disk breaking).
#[derive(Debug)]
struct Breakable {
    bytes: MemoryBackend,
    fail: Arc<AtomicBool>,
}

impl redb::StorageBackend for Breakable {
    fn len(&self) -> std::io::Result<u64> {
        self.bytes.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.bytes.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.broken()?;
        self.bytes.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.broken()?;
        self.bytes.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.broken()?;
        self.bytes.write(offset, data)
    }
}

impl Breakable {
    fn broken(&self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

/// The log on a memory disk; the views database on a disk that can break.
#[derive(Debug)]
struct BreakableViews {
    rest: MemoryDisk,
    fail: Arc<AtomicBool>,
}

impl Disk for BreakableViews {
    fn open_database(&self, name: &str) -> themis_storage::Result<redb::Database> {
        if name != "views" {
            return self.rest.open_database(name);
        }
        let backend = Breakable {
            bytes: MemoryBackend::default(),
            fail: self.fail.clone(),
        };
        Ok(themis_storage::builder()
            .create_with_backend(themis_storage::FailStop::new(backend))
            .expect("create the views database"))
    }

    fn describe(&self, name: &str) -> String {
        format!("breakable:{name}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_view_fails_reads_at_once_and_says_so() {
    {
        let fail = Arc::new(AtomicBool::new(false));
        let disk = BreakableViews {
            rest: MemoryDisk::new(),
            fail: fail.clone(),
        };
        let log = Arc::new(
            Log::open(
                LogConfig {
                    shards: 2,
                    ..LogConfig::default()
                },
                Arc::new(disk.rest.clone()),
                Arc::new(SystemClock::new()),
                Arc::new(SeededEntropy::new(7)),
                Arc::new(NoPeers),
            )
            .await
            .expect("open the log"),
        );
        log.wait_for_leaders(Duration::from_secs(30))
            .await
            .expect("leaders");
        let views = Materializer::start(
            log.clone(),
            &disk,
            Arc::new(SystemClock::new()),
            // Every view commit durable, so the first one after the break fails.
            MaterializerConfig {
                durable_every: Duration::ZERO,
                ..MaterializerConfig::default()
            },
        )
        .await
        .expect("views");
        let a = "urn:themis:document:users:a";
        let t = append_raw(&log, vec![raw_event(1, a, Op::Put, r#"{"x": 1}"#)]).await;
        wait_all(&views, &t).await;
        assert!(views.stopped().is_empty());

        fail.store(true, Ordering::SeqCst);
        let t = append_raw(&log, vec![raw_event(2, a, Op::Put, r#"{"x": 2}"#)]).await;
        // The wait ends with the view's failure, not with the timeout (10 minutes).
        let e = views
            .wait_for("document", &t, &[], Duration::from_secs(600))
            .await
            .expect_err("the view cannot apply");
        assert_eq!(e.code(), "view_stopped", "{e}");
        assert!(e.to_string().contains("view storage"), "{e}");
        // Every read of it now fails at once, with or without a token.
        let e = views
            .wait_for("document", &Token::new(), &[], Duration::from_secs(600))
            .await
            .expect_err("stopped");
        assert_eq!(e.code(), "view_stopped");
        let shard = log.shard_id_for(&Urn::parse(a).unwrap());
        let e = views
            .read("document", shard, |_| Ok(()))
            .expect_err("stopped");
        assert_eq!(e.code(), "view_stopped");
        assert!(views.snapshot(&["document"], |_| Ok(())).is_err());
        let stopped = views.stopped();
        assert!(
            stopped.iter().any(|(kind, _, _)| *kind == "document"),
            "{stopped:?}"
        );
        let status = views.status();
        let document = status
            .iter()
            .find(|s| s.view == "document" && s.shard == shard.0)
            .expect("status");
        assert_eq!(document.state, "stopped");
        assert!(
            document
                .error
                .as_deref()
                .unwrap_or("")
                .contains("view storage")
        );
        log.shutdown().await;
    }
}

/// Whatever JSON the append path accepts, every view applies: random texts built from JSON
/// pieces, hostile ones among them (lone surrogates, huge numbers, deep nesting, repeated
/// names), go through `Log::validate` as document, graph and vector data; the accepted ones
/// are appended, and no view may reject or stop on them, and the document view must hold what
/// serde_json reads from the text. 400 texts in CI; `THEMIS_JSON_FUZZ` /
/// `THEMIS_JSON_FUZZ_SEED` for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_value_applies_in_every_view() {
    const PIECES: [&str; 22] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"a\"",
        "\"b\"",
        "\"\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u0000\"",
        "1e999",
        "-0",
        "1e308",
        "-1.5e-320",
        "123456789012345678901234567890",
        "18446744073709551616",
        "null",
        "true",
        "\"ä😀\"",
        " ",
        "[[[[[[[[[[[[[[[[",
    ];
    let count: usize = std::env::var("THEMIS_JSON_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut state: u64 = std::env::var("THEMIS_JSON_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xDA7A);
    let mut next = |below: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % below
    };
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk).await;
    let vector_config = themis_log::event::EventInput {
        data: Some(serde_json::value::to_raw_value(&json!({"dimension": 2})).unwrap()),
        ..crate::input("urn:themis:vector:_namespace:v", Op::Put, None, None)
    };
    let t = log
        .append(
            log.validate_system(vec![vector_config], None, None)
                .unwrap(),
            false,
        )
        .await
        .expect("config");
    let mut token = t.token;
    let mut accepted = Vec::new();
    for i in 0..count {
        // An object whose member holds a random sequence of pieces (often not JSON at all).
        let inner: String = (0..1 + next(12))
            .map(|_| PIECES[next(PIECES.len())])
            .collect();
        let text = format!("{{\"k\": {inner}}}");
        let Ok(raw) = serde_json::value::RawValue::from_string(text.clone()) else {
            continue; // not even JSON syntax: the request body would not parse
        };
        let (urn, vector) = match i % 3 {
            0 => (format!("urn:themis:document:d:x{i}"), None),
            1 => (format!("urn:themis:graph:g:x{i}"), None),
            _ => (format!("urn:themis:vector:v:x{i}"), Some(vec![1.0, 0.5])),
        };
        let event = themis_log::event::EventInput {
            data: Some(raw),
            ..crate::input(&urn, Op::Put, vector, None)
        };
        let Ok(batch) = log.validate(vec![event], None, None) else {
            continue;
        };
        let t = log.append(batch, false).await.expect("append");
        token.merge(&t.token);
        accepted.push((urn, text));
    }
    assert!(accepted.len() >= 20, "only {} accepted", accepted.len());
    wait_all(&views, &token).await;
    for s in views.status() {
        assert_eq!(s.entries_rejected, 0, "{}: {:?}", s.view, s.rejections);
        assert_eq!(s.state, "running", "{}: {:?}", s.view, s.error);
    }
    for (urn, text) in accepted.iter().filter(|(u, _)| u.contains(":document:")) {
        let want: serde_json::Value = serde_json::from_str(text).expect("accepted text parses");
        assert_eq!(doc(&log, &views, urn).as_ref(), Some(&want), "{text}");
    }
    log.shutdown().await;
}
