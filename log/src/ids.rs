//! Identifier newtypes of the log: `ShardId`, `Lsn` and the `Position` pair. Invariant: on the
//! wire and on disk each is its bare number (`Position` is `{"shard":…,"lsn":…}`), so the
//! newtypes cost nothing in encodings and can never be mixed up in code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A shard: one partition of the URN space with one write log (DESIGN.md §2).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ShardId(pub u32);

/// A log sequence number: the position of a committed entry in one shard's log.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

/// A committed entry's place in the whole database: its shard and its LSN in that shard's log.
/// Ordered by shard, then LSN; positions of different shards are not comparable in time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Position {
    /// The shard whose log holds the entry.
    pub shard: ShardId,
    /// The entry's LSN in that log.
    pub lsn: Lsn,
}

impl Position {
    /// The position of entry `lsn` in the log of `shard`.
    pub fn new(shard: ShardId, lsn: Lsn) -> Position {
        Position { shard, lsn }
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Position {
    /// `shard 3 lsn 17`, for messages and logs (the wire form is the JSON object).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} lsn {}", self.shard, self.lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_is_transparent_and_position_is_an_object() {
        let position = Position::new(ShardId(0), Lsn(12));
        let json = serde_json::to_string(&position).unwrap();
        assert_eq!(json, r#"{"shard":0,"lsn":12}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), position);
        assert_eq!(serde_json::to_string(&ShardId(7)).unwrap(), "7");
        assert_eq!(
            serde_json::from_str::<Lsn>("18446744073709551615").unwrap(),
            Lsn(u64::MAX)
        );
        assert!(serde_json::from_str::<ShardId>("4294967296").is_err());
    }

    #[test]
    fn display_and_order() {
        assert_eq!(ShardId(3).to_string(), "3");
        assert_eq!(Lsn(17).to_string(), "17");
        assert_eq!(
            Position::new(ShardId(3), Lsn(17)).to_string(),
            "shard 3 lsn 17"
        );
        assert!(Position::new(ShardId(0), Lsn(9)) < Position::new(ShardId(1), Lsn(0)));
        assert!(Position::new(ShardId(1), Lsn(1)) < Position::new(ShardId(1), Lsn(2)));
    }
}
