//! The fulltext view with a real log: BM25 answers against a golden file, the same answers
//! (ids and scores) from 4 shards as from 1 (term statistics are combined across shards),
//! languages, phrase / boolean / prefix queries, updates and deletes, read-your-writes, and
//! restart and rebuild.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use themis_log::event::Op;
use themis_log::{Log, Model, ShardId, Token};
use themis_materializers::{Materializer, TextSearch};

use crate::open_with as open;
use themis_storage::MemoryDisk;

use crate::{append_all as append, input, wait_all};

fn event(urn: &str, op: Op, data: Option<Value>) -> themis_log::event::EventInput {
    input(urn, op, None, data)
}

const NOTES: &[(&str, &str, &str)] = &[
    (
        "n01",
        "The quick brown fox",
        "The quick brown fox jumps over the lazy dog.",
    ),
    (
        "n02",
        "Lazy dogs",
        "Dogs that are lazy sleep all day; a lazy dog rarely jumps.",
    ),
    (
        "n03",
        "Foxes",
        "A fox is a small omnivore. Foxes hunt at night.",
    ),
    (
        "n04",
        "Databases",
        "A database stores data; a log-structured database appends to a log.",
    ),
    (
        "n05",
        "Event sourcing",
        "Event sourcing keeps every change as an event in an append-only log.",
    ),
    (
        "n06",
        "Raft",
        "Raft replicates a log across servers and elects a leader.",
    ),
    (
        "n07",
        "Vector search",
        "Vector search finds the nearest neighbours of an embedding.",
    ),
    (
        "n08",
        "Full text search",
        "Full text search ranks documents by BM25 over their terms.",
    ),
    (
        "n09",
        "Jumping",
        "Jumping foxes and jumping dogs: who jumps higher?",
    ),
    (
        "n10",
        "Running",
        "Runners run; a runner was running in the running race.",
    ),
    (
        "n11",
        "Logs and logging",
        "Logging writes logs; a log is an ordered sequence of records.",
    ),
    (
        "n12",
        "Brown bears",
        "Brown bears are not foxes, although both are brown.",
    ),
];

const NOTIZEN: &[(&str, &str)] = &[
    (
        "d1",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
    ),
    ("d2", "Die Füchse jagen in der Nacht, und der Hund schläft."),
    ("d3", "Datenbanken speichern Daten in Tabellen."),
];

/// (namespace, query, k): every kind of query the view promises.
const QUERIES: &[(&str, &str, usize)] = &[
    ("notes", "fox", 5),
    ("notes", "foxes", 5),
    ("notes", "jumping", 5),
    ("notes", "lazy dog", 5),
    ("notes", "\"lazy dog\"", 5),
    ("notes", "+log +database", 5),
    ("notes", "log -raft", 5),
    ("notes", "log AND NOT database", 5),
    ("notes", "(fox OR bear) AND brown", 5),
    ("notes", "run", 5),
    ("notes", "data*", 5),
    // Prefixes that are not words themselves (an unquoted prefix was once read as a term).
    ("notes", "databa*", 5),
    ("notes", "laz*", 5),
    ("notes", "body:jum*", 5),
    ("notes", "title:fox*", 5),
    ("notes", "\"append-only lo\"*", 5),
    ("notes", "the", 5),
    ("notes", "search^2 log", 5),
    ("notizen", "Füchse", 3),
    ("notizen", "fuchs hund", 3),
    ("notizen", "der", 3),
    ("relational.products", "lamp", 3),
];

async fn load(log: &Log) -> Token {
    let mut token = append(
        log,
        vec![
            event(
                "urn:themis:document:_namespace:notes",
                Op::Put,
                Some(json!({"text_fields": ["title", "body"], "language": "en"})),
            ),
            event(
                "urn:themis:document:_namespace:notizen",
                Op::Put,
                Some(json!({"text_fields": ["text"], "language": "de"})),
            ),
            event(
                "urn:themis:relational:_namespace:products",
                Op::Put,
                Some(json!({"columns": [
                    {"name": "name", "type": "string"},
                    {"name": "descr", "type": "string", "nullable": true}
                ], "text_fields": ["descr"], "language": "none"})),
            ),
        ],
    )
    .await;
    let mut events = Vec::new();
    for (id, title, body) in NOTES {
        events.push(event(
            &format!("urn:themis:document:notes:{id}"),
            Op::Put,
            Some(json!({"title": title, "body": body, "n": 1})),
        ));
    }
    for (id, text) in NOTIZEN {
        events.push(event(
            &format!("urn:themis:document:notizen:{id}"),
            Op::Put,
            Some(json!({"text": text})),
        ));
    }
    for (id, name, descr) in [
        ("p1", "Desk lamp", "A lamp for the desk, with a long arm."),
        (
            "p2",
            "Floor lamp",
            "Lamp, floor standing; the lamp for reading.",
        ),
        ("p3", "Chair", "A chair without a lamp."),
    ] {
        events.push(event(
            &format!("urn:themis:relational:products:{id}"),
            Op::Put,
            Some(json!({"name": name, "descr": descr})),
        ));
    }
    token.merge(&append(log, events).await);
    token
}

