//! The hand-written schemas agree with the Rust types they describe.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

static URN: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(&urn_pattern(&themis_log::Model::ALL)).unwrap());

/// Strings near the URN grammar: the prefix (or a near miss), then parts drawn from an
/// alphabet with every class of character the grammar cares about, around its length limits.
fn near_urn() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        8 => Just("urn:themis:".to_owned()),
        1 => Just("urn:themis".to_owned()),
        1 => Just("URN:themis:".to_owned()),
    ];
    let model = prop_oneof![
        6 => prop::sample::select(themis_log::Model::ALL.map(|m| m.as_str().to_owned()).to_vec()),
        1 => Just("Document".to_owned()),
        1 => Just("doc".to_owned()),
        1 => Just(String::new()),
    ];
    let part = |max: usize| {
        prop_oneof![
            4 => proptest::string::string_regex(&format!("[a-z0-9_.\\-]{{0,{max}}}")).unwrap(),
            2 => proptest::string::string_regex(&format!("[A-Za-z0-9._~\\-]{{0,{max}}}")).unwrap(),
            1 => proptest::string::string_regex("[a-z:/ %é\\n\\-]{0,8}").unwrap(),
        ]
    };
    (prefix, model, part(70), part(270))
        .prop_map(|(prefix, model, ns, id)| format!("{prefix}{model}:{ns}:{id}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_urn_pattern_admits_exactly_what_urn_parse_admits(text in near_urn()) {
        prop_assert_eq!(
            URN.is_match(&text),
            themis_log::Urn::parse(&text).is_ok(),
            "{:?}",
            text
        );
    }
}

#[test]
fn the_document_urn_pattern_admits_document_urns_only() {
    let pattern = regex::Regex::new(&urn_pattern(&[themis_log::Model::Document])).unwrap();
    assert!(pattern.is_match("urn:themis:document:users:alice"));
    assert!(!pattern.is_match("urn:themis:graph:users:alice"));
}
