use std::sync::Arc;

use super::*;
use crate::seam::{ManualClock, MemoryMetaStore};

fn spec(shards: u32, replication: u32, initial_nodes: u32) -> ClusterSpec {
    ClusterSpec {
        shards,
        replication,
        initial_nodes,
    }
}

#[test]
fn placement_spreads_replicas_and_first_replicas() {
    let p = Placement::compute(&spec(6, 3, 3), &[3, 1, 2, 2]).unwrap();
    assert_eq!(
        p.shards,
        [
            vec![1, 2, 3],
            vec![2, 3, 1],
            vec![3, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 1],
            vec![3, 1, 2]
        ]
    );
    let p = Placement::compute(&spec(5, 2, 2), &[1, 2, 3, 4, 5]).unwrap();
    for node in 1..=5 {
        assert_eq!(p.hosted_by(node).len(), 2, "node {node} holds two replicas");
    }
    for shard in &p.shards {
        assert_ne!(
            shard[0], shard[1],
            "replicas of a shard are on distinct nodes"
        );
    }
    assert!(
        Placement::compute(&spec(1, 3, 3), &[1, 2])
            .unwrap_err()
            .contains("2 nodes cannot hold 3 replicas")
    );
    assert_eq!(p.replicas(ShardId(99)), &[] as &[NodeId]);
}

#[test]
fn specs_are_validated() {
    assert!(spec(0, 1, 1).validate().unwrap_err().contains("shards"));
    assert!(
        spec(4, 0, 1)
            .validate()
            .unwrap_err()
            .contains("replication")
    );
    assert!(
        spec(4, 3, 2)
            .validate()
            .unwrap_err()
            .contains("initial nodes")
    );
    spec(4, 3, 3).validate().unwrap();
}

#[tokio::test]
async fn init_is_idempotent_and_refuses_another_spec() {
    let meta = MemoryMetaStore::new();
    assert_eq!(
        init(&meta, spec(4, 3, 3)).await.unwrap(),
        InitOutcome::Created
    );
    assert_eq!(
        init(&meta, spec(4, 3, 3)).await.unwrap(),
        InitOutcome::AlreadyInitialized
    );
    let e = init(&meta, spec(8, 3, 3)).await.unwrap_err();
    assert!(
        e.to_string().contains("already initialized with 4 shards"),
        "{e}"
    );
    assert_eq!(read_spec(&meta).await.unwrap(), Some(spec(4, 3, 3)));
}

#[tokio::test]
async fn placement_waits_for_the_initial_nodes_and_is_written_once() {
    let clock = ManualClock::new(0);
    let meta = MemoryMetaStore::with_clock(Arc::new(clock.clone()));
    let s = spec(3, 2, 3);
    init(&meta, s).await.unwrap();
    let node = |id: NodeId| NodeInfo {
        id,
        api: format!("127.0.0.1:80{id:02}"),
        peer: format!("127.0.0.1:90{id:02}"),
    };
    let ttl = Duration::from_secs(5);
    register(&meta, &node(2), ttl).await.unwrap();
    register(&meta, &node(1), ttl).await.unwrap();
    assert_eq!(ensure_placement(&meta, &s).await.unwrap(), None);
    let lease3 = register(&meta, &node(3), ttl).await.unwrap();
    assert_eq!(
        nodes(&meta)
            .await
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let first = ensure_placement(&meta, &s).await.unwrap().unwrap();
    assert_eq!(first.shards, [vec![1, 2], vec![2, 3], vec![3, 1]]);
    // A node that joins later, or leaves, does not change a written placement.
    register(&meta, &node(4), ttl).await.unwrap();
    clock.advance(Duration::from_secs(3));
    meta.keep_alive(lease3).await.unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        nodes(&meta)
            .await
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(ensure_placement(&meta, &s).await.unwrap(), Some(first));
}
