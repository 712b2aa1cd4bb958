//! AQL golden suite: `tests/golden/aql.txt` holds cases (`### name`, the query, optional
//! `--- params` with a JSON object, then `--- expect` with one JSON row per line or
//! `error: code`), run over the SQL fixture plus AQL's own data: the ancestor's HTTP test
//! fixtures re-expressed (15 people, the `social` graph with weighted edges), articles with
//! text fields, vectors and a time series. `THEMIS_UPDATE_GOLDEN=1` rewrites the expectations
//! (then review the diff: a golden file is only as right as its review).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};
use themis_log::Model;
use themis_storage::MemoryDisk;

use crate::{Node, fixture, open, runtime};

/// The ancestor's 15 users (its HTTP AQL tests), with numeric ages.
const PEOPLE: [(&str, &str, &str, i64); 15] = [
    ("p01", "Alice", "Berlin", 25),
    ("p02", "Bob", "Hamburg", 31),
    ("p03", "Charlie", "Munich", 17),
    ("p04", "Diana", "Berlin", 28),
    ("p05", "Eve", "Cologne", 45),
    ("p06", "Frank", "Munich", 52),
    ("p07", "Grace", "Hamburg", 19),
    ("p08", "Heidi", "Frankfurt", 38),
    ("p09", "Ivan", "Stuttgart", 23),
    ("p10", "Judy", "Munich", 61),
    ("p11", "Ken", "Cologne", 29),
    ("p12", "Liam", "Frankfurt", 34),
    ("p13", "Mia", "Stuttgart", 41),
    ("p14", "Noah", "Dresden", 26),
    ("p15", "Olga", "Leipzig", 57),
];

async fn aql_fixture(node: &mut Node) {
    fixture(node).await;
    for (id, name, city, age) in PEOPLE {
        node.append(
            json!({"urn": format!("urn:themis:document:people:{id}"), "op": "put",
            "data": {"name": name, "city": city, "age": age}}),
        )
        .await
        .expect("a person");
    }
    // The ancestor's graph test: user1 -> user2 (weight 1.0), user2 -> user3 (weight 2.0);
    // and a little more: user3 -> user4, user1 -> user4 (another label), user5 alone.
    for (id, name) in [
        ("user1", "Ann"),
        ("user2", "Ben"),
        ("user3", "Cat"),
        ("user4", "Dan"),
        ("user5", "Eva"),
    ] {
        node.append(
            json!({"urn": format!("urn:themis:graph:social:{id}"), "op": "put",
            "data": {"name": name}}),
        )
        .await
        .expect("a vertex");
    }
    for (from, to, label, weight, ts) in [
        ("user1", "user2", "knows", 1.0, "2025-10-28T00:00:00Z"),
        ("user2", "user3", "knows", 2.0, "2025-10-29T00:00:00Z"),
        ("user3", "user4", "knows", 0.5, "2025-10-30T00:00:00Z"),
        ("user1", "user4", "blocks", 9.0, "2025-11-01T00:00:00Z"),
    ] {
        node.append(
            json!({"urn": format!("urn:themis:graph:social:{from}"), "op": "link",
            "to": format!("urn:themis:graph:social:{to}"), "label": label,
            "data": {"_weight": weight, "ts": ts}}),
        )
        .await
        .expect("an edge");
    }
    node.declare_in(
        Model::Document,
        "articles",
        json!({"text_fields": ["title", "content"], "language": "en"}),
    )
    .await;
    for (id, title, content, author) in [
        (
            "a1",
            "AI in databases",
            "Learned indexes and AI query optimizers",
            "p01",
        ),
        (
            "a2",
            "Graph traversals",
            "Breadth first search over adjacency lists",
            "p02",
        ),
        (
            "a3",
            "Vectors and AI",
            "Approximate nearest neighbour search with HNSW for AI",
            "p01",
        ),
        (
            "a4",
            "Time series",
            "Gorilla compression of timestamps and values",
            "p04",
        ),
    ] {
        node.append(
            json!({"urn": format!("urn:themis:document:articles:{id}"), "op": "put",
            "data": {"title": title, "content": content, "author": author}}),
        )
        .await
        .expect("an article");
    }
    node.declare_in(
        Model::Vector,
        "items",
        json!({"dimension": 3, "metric": "l2"}),
    )
    .await;
    for (id, v, color) in [
        ("i1", [0.0, 0.0, 0.0], "red"),
        ("i2", [1.0, 0.0, 0.0], "blue"),
        ("i3", [0.0, 2.0, 0.0], "red"),
        ("i4", [3.0, 3.0, 3.0], "green"),
    ] {
        node.append(
            json!({"urn": format!("urn:themis:vector:items:{id}"), "op": "put",
            "vector": v, "data": {"color": color}}),
        )
        .await
        .expect("a vector");
    }
    // One name in both models: `dup` must be qualified.
    node.declare("dup", json!({"columns": [{"name": "v", "type": "string"}]}))
        .await;
    for urn in ["urn:themis:relational:dup:x", "urn:themis:document:dup:x"] {
        node.append(json!({"urn": urn, "op": "put", "data": {"v": urn}}))
            .await
            .expect("a dup");
    }
    let points: Vec<Value> = (0..10)
        .map(|i| json!([i * 60_000, (i * i) as f64 / 2.0]))
        .collect();
    node.append(
        json!({"urn": "urn:themis:timeseries:metrics:cpu", "op": "points", "points": points}),
    )
    .await
    .expect("points");
    for kind in node.views.kinds() {
        node.views
            .wait_for(kind, &node.token, &[], Duration::from_secs(30))
            .await
            .expect("views catch up");
    }
}

