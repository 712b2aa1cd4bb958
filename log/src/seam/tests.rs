use rand::Rng;

use super::*;

#[test]
fn seeded_streams_are_reproducible_and_independent() {
    let a = SeededEntropy::new(7);
    let b = SeededEntropy::new(7);
    let x: u64 = a.stream("network").r#gen();
    assert_eq!(x, b.stream("network").r#gen::<u64>());
    assert_ne!(x, a.stream("disk").r#gen::<u64>());
    assert_ne!(x, SeededEntropy::new(8).stream("network").r#gen::<u64>());
}

#[test]
fn random_uuids_are_version_4() {
    let mut rng = SeededEntropy::new(1).stream("ids");
    let id = random_uuid(&mut rng);
    assert_eq!(id.get_version_num(), 4);
    assert_ne!(id, random_uuid(&mut rng));
}

#[test]
fn manual_clock_moves_only_when_told() {
    let clock = ManualClock::new(1_000);
    assert_eq!(clock.wall_ms(), 1_000);
    clock.advance(Duration::from_millis(5));
    assert_eq!(
        (clock.monotonic(), clock.wall_ms()),
        (Duration::from_millis(5), 1_005)
    );
    clock.set_wall_ms(10);
    assert_eq!(
        (clock.monotonic(), clock.wall_ms()),
        (Duration::from_millis(5), 10)
    );
}

#[tokio::test]
async fn memory_meta_store_compares_revisions() {
    let meta = MemoryMetaStore::new();
    let r1 = meta
        .compare_and_put("/a", 0, Bytes::from_static(b"1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        meta.compare_and_put("/a", 0, Bytes::from_static(b"2"))
            .await
            .unwrap(),
        None
    );
    let r2 = meta
        .compare_and_put("/a", r1, Bytes::from_static(b"2"))
        .await
        .unwrap()
        .unwrap();
    assert!(r2 > r1);
    meta.compare_and_put("/b", 0, Bytes::from_static(b"3"))
        .await
        .unwrap()
        .unwrap();
    meta.compare_and_put("/ab", 0, Bytes::from_static(b"4"))
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<_> = meta
        .list("/a")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/a", "/ab"]);
    assert_eq!(
        meta.get("/a").await.unwrap().unwrap().value,
        Bytes::from_static(b"2")
    );
}

#[tokio::test]
async fn memory_meta_store_leases_lapse_by_the_clock_and_take_their_keys() {
    let clock = ManualClock::new(0);
    let meta = MemoryMetaStore::with_clock(Arc::new(clock.clone()));
    let lease = meta.grant_lease(Duration::from_secs(2)).await.unwrap();
    meta.put("/nodes/1", Bytes::from_static(b"n1"), Some(lease))
        .await
        .unwrap();
    meta.put("/kept", Bytes::from_static(b"k"), None)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1_500));
    meta.keep_alive(lease).await.unwrap();
    clock.advance(Duration::from_millis(1_500));
    assert!(
        meta.get("/nodes/1").await.unwrap().is_some(),
        "renewed in time"
    );
    clock.advance(Duration::from_millis(600));
    assert_eq!(meta.get("/nodes/1").await.unwrap(), None, "lapsed");
    assert!(meta.get("/kept").await.unwrap().is_some());
    assert!(matches!(
        meta.keep_alive(lease).await,
        Err(MetaError::LeaseExpired(l)) if l == lease
    ));
    assert!(matches!(
        meta.put("/nodes/1", Bytes::from_static(b"n1"), Some(lease))
            .await,
        Err(MetaError::LeaseExpired(_))
    ));
}

#[tokio::test]
async fn memory_meta_store_watches_wake_on_writes_under_their_prefix() {
    let meta = MemoryMetaStore::new();
    let mut watch = meta.watch("/nodes/").await.unwrap();
    meta.put("/other", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    meta.put("/nodes/1", Bytes::from_static(b"n1"), None)
        .await
        .unwrap();
    // The write outside the prefix is skipped; the one inside wakes the watch.
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("woken")
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.changed())
            .await
            .is_err(),
        "no further change"
    );
}

#[test]
fn raft_randomness_follows_the_seed() {
    let draws = |seed: u64| {
        seed_raft_rng(&SeededEntropy::new(seed));
        (0..5)
            .map(|_| raft_rng().gen_range(150..300u64))
            .collect::<Vec<_>>()
    };
    let a = draws(1);
    assert_eq!(
        a,
        draws(1),
        "the same seed gives the same election timeouts"
    );
    assert_ne!(a, draws(2));
}

#[test]
fn scoped_maps_answer_in_item_order_on_any_thread_count() {
    let items: Vec<u64> = (0..100).collect();
    for threads in [0, 1, 2, 7, 500] {
        let got = map_scoped(&items, threads, |n| n * n);
        let want: Vec<u64> = items.iter().map(|n| n * n).collect();
        assert_eq!(got, want, "{threads} threads");
    }
    assert!(map_scoped(&[] as &[u64], 4, |n| *n).is_empty());
}
