use super::*;

fn err(input: &str) -> UrnError {
    Urn::parse(input).expect_err(input)
}

#[test]
fn parses_parts_and_keeps_the_canonical_string() {
    let urn = Urn::parse("urn:themis:document:acme.orders:Order-17_a~b.c").unwrap();
    assert_eq!(urn.model(), Model::Document);
    assert_eq!(urn.namespace(), "acme.orders");
    assert_eq!(urn.id(), "Order-17_a~b.c");
    assert_eq!(
        urn.as_str(),
        "urn:themis:document:acme.orders:Order-17_a~b.c"
    );
    assert_eq!(urn.to_string(), urn.as_str());
    assert_eq!(urn.as_str().parse::<Urn>().unwrap(), urn);
}

#[test]
fn every_model_parses_and_new_agrees_with_parse() {
    for model in Model::ALL {
        let text = format!("urn:themis:{model}:users:alice");
        let parsed = Urn::parse(&text).unwrap();
        assert_eq!(parsed.model(), model);
        assert_eq!(Urn::new(model, "users", "alice").unwrap(), parsed);
        assert_eq!(model.as_str().parse::<Model>().unwrap(), model);
    }
}

#[test]
fn limits_are_inclusive() {
    let ns = "n".repeat(NAMESPACE_LEN_MAX);
    let id = "i".repeat(ID_LEN_MAX);
    let urn = Urn::new(Model::Graph, &ns, &id).unwrap();
    assert_eq!(urn.namespace(), ns);
    assert_eq!(urn.id(), id);
    assert_eq!(
        Urn::new(Model::Graph, "a", "b").unwrap().as_str(),
        "urn:themis:graph:a:b"
    );
}

#[test]
fn missing_prefix() {
    for input in [
        "",
        "urn:themis",
        "URN:themis:document:users:a",
        "urn:thems:document:users:a",
    ] {
        assert!(
            matches!(err(input), UrnError::MissingPrefix { .. }),
            "{input}"
        );
    }
    assert_eq!(
        err("users/alice").to_string(),
        r#"invalid urn "users/alice": must start with "urn:themis:""#
    );
}

#[test]
fn too_few_parts() {
    assert_eq!(
        err("urn:themis:document"),
        UrnError::TooFewParts {
            input: "urn:themis:document".into(),
            found: 1,
        }
    );
    assert_eq!(
        err("urn:themis:document:users").to_string(),
        "invalid urn \"urn:themis:document:users\": expected \
         urn:themis:{model}:{namespace}:{id}, found 2 of 3 parts after the prefix"
    );
}

#[test]
fn unknown_model_lists_the_allowed_ones() {
    let e = err("urn:themis:Document:users:a");
    assert_eq!(
        e,
        UrnError::UnknownModel {
            input: "urn:themis:Document:users:a".into(),
            model: "Document".into(),
            column: 12,
        }
    );
    assert_eq!(
        e.to_string(),
        "invalid urn \"urn:themis:Document:users:a\": unknown model \"Document\" at column 12; \
         allowed are relational, document, graph, vector, timeseries"
    );
    assert!(matches!(
        err("urn:themis::users:a"),
        UrnError::UnknownModel { .. }
    ));
    assert_eq!(
        "table".parse::<Model>().unwrap_err().to_string(),
        "unknown model \"table\"; allowed are relational, document, graph, vector, timeseries"
    );
}

#[test]
fn empty_namespace() {
    assert_eq!(
        err("urn:themis:document::a"),
        UrnError::EmptyNamespace {
            input: "urn:themis:document::a".into(),
            column: 21,
        }
    );
    assert!(matches!(
        Urn::new(Model::Document, "", "a"),
        Err(UrnError::EmptyNamespace { .. })
    ));
}

#[test]
fn namespace_too_long() {
    let ns = "n".repeat(NAMESPACE_LEN_MAX + 1);
    let e = Urn::new(Model::Vector, &ns, "a").unwrap_err();
    assert_eq!(
        e,
        UrnError::NamespaceTooLong {
            input: format!("urn:themis:vector:{ns}:a"),
            column: 19,
            len: 65,
        }
    );
    assert!(
        e.to_string()
            .ends_with("namespace at column 19 is 65 characters long; the maximum is 64")
    );
}

#[test]
fn namespace_character_is_named_with_its_column() {
    let e = err("urn:themis:document:Users:a");
    assert_eq!(
        e.to_string(),
        "invalid urn \"urn:themis:document:Users:a\": namespace has 'U' at column 21; \
         allowed are a-z 0-9 _ . -"
    );
    // Control characters are shown escaped, so the message stays on one line.
    let e = err("urn:themis:graph:ab\ncd:x");
    assert_eq!(
        e,
        UrnError::NamespaceChar {
            input: "urn:themis:graph:ab\ncd:x".into(),
            ch: '\n',
            column: 20,
        }
    );
    assert!(e.to_string().contains(r"namespace has '\n' at column 20"));
    // A `:` passed to `new` is a namespace character, not a separator.
    assert!(matches!(
        Urn::new(Model::Graph, "a:b", "c"),
        Err(UrnError::NamespaceChar {
            ch: ':',
            column: 19,
            ..
        })
    ));
}

#[test]
fn empty_id() {
    assert_eq!(
        err("urn:themis:document:users:"),
        UrnError::EmptyId {
            input: "urn:themis:document:users:".into(),
            column: 27,
        }
    );
}

