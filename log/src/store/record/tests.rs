use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership};

use super::*;

fn entries() -> Vec<Entry> {
    let id = |i| LogId::new(CommittedLeaderId::new(3, 7), i);
    let members = Membership::<u64, BasicNode>::new(vec![[1u64].into()], None);
    vec![
        Entry {
            log_id: id(0),
            payload: EntryPayload::Membership(members),
        },
        Entry {
            log_id: id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: id(2),
            payload: EntryPayload::Normal(Proposal {
                ts_ms: 9,
                batches: vec![vec![]],
            }),
        },
    ]
}

#[test]
fn records_round_trip_and_chain() {
    let mut prev = GENESIS;
    for entry in entries() {
        let (frame, chain) = encode(&entry, &prev);
        let decoded = decode(&frame, &"t").unwrap();
        assert_eq!(decoded.entry, entry);
        assert_eq!(decoded.prev, prev);
        assert_eq!(decoded.chain, chain);
        assert_eq!(chain_of_frame(&frame), chain);
        prev = chain;
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let (frame, _) = encode(&entries()[2], &GENESIS);
    for i in 0..frame.len() {
        for bit in 0..8 {
            let mut bad = frame.clone();
            bad[i] ^= 1 << bit;
            assert!(
                decode(&bad, &"t").is_err(),
                "flip of bit {bit} in byte {i} went unnoticed"
            );
        }
    }
}
