//! The placement ring: which shard holds a URN (`shard = ring(namespace, id)`, DESIGN.md §2).
//! Consistent hashing with 150 virtual nodes per shard and multi-probe lookups; the algorithm, hash
//! inputs and measured balance are in `docs/design/placement.md`. Invariants: placement is a pure
//! function of the shard set and the key (fixed xxh3 seeds, never a per-process random state), and
//! adding a shard only moves keys *to* that shard (removing one only moves keys *from* it).

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::ShardId;
use crate::urn::Urn;

/// Virtual nodes (points on the ring) per shard.
pub const VNODES_PER_SHARD: u32 = 150;

/// Probes per key lookup: the key is hashed to this many ring points and goes to the virtual node
/// closest after any of them. Chosen by measurement (`docs/design/placement.md`).
pub const PROBES_PER_KEY: u32 = 16;

// The seeds are part of the placement format: changing one moves nearly every key.
/// Seed of the hash that places virtual nodes.
const VNODE_SEED: u64 = 0x7468_656d_6973_2d76; // "themis-v"
/// Seed of the key hash that gives the first probe.
const PROBE_START_SEED: u64 = 0x7468_656d_6973_2d6b; // "themis-k"
/// Seed of the key hash that gives the distance between probes.
const PROBE_STEP_SEED: u64 = 0x7468_656d_6973_2d73; // "themis-s"

/// Keys up to this many bytes (a valid URN's namespace, a separator and its id) are hashed from a
/// stack buffer; longer ones only come from unvalidated input and take a heap buffer.
const KEY_BYTES_INLINE: usize = 64 + 1 + 256;

/// A key's placement hash, independent of any ring. Computing it once and looking it up in several
/// rings (the current one and the one after a rebalance) gives the same answer as
/// [`Ring::shard_for`] on each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyHash {
    /// The first probe's point on the ring.
    start: u64,
    /// The distance between consecutive probes; odd, so probes never repeat within 2^64 steps.
    step: u64,
}

impl KeyHash {
    /// The placement hash of the resource `id` in `namespace`. The two are joined with a zero byte,
    /// which no valid namespace contains, so distinct (namespace, id) pairs hash distinct inputs.
    pub fn new(namespace: &str, id: &str) -> KeyHash {
        let len = namespace.len() + 1 + id.len();
        let mut inline = [0u8; KEY_BYTES_INLINE];
        let mut heap = Vec::new();
        let key: &mut [u8] = if len <= KEY_BYTES_INLINE {
            &mut inline[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        key[..namespace.len()].copy_from_slice(namespace.as_bytes());
        key[namespace.len()] = 0;
        key[namespace.len() + 1..].copy_from_slice(id.as_bytes());
        KeyHash {
            start: xxh3_64_with_seed(key, PROBE_START_SEED),
            step: xxh3_64_with_seed(key, PROBE_STEP_SEED) | 1,
        }
    }

    /// The placement hash of a URN's namespace and id (its model plays no part).
    pub fn of_urn(urn: &Urn) -> KeyHash {
        KeyHash::new(urn.namespace(), urn.id())
    }
}

/// A consistent-hashing ring over a set of shards.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ring {
    /// The shards, ascending and distinct.
    shards: Vec<ShardId>,
    /// Virtual node points, ascending (ties broken by shard).
    points: Vec<u64>,
    /// `owners[i]` is the shard of `points[i]`.
    owners: Vec<ShardId>,
    /// `buckets[b]` is the index of the first point whose top `bucket_bits` bits are `>= b`, with a
    /// final entry `points.len()`. It narrows each successor search to about one point.
    buckets: Vec<u32>,
    /// log2 of the number of buckets.
    bucket_bits: u32,
}

impl Ring {
    /// The ring over shards `0..shard_count`.
    ///
    /// # Panics
    /// If `shard_count` is zero: a database has at least one shard.
    pub fn new(shard_count: u32) -> Ring {
        Ring::from_shards((0..shard_count).map(ShardId))
    }

    /// The ring over the given shards (duplicates are ignored). Placement depends only on the set,
    /// not on the order.
    ///
    /// # Panics
    /// If there is no shard: a database has at least one shard.
    pub fn from_shards(shards: impl IntoIterator<Item = ShardId>) -> Ring {
        let shards: Vec<ShardId> = shards
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert!(!shards.is_empty(), "a ring needs at least one shard");
        let vnodes = shards.len() * VNODES_PER_SHARD as usize;
        assert!(
            u32::try_from(vnodes).is_ok(),
            "{} shards are too many for one ring",
            shards.len()
        );
        let mut nodes: Vec<(u64, ShardId)> = Vec::with_capacity(vnodes);
        for &shard in &shards {
            for vnode in 0..VNODES_PER_SHARD {
                nodes.push((vnode_point(shard, vnode), shard));
            }
        }
        nodes.sort_unstable();
        // About one point per bucket: enough to make lookups O(1) without a large table.
        let bucket_bits = (vnodes as u64)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, 24);
        let mut buckets = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut next = 0usize;
        for bucket in 0..1u64 << bucket_bits {
            while next < nodes.len() && nodes[next].0 >> (64 - bucket_bits) < bucket {
                next += 1;
            }
            buckets.push(next as u32);
        }
        buckets.push(nodes.len() as u32);
        let ring = Ring {
            shards,
            points: nodes.iter().map(|n| n.0).collect(),
            owners: nodes.iter().map(|n| n.1).collect(),
            buckets,
            bucket_bits,
        };
        debug_assert_eq!(ring.validate(), Ok(()));
        ring
    }