#[test]
fn id_too_long() {
    let id = "x".repeat(ID_LEN_MAX + 1);
    let e = err(&format!("urn:themis:timeseries:cpu:{id}"));
    assert!(
        matches!(
            e,
            UrnError::IdTooLong {
                column: 27,
                len: 257,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .ends_with("id at column 27 is 257 characters long; the maximum is 256")
    );
}

#[test]
fn id_character_is_named_with_its_column() {
    let e = err("urn:themis:document:users:al ice");
    assert_eq!(
        e.to_string(),
        "invalid urn \"urn:themis:document:users:al ice\": id has ' ' at column 29; \
         allowed are A-Z a-z 0-9 - . _ ~"
    );
    // A fourth `:` belongs to the id, which may not contain it.
    assert!(matches!(
        err("urn:themis:document:users:a:b"),
        UrnError::IdChar {
            ch: ':',
            column: 28,
            ..
        }
    ));
    // Non-ASCII characters are reported whole, at the column where they start.
    assert!(matches!(
        err("urn:themis:document:users:caf\u{e9}"),
        UrnError::IdChar {
            ch: '\u{e9}',
            column: 30,
            ..
        }
    ));
    for bad in ["%20", "a/b", "a+b", "a?b", "a#b", "a@b"] {
        assert!(matches!(
            err(&format!("urn:themis:document:users:{bad}")),
            UrnError::IdChar { .. }
        ));
    }
}

#[test]
fn every_error_has_the_invalid_urn_code() {
    assert_eq!(err("x").code(), "invalid_urn");
    assert_eq!(err("urn:themis:document:users:").code(), "invalid_urn");
}

#[test]
fn huge_inputs_are_cut_in_messages() {
    let input = format!("urn:themis:document:users:{}", "é".repeat(10_000));
    let message = err(&input).to_string();
    assert!(message.len() < 600, "{}", message.len());
    assert!(message.contains("...\""));
}

#[test]
fn serde_uses_the_string_and_validates() {
    let urn = Urn::parse("urn:themis:graph:social:bob").unwrap();
    let json = serde_json::to_string(&urn).unwrap();
    assert_eq!(json, r#""urn:themis:graph:social:bob""#);
    assert_eq!(serde_json::from_str::<Urn>(&json).unwrap(), urn);
    let bad = serde_json::from_str::<Urn>(r#""urn:themis:graph:Social:bob""#).unwrap_err();
    assert!(
        bad.to_string().contains("namespace has 'S' at column 18"),
        "{bad}"
    );
    // Escaped JSON strings (which cannot be borrowed) deserialize too.
    assert_eq!(
        serde_json::from_str::<Urn>(r#""urn:themis:graph:social:b\u006fb""#).unwrap(),
        urn
    );
    assert_eq!(
        serde_json::to_string(&Model::Timeseries).unwrap(),
        r#""timeseries""#
    );
    assert_eq!(
        serde_json::from_str::<Model>(r#""vector""#).unwrap(),
        Model::Vector
    );
    assert!(serde_json::from_str::<Model>(r#""Vector""#).is_err());
}

#[test]
fn order_is_string_order() {
    let mut urns: Vec<Urn> = [
        "urn:themis:graph:b:x",
        "urn:themis:document:z:a",
        "urn:themis:graph:a:y",
    ]
    .into_iter()
    .map(|s| Urn::parse(s).unwrap())
    .collect();
    urns.sort();
    let sorted: Vec<&str> = urns.iter().map(Urn::as_str).collect();
    assert_eq!(
        sorted,
        [
            "urn:themis:document:z:a",
            "urn:themis:graph:a:y",
            "urn:themis:graph:b:x"
        ]
    );
}

#[test]
fn dot_namespaces_are_refused_but_decode_from_the_log() {
    for ns in [".", ".."] {
        let text = format!("urn:themis:document:{ns}:x");
        let e = err(&text);
        assert!(
            matches!(e, UrnError::DotNamespace { column: 21, .. }),
            "{e}"
        );
        assert!(Urn::new(Model::Vector, ns, "x").is_err());
        // Entries an older version accepted still decode.
        assert_eq!(Urn::parse_logged(&text).unwrap().namespace(), ns);
    }
    for ns in ["...", ".a", "a.", "a..b", "-", "_x"] {
        Urn::parse(&format!("urn:themis:document:{ns}:x")).unwrap();
    }
}

/// Namespaces become directory names of the index files: none may escape its directory, name
/// a special entry, or share a file name with another namespace.
#[test]
fn hostile_namespaces_get_plain_distinct_file_names() {
    let hostile = [
        ".",
        "..",
        "...",
        "",
        "a/b",
        "../x",
        "/etc",
        "a\\b",
        "a\0b",
        "con",
        "nul",
        "aux.txt",
        " ",
        " .",
        "-rf",
        "~",
        "%2e",
        "%",
        "a%b",
        "Ä",
        "😀",
        "\n",
        "a:b",
        "*",
        "?",
        &"a".repeat(64),
        &"a".repeat(65),
        &".".repeat(64),
        "orders",
        "acme.orders",
        "x_1-2",
    ];
    let mut seen = std::collections::BTreeMap::new();
    for ns in hostile {
        let name = namespace_file_name(ns);
        let components: Vec<_> = std::path::Path::new(&name).components().collect();
        assert!(
            matches!(components[..], [std::path::Component::Normal(_)]),
            "{ns:?} -> {name:?}"
        );
        assert!(!name.contains(['/', '\\', '\0', ':']), "{ns:?} -> {name:?}");
        assert!(name.len() <= 255 && !name.is_empty(), "{ns:?} -> {name:?}");
        if let Some(other) = seen.insert(name.clone(), ns) {
            panic!("{ns:?} and {other:?} share the file name {name:?}");
        }
    }
    // Plain names keep their name, so existing index directories stay where they are.
    for ns in ["orders", "acme.orders", "x_1-2", "..."] {
        assert_eq!(namespace_file_name(ns), ns);
    }
}
