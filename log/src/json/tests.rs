use proptest::prelude::*;

use super::*;

fn refused(text: &str) -> JsonError {
    check(text).expect_err(text)
}

#[test]
fn what_real_clients_sent_and_views_could_not_store_is_refused_with_its_place() {
    for (text, path, needle) in [
        (r#"{"a": "\ud800"}"#, ".a", "escape"),
        (r#"{"a": "\ud800x"}"#, ".a", "escape"),
        (r#"{"a": ["x", "\udc00"]}"#, ".a[1]", "surrogate"),
        (r#"{"a": "\ud800\u0041"}"#, ".a", "surrogate"),
        (r#"{"\ud800": 1}"#, "", "escape"),
        (r#"{"n": 1e999}"#, ".n", "out of range"),
        (r#"{"n": -1e400}"#, ".n", "out of range"),
        (
            &format!(r#"{{"n": {}}}"#, "9".repeat(400)),
            ".n",
            "out of range",
        ),
        (r#"{"a": 1, "a": 2}"#, ".a", "appears twice"),
        (
            r#"{"x y": {"a": 1, "b": 2, "a": 3}}"#,
            r#"["x y"].a"#,
            "appears twice",
        ),
        (r#"{"a": 1} x"#, "", "trailing"),
        (r#"{"a": 1"#, "", "EOF"),
    ] {
        let e = refused(text);
        assert_eq!(e.path, path, "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
}

#[test]
fn nesting_is_limited_to_depth_max() {
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    check(&nested(DEPTH_MAX)).expect("at the limit");
    let e = refused(&nested(DEPTH_MAX + 1));
    assert!(e.message.contains("nested deeper"), "{e}");
    assert_eq!(e.path, "[0]".repeat(DEPTH_MAX));
    let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    check(&objects(DEPTH_MAX)).expect("at the limit");
    refused(&objects(DEPTH_MAX + 1));
    // Far beyond serde_json's own limit: still a clean error.
    refused(&nested(100_000));
}

#[test]
fn ordinary_json_passes() {
    for text in [
        r#"{}"#,
        r#"{"name": "Zoë 😀 \u00e9 \ud83d\ude00", "n": -0, "f": 1.5e300, "i": -9223372036854775808,
            "u": 18446744073709551615, "big": 123456789012345678901234567890, "nul": "\u0000",
            "list": [null, true, false, [], {}], "same": {"a": 1}, "other": {"a": 1}}"#,
    ] {
        check(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

proptest! {
    /// Whatever the text, the check answers (no panic), and what it accepts parses into a
    /// `serde_json::Value` that serializes and parses back equal (what the views do with it).
    #[test]
    fn accepted_text_is_what_views_can_store(text in prop_oneof![
        any::<String>(),
        proptest::collection::vec(prop_oneof![
            Just("{".to_owned()), Just("}".to_owned()), Just("[".to_owned()), Just("]".to_owned()),
            Just(",".to_owned()), Just(":".to_owned()), Just("\"a\"".to_owned()),
            Just("\"\\ud800\"".to_owned()), Just("\"\\udc00\\ud800\"".to_owned()),
            Just("1e999".to_owned()), Just("-0".to_owned()), Just("1e308".to_owned()),
            Just("99999999999999999999999".to_owned()), Just("null".to_owned()),
            Just("\"\\u0000\"".to_owned()), Just(" ".to_owned()),
        ], 0..40).prop_map(|parts| parts.concat()),
    ]) {
        if check(&text).is_ok() {
            let value: serde_json::Value = serde_json::from_str(&text).expect("accepted text parses");
            let again = serde_json::to_string(&value).expect("serializes");
            let back: serde_json::Value = serde_json::from_str(&again).expect("parses back");
            prop_assert_eq!(value, back);
        }
    }
}

#[test]
fn a_repeated_name_is_found_among_many_members() {
    let members: Vec<String> = (0..100_000).map(|i| format!("\"m{i}\": {i}")).collect();
    check(&format!("{{{}}}", members.join(","))).expect("distinct names");
    let e = refused(&format!("{{{}, \"m77\": 0}}", members.join(",")));
    assert_eq!(e.path, ".m77", "{e}");
    // Escaped names are compared by what they say.
    assert_eq!(refused(r#"{"a": 1, "\u0061": 2}"#).path, ".a");
}
