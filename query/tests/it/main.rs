//! SQL over the views, in process: a single-node log on an in-memory disk, its views and the
//! query engine.
//!
//! - Golden files (`tests/golden/*.sql`): a fixed dataset (relational `customers` and
//!   `orders`, document `users`, with patches and deletes), each query's answer rendered as
//!   NDJSON after a first line with the columns; `THEMIS_UPDATE_GOLDEN=1` rewrites them (then
//!   read the diff: a golden file is only as right as its review).
//! - A reference model: random puts, patches and deletes of relational rows, some of which
//!   break the namespace's schema and are refused before the log as the server refuses them;
//!   `SELECT *` must equal a plain fold of the accepted events, before and after a rebuild.
//! - Errors: what is refused, and with which code.
#![allow(clippy::disallowed_methods)] // test: a real clock for a real single-node log

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use themis_log::event::Op;
use themis_log::seam::{NoPeers, SeededEntropy, SystemClock};
use themis_log::{Log, LogConfig, Model, Token};
use themis_materializers::document::merge_patch;
use themis_materializers::namespaces::NamespaceConfig;
use themis_materializers::{Materializer, MaterializerConfig};
use themis_query::encode::{Format, encode, type_name};
use themis_query::{Error, QueryConfig, QueryEngine};
use themis_storage::MemoryDisk;

mod aql;

struct Node {
    log: Arc<Log>,
    views: Arc<Materializer>,
    engine: Arc<QueryEngine>,
    token: Token,
}

async fn open(disk: &MemoryDisk) -> Node {
    let log = Log::open(
        LogConfig {
            shards: 4,
            ..LogConfig::default()
        },
        Arc::new(disk.clone()),
        Arc::new(SystemClock::new()),
        Arc::new(SeededEntropy::new(7)),
        Arc::new(NoPeers),
    )
    .await
    .expect("open the log");
    let log = Arc::new(log);
    log.wait_for_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let views = Materializer::start(
        log.clone(),
        disk,
        Arc::new(SystemClock::new()),
        MaterializerConfig::default(),
    )
    .await
    .expect("views");
    let engine = QueryEngine::new(log.clone(), views.clone(), QueryConfig::default());
    Node {
        log,
        views,
        engine,
        token: Token::new(),
    }
}

impl Node {
    /// Appends one event (`{"urn", "op", "data"?}`); `Err` is the schema violation that
    /// refused it before the log, as the server refuses it.
    async fn append(&mut self, event: Value) -> Result<(), String> {
        let urn = event["urn"].as_str().expect("urn");
        if urn.starts_with("urn:themis:relational:") {
            let ns = urn.split(':').nth(3).expect("namespace");
            let config = self
                .views
                .namespace(Model::Relational, ns)
                .expect("registry")
                .expect("declared");
            let op: Op = serde_json::from_value(event["op"].clone()).expect("op");
            let data = event.get("data");
            config
                .config
                .check_event(op, data)
                .map_err(|v| format!("{}: {}", v.column, v.message))?;
        }
        let input = serde_json::from_value(event).expect("input");
        let batch = self.log.validate(vec![input], None, None).expect("valid");
        self.commit(batch).await;
        Ok(())
    }

    async fn commit(&mut self, batch: themis_log::ValidatedBatch) {
        let result = self.log.append(batch, false).await.expect("append");
        for (_, answer) in result.shards {
            self.token.observe(answer.expect("appended").position);
        }
    }

    /// Declares a relational namespace, as `PUT /v1/namespaces/relational/{ns}` does.
    async fn declare(&mut self, ns: &str, config: Value) {
        self.declare_in(Model::Relational, ns, config).await;
    }

    /// Declares a namespace of `model`, as `PUT /v1/namespaces/{model}/{ns}` does.
    async fn declare_in(&mut self, model: Model, ns: &str, config: Value) {
        let parsed: NamespaceConfig = serde_json::from_value(config.clone()).expect("config");
        parsed.validate(model).expect("valid config");
        let urn = Materializer::config_urn(model, ns).expect("urn");
        let input =
            serde_json::from_value(json!({"urn": urn.as_str(), "op": "put", "data": config}))
                .expect("input");
        let batch = self
            .log
            .validate_system(vec![input], None, None)
            .expect("valid");
        self.commit(batch).await;
        for kind in self.views.kinds() {
            self.views
                .wait_for(kind, &self.token, &[], Duration::from_secs(30))
                .await
                .expect("views catch up");
        }
    }