async fn search(
    views: &Materializer,
    ns: &str,
    query: &str,
    k: usize,
    token: &Token,
) -> Vec<(String, f32)> {
    let (model, ns) = match ns.strip_prefix("relational.") {
        Some(n) => (Model::Relational, n),
        None => (Model::Document, ns),
    };
    let (hits, _) = views
        .search(
            &TextSearch {
                model,
                namespace: ns,
                query,
                k,
            },
            token,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    hits.into_iter()
        .map(|(_, h, _)| (h.urn.rsplit(':').next().unwrap_or("").to_owned(), h.score))
        .collect()
}

async fn answers(views: &Materializer, token: &Token) -> BTreeMap<String, Vec<(String, f32)>> {
    let mut out = BTreeMap::new();
    for (ns, q, k) in QUERIES {
        out.insert(format!("{ns} | {q}"), search(views, ns, q, *k, token).await);
    }
    out
}

fn render(answers: &BTreeMap<String, Vec<(String, f32)>>) -> String {
    let mut text = String::from(
        "# Fulltext answers (namespace | query => id:score ...), BM25 with statistics over\n\
         # all shards. Produced by materializers/tests/it/fulltext.rs; checked by hand when\n\
         # recorded (THEMIS_UPDATE_GOLDEN=1 rewrites it).\n",
    );
    for (q, hits) in answers {
        let hits: Vec<String> = hits.iter().map(|(id, s)| format!("{id}:{s:.4}")).collect();
        text.push_str(&format!("{q} => {}\n", hits.join(" ")));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bm25_answers_match_the_golden_file_and_do_not_depend_on_the_shard_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, Some(dir.path())).await;
    let token = load(&log).await;
    let four = answers(&views, &token).await;

    let one_disk = MemoryDisk::new();
    let (one_log, one_views) = open(&one_disk, 1, None).await;
    let one_token = load(&one_log).await;
    let one = answers(&one_views, &one_token).await;
    let mut differ = Vec::new();
    for (q, hits) in &four {
        let other = &one[q];
        let same = hits.len() == other.len()
            && hits
                .iter()
                .zip(other)
                .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() < 1e-4);
        if !same {
            differ.push(format!("{q}: 4 shards {hits:?}, 1 shard {other:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    one_log.shutdown().await;

    let path = crate::crate_dir().join("tests/it/golden/fulltext.txt");
    let rendered = render(&four);
    if std::env::var_os("THEMIS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).expect("write golden");
    }
    let golden = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(rendered, golden, "answers differ from {}", path.display());
    // A `*` anywhere but at the end of a word is refused (tantivy would drop it), and so is
    // nesting deep enough to overflow the grammar's stack.
    for query in [
        "da*ta",
        "*data",
        "title:*ox",
        &format!("{}fox{}", "(".repeat(100_000), ")".repeat(100_000)),
    ] {
        let e = views
            .search(
                &TextSearch {
                    model: Model::Document,
                    namespace: "notes",
                    query,
                    k: 5,
                },
                &token,
                Duration::from_secs(30),
            )
            .await
            .map(|(hits, _)| hits.len())
            .expect_err(&query[..query.len().min(20)]);
        assert_eq!(e.code(), "invalid_search", "{e}");
    }

    // Bad queries and namespaces without text fields are clear errors.
    for (model, ns, q, code) in [
        (Model::Document, "notes", "title:", "invalid_search"),
        (Model::Document, "notes", "nofield:x", "invalid_search"),
        (Model::Document, "notes", "  ", "invalid_search"),
        (Model::Document, "plain", "x", "unknown_namespace"),
        (Model::Vector, "notes", "x", "invalid_search"),
    ] {
        let e = views
            .search(
                &TextSearch {
                    model,
                    namespace: ns,
                    query: q,
                    k: 3,
                },
                &token,
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{q}: {e}");
    }

    // Updates: a patch changes what matches, a delete removes, read-your-writes by token.
    let t = append(
        &log,
        vec![
            event(
                "urn:themis:document:notes:n06",
                Op::Patch,
                Some(json!({"body": "Raft elects a leader; zebras do not."})),
            ),
            event("urn:themis:document:notes:n03", Op::Delete, None),
        ],
    )
    .await;
    let hits = search(&views, "notes", "zebras", 5, &t).await;
    assert_eq!(
        hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["n06"]
    );
    let hits = search(&views, "notes", "foxes", 10, &t).await;
    assert!(hits.iter().all(|h| h.0 != "n03"), "{hits:?}");
    assert!(
        search(&views, "notes", "replicates", 5, &t)
            .await
            .is_empty()
    );
    let mut all = token.clone();
    all.merge(&t);
    let before = answers(&views, &all).await;
    let digests: Vec<u64> = (0..4)
        .map(|s| views.digest("document", ShardId(s)).expect("digest").1)
        .collect();

    // Restart: the indexes open from disk (re-indexing only what changed after their last
    // commit) and answer the same.
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk, 4, Some(dir.path())).await;
    // Ids, not scores: replaced and deleted documents count in term statistics until tantivy
    // merges their segments away, which happens when it happens (before or after a restart).
    let ids = |a: &BTreeMap<String, Vec<(String, f32)>>| -> BTreeMap<String, Vec<String>> {
        a.iter()
            .map(|(q, hits)| (q.clone(), hits.iter().map(|h| h.0.clone()).collect()))
            .collect()
    };
    assert_eq!(
        ids(&answers(&views, &all).await),
        ids(&before),
        "after a restart"
    );
    for (s, d) in digests.iter().enumerate() {
        assert_eq!(
            views
                .digest("document", ShardId(s as u32))
                .expect("digest")
                .1,
            *d
        );
    }
    // Rebuild: the same answers again (ids, as above).
    views.rebuild("document", None).expect("rebuild");
    assert_eq!(
        ids(&answers(&views, &all).await),
        ids(&before),
        "after a rebuild"
    );
    log.shutdown().await;
}

/// The URNs in every shard's index of `kind`'s namespace `ns`, once the views cover `token`.
async fn indexed(views: &Materializer, kind: &str, ns: &str, token: &Token) -> Vec<String> {
    views
        .wait_for(kind, token, &[], Duration::from_secs(30))
        .await
        .expect("the view catches up");
    let mut urns = Vec::new();
    for s in 0..4 {
        let (_, sets) = views.text_sets(kind, ShardId(s)).expect("text sets");
        urns.extend(sets.get(ns).cloned().unwrap_or_default());
    }
    urns.sort();
    urns
}

/// Resources a view applied while their namespace had no text config are indexed as soon as
/// the config arrives, with no later change to them. A replica whose config shard lags behind
/// its other shards (a restarted node replaying them in another order, as the simulator found
/// with seed 640904021) applies them in that order; writing them before the config is the same
/// case on one node. Before, the index of such a namespace stayed empty until each resource
/// changed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_applied_before_their_text_config_are_indexed_when_it_arrives() {
    let disk = MemoryDisk::new();
    let (log, views) = open(&disk, 4, None).await;
    let urns = |model: &str, ns: &str| -> Vec<String> {
        let mut u: Vec<String> = (0..12)
            .map(|i| format!("urn:themis:{model}:{ns}:r{i:02}"))
            .collect();
        u.sort();
        u
    };
    let resources = |model: &str, ns: &str| -> Vec<themis_log::event::EventInput> {
        urns(model, ns)
            .iter()
            .map(|urn| {
                let data = json!({"name": "x", "text": format!("late arrival {urn}")});
                event(urn, Op::Put, Some(data))
            })
            .collect()
    };
    let doc_config = |ns: &str| {
        event(
            &format!("urn:themis:document:_namespace:{ns}"),
            Op::Put,
            Some(json!({"text_fields": ["text"], "language": "en"})),
        )
    };
    let row_config = |ns: &str| {
        event(
            &format!("urn:themis:relational:_namespace:{ns}"),
            Op::Put,
            Some(json!({"columns": [
                {"name": "name", "type": "string"},
                {"name": "text", "type": "string"}
            ], "text_fields": ["text"], "language": "en"})),
        )
    };

    // Written before the config, indexed when it arrives.
    let mut token = append(&log, resources("document", "late")).await;
    token.merge(&append(&log, resources("relational", "late")).await);
    assert!(indexed(&views, "document", "late", &token).await.is_empty());
    token.merge(&append(&log, vec![doc_config("late"), row_config("late")]).await);
    assert_eq!(
        indexed(&views, "document", "late", &token).await,
        urns("document", "late")
    );
    assert_eq!(
        indexed(&views, "relational", "late", &token).await,
        urns("relational", "late")
    );
    let hits = search(&views, "late", "arrival", 20, &token).await;
    assert_eq!(hits.len(), 12, "{hits:?}");

    // The same across a restart between the resources and the config: the views open with
    // resources whose namespace has no text config yet.
    token.merge(&append(&log, resources("document", "later")).await);
    wait_all(&views, &token).await;
    views.shutdown().await.expect("shutdown");
    log.shutdown().await;
    drop(views);
    drop(log);
    let (log, views) = open(&disk, 4, None).await;
    token.merge(&append(&log, vec![doc_config("later")]).await);
    assert_eq!(
        indexed(&views, "document", "later", &token).await,
        urns("document", "later")
    );
    assert_eq!(
        indexed(&views, "document", "late", &token).await,
        urns("document", "late")
    );
    log.shutdown().await;
}
