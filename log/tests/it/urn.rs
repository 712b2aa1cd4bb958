//! URN grammar properties: every valid URN round-trips through text and JSON, and every invalid
//! string is rejected with a column inside the input (never a panic).

use proptest::prelude::*;
use themis_log::urn::{Model, Urn, UrnError};

fn model() -> impl Strategy<Value = Model> {
    prop::sample::select(Model::ALL.to_vec())
}

proptest! {
    #[test]
    fn valid_urns_round_trip(
        model in model(),
        namespace in "[a-z0-9_.-]{1,64}",
        id in "[A-Za-z0-9._~-]{1,256}",
    ) {
        // The two names that are directory names are refused (see the unit tests).
        prop_assume!(namespace != "." && namespace != "..");
        let urn = Urn::new(model, &namespace, &id).unwrap();
        prop_assert_eq!(urn.model(), model);
        prop_assert_eq!(urn.namespace(), namespace.as_str());
        prop_assert_eq!(urn.id(), id.as_str());
        let text = format!("urn:themis:{model}:{namespace}:{id}");
        prop_assert_eq!(urn.as_str(), text.as_str());
        prop_assert_eq!(Urn::parse(&text).unwrap(), urn.clone());
        let json = serde_json::to_string(&urn).unwrap();
        prop_assert_eq!(serde_json::from_str::<Urn>(&json).unwrap(), urn);
    }

    /// Arbitrary text after the prefix either parses to itself or names a column inside the input.
    #[test]
    fn invalid_urns_name_a_column_inside_the_input(rest in "\\PC{0,80}|[a-z:]{0,30}") {
        let input = format!("urn:themis:{rest}");
        match Urn::parse(&input) {
            Ok(urn) => prop_assert_eq!(urn.as_str(), input.as_str()),
            Err(e) => {
                prop_assert_eq!(e.code(), "invalid_urn");
                let column = match &e {
                    UrnError::UnknownModel { column, .. }
                    | UrnError::EmptyNamespace { column, .. }
                    | UrnError::NamespaceTooLong { column, .. }
                    | UrnError::NamespaceChar { column, .. }
                    | UrnError::EmptyId { column, .. }
                    | UrnError::IdTooLong { column, .. }
                    | UrnError::IdChar { column, .. } => Some(*column),
                    UrnError::TooFewParts { .. } => None,
                    other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                if let Some(column) = column {
                    // Columns start after the prefix and may point one past the end (an empty id).
                    prop_assert!(column >= 12, "{}", e);
                    prop_assert!(column <= input.chars().count() + 1, "{} for {:?}", e, input);
                }
                let message = e.to_string();
                prop_assert!(message.starts_with("invalid urn \""));
                prop_assert!(!message.contains('\n'));
            }
        }
    }
}