struct Case {
    name: String,
    query: String,
    params: Option<String>,
    expect: Vec<String>,
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current: Option<(Case, &str)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            if let Some((c, _)) = current.take() {
                cases.push(c);
            }
            current = Some((
                Case {
                    name: name.trim().to_owned(),
                    query: String::new(),
                    params: None,
                    expect: Vec::new(),
                },
                "query",
            ));
            continue;
        }
        let Some((case, part)) = current.as_mut() else {
            continue; // the header
        };
        match line {
            "--- params" => *part = "params",
            "--- expect" => *part = "expect",
            _ => match *part {
                "query" => {
                    case.query.push_str(line);
                    case.query.push('\n');
                }
                "params" => case.params.get_or_insert_with(String::new).push_str(line),
                _ if line.is_empty() => {}
                _ => case.expect.push(line.to_owned()),
            },
        }
    }
    if let Some((c, _)) = current {
        cases.push(c);
    }
    cases
}

async fn run(node: &Node, query: &str, params: Option<&str>) -> Vec<String> {
    let params: Map<String, Value> = params
        .map(|p| serde_json::from_str(p).expect("params are a JSON object"))
        .unwrap_or_default();
    match node
        .engine
        .aql(query, params, &node.token, Duration::from_secs(30))
        .await
    {
        Ok(outcome) => outcome
            .rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("json"))
            .collect(),
        Err(e) => vec![format!("error: {}: {e}", e.code())],
    }
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/aql.txt")
}

#[test]
fn aql_golden_suite() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        aql_fixture(&mut node).await;
        let path = golden_path();
        let text = std::fs::read_to_string(&path).expect("golden file");
        let cases = parse_cases(&text);
        assert!(cases.len() >= 100, "only {} AQL cases", cases.len());
        let update = std::env::var_os("THEMIS_UPDATE_GOLDEN").is_some();
        let mut failures = Vec::new();
        let mut rewritten = String::from(text.split("### ").next().unwrap_or(""));
        let mut names = std::collections::BTreeSet::new();
        for case in &cases {
            assert!(
                names.insert(case.name.clone()),
                "two cases named {}",
                case.name
            );
            let got = run(&node, &case.query, case.params.as_deref()).await;
            if got != case.expect {
                failures.push(format!(
                    "{}:\n{}expected:\n  {}\ngot:\n  {}",
                    case.name,
                    case.query,
                    case.expect.join("\n  "),
                    got.join("\n  ")
                ));
            }
            rewritten.push_str(&format!("### {}\n{}", case.name, case.query));
            if let Some(p) = &case.params {
                rewritten.push_str(&format!("--- params\n{p}\n"));
            }
            rewritten.push_str("--- expect\n");
            for line in &got {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
            rewritten.push('\n');
        }
        if update {
            std::fs::write(&path, rewritten.trim_end().to_owned() + "\n").expect("rewrite");
            return;
        }
        assert!(
            failures.is_empty(),
            "{} of {} AQL cases differ:\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        );
    });
}

/// Every answer reflects one token: the snapshot's, at least `min_token`.
#[test]
fn an_answer_reflects_the_token_it_waited_for() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        for i in 0..50 {
            node.append(
                json!({"urn": format!("urn:themis:document:notes:n{i}"), "op": "put",
                "data": {"i": i}}),
            )
            .await
            .expect("append");
            let outcome = node
                .engine
                .aql(
                    "FOR n IN notes COLLECT WITH COUNT INTO c RETURN c",
                    Map::new(),
                    &node.token,
                    Duration::from_secs(30),
                )
                .await
                .expect("aql");
            assert_eq!(outcome.rows, vec![json!(i + 1)], "read your writes");
            assert!(
                outcome.token.covers(&node.token),
                "the answer's token covers the append"
            );
        }
    });
}
