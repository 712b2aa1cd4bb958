use super::*;

fn input(json: &str) -> EventInput {
    serde_json::from_str(json).unwrap()
}

fn validate(json: &str) -> Result<(Event, Option<ExpectedRevision>), InvalidEvent> {
    let mut n = 0u128;
    input(json).validate(None, &EventLimits::default(), &mut || {
        n += 1;
        EventId::from_u128(n)
    })
}

#[test]
fn a_document_put_is_accepted_and_keeps_its_json_text() {
    let (event, expected) = validate(
        r#"{"urn":"urn:themis:document:users:alice","op":"put","data":{"b":1, "a":[1,2]},"expected_revision":"no_stream"}"#,
    )
    .unwrap();
    assert_eq!(event.event_type, "put");
    assert_eq!(event.data.unwrap().get(), r#"{"b":1, "a":[1,2]}"#);
    assert_eq!(expected, Some(ExpectedRevision::NoStream));
    assert_eq!(event.id, EventId::from_u128(1));
}

#[test]
fn each_bad_input_names_its_problem() {
    let cases = [
        (
            r#"{"urn":"urn:themis:document:Users:a","op":"put","data":{}}"#,
            "invalid_urn",
            "urn",
        ),
        (
            r#"{"urn":"urn:themis:document:u:a","op":"link","to":"urn:themis:graph:g:b","label":"x"}"#,
            "invalid_op",
            "op",
        ),
        (
            r#"{"urn":"urn:themis:document:u:a","op":"put"}"#,
            "missing_field",
            "data",
        ),
        (
            r#"{"urn":"urn:themis:document:u:a","op":"put","data":[1]}"#,
            "invalid_field",
            "data",
        ),
        (
            r#"{"urn":"urn:themis:document:u:a","op":"delete","data":{}}"#,
            "unexpected_field",
            "data",
        ),
        (
            r#"{"urn":"urn:themis:vector:v:a","op":"put","vector":[]}"#,
            "invalid_field",
            "vector",
        ),
        (
            r#"{"urn":"urn:themis:vector:v:a","op":"put","vector":[1e300]}"#,
            "invalid_field",
            "vector[0]",
        ),
        (
            r#"{"urn":"urn:themis:graph:g:a","op":"link","to":"urn:themis:document:d:b","label":"x"}"#,
            "invalid_field",
            "to",
        ),
        (
            r#"{"urn":"urn:themis:graph:g:a","op":"link","to":"urn:themis:graph:g:b"}"#,
            "missing_field",
            "label",
        ),
        (
            r#"{"urn":"urn:themis:timeseries:cpu:a","op":"points","points":[]}"#,
            "invalid_field",
            "points",
        ),
        (
            r#"{"urn":"urn:themis:timeseries:cpu:a","op":"points","points":[[1,2]],"data":{"x":1}}"#,
            "invalid_field",
            "data.x",
        ),
        (
            r#"{"urn":"urn:themis:timeseries:cpu:a","op":"points","points":[[1,2]],"data":{"tags":{"host":1}}}"#,
            "invalid_field",
            "data.tags.host",
        ),
        (
            r#"{"urn":"urn:themis:timeseries:cpu:a","op":"put","data":{}}"#,
            "invalid_op",
            "op",
        ),
        (
            r#"{"urn":"urn:themis:document:u:a","op":"put","type":"","data":{}}"#,
            "invalid_field",
            "type",
        ),
        (r#"{"op":"put","data":{}}"#, "missing_field", "urn"),
    ];
    for (json, code, field) in cases {
        let err = validate(json).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_str()),
            (code, field),
            "{json}: {err}"
        );
        assert!(!err.message.is_empty());
    }
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_str::<EventInput>(r#"{"urn":"u","op":"put","dta":{}}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `dta`"), "{err}");
}

#[test]
fn expected_revision_accepts_the_documented_forms() {
    for (json, want) in [
        (r#""any""#, ExpectedRevision::Any),
        (r#""no_stream""#, ExpectedRevision::NoStream),
        (r#""exists""#, ExpectedRevision::Exists),
        ("-1", ExpectedRevision::NoStream),
        ("7", ExpectedRevision::Exact(7)),
    ] {
        assert_eq!(
            serde_json::from_str::<ExpectedRevision>(json).unwrap(),
            want
        );
    }
    assert!(serde_json::from_str::<ExpectedRevision>("-2").is_err());
    assert!(serde_json::from_str::<ExpectedRevision>(r#""soon""#).is_err());
    assert!(ExpectedRevision::Exact(3).admits(Some(3)));
    assert!(!ExpectedRevision::Exact(3).admits(None));
    assert!(ExpectedRevision::Exists.admits(Some(0)));
}

#[test]
fn every_kind_of_event_round_trips_through_the_binary_encoding() {
    let jsons = [
        r#"{"urn":"urn:themis:document:users:alice","op":"patch","data":{"x":null},"metadata":{"trace":"t"}}"#,
        r#"{"urn":"urn:themis:vector:emb:a","op":"put","vector":[0.5,-1,3.25],"data":{"tag":"x"}}"#,
        r#"{"urn":"urn:themis:graph:social:a","op":"link","to":"urn:themis:graph:social:b","label":"follows","data":{"w":2}}"#,
        r#"{"urn":"urn:themis:timeseries:cpu:host-1","op":"points","points":[[1,0.5],[2,-0.0]]}"#,
        r#"{"urn":"urn:themis:relational:orders:o-1","op":"delete","type":"OrderCancelled"}"#,
    ];
    for json in jsons {
        let (event, _) = validate(json).unwrap();
        let mut w = Writer::default();
        event.encode(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Event::decode(&mut r).unwrap(), event, "{json}");
        assert!(r.is_empty());
    }
}

#[test]
fn json_numbers_parse_to_the_nearest_double() {
    // serde_json's default float parser may be one ULP off; the workspace enables its
    // `float_roundtrip` feature so that a value read from JSON is the value written.
    for text in [
        "-95365.14274460259",
        "0.30000000000000004",
        "2.2250738585072011e-308",
        "1.7976931348623157e308",
        "123456.78901234567",
    ] {
        let parsed: f64 = serde_json::from_str(text).unwrap();
        assert_eq!(
            parsed.to_bits(),
            text.parse::<f64>().unwrap().to_bits(),
            "{text}"
        );
    }
}