    async fn sql(&self, sql: &str) -> Result<themis_query::Answer, Error> {
        self.engine
            .sql(sql, &self.token, Duration::from_secs(30))
            .await
    }

    /// The answer's rows as JSON values.
    async fn rows(&self, sql: &str) -> Vec<Value> {
        let answer = self.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        String::from_utf8(encode(&answer, Format::Ndjson))
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON row"))
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The golden dataset.
async fn fixture(node: &mut Node) {
    node.declare(
        "customers",
        json!({"columns": [
            {"name": "name", "type": "string"},
            {"name": "region", "type": "string"},
            {"name": "since", "type": "timestamp", "nullable": true},
            {"name": "vip", "type": "bool", "nullable": true}
        ]}),
    )
    .await;
    node.declare(
        "orders",
        json!({"columns": [
            {"name": "customer", "type": "string"},
            {"name": "total", "type": "float64"},
            {"name": "qty", "type": "int64"},
            {"name": "status", "type": "string"},
            {"name": "placed", "type": "timestamp"},
            {"name": "meta", "type": "json", "nullable": true}
        ]}),
    )
    .await;
    let customers = [
        ("c1", "Ada", "eu", Some("2024-01-15T09:30:00Z"), Some(true)),
        ("c2", "Brook", "us", Some("2025-06-01T00:00:00+02:00"), None),
        ("c3", "Chen", "apac", None, Some(false)),
        (
            "c4",
            "Dara",
            "eu",
            Some("2023-12-31T23:59:59.999Z"),
            Some(false),
        ),
        ("c5", "Eli", "us", None, None),
        ("c6", "Fox, \"the\" quick", "latam", None, Some(true)),
    ];
    for (id, name, region, since, vip) in customers {
        let mut data = json!({"name": name, "region": region});
        if let Some(s) = since {
            data["since"] = json!(s);
        }
        if let Some(v) = vip {
            data["vip"] = json!(v);
        }
        node.append(json!({"urn": format!("urn:themis:relational:customers:{id}"), "op": "put", "data": data}))
            .await
            .expect("a valid customer");
    }
    let orders = [
        (
            "o01",
            "c1",
            120.5,
            2,
            "paid",
            "2026-01-05T10:00:00Z",
            json!({"coupon": "NY26"}),
        ),
        (
            "o02",
            "c1",
            35.0,
            1,
            "paid",
            "2026-01-06T11:15:00Z",
            Value::Null,
        ),
        (
            "o03",
            "c2",
            250.0,
            5,
            "shipped",
            "2026-02-01T08:00:00Z",
            json!(["gift", "fragile"]),
        ),
        (
            "o04",
            "c3",
            9.99,
            1,
            "refunded",
            "2026-02-03T12:00:00Z",
            Value::Null,
        ),
        (
            "o05",
            "c3",
            410.0,
            8,
            "paid",
            "2026-02-14T18:30:00Z",
            json!({"rush": true}),
        ),
        (
            "o06",
            "c4",
            75.25,
            3,
            "shipped",
            "2026-03-01T09:00:00Z",
            Value::Null,
        ),
        (
            "o07",
            "c5",
            18.0,
            1,
            "paid",
            "2026-03-02T09:00:00Z",
            json!(7),
        ),
        (
            "o08",
            "c5",
            1200.0,
            12,
            "paid",
            "2026-03-03T09:00:00Z",
            Value::Null,
        ),
        (
            "o09",
            "c6",
            42.0,
            2,
            "cancelled",
            "2026-03-04T09:00:00Z",
            Value::Null,
        ),
        (
            "o10",
            "c9",
            5.0,
            1,
            "paid",
            "2026-03-05T09:00:00Z",
            json!("orphan"),
        ),
    ];
    for (id, customer, total, qty, status, placed, meta) in orders {
        let mut data = json!({"customer": customer, "total": total, "qty": qty, "status": status, "placed": placed});
        if !meta.is_null() {
            data["meta"] = meta;
        }
        node.append(
            json!({"urn": format!("urn:themis:relational:orders:{id}"), "op": "put", "data": data}),
        )
        .await
        .expect("a valid order");
    }
    // A patch, a delete, and a put that replaces a row.
    for event in [
        json!({"urn": "urn:themis:relational:orders:o02", "op": "patch", "data": {"status": "shipped", "meta": {"note": "late"}}}),
        json!({"urn": "urn:themis:relational:orders:o09", "op": "delete"}),
        json!({"urn": "urn:themis:relational:customers:c5", "op": "put", "data": {"name": "Eli", "region": "eu", "vip": true}}),
    ] {
        node.append(event).await.expect("a valid change");
    }
    // Documents: schemaless; fields of mixed types become JSON columns.
    let users = [
        (
            "alice",
            json!({"name": "Alice", "age": 34, "tags": ["admin", "ops"], "address": {"city": "Berlin"}, "score": 9.5}),
        ),
        ("bob", json!({"name": "Bob", "age": 27, "score": 7})),
        (
            "carol",
            json!({"name": "Carol", "age": "unknown", "active": true}),
        ),
        ("dave", json!({"name": "Dave", "age": 51, "active": false})),
        ("erin", json!({"name": "Erin"})),
    ];
    for (id, data) in users {
        node.append(
            json!({"urn": format!("urn:themis:document:users:{id}"), "op": "put", "data": data}),
        )
        .await
        .expect("a document");
    }
    for event in [
        json!({"urn": "urn:themis:document:users:bob", "op": "patch", "data": {"score": null, "city": "Oslo"}}),
        json!({"urn": "urn:themis:document:users:erin", "op": "delete"}),
    ] {
        node.append(event).await.expect("a document change");
    }
}

/// A node on a fresh in-memory disk, holding the golden dataset.
async fn fixture_node() -> Node {
    let mut node = open(&MemoryDisk::new()).await;
    fixture(&mut node).await;
    node
}

/// The rendering a golden file holds: the columns, then the rows as NDJSON.
fn render(answer: &themis_query::Answer) -> String {
    let columns: Vec<Value> = answer
        .schema
        .fields()
        .iter()
        .map(|f| json!([f.name(), type_name(f)]))
        .collect();
    let mut out = serde_json::to_string(&columns).expect("columns");
    out.push('\n');
    out.push_str(&String::from_utf8(encode(answer, Format::Ndjson)).expect("utf-8"));
    out
}

#[test]
fn sql_answers_match_the_golden_files() {
    runtime().block_on(async {
        let node = fixture_node().await;
        let dir = crate_dir().join("tests/golden");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("golden dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 20,
            "the golden suite has {} queries",
            files.len()
        );
        let update = std::env::var_os("THEMIS_UPDATE_GOLDEN").is_some();
        let mut failures = Vec::new();
        for file in &files {
            let sql = std::fs::read_to_string(file).expect("sql");
            let answer = node
                .sql(&sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let got = render(&answer);
            let out = file.with_extension("out");
            if update {
                std::fs::write(&out, &got).expect("write golden");
                continue;
            }
            let want = std::fs::read_to_string(&out).unwrap_or_else(|e| {
                panic!("{}: {e} (THEMIS_UPDATE_GOLDEN=1 writes it)", out.display())
            });
            if got != want {
                failures.push(format!(
                    "{}\n--- want\n{want}--- got\n{got}",
                    file.display()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        node.log.shutdown().await;
    });
}

#[test]
fn errors_name_what_is_wrong() {
    runtime().block_on(async {
        let node = fixture_node().await;
        let deep = format!("SELECT {}1", "1+".repeat(themis_query::MAX_NESTING + 1));
        let cases: [(&str, &str, &str); 11] = [
            ("SELEC 1", "invalid_sql", "Expected"),
            (
                "SELECT * FROM nowhere",
                "unknown_table",
                "customers, orders",
            ),
            ("SELECT * FROM document.nobody", "unknown_table", "users"),
            ("SELECT * FROM graph.g", "unknown_table", "no schema"),
            (
                "SELECT * FROM other.relational.orders",
                "unknown_table",
                "no catalog",
            ),
            (
                "INSERT INTO orders VALUES (1)",
                "invalid_sql",
                "only queries",
            ),
            ("CREATE TABLE t (a INT)", "invalid_sql", "only queries"),
            ("SELECT 1; SELECT 2", "invalid_sql", "single SQL statement"),
            ("SELECT nope FROM orders", "invalid_sql", "nope"),
            (
                "SELECT qty / 0 FROM orders",
                "query_failed",
                "Divide by zero",
            ),
            (deep.as_str(), "invalid_sql", "nested more than"),
        ];
        for (sql, code, needle) in cases {
            let e = node.sql(sql).await.expect_err(sql);
            assert_eq!(e.code(), code, "{sql}: {e}");
            assert!(e.to_string().contains(needle), "{sql}: {e}");
        }
        // A token from the future: the wait ends with a timeout naming the view.
        let mut future = node.token.clone();
        for p in node.token.iter() {
            future.observe(themis_log::Position {
                shard: p.shard,
                lsn: themis_log::Lsn(p.lsn.0 + 1000),
            });
        }
        let e = node
            .engine
            .sql("SELECT 1", &future, Duration::from_millis(50))
            .await
            .expect_err("not reached");
        assert_eq!(e.code(), "timeout", "{e}");
        node.log.shutdown().await;
    });
}

#[test]
fn caches_follow_appends_and_config_changes() {
    runtime().block_on(async {
        let mut node = fixture_node().await;
        let count = "SELECT count(*) AS n FROM orders";
        assert_eq!(node.rows(count).await, [json!({"n": 9})]);
        node.append(json!({"urn": "urn:themis:relational:orders:o11", "op": "put", "data": {"customer": "c1", "total": 1.0, "qty": 1, "status": "paid", "placed": 0}}))
            .await
            .expect("valid");
        assert_eq!(node.rows(count).await, [json!({"n": 10})], "a new row shows");
        // A new nullable column appears, NULL for existing rows.
        node.declare(
            "orders",
            json!({"columns": [
                {"name": "customer", "type": "string"},
                {"name": "total", "type": "float64"},
                {"name": "qty", "type": "int64"},
                {"name": "status", "type": "string"},
                {"name": "placed", "type": "timestamp"},
                {"name": "meta", "type": "json", "nullable": true},
                {"name": "channel", "type": "string", "nullable": true}
            ]}),
        )
        .await;
        node.append(json!({"urn": "urn:themis:relational:orders:o12", "op": "put", "data": {"customer": "c2", "total": 2.0, "qty": 1, "status": "paid", "placed": 0, "channel": "web"}}))
            .await
            .expect("valid under the new config");
        assert_eq!(
            node.rows("SELECT id, channel FROM orders WHERE id IN ('o01', 'o12') ORDER BY id")
                .await,
            [
                json!({"id": "o01", "channel": null}),
                json!({"id": "o12", "channel": "web"})
            ]
        );
        // A document field that holds numbers and a string is a json column; try_cast reads
        // the numbers.
        let answer = node
            .sql("SELECT age FROM document.users")
            .await
            .expect("query");
        assert_eq!(type_name(answer.schema.field(0)), "json");
        assert_eq!(
            node.rows(
                "SELECT name FROM document.users WHERE try_cast(age AS BIGINT) > 30 ORDER BY name"
            )
            .await,
            [json!({"name": "Alice"}), json!({"name": "Dave"})]
        );
        node.log.shutdown().await;
    });
}

/// One step of the reference-model test: (row 0..4, op, data).
fn step() -> impl Strategy<Value = (usize, u8, Value)> {
    let value = prop_oneof![
        any::<i32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z]{0,4}".prop_map(|s| json!(s)),
        Just(Value::Null),
        any::<bool>().prop_map(|b| json!(b)),
        Just(json!([1, {"x": "y"}])),
    ];
    let data = prop::collection::btree_map("[a-e]", value, 0..5).prop_map(|m| json!(m));
    (0..4usize, 0..3u8, data)
}

/// The relational namespace of the model test: `a` required int64, the rest nullable.
fn prop_config() -> Value {
    json!({"columns": [
        {"name": "a", "type": "int64"},
        {"name": "b", "type": "string", "nullable": true},
        {"name": "c", "type": "float64", "nullable": true},
        {"name": "d", "type": "json", "nullable": true}
    ]})
}

/// What `SELECT id, a, b, c, d, _revision` shows of a row's JSON.
fn project(id: &str, data: &Value, revision: u64) -> Value {
    let get = |k: &str| data.get(k).filter(|v| !v.is_null());
    json!({
        "id": id,
        "a": get("a").and_then(Value::as_i64),
        "b": get("b").and_then(Value::as_str),
        "c": get("c").and_then(Value::as_f64),
        "d": get("d").cloned().unwrap_or(Value::Null),
        "_revision": revision,
    })
}

async fn model_run(steps: Vec<(usize, u8, Value)>) {
    let disk = MemoryDisk::new();
    let mut node = open(&disk).await;
    node.declare("prop", prop_config()).await;
    // id → (data, revision, deleted)
    let mut model: BTreeMap<String, (Value, u64, bool)> = BTreeMap::new();
    let mut refused = 0;
    for (row, op, data) in steps {
        let id = format!("r{row}");
        let urn = format!("urn:themis:relational:prop:{id}");
        let (name, data) = match op {
            0 => ("put", Some(data)),
            1 => ("patch", Some(data)),
            _ => ("delete", None),
        };
        let mut event = json!({"urn": urn, "op": name});
        if let Some(d) = &data {
            event["data"] = d.clone();
        }
        if node.append(event).await.is_err() {
            refused += 1;
            continue;
        }
        let revision = model.get(&id).map_or(0, |(_, r, _)| r + 1);
        let next = match (name, data) {
            ("put", Some(d)) => (d, revision, false),
            ("patch", Some(d)) => {
                let mut state = match model.get(&id) {
                    Some((s, _, false)) => s.clone(),
                    _ => json!({}),
                };
                merge_patch(&mut state, &d);
                (state, revision, false)
            }
            _ => (Value::Null, revision, true),
        };
        model.insert(id, next);
    }
    let expected: Vec<Value> = model
        .iter()
        .filter(|(_, (_, _, deleted))| !deleted)
        .map(|(id, (data, revision, _))| project(id, data, *revision))
        .collect();
    let query = "SELECT id, a, b, c, d, _revision FROM prop ORDER BY id";
    assert_eq!(node.rows(query).await, expected, "refused: {refused}");
    // A rebuild reaches the same rows (and the cache notices the rebuilt view).
    node.views.rebuild("relational", None).expect("rebuild");
    node.views
        .wait_for("relational", &node.token, &[], Duration::from_secs(30))
        .await
        .expect("rebuilt");
    assert_eq!(node.rows(query).await, expected, "after a rebuild");
    node.log.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn relational_rows_equal_a_fold_of_the_accepted_events(
        steps in prop::collection::vec(step(), 1..30)
    ) {
        runtime().block_on(model_run(steps));
    }
}

/// Hostile and mutated SQL (the golden statements with spans deleted, duplicated or replaced
/// by fragments, and hand-made inputs that are deep, long or not text a client should send)
/// must answer or fail with a code: never panic, overflow a stack or fail internally. 600 in
/// CI; `THEMIS_SQL_FUZZ` and `THEMIS_SQL_FUZZ_SEED` for longer runs.
#[test]
fn hostile_and_mutated_sql_fails_cleanly() {
    const FRAGMENTS: [&str; 24] = [
        " SELECT ",
        " FROM orders ",
        " WHERE ",
        " GROUP BY ",
        " ORDER BY ",
        " LIMIT 3 ",
        " JOIN customers c ON ",
        " ( ",
        " ) ",
        " , ",
        " = ",
        " + ",
        " / 0 ",
        " NULL ",
        " 'x' ",
        " 1e308 ",
        " -9223372036854775808 ",
        " CAST(",
        " AS INT) ",
        " knn('v', [1], 2) ",
        " search('notes', 'a*', 2) ",
        " traverse('urn:themis:graph:g:a', 1, 9) ",
        " \u{0} ",
        " ä ",
    ];
    let dir = crate_dir().join("tests/golden");
    let mut seeds: Vec<String> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| std::fs::read_to_string(p).expect("golden sql"))
        .collect();
    seeds.sort();
    let n = themis_query::MAX_NESTING;
    let mut hostile = vec![
        format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("SELECT 1{}", " + 1".repeat(16_000)),
        format!("SELECT 1 WHERE {}", "NOT ".repeat(16_000) + "true"),
        format!("SELECT {}", "-".repeat(16_000) + "1"),
        format!(
            "SELECT * FROM orders WHERE qty IN ({})",
            vec!["1"; 100_000].join(",")
        ),
        format!("SELECT \"{}\" FROM orders", "a".repeat(100_000)),
        format!(
            "SELECT {}",
            "CASE WHEN true THEN ".repeat(n + 5) + "1" + &" END".repeat(n + 5)
        ),
        "SELECT '\u{0}'".to_owned(),
        String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x41]).into_owned(),
        "".to_owned(),
        ";;;".to_owned(),
    ];
    let iterations: usize = std::env::var("THEMIS_SQL_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let mut rng = crate::aql::Rng(
        std::env::var("THEMIS_SQL_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5EED_5EED),
    );
    let mut next = |below: usize| rng.below(below.max(1));
    for _ in 0..iterations {
        let seed: Vec<char> = seeds[next(seeds.len())].chars().collect();
        let mut text = seed.clone();
        for _ in 0..1 + next(3) {
            let at = next(text.len() + 1);
            let len = next(12).min(text.len() - at);
            match next(3) {
                0 => {
                    text.drain(at..at + len);
                }
                1 => {
                    let span: Vec<char> = text[at..at + len].to_vec();
                    text.splice(at..at, span);
                }
                _ => {
                    let f: Vec<char> = FRAGMENTS[next(FRAGMENTS.len())].chars().collect();
                    text.splice(at..at + len, f);
                }
            }
        }
        hostile.push(text.into_iter().collect());
    }
    runtime().block_on(async {
        let node = fixture_node().await;
        let (mut ok, mut failed) = (0, 0);
        for sql in &hostile {
            match node.sql(sql).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    assert_ne!(
                        e.code(),
                        "internal",
                        "{}: {e}",
                        &sql.chars().take(200).collect::<String>()
                    );
                }
            }
        }
        assert!(ok > 0 && failed > 0, "{ok} answered, {failed} failed");
        node.log.shutdown().await;
    });
}

/// Functions that expand their arguments (and `||`) refuse answers over
/// `QueryConfig::value_bytes_max` before they allocate them, while planning as while running;
/// sorts, joins and aggregates stop at the memory pool; ordinary uses answer as before.
#[test]
fn expanding_functions_and_memory_are_bounded() {
    runtime().block_on(async {
        let node = fixture_node().await;
        for (sql, expected) in [
            ("SELECT repeat('ab', 3) AS v", json!("ababab")),
            ("SELECT lpad('x', 3, '-') AS v", json!("--x")),
            ("SELECT range(1, 4) AS v", json!([1, 2, 3])),
            ("SELECT generate_series(1, 3) AS v", json!([1, 2, 3])),
            // The least step there is (its size estimate once overflowed).
            (
                "SELECT range(0, 10, -9223372036854775807 - 1) AS v",
                json!([]),
            ),
            ("SELECT array_repeat(7, 2) AS v", json!([7, 7])),
            ("SELECT replace('aXa', 'X', 'yy') AS v", json!("ayya")),
            ("SELECT regexp_replace('aaa', 'a', 'b', 'g') AS v", json!("bbb")),
            ("SELECT array_to_string([1, 2], ', ') AS v", json!("1, 2")),
            ("SELECT levenshtein('kitten', 'sitting') AS v", json!(3)),
            ("SELECT 'a' || 'b' AS v", json!("ab")),
            ("SELECT ('a' || NULL) IS NULL AS v", json!(true)),
            ("SELECT [1, 2] || [3] AS v", json!([1, 2, 3])),
            ("SELECT [1] || 2 AS v", json!([1, 2])),
            ("SELECT 0 || [1] AS v", json!([0, 1])),
            (
                "SELECT cardinality(range(DATE '2020-01-01', DATE '2021-01-01', \
                 INTERVAL '1 month')) AS v",
                json!(12),
            ),
        ] {
            let rows = node.rows(sql).await;
            assert_eq!(rows[0]["v"], expected, "{sql}: {rows:?}");
        }
        assert_eq!(
            node.rows("SELECT count(*) AS v FROM orders WHERE customer || '' = customer")
                .await,
            node.rows("SELECT count(*) AS v FROM orders").await
        );
        let rows = node.rows("SELECT 'a' || 'b'").await;
        assert_eq!(rows, vec![json!({"Utf8(\"a\") || Utf8(\"b\")": "ab"})]);

        // The default bound, 256 MiB, refuses the absurd before anything is allocated.
        for sql in [
            "SELECT repeat('x', 2147483647)",
            "SELECT lpad('x', 2147483647)",
            "SELECT rpad('x', 2147483647, 'yz')",
            "SELECT array_repeat(1, 2147483647)",
            "SELECT array_resize([1], 2000000000)",
            "SELECT range(0, 1000000000000)",
            "SELECT range(1000000000000)",
            "SELECT generate_series(-1000000000000, 1000000000000, 3)",
            "SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second')",
            "SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '1971-01-01', INTERVAL '1 month -30 days')",
            "SELECT levenshtein(repeat('x', 100000), repeat('y', 100000))",
            "SELECT qty FROM orders WHERE length(repeat(customer, 2147483647)) > 1",
        ] {
            match node.sql(sql).await {
                Err(e) => assert_eq!(e.code(), "value_too_large", "{sql}: {e}"),
                Ok(a) => panic!("{sql}: answered {} batches", a.batches.len()),
            }
        }

        // A small engine, to show the rest without building hundreds of megabytes.
        let small = QueryEngine::new(
            node.log.clone(),
            node.views.clone(),
            QueryConfig {
                value_bytes_max: 1 << 20,
                memory_max: 16 << 20,
                answer_bytes_max: 512 << 10,
                ..QueryConfig::default()
            },
        );
        let run = |sql: &'static str| {
            let small = small.clone();
            let token = node.token.clone();
            async move { small.sql(sql, &token, Duration::from_secs(60)).await }
        };
        for sql in [
            "SELECT repeat('xy', 1000000)",
            "SELECT array_repeat(repeat('x', 1000), 10000)",
            "SELECT replace(repeat('x', 10000), 'x', repeat('y', 1000))",
            "SELECT regexp_replace(repeat('x', 10000), 'x', repeat('y', 1000), 'g')",
            "SELECT array_to_string(range(0, 10000), repeat(',', 1000))",
            // Each step doubles: the third is over the bound.
            "SELECT encode(encode(encode(repeat('x', 300000), 'hex'), 'hex'), 'hex')",
            "SELECT repeat('x', 600000) || repeat('x', 600000)",
            "WITH a AS (SELECT repeat('x', 400000) AS s) SELECT s || s || s FROM a",
            "SELECT qty, repeat(customer, 300000) || repeat(customer, 300000) FROM orders",
        ] {
            match run(sql).await {
                Err(e) => assert_eq!(e.code(), "value_too_large", "{sql}: {e}"),
                Ok(a) => panic!("{sql}: answered {} batches", a.batches.len()),
            }
        }
        let e = run(
            "SELECT string_agg(repeat('x', 1000), ',') FROM (SELECT unnest(range(0, 100000)))",
        )
        .await
        .expect_err("over the pool");
        assert_eq!(e.code(), "query_memory_exhausted", "{e}");
        let e = run("SELECT repeat('x', 1000) FROM (SELECT unnest(range(0, 900)))")
            .await
            .expect_err("over the answer bound");
        assert_eq!(e.code(), "result_too_large", "{e}");
        let ok = run("SELECT repeat('x', 1000) FROM (SELECT unnest(range(0, 400)))").await;
        assert!(ok.is_ok(), "{ok:?}");
        node.log.shutdown().await;
    });
}

/// Tables brought forward by the log's change list (issue 19) equal tables built whole from
/// the views, after any mix of puts, patches and deletes (one or many per entry), in
/// relational and document namespaces, across a config change and document layout changes;
/// and rows answered after each round are exactly the reference model's.
#[test]
fn tables_brought_forward_equal_tables_built_whole() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        node.declare(
            "items",
            json!({"columns": [
                {"name": "n", "type": "int64", "nullable": true},
                {"name": "s", "type": "string", "nullable": true}
            ]}),
        )
        .await;
        let seed = std::env::var("THEMIS_TABLES_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x7AB1E5u64);
        let mut rng = crate::aql::Rng(seed);
        let ids: Vec<String> = (0..200)
            .map(|i| format!("k{:03}", (i * 37) % 200))
            .collect();
        // The reference: id -> data, per namespace.
        let mut items: BTreeMap<String, Value> = BTreeMap::new();
        let mut docs: BTreeMap<String, Value> = BTreeMap::new();
        let mut extra_declared = false;
        for round in 0..60 {
            if round == 30 {
                node.declare(
                    "items",
                    json!({"columns": [
                        {"name": "n", "type": "int64", "nullable": true},
                        {"name": "s", "type": "string", "nullable": true},
                        {"name": "extra", "type": "int64", "nullable": true}
                    ]}),
                )
                .await;
                extra_declared = true;
            }
            let count = 1 + rng.below(if round % 15 == 0 { 150 } else { 6 });
            let mut inputs = Vec::new();
            for _ in 0..count {
                let id = ids[rng.below(ids.len())].clone();
                let document = rng.below(2) == 0;
                let (model, reference) = if document {
                    ("document:docs", &mut docs)
                } else {
                    ("relational:items", &mut items)
                };
                let urn = format!("urn:themis:{model}:{id}");
                let data = if document {
                    // `c` changes kind now and then: the layout moves.
                    let c = match rng.below(4) {
                        0 => json!(rng.below(100)),
                        1 => json!(rng.below(100) as f64 / 4.0),
                        2 => json!(format!("c{}", rng.below(9))),
                        _ => json!({"deep": rng.below(3)}),
                    };
                    let mut d = json!({"a": rng.below(1000), "c": c});
                    if rng.below(3) == 0 {
                        d[format!("f{}", rng.below(5))] = json!(true);
                    }
                    d
                } else {
                    let mut d = json!({"n": rng.below(1000), "s": format!("s{}", rng.below(50))});
                    if rng.below(2) == 0 {
                        d["extra"] = json!(rng.below(7));
                    }
                    d
                };
                let op = match rng.below(5) {
                    0 => "delete",
                    1 => "patch",
                    _ => "put",
                };
                match op {
                    "delete" => {
                        reference.remove(&id);
                        inputs.push(json!({"urn": urn, "op": "delete"}));
                    }
                    "patch" => {
                        // A patch of an absent resource applies to {}.
                        let target = reference.entry(id).or_insert_with(|| json!({}));
                        themis_materializers::document::merge_patch(target, &data);
                        inputs.push(json!({"urn": urn, "op": "patch", "data": data}));
                    }
                    _ => {
                        reference.insert(id, data.clone());
                        inputs.push(json!({"urn": urn, "op": "put", "data": data}));
                    }
                }
            }
            // One entry per shard (a batch is atomic within one shard).
            let mut per_shard: BTreeMap<u32, Vec<themis_log::event::EventInput>> = BTreeMap::new();
            for i in inputs {
                let urn =
                    themis_log::urn::Urn::parse(i["urn"].as_str().expect("urn")).expect("urn");
                per_shard
                    .entry(node.log.shard_id_for(&urn).0)
                    .or_default()
                    .push(serde_json::from_value(i).expect("input"));
            }
            for (_, inputs) in per_shard {
                let batch = node.log.validate(inputs, None, None).expect("valid");
                node.commit(batch).await;
            }

            let fresh =
                QueryEngine::new(node.log.clone(), node.views.clone(), QueryConfig::default());
            for sql in [
                "SELECT * FROM items ORDER BY id",
                "SELECT * FROM document.docs ORDER BY id",
            ] {
                let kept = node.rows(sql).await;
                let answer = fresh
                    .sql(sql, &node.token, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let whole: Vec<Value> = String::from_utf8(encode(&answer, Format::Ndjson))
                    .expect("utf-8")
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("a JSON row"))
                    .collect();
                assert_eq!(kept, whole, "round {round} (seed {seed}): {sql}");
                let (reference, what) = if sql.contains("docs") {
                    (&docs, "data")
                } else {
                    (&items, "")
                };
                let got: BTreeMap<String, Value> = kept
                    .iter()
                    .map(|r| {
                        let id = r["id"].as_str().expect("id").to_owned();
                        let data = if what == "data" {
                            r["data"].clone()
                        } else {
                            let mut d = json!({"n": r["n"], "s": r["s"]});
                            if extra_declared {
                                d["extra"] = r["extra"].clone();
                            }
                            d
                        };
                        (id, data)
                    })
                    .collect();
                let want: BTreeMap<String, Value> = reference
                    .iter()
                    .map(|(id, d)| {
                        let d = if what == "data" {
                            d.clone()
                        } else {
                            let mut row = json!({"n": d.get("n").cloned().unwrap_or(Value::Null),
                                                 "s": d.get("s").cloned().unwrap_or(Value::Null)});
                            if extra_declared {
                                row["extra"] = d.get("extra").cloned().unwrap_or(Value::Null);
                            }
                            row
                        };
                        (id.clone(), d)
                    })
                    .collect();
                assert_eq!(got, want, "round {round} (seed {seed}): {sql}");
            }
        }
        let (whole, forward) = node.engine.partitions_built();
        // 8 partitions built at the first query; again at the config change and at the
        // document layout changes (a kind of `c` or an `f*` field appearing or going).
        assert!(
            forward > 2 * whole,
            "{whole} built whole, {forward} brought forward"
        );
        node.log.shutdown().await;
    });
}

/// This crate's directory, as cargo gives it to the running test (not as compiled in: a test
/// binary reused from a shared target directory by a checkout elsewhere would look there).
fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
}
