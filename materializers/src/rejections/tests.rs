use super::*;

#[test]
fn key_ranges_of_shards_do_not_overlap() {
    // Shard 1's range must not hold shard 10's keys.
    let (from, to) = bounds("document", ShardId(1));
    let ten = format!("{}{:020}", prefix("document", ShardId(10)), 5);
    assert!(!(from.as_str() <= ten.as_str() && ten.as_str() < to.as_str()));
    let one = format!("{}{:020}", prefix("document", ShardId(1)), 5);
    assert!(from.as_str() <= one.as_str() && one.as_str() < to.as_str());
}
