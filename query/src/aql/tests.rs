use proptest::prelude::*;

use super::parser::{BinOp, Direction};
use super::*;

fn ok(q: &str) -> Query {
    parse(q).unwrap_or_else(|e| panic!("{}: {e}", short(q)))
}

fn err(q: &str) -> SyntaxError {
    parse(q).expect_err(short(q))
}

/// A query as a failure message shows it (chains are long).
fn short(q: &str) -> &str {
    &q[..q.len().min(200)]
}

#[test]
fn the_ancestors_http_test_queries_parse() {
    for q in [
        r#"FOR user IN users FILTER user.city == "Berlin" RETURN user"#,
        "FOR user IN users FILTER user.age > 18 RETURN user",
        "FOR user IN users SORT user.age ASC LIMIT 1, 1 RETURN user",
        "FOR v IN 1..2 OUTBOUND 'user1' GRAPH 'social' RETURN v",
        "FOR v, e IN 1..1 OUTBOUND 'user1' GRAPH 'social' FILTER e._weight > 1.5 RETURN v",
        "FOR u IN users COLLECT g = u.city AGGREGATE c = COUNT() RETURN {g, c}",
        "FOR u IN users FILTER u.city == 'Berlin' COLLECT AGGREGATE avgAge = AVG(u.age) RETURN avgAge",
        "FOR u IN users FOR o IN orders FILTER u._key == o.user_id RETURN u",
        "FOR u IN users LET c = u.city RETURN {name: u.name, city: c}",
        r#"FOR d IN articles FILTER FULLTEXT(d.content, "ai") RETURN {title: d.title, score: BM25(d)}"#,
    ] {
        ok(q);
    }
}

#[test]
fn what_the_ancestor_documented_but_never_parsed_parses() {
    for q in [
        // Subqueries, free clause order, COLLECT ... WITH COUNT INTO, comments, indexing.
        "LET a = (FOR x IN xs RETURN x) FOR y IN a RETURN y",
        "FOR u IN users FILTER u.a > 1 LET b = u.a * 2 FILTER b < 10 SORT b DESC RETURN b",
        "FOR u IN users COLLECT city = u.city WITH COUNT INTO n SORT n DESC RETURN {city, n}",
        "// a comment\nFOR d IN docs /* inline */ RETURN d.chunks[0]",
        "FOR d IN docs RETURN d.tags[*].name",
        "FOR v IN OUTBOUND 'a' edges RETURN v",
        "FOR v, e IN OUTBOUND SHORTEST_PATH 'a' TO 'b' GRAPH 'g' RETURN v",
        "FOR d IN @@coll FILTER d.x == @value LIMIT @n RETURN d",
        "FOR d IN docs SORT NEAR(d.embedding, @v) LIMIT 10 RETURN d",
        "RETURN 1",
        "RETURN DISTINCT [1, 2, 3,]",
        "FOR x IN 1..10 FILTER x NOT IN [2, 3] && !(x % 2 == 0) RETURN x > 5 ? 'big' : 'small'",
        "FOR d IN docs FILTER d.name LIKE 'a%' OR d.name =~ '^b' RETURN {[d.key]: d.value, 'q': 1}",
    ] {
        ok(q);
    }
}

