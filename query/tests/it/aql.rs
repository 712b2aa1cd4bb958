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

use themis_query::AqlOptions;

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

/// Runs `query` on `engine`: the rows as JSON lines (or the error), and how many of its
/// operations ran as a DataFusion plan.
async fn run(
    node: &Node,
    options: AqlOptions,
    query: &str,
    params: Option<&str>,
) -> (Vec<String>, usize) {
    let params: Map<String, Value> = params
        .map(|p| serde_json::from_str(p).expect("params are a JSON object"))
        .unwrap_or_default();
    match node
        .engine
        .aql(query, params, options, &node.token, Duration::from_secs(30))
        .await
    {
        Ok(outcome) => (
            outcome
                .rows
                .iter()
                .map(|r| serde_json::to_string(r).expect("json"))
                .collect(),
            outcome.planned,
        ),
        Err(e) => (vec![format!("error: {}: {e}", e.code())], 0),
    }
}

/// Interprets every query (no DataFusion plans).
const INTERPRETED: AqlOptions = AqlOptions { plans: false };

fn golden_path() -> PathBuf {
    crate::crate_dir().join("tests/golden/aql.txt")
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
        let mut planned = 0;
        for case in &cases {
            assert!(
                names.insert(case.name.clone()),
                "two cases named {}",
                case.name
            );
            let (got, ops) = run(
                &node,
                AqlOptions::default(),
                &case.query,
                case.params.as_deref(),
            )
            .await;
            planned += usize::from(ops > 0);
            // The interpreter alone gives the same answer as with plans.
            let (alone, _) = run(&node, INTERPRETED, &case.query, case.params.as_deref()).await;
            if alone != got {
                failures.push(format!(
                    "{} (planned: {ops} operations):\n{}with plans:\n  {}\ninterpreted:\n  {}",
                    case.name,
                    case.query,
                    got.join("\n  "),
                    alone.join("\n  ")
                ));
            }
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
        println!("{planned} of {} cases ran DataFusion plans", cases.len());
        // Enough cases run over DataFusion plans for the comparison to mean something.
        assert!(planned >= 25, "only {planned} cases ran plans");
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
                    AqlOptions::default(),
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

/// A small deterministic generator (xorshift) for the differential test's data and queries.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A random condition over `v`'s columns of table `t` (`a` int, `b` float, `s` string,
/// `f` bool, all nullable), with constants of the right and of the wrong type and nulls.
fn condition(rng: &mut Rng, v: &str, depth: usize) -> String {
    if depth > 0 && rng.below(3) == 0 {
        let op = rng.pick(&["AND", "OR"]);
        let (x, y) = (condition(rng, v, depth - 1), condition(rng, v, depth - 1));
        return match rng.below(3) {
            0 => format!("NOT ({x} {op} {y})"),
            _ => format!("({x} {op} {y})"),
        };
    }
    let cmp = rng.pick(&["==", "!=", "<", "<=", ">", ">="]);
    match rng.below(9) {
        0 => format!(
            "{v}.a {cmp} {}",
            rng.pick(&["0", "3", "-2", "2.5", "null", "'x'"])
        ),
        1 => format!(
            "{v}.b {cmp} {}",
            rng.pick(&["0", "1.5", "-0.5", "null", "true"])
        ),
        2 => format!(
            "{v}.s {cmp} {}",
            rng.pick(&["'m'", "'b'", "''", "null", "4"])
        ),
        3 => format!("{v}.f {cmp} {}", rng.pick(&["true", "false", "null"])),
        4 => format!(
            "{v}.{} {cmp} {v}.{}",
            rng.pick(&["a", "b"]),
            rng.pick(&["a", "b"])
        ),
        5 => format!(
            "{v}.a {} [1, 2, null, 'x', 4.0]",
            rng.pick(&["IN", "NOT IN"])
        ),
        6 => format!("{v}.s {} ['a', 'k', 3]", rng.pick(&["IN", "NOT IN"])),
        7 => format!("{v}.{}", rng.pick(&["a", "b", "s", "f"])),
        _ => format!("{v}._key {cmp} 'r{}'", rng.below(60)),
    }
}

/// A random query and its bind parameters.
fn random_query(rng: &mut Rng) -> (String, Map<String, Value>) {
    let filter = |rng: &mut Rng, v: &str| {
        (0..rng.below(3))
            .map(|_| format!(" FILTER {}", condition(rng, v, 2)))
            .collect::<String>()
    };
    let sort = |rng: &mut Rng, keys: &[&str]| {
        if rng.below(2) == 0 {
            return String::new();
        }
        let n = 1 + rng.below(2);
        let keys: Vec<String> = (0..n)
            .map(|_| format!("{} {}", rng.pick(keys), rng.pick(&["ASC", "DESC", ""])))
            .collect();
        format!(" SORT {}", keys.join(", "))
    };
    let limit = |rng: &mut Rng| match rng.below(3) {
        0 => format!(" LIMIT {}", rng.below(20)),
        1 => format!(" LIMIT {}, {}", rng.below(10), rng.below(20)),
        _ => String::new(),
    };
    let mut params = Map::new();
    let q = match rng.below(8) {
        0 => format!(
            "FOR x IN t{}{}{} RETURN {}",
            filter(rng, "x"),
            sort(rng, &["x.a", "x.b", "x.s", "x.f", "x._key"]),
            limit(rng),
            rng.pick(&[
                "x",
                "x._key",
                "{a: x.a, s: x.s, k: x._key}",
                "[x.b, x.f, x._id]"
            ])
        ),
        1 => format!(
            "FOR x IN t{} COLLECT g = x.{} AGGREGATE n = COUNT(), sb = SUM(x.b), sa = SUM(x.a), lo = MIN(x.a), hi = MAX(x.s), av = AVG(x.b){}{}{} RETURN {{g, n, sb, sa, lo, hi, av}}",
            filter(rng, "x"),
            rng.pick(&["a", "s", "f"]),
            if rng.below(2) == 0 {
                " FILTER n > 2"
            } else {
                ""
            },
            sort(rng, &["n", "g", "sb", "hi"]),
            limit(rng)
        ),
        2 => format!(
            "FOR x IN t FOR y IN u FILTER x.a == y.k{}{}{}{} RETURN [x._key, y._key, y.w]",
            filter(rng, "x"),
            filter(rng, "y"),
            sort(rng, &["x.b", "y.w", "y.k"]),
            limit(rng)
        ),
        3 => format!(
            "FOR x IN t{} COLLECT WITH COUNT INTO c RETURN c",
            filter(rng, "x")
        ),
        // Bind parameters: a list, a bound, a limit, the collection.
        4 => {
            let lists = [
                json!([1, 2]),
                json!([null, -2, 4.0]),
                json!([]),
                json!(["a", 1]),
            ];
            params.insert("list".into(), lists[rng.below(lists.len())].clone());
            let bounds = [json!("a"), json!("k"), json!(""), Value::Null];
            params.insert("s".into(), bounds[rng.below(bounds.len())].clone());
            params.insert("n".into(), json!(rng.below(15)));
            params.insert("@coll".into(), json!("t"));
            format!(
                "FOR x IN @@coll FILTER x.a IN @list OR x.s >= @s{} SORT x._key DESC LIMIT @n RETURN x",
                filter(rng, "x")
            )
        }
        // Conditions across the joined tables, then a COLLECT over the join.
        5 => format!(
            "FOR x IN t FOR y IN u FILTER x.a == y.k FILTER x.b {} y.k OR y.w == 'w1'{} COLLECT w = y.w AGGREGATE n = COUNT(), s = SUM(x.a), m = MAX(x.b){} RETURN {{w, n, s, m}}",
            rng.pick(&["<", ">=", "==", "!="]),
            filter(rng, "x"),
            sort(rng, &["n", "s", "m", "w"])
        ),
        // A self join on a nullable string column.
        6 => format!(
            "FOR x IN t FOR y IN t FILTER x.s == y.s AND x._key < y._key{}{} RETURN [x._key, y._key, x.s]",
            filter(rng, "y"),
            limit(rng)
        ),
        // Two group keys (nulls among them) and sorts with ties.
        _ => format!(
            "FOR x IN t{} COLLECT g = x.f, h = x.s WITH COUNT INTO n{}{} RETURN [g, h, n]",
            filter(rng, "x"),
            sort(rng, &["n", "g", "h"]),
            limit(rng)
        ),
    };
    (q, params)
}

/// Numbers equal as AQL compares them (sums may differ in the last bits: the order of
/// addition differs); everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Random queries over tables with nulls give the interpreter's answers when their leading
/// part runs as a DataFusion plan: AQL's null ordering, two-valued comparisons, joins that
/// match nulls, `SUM` of nothing, group order and stable sorts.
#[test]
fn plans_answer_as_the_interpreter_does() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        node.declare(
            "t",
            json!({"columns": [
                {"name": "a", "type": "int64", "nullable": true},
                {"name": "b", "type": "float64", "nullable": true},
                {"name": "s", "type": "string", "nullable": true},
                {"name": "f", "type": "bool", "nullable": true}
            ]}),
        )
        .await;
        node.declare(
            "u",
            json!({"columns": [
                {"name": "k", "type": "int64", "nullable": true},
                {"name": "w", "type": "string"}
            ]}),
        )
        .await;
        let mut rng = Rng(std::env::var("THEMIS_AQL_DIFF_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x9E37_79B9_7F4A_7C15));
        for i in 0..60 {
            let mut data = Map::new();
            if rng.below(5) > 0 {
                data.insert("a".into(), json!(rng.below(7) as i64 - 2));
            }
            if i % 13 == 0 {
                // AQL holds -0.0 equal to 0.0 (Arrow orders it first).
                data.insert("b".into(), json!(-0.0));
            } else if rng.below(5) > 0 {
                data.insert("b".into(), json!((rng.below(9) as f64 - 3.0) / 2.0));
            }
            if rng.below(5) > 0 {
                data.insert("s".into(), json!(["", "a", "b", "k", "m", "z"][rng.below(6)]));
            }
            if rng.below(5) > 0 {
                data.insert("f".into(), json!(rng.below(2) == 0));
            }
            node.append(
                json!({"urn": format!("urn:themis:relational:t:r{i:02}"), "op": "put", "data": data}),
            )
            .await
            .expect("a row of t");
        }
        for i in 0..12 {
            let k = if i % 5 == 4 { Value::Null } else { json!(i % 6 - 2) };
            node.append(json!({"urn": format!("urn:themis:relational:u:u{i:02}"), "op": "put",
                "data": {"k": k, "w": format!("w{}", i % 4)}}))
                .await
                .expect("a row of u");
        }
        let (mut planned, mut differ) = (0, Vec::new());
        let queries: usize = std::env::var("THEMIS_AQL_DIFF")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400);
        for _ in 0..queries {
            let (q, params) = random_query(&mut rng);
            let with = node
                .engine
                .aql(&q, params.clone(), AqlOptions::default(), &node.token, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            let alone = node
                .engine
                .aql(&q, params, INTERPRETED, &node.token, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            planned += usize::from(with.planned > 0);
            if !same(&Value::Array(with.rows.clone()), &Value::Array(alone.rows.clone())) {
                differ.push(format!(
                    "{q}\n  planned {} ops: {}\n  interpreted: {}",
                    with.planned,
                    Value::Array(with.rows),
                    Value::Array(alone.rows)
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{} of {queries} queries differ:\n{}",
            differ.len(),
            differ.join("\n")
        );
        assert!(planned * 10 >= queries * 8, "only {planned} of {queries} queries ran plans");
    });
}

/// Mutates `text` once: deletes, duplicates or replaces a span, inserts a fragment, or splices
/// in the tail of `other`.
fn mutate(rng: &mut Rng, text: &[char], other: &[char]) -> Vec<char> {
    const FRAGMENTS: [&str; 40] = [
        " FOR x IN orders ",
        " FILTER ",
        " RETURN ",
        " SORT ",
        " LIMIT 2 ",
        " COLLECT ",
        " AGGREGATE ",
        " INTO g ",
        " WITH COUNT INTO n ",
        " LET y = ",
        " OUTBOUND ",
        " ANY ",
        " GRAPH 'social' ",
        " SHORTEST_PATH ",
        " 0..3 ",
        " null ",
        " true ",
        " -1 ",
        " 1e308 ",
        " 2.5 ",
        " 'x' ",
        " '' ",
        " [1, null, 'a'] ",
        " {a: 1} ",
        " == ",
        " != ",
        " < ",
        " >= ",
        " IN ",
        " NOT ",
        " AND ",
        " OR ",
        " LIKE ",
        " ? 1 : 2 ",
        " [*] ",
        " ( ",
        " ) ",
        " @x ",
        " o.qty ",
        " c._key ",
    ];
    let mut t = text.to_vec();
    // Mostly keeping the structure (literals for literals, operators for operators), so
    // most mutants parse and reach the evaluator; the rest are edits anywhere.
    let words: Vec<(usize, usize)> = {
        let mut w = Vec::new();
        let mut i = 0;
        while i < t.len() {
            if t[i] == ' ' || t[i] == '(' || t[i] == '[' || t[i] == ',' {
                let end = (i + 1..t.len())
                    .find(|&j| matches!(t[j], ' ' | ')' | ']' | ',' | '\n'))
                    .unwrap_or(t.len());
                w.push((i + 1, end));
            }
            i += 1;
        }
        w
    };
    let word = |(a, b): (usize, usize)| t[a..b].iter().collect::<String>();
    const LITERALS: [&str; 14] = [
        "0",
        "3",
        "-1",
        "2.5",
        "null",
        "true",
        "false",
        "'paid'",
        "'x'",
        "1e308",
        "-1e308",
        "9223372036854775807",
        "-9223372036854775808",
        "'2026-13-45'",
    ];
    const OPERATORS: [&str; 8] = ["==", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"];
    let is_literal = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_digit() || c == '\'' || c == '-')
            || matches!(w, "null" | "true" | "false")
    };
    let literals: Vec<(usize, usize)> = words
        .iter()
        .copied()
        .filter(|&w| is_literal(&word(w)))
        .collect();
    let operators: Vec<(usize, usize)> = words
        .iter()
        .copied()
        .filter(|&w| OPERATORS.contains(&word(w).as_str()))
        .collect();
    match rng.below(10) {
        0..=3 if !literals.is_empty() => {
            let (a, b) = literals[rng.below(literals.len())];
            t.splice(a..b, rng.pick(&LITERALS).chars());
            return t;
        }
        4..=6 if !operators.is_empty() => {
            let (a, b) = operators[rng.below(operators.len())];
            t.splice(a..b, rng.pick(&OPERATORS).chars());
            return t;
        }
        _ => {}
    }
    let at = rng.below(t.len() + 1);
    let span = (1 + rng.below(6)).min(t.len() - at.min(t.len()));
    match rng.below(5) {
        0 => {
            t.drain(at..at + span);
        }
        1 => {
            let copy: Vec<char> = t[at..at + span].to_vec();
            t.splice(at..at, copy);
        }
        2 => {
            let f: Vec<char> = rng.pick(&FRAGMENTS).chars().collect();
            t.splice(at..at + span, f);
        }
        3 => {
            let f: Vec<char> = rng.pick(&FRAGMENTS).chars().collect();
            t.splice(at..at, f);
        }
        _ => {
            let from = rng.below(other.len() + 1);
            t.truncate(at);
            t.extend_from_slice(&other[from..]);
        }
    }
    t
}

/// The parser's and evaluator's fuzz target at CI size (`THEMIS_AQL_FUZZ` mutations, default
/// 1,500; `THEMIS_AQL_FUZZ_SEED` for another sequence): mutations of the golden queries parse or fail with a position inside the text;
/// those that parse run with and without DataFusion plans, never fail internally (a panic in
/// the evaluator would be `internal`), and answer alike (or both fail with the same code;
/// only the interpreter may run out of rows or time where a plan did not).
#[test]
fn mutated_golden_queries_fail_cleanly_and_plans_agree() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        aql_fixture(&mut node).await;
        let text = std::fs::read_to_string(golden_path()).expect("golden file");
        let cases = parse_cases(&text);
        let corpus: Vec<Vec<char>> = cases.iter().map(|c| c.query.chars().collect()).collect();
        let iterations: usize = std::env::var("THEMIS_AQL_FUZZ")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        let seed = std::env::var("THEMIS_AQL_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0xA076_1D64_78BD_642F);
        let mut rng = Rng(seed);
        let (mut parsed, mut ran, mut problems) = (0, 0, Vec::new());
        for _ in 0..iterations {
            let i = rng.below(corpus.len());
            let mut q = corpus[i].clone();
            for _ in 0..1 + rng.below(2) {
                let other = &corpus[rng.below(corpus.len())];
                q = mutate(&mut rng, &q, other);
            }
            let q: String = q.into_iter().collect();
            match themis_query::aql::parse(&q) {
                Err(e) => {
                    if std::env::var_os("THEMIS_AQL_FUZZ_SHOW").is_some() {
                        println!("{q:?}\n  {e}");
                    }
                    if e.line < 1
                        || e.column < 1
                        || e.line > q.lines().count().max(1) + 1
                        || e.message.is_empty()
                    {
                        problems.push(format!("{q:?}: error out of place: {e}"));
                    }
                    continue;
                }
                Ok(_) => parsed += 1,
            }
            let params: Map<String, Value> = cases[i]
                .params
                .as_deref()
                .map(|p| serde_json::from_str(p).expect("params"))
                .unwrap_or_default();
            let timeout = Duration::from_secs(5);
            let with = node
                .engine
                .aql(
                    &q,
                    params.clone(),
                    AqlOptions::default(),
                    &node.token,
                    timeout,
                )
                .await;
            let alone = node
                .engine
                .aql(&q, params, INTERPRETED, &node.token, timeout)
                .await;
            let code = |r: &Result<themis_query::aql::Outcome, themis_query::Error>| {
                r.as_ref().err().map(|e| e.code())
            };
            if code(&with) == Some("internal") || code(&alone) == Some("internal") {
                problems.push(format!(
                    "{q:?}: internal error: {:?} / {:?}",
                    with.as_ref().err(),
                    alone.as_ref().err()
                ));
                continue;
            }
            match (&with, &alone) {
                (Ok(a), Ok(b)) => {
                    ran += 1;
                    if !same(&Value::Array(a.rows.clone()), &Value::Array(b.rows.clone())) {
                        problems.push(format!("{q:?}: plans and interpreter differ"));
                    }
                }
                (Ok(_), Err(e)) if matches!(e.code(), "result_too_large" | "timeout") => {}
                (Err(a), Err(b)) if a.code() == b.code() => {}
                _ => problems.push(format!(
                    "{q:?}: with plans {:?}, interpreted {:?}",
                    code(&with),
                    code(&alone)
                )),
            }
        }
        assert!(
            problems.is_empty(),
            "{} of {iterations} mutated queries went wrong:\n{}",
            problems.len(),
            problems.join("\n")
        );
        println!("{parsed} of {iterations} mutants parsed, {ran} ran both ways");
        // The mutations reach the evaluator, not only the parser.
        assert!(
            parsed * 5 >= iterations,
            "only {parsed} of {iterations} parsed"
        );
        assert!(ran * 10 >= iterations, "only {ran} of {iterations} ran");
    });
}

/// The highest expressions the parser allows evaluate, with plans and without, on the default
/// 2 MiB stacks of a runtime's blocking threads: chains of 16,000 operators once aborted the
/// server with a stack overflow; the parser now stops them at `HEIGHT_MAX` levels.
#[test]
fn the_highest_expressions_evaluate_without_overflowing_the_stack() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        node.declare(
            "t",
            json!({"columns": [{"name": "a", "type": "int64", "nullable": true}]}),
        )
        .await;
        node.append(json!({"urn": "urn:themis:relational:t:r1", "op": "put", "data": {"a": 1}}))
            .await
            .expect("a row");
        let n = themis_query::aql::HEIGHT_MAX - 3;
        let nested = format!("{}1{}", "[".repeat(30), "]".repeat(30));
        let cases = [
            (format!("RETURN 1{}", " + 1".repeat(n)), json!([n + 1])),
            (format!("RETURN 1{}", " AND 1".repeat(n)), json!([1])),
            (format!("RETURN 0{}", " || 0".repeat(n)), json!([0])),
            (format!("RETURN {nested}{}", "[0]".repeat(30)), json!([1])),
            (format!("RETURN {{}}{}", ".a".repeat(n)), json!([null])),
            (
                format!(
                    "FOR x IN t FILTER x.a{} == {} RETURN x.a",
                    " + 1".repeat(n - 3),
                    n - 2
                ),
                json!([1]),
            ),
            (
                format!(
                    "FOR x IN t FILTER x.a == 1{} RETURN x.a",
                    " AND x.a == 1".repeat(n / 4 - 3)
                ),
                json!([1]),
            ),
            (
                format!(
                    "FOR x IN t FILTER x.a == 0{} OR x.a == 1 RETURN x.a",
                    " OR x.a == 0".repeat(n / 4 - 3)
                ),
                json!([1]),
            ),
        ];
        for (q, want) in cases {
            for options in [AqlOptions::default(), INTERPRETED] {
                let got = node
                    .engine
                    .aql(
                        &q,
                        Map::new(),
                        options,
                        &node.token,
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{}...: {e}", &q[..60]));
                assert_eq!(Value::Array(got.rows), want, "{}...", &q[..60]);
            }
        }
        let too_high = format!("RETURN 1{}", " + 1".repeat(16_000));
        let e = node
            .engine
            .aql(
                &too_high,
                Map::new(),
                AqlOptions::default(),
                &node.token,
                Duration::from_secs(60),
            )
            .await
            .expect_err("too high");
        assert_eq!(e.code(), "invalid_aql", "{e}");
    });
}

