use proptest::prelude::*;

use super::*;
use crate::urn::Model;

/// The lookup spelled out without the bucket index: every probe scans every point.
fn reference_shard(ring: &Ring, key: KeyHash) -> ShardId {
    let mut candidates = Vec::new();
    for j in 0..u64::from(PROBES_PER_KEY) {
        let probe = key.start.wrapping_add(j.wrapping_mul(key.step));
        let successor = (0..ring.points.len())
            .find(|&i| ring.points[i] >= probe)
            .unwrap_or(0);
        // Shortest distance first, then earliest probe.
        candidates.push((
            ring.points[successor].wrapping_sub(probe),
            j,
            ring.owners[successor],
        ));
    }
    candidates.iter().min().expect("probes").2
}

#[test]
fn rings_are_valid_at_every_size() {
    for n in [1, 2, 3, 7, 64, 200] {
        let ring = Ring::new(n);
        assert_eq!(ring.validate(), Ok(()), "{n} shards");
        assert_eq!(ring.shards().len(), n as usize);
    }
    // Shard ids need not be dense.
    let sparse = Ring::from_shards([ShardId(u32::MAX), ShardId(7), ShardId(1_000)]);
    assert_eq!(sparse.validate(), Ok(()));
    assert!(
        sparse
            .shards()
            .contains(&sparse.shard_for("users", "alice"))
    );
}

#[test]
fn validate_catches_a_broken_index() {
    let mut ring = Ring::new(4);
    ring.buckets[3] += 1;
    assert!(ring.validate().is_err());
    let mut ring = Ring::new(4);
    ring.owners[0] = ShardId(9);
    assert!(ring.validate().unwrap_err().contains("owns"));
    let mut ring = Ring::new(4);
    ring.points.swap(0, 1);
    assert!(ring.validate().is_err());
}

#[test]
fn placement_depends_on_the_shard_set_only() {
    let a = Ring::from_shards([3, 1, 2, 1, 0].map(ShardId));
    assert_eq!(a, Ring::new(4));
    assert_eq!(a.shards(), [0, 1, 2, 3].map(ShardId));
}

#[test]
fn one_shard_takes_everything() {
    let ring = Ring::from_shards([ShardId(7)]);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(ring.shard_for("users", id), ShardId(7));
    }
}

#[test]
fn the_model_plays_no_part() {
    let ring = Ring::new(32);
    for id in ["alice", "bob", "carol", "0", "~"] {
        let shards: Vec<ShardId> = Model::ALL
            .iter()
            .map(|&m| ring.shard_for_urn(&Urn::new(m, "users", id).unwrap()))
            .collect();
        assert!(shards.iter().all(|&s| s == shards[0]), "{id}: {shards:?}");
        assert_eq!(ring.shard_for("users", id), shards[0]);
    }
}

#[test]
fn key_hash_joins_namespace_and_id_with_a_zero_byte() {
    assert_ne!(KeyHash::new("ab", "c"), KeyHash::new("a", "bc"));
    let long_id = "x".repeat(KEY_BYTES_INLINE);
    for (namespace, id) in [("users", "alice"), ("a", long_id.as_str())] {
        let joined = format!("{namespace}\0{id}");
        let expected = KeyHash {
            start: xxh3_64_with_seed(joined.as_bytes(), PROBE_START_SEED),
            step: xxh3_64_with_seed(joined.as_bytes(), PROBE_STEP_SEED) | 1,
        };
        assert_eq!(KeyHash::new(namespace, id), expected);
    }
}

#[test]
fn successor_wraps_around_and_includes_equal_points() {
    let ring = Ring::new(3);
    let last = *ring.points.last().unwrap();
    assert_eq!(ring.successor(last), ring.points.len() - 1);
    if last < u64::MAX {
        assert_eq!(ring.successor(last + 1), 0);
    }
    assert_eq!(ring.successor(0), 0);
    assert_eq!(ring.successor(ring.points[10]), 10);
    assert_eq!(ring.successor(ring.points[10] + 1), 11);
}

proptest! {
    /// The bucket index is only a shortcut: it finds what a full scan finds.
    #[test]
    fn lookup_matches_the_reference(n in 1u32..40, start in any::<u64>(), step in any::<u64>()) {
        let ring = Ring::new(n);
        let key = KeyHash { start, step: step | 1 };
        prop_assert_eq!(ring.shard_for_key(key), reference_shard(&ring, key));
    }
}