#[test]
fn the_tree_says_what_the_query_says() {
    let q = ok("FOR v, e, p IN 2..3 INBOUND @start GRAPH 'g' LIMIT 5 RETURN DISTINCT v._key");
    assert!(q.distinct);
    match &q.ops[0] {
        Op::For {
            vars,
            source:
                Source::Traversal {
                    min,
                    max,
                    direction,
                    start,
                    graph,
                    ..
                },
        } => {
            assert_eq!(vars, &["v", "e", "p"]);
            assert_eq!((min, max), (&Expr::Int(2), &Expr::Int(3)));
            assert_eq!(*direction, Direction::Inbound);
            assert_eq!(start, &Expr::Bind("start".into()));
            assert_eq!(graph, &Some(Expr::Str("g".into())));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        q.ops[1],
        Op::Limit {
            offset: None,
            count: Expr::Int(5)
        }
    );
    let q = ok("RETURN 1 + 2 * 3 == 7 AND NOT false");
    let Expr::Binary(BinOp::And, left, right) = q.ret else {
        panic!()
    };
    assert!(matches!(*left, Expr::Binary(BinOp::Eq, _, _)));
    assert_eq!(*right, Expr::Not(Box::new(Expr::Bool(false))));
    // Keywords are case-insensitive; function names are upper-cased.
    let q = ok("for x in xs return length(x)");
    assert_eq!(
        q.ret,
        Expr::Call("LENGTH".into(), vec![Expr::Name("x".into())])
    );
}

#[test]
fn errors_name_line_column_and_what_was_expected() {
    for (q, line, column, needle) in [
        ("FOR u IN users", 1, 15, "a query ends with RETURN"),
        ("FOR u IN users\nFILTER u.a = 1 RETURN u", 2, 12, "expected"),
        (
            "FOR u IN users RETURN u #",
            1,
            25,
            "unexpected character '#'",
        ),
        ("RETURN 'abc", 1, 8, "unterminated string"),
        ("RETURN @", 1, 8, "bind parameter name"),
        ("FOR IN users RETURN 1", 1, 5, "a variable name after FOR"),
        ("RETURN {a: 1,, b: 2}", 1, 14, "an object key"),
        ("RETURN /* never closed", 1, 8, "unterminated /* comment"),
        ("RETURN 12abc", 1, 8, "a number followed by"),
        ("LIMIT 1", 1, 8, "a query ends with RETURN"),
        ("RETURN 1 RETURN 2", 1, 10, "the end of the query"),
        ("RETURN 'a\\q'", 1, 8, "unknown escape"),
    ] {
        let e = err(q);
        assert_eq!((e.line, e.column), (line, column), "{q}: {e}");
        assert!(e.message.contains(needle), "{q}: {e}");
    }
}

#[test]
fn nesting_is_bounded_with_an_error_not_a_stack_overflow() {
    let deep = format!("RETURN {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(err(&deep).message.contains("levels of nesting"));
    for op in ["-", "+", "!", "NOT "] {
        let deep = format!("RETURN {}1", op.repeat(10_000));
        assert!(err(&deep).message.contains("levels of nesting"), "{op}");
    }
    let deep = format!("RETURN {}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(err(&deep).message.contains("levels of nesting"));
    let deep = format!("RETURN {}1", "{a: ".repeat(10_000));
    assert!(err(&deep).message.contains("levels of nesting"));
    // 30 levels are fine.
    ok(&format!("RETURN {}1{}", "(".repeat(30), ")".repeat(30)));
}

/// Chains are built in loops, but the tree they make is as high as the chain is long, and the
/// evaluator recurses through it: 16,000 `+` once overflowed a worker's stack and aborted the
/// server.
#[test]
fn chains_are_bounded_by_the_height_limit() {
    let chain = |link: &str, n: usize| format!("RETURN 1{}", link.repeat(n));
    // (link, levels each adds)
    for (link, levels) in [
        (" + 1", 1),
        (" - 1", 1),
        (" * 1", 1),
        (" / 1", 1),
        (" % 1", 1),
        (" AND 1", 1),
        (" && 1", 1),
        (" OR 1", 1),
        (" || 1", 1),
        (".a", 1),
        ("[0]", 1),
        ("[*].a", 2),
    ] {
        let e = err(&chain(link, 16_000));
        assert!(e.message.contains("levels high"), "{link}: {e}");
        // Just within the limit (RETURN's expression is one level, `enter` another).
        ok(&chain(link, (HEIGHT_MAX - 3) / levels));
        let over = chain(link, HEIGHT_MAX / levels);
        assert!(err(&over).message.contains("levels high"), "{link}");
    }
    // Siblings do not stack: many chains side by side, each near the limit, are fine.
    let long = " + 1".repeat(HEIGHT_MAX - 10);
    ok(&format!("RETURN [1{long}, 1{long}, {{a: 1{long}}}, F(1{long})]").replace("F(", "LENGTH("));
    // A chain inside a chain counts both.
    let half = " + 1".repeat(HEIGHT_MAX / 2 + 10);
    assert!(
        err(&format!("RETURN 1{half} + (1{half})"))
            .message
            .contains("levels high")
    );
}

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "FOR",
            " x",
            " IN",
            " xs",
            " FILTER",
            " x.a",
            " ==",
            " 1",
            " RETURN",
            " x",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            ".",
            "..",
            "[*]",
            " @p",
            " @@c",
            " 'str'",
            " \"s\"",
            " LET",
            " =",
            " SORT",
            " DESC",
            " LIMIT",
            " COLLECT",
            " AGGREGATE",
            " WITH",
            " COUNT",
            " INTO",
            " OUTBOUND",
            " GRAPH",
            " SHORTEST_PATH",
            " TO",
            " NOT",
            " AND",
            " ?",
            " -",
            " 2.5e3",
            " /*",
            "*/",
            "//",
            "\n",
            " `q`",
            " é",
            " #",
            "\\",
        ]),
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    /// The parser's fuzz target at CI size: any text parses or fails with a position inside
    /// it; it never panics.
    #[test]
    fn any_text_parses_or_fails_cleanly(text in prop_oneof![fragments(), any::<String>()]) {
        if let Err(e) = parse(&text) {
            prop_assert!(e.line >= 1 && e.column >= 1);
            prop_assert!(e.line <= text.lines().count().max(1) + 1);
            prop_assert!(!e.message.is_empty());
        }
    }
}

/// The size estimates bound what SUBSTITUTE and SPLIT build before they build it: a search
/// that is not a string (a number, a list of searches) may match at every character, and a
/// SPLIT without a separator makes one element.
#[test]
fn substitute_and_split_estimates_bound_their_answers() {
    use serde_json::{Value, json};
    let ones = Value::from("1".repeat(1000));
    let stop = usize::MAX;
    // Every '1' becomes eight bytes: 8,000 at least.
    let by_number = super::eval::estimate(
        "SUBSTITUTE",
        &[ones.clone(), json!(1), json!("xxxxxxxx")],
        stop,
    );
    assert!(by_number >= 8_000, "{by_number}");
    let by_list = super::eval::estimate(
        "SUBSTITUTE",
        &[ones.clone(), json!(["1", "11"]), json!("xxxxxxxx")],
        stop,
    );
    assert!(by_list >= 8_000, "{by_list}");
    // One element per '1' at worst.
    let split = super::eval::estimate("SPLIT", &[ones.clone(), json!(1)], stop);
    assert!(split >= 1_000 * 32, "{split}");
    // No separator: the string in a list, not an element per character.
    for args in [vec![ones.clone()], vec![ones.clone(), Value::Null]] {
        let whole = super::eval::estimate("SPLIT", &args, stop);
        assert!((1_000..2_000).contains(&whole), "{whole}");
    }
}