    /// The shard that holds resource `id` in `namespace`.
    pub fn shard_for(&self, namespace: &str, id: &str) -> ShardId {
        self.shard_for_key(KeyHash::new(namespace, id))
    }

    /// The shard that holds `urn`: that of its namespace and id.
    pub fn shard_for_urn(&self, urn: &Urn) -> ShardId {
        self.shard_for_key(KeyHash::of_urn(urn))
    }

    /// The shard for a precomputed key hash. Each probe finds the first virtual node at or after it
    /// (wrapping around); the key goes to the node with the shortest such distance, the earliest
    /// probe winning a tie.
    pub fn shard_for_key(&self, key: KeyHash) -> ShardId {
        let mut best: Option<(u64, usize)> = None;
        let mut probe = key.start;
        for _ in 0..PROBES_PER_KEY {
            let index = self.successor(probe);
            let distance = self.points[index].wrapping_sub(probe);
            if best.is_none_or(|(shortest, _)| distance < shortest) {
                best = Some((distance, index));
            }
            probe = probe.wrapping_add(key.step);
        }
        let (_, index) = best.expect("at least one probe");
        self.owners[index]
    }

    /// The shards, ascending.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    /// Checks the ring's internal structure; used by tests and the simulator.
    pub fn validate(&self) -> Result<(), String> {
        let vnodes = self.shards.len() * VNODES_PER_SHARD as usize;
        if self.shards.is_empty() || !self.shards.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!(
                "shards {:?} are empty or not strictly ascending",
                self.shards
            ));
        }
        if self.points.len() != vnodes || self.owners.len() != vnodes {
            return Err(format!(
                "{} points and {} owners for {vnodes} virtual nodes",
                self.points.len(),
                self.owners.len()
            ));
        }
        if !self.points.windows(2).all(|w| w[0] <= w[1]) {
            return Err("points are not sorted".into());
        }
        let mut owned: BTreeMap<ShardId, u32> = BTreeMap::new();
        for &owner in &self.owners {
            *owned.entry(owner).or_default() += 1;
        }
        for (shard, count) in owned {
            if self.shards.binary_search(&shard).is_err() || count != VNODES_PER_SHARD {
                return Err(format!("shard {shard} owns {count} virtual nodes"));
            }
        }
        let shift = 64 - self.bucket_bits;
        let bucket_count = 1usize << self.bucket_bits;
        if self.buckets.len() != bucket_count + 1 || self.buckets[bucket_count] as usize != vnodes {
            return Err("bucket index has the wrong length".into());
        }
        for (bucket, pair) in self.buckets.windows(2).enumerate() {
            let (start, end) = (pair[0] as usize, pair[1] as usize);
            let misplaced = start > end
                || self.points[start..end]
                    .iter()
                    .any(|&p| (p >> shift) as usize != bucket);
            if misplaced {
                return Err(format!("bucket {bucket} indexes points outside it"));
            }
        }
        Ok(())
    }

    /// Index of the first point `>= probe`, wrapping to 0 past the last point.
    fn successor(&self, probe: u64) -> usize {
        let bucket = (probe >> (64 - self.bucket_bits)) as usize;
        let start = self.buckets[bucket] as usize;
        let end = self.buckets[bucket + 1] as usize;
        // Points in `start..end` share the probe's bucket; every later point lies in a later bucket
        // and so is greater than the probe. The scan is over about one point.
        // A plain loop rather than iterator adaptors: tests run this millions of times in debug
        // builds.
        let mut index = start;
        while index < end && self.points[index] < probe {
            index += 1;
        }
        if index == self.points.len() { 0 } else { index }
    }
}

/// The ring point of virtual node `vnode` of `shard`: a fixed hash of both, little-endian.
fn vnode_point(shard: ShardId, vnode: u32) -> u64 {
    let mut input = [0u8; 8];
    input[..4].copy_from_slice(&shard.0.to_le_bytes());
    input[4..].copy_from_slice(&vnode.to_le_bytes());
    xxh3_64_with_seed(&input, VNODE_SEED)
}

#[cfg(test)]
mod tests;