/// Functions that build large values refuse before they build them, literals and functions
/// stop at the value bound, and the rows of `FOR`, `LET` and `RETURN` (copies of values in
/// every row) at the rows bound; small values answer as before.
#[test]
fn aql_values_and_rows_are_bounded() {
    runtime().block_on(async {
        let node = open(&MemoryDisk::new()).await;
        let small = themis_query::QueryEngine::new(
            node.log.clone(),
            node.views.clone(),
            themis_query::QueryConfig {
                value_bytes_max: 1 << 20,
                answer_bytes_max: 4 << 20,
                ..themis_query::QueryConfig::default()
            },
        );
        let mut params = Map::new();
        params.insert("big".into(), json!("x".repeat(100_000)));
        params.insert("k".into(), json!("x".repeat(1000)));
        let run = |q: &'static str| {
            let small = small.clone();
            let token = node.token.clone();
            let used: Map<String, Value> = params
                .iter()
                .filter(|(k, _)| q.contains(&format!("@{k}")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            async move {
                small
                    .aql(
                        q,
                        used,
                        AqlOptions::default(),
                        &token,
                        Duration::from_secs(60),
                    )
                    .await
            }
        };
        for q in [
            "RETURN SUBSTITUTE(SUBSTITUTE('xxxxxxxxxx', 'x', @k), 'x', @k)",
            "RETURN CONCAT(@big, @big, @big, @big, @big, @big, @big, @big, @big, @big, @big)",
            "RETURN [@big, @big, @big, @big, @big, @big, @big, @big, @big, @big, @big]",
            "RETURN {a: @big, b: @big, c: @big, d: @big, e: @big, f: @big, g: @big, h: @big, \
             i: @big, j: @big, k: @big}",
            "RETURN CONCAT_SEPARATOR(@k, 1..2000)",
            "RETURN SPLIT(@big, '')",
            "FOR i IN 1..100 RETURN @big",
            "FOR i IN 1..100 LET b = @big RETURN 1",
            "LET b = @big FOR i IN 1..100 RETURN 1",
        ] {
            match run(q).await {
                Err(e) => assert_eq!(e.code(), "value_too_large", "{q}: {e}"),
                Ok(o) => panic!("{q}: answered {} rows", o.rows.len()),
            }
        }
        for (q, want) in [
            (
                "FOR i IN 1..10 RETURN LENGTH(@big)",
                json!(vec![100_000; 10]),
            ),
            ("RETURN LENGTH(CONCAT(@big, @big))", json!([200_000])),
            ("RETURN SUBSTITUTE('axa', 'x', 'yy')", json!(["ayya"])),
            ("RETURN LENGTH(SPLIT(@k, ''))", json!([1000])),
            ("RETURN CONCAT_SEPARATOR('-', [1, 2], 3)", json!(["1-2-3"])),
        ] {
            let got = run(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(Value::Array(got.rows), want, "{q}");
        }
        node.log.shutdown().await;
    });
}

/// The collections a query reads row by row are bounded by the engine's memory bound: past
/// it the read stops with `query_memory_exhausted` (a 10M-row collection read whole took a
/// node past its memory), under it the same query answers.
#[test]
fn collections_read_row_by_row_are_bounded() {
    runtime().block_on(async {
        let mut node = open(&MemoryDisk::new()).await;
        for i in 0..400 {
            node.append(
                json!({"urn": format!("urn:themis:document:many:d{i:04}"), "op": "put",
                "data": {"n": i, "text": "some words to take up a little room"}}),
            )
            .await
            .expect("a document");
        }
        // Evaluated row by row, under an engine whose memory bound is `memory_max`.
        let run = |memory_max: usize, q: &'static str| {
            let engine = themis_query::QueryEngine::new(
                node.log.clone(),
                node.views.clone(),
                themis_query::QueryConfig {
                    memory_max,
                    ..themis_query::QueryConfig::default()
                },
            );
            let token = node.token.clone();
            let interpreted = AqlOptions { plans: false };
            async move {
                engine
                    .aql(q, Map::new(), interpreted, &token, Duration::from_secs(60))
                    .await
            }
        };
        let q = "FOR d IN many FILTER d.n % 100 == 0 RETURN d.n";
        let e = run(16 << 10, q).await.expect_err("over the bound");
        assert_eq!(e.code(), "query_memory_exhausted", "{e}");
        let got = run(1 << 20, q).await.expect("under the bound");
        assert_eq!(Value::Array(got.rows), json!([0, 100, 200, 300]));
        // A collection a nested FOR reads again is held once.
        let pair = "FOR a IN many FILTER a.n == 1 FOR b IN many FILTER b.n == 2 RETURN [a.n, b.n]";
        let got = run(1 << 20, pair).await.expect("under the bound");
        assert_eq!(Value::Array(got.rows), json!([[1, 2]]));
        node.log.shutdown().await;
    });
}
