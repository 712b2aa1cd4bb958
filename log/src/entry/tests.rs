use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::event::{Op, Point};

fn arb_event() -> impl Strategy<Value = ProposedEvent> {
    (
        any::<u128>(),
        "[a-z0-9]{1,8}",
        "[A-Za-z0-9._~-]{1,16}",
        0u8..4,
        any::<Option<u64>>(),
        -1e9f64..1e9,
    )
        .prop_map(|(id, ns, key, kind, rev, x)| {
            let (urn, op, data, points) = match kind {
                0 => (
                    format!("urn:themis:document:{ns}:{key}"),
                    Op::Put,
                    Some(format!(r#"{{"x":{x}}}"#)),
                    None,
                ),
                1 => (
                    format!("urn:themis:document:{ns}:{key}"),
                    Op::Delete,
                    None,
                    None,
                ),
                2 => (
                    format!("urn:themis:timeseries:{ns}:{key}"),
                    Op::Points,
                    None,
                    Some(vec![Point(id as i64, x)]),
                ),
                _ => (
                    format!("urn:themis:relational:{ns}:{key}"),
                    Op::Patch,
                    Some("{}".to_owned()),
                    None,
                ),
            };
            ProposedEvent {
                event: Event {
                    id: EventId::from_u128(id),
                    urn: Urn::parse(&urn).unwrap(),
                    event_type: "T".into(),
                    op,
                    data: data.map(|d| RawValue::from_string(d).unwrap()),
                    vector: None,
                    to: None,
                    label: None,
                    points,
                    metadata: None,
                },
                expected: rev.map_or(ExpectedRevision::Any, ExpectedRevision::Exact),
                client_id: id % 2 == 0,
            }
        })
}

proptest! {
    #[test]
    fn proposals_round_trip(
        ts in any::<u64>(),
        batches in proptest::collection::vec(proptest::collection::vec(arb_event(), 0..5), 0..4),
    ) {
        let p = Proposal { ts_ms: ts, batches };
        prop_assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Proposal::decode(&bytes);
    }

    #[test]
    fn truncated_proposals_are_errors(events in proptest::collection::vec(arb_event(), 1..4), cut in any::<prop::sample::Index>()) {
        let bytes = Proposal { ts_ms: 5, batches: vec![events] }.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Proposal::decode(&bytes[..cut]).is_err());
    }
}
