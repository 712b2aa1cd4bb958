use std::sync::Arc;

use openraft::storage::RaftLogStorageExt;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};
use themis_storage::{Disk, FileDisk, MemoryDisk};

use super::*;
use crate::entry::{Proposal, ProposedEvent};
use crate::event::{Event, Op};
use crate::urn::Urn;

/// Stores on in-memory disks; `.0` runs storage work inline (the simulator's mode).
struct MemoryStores(bool);

impl StoreBuilder<TypeConfig, ShardStore, ShardStateMachine, ()> for MemoryStores {
    async fn build(&self) -> StorageResult<((), ShardStore, ShardStateMachine)> {
        let disk = MemoryDisk::new();
        let db = disk.open_database("s").map_err(storage_error)?;
        let (store, sm) = {
            let state_db = disk.open_database("s-state").map_err(storage_error)?;
            let node = NodeStore::open(
                db,
                state_db,
                "memory:s".into(),
                StoreConfig {
                    inline: self.0,
                    ..StoreConfig::default()
                },
                clock(),
            )
            .map_err(storage_error)?;
            node.shard(ShardId(0)).map_err(storage_error)?
        };
        Ok(((), store, sm))
    }
}

/// openraft's own conformance suite for log stores and state machines.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(MemoryStores(false)).unwrap();
}

/// The same suite with storage work run inline on the calling task.
#[test]
fn openraft_storage_suite_inline() {
    Suite::test_all(MemoryStores(true)).unwrap();
}

fn event(urn: &str, event_type: &str) -> ProposedEvent {
    let event = Event {
        id: uuid::Uuid::from_u128(xxhash_rust::xxh3::xxh3_128(event_type.as_bytes())),
        urn: Urn::parse(urn).unwrap(),
        event_type: event_type.into(),
        op: Op::Put,
        data: Some(serde_json::value::RawValue::from_string(r#"{"k":1}"#.into()).unwrap()),
        vector: None,
        to: None,
        label: None,
        points: None,
        metadata: None,
    };
    ProposedEvent {
        event,
        expected: Default::default(),
        client_id: true,
    }
}

fn entry(index: u64, event_type: &str) -> Entry {
    let proposal = Proposal {
        ts_ms: 1_000 + index,
        batches: vec![vec![event("urn:themis:document:d:x", event_type)]],
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(proposal),
    }
}

fn open(disk: &dyn Disk) -> Result<(NodeStore, ShardStore, ShardStateMachine)> {
    let db = disk
        .open_database("shard")
        .map_err(|e| Error::Storage(e.to_string()))?;
    let state_db = disk
        .open_database("shard-state")
        .map_err(|e| Error::Storage(e.to_string()))?;
    let node = NodeStore::open(
        db,
        state_db,
        disk.describe("shard"),
        StoreConfig::default(),
        clock(),
    )?;
    let (store, sm) = node.shard(ShardId(0))?;
    Ok((node, store, sm))
}

/// Appends `entries` and closes the database.
async fn write(disk: &dyn Disk, entries: Vec<Entry>) {
    let (node, mut store, sm) = open(disk).unwrap();
    store.blocking_append(entries).await.unwrap();
    drop((store, sm));
    node.close();
}

#[tokio::test]
async fn entries_survive_reopen_and_chain_links_them() {
    let disk = MemoryDisk::new();
    write(&disk, (1..=3).map(|i| entry(i, &format!("e{i}"))).collect()).await;
    let (_node, mut store, _) = open(&disk).unwrap();
    let read = store.try_get_log_entries(1..=3).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let c1 = store.chain_at(1).unwrap().unwrap();
    let c2 = store.chain_at(2).unwrap().unwrap();
    assert_ne!(c1, c2);

    // The chain is a function of the entries alone: the same entries elsewhere give the same chain.
    let other = MemoryDisk::new();
    write(
        &other,
        (1..=3).map(|i| entry(i, &format!("e{i}"))).collect(),
    )
    .await;
    assert_eq!(
        open(&other).unwrap().1.chain_at(3).unwrap(),
        store.chain_at(3).unwrap()
    );
    // A different entry 2 changes every later chain.
    let third = MemoryDisk::new();
    write(
        &third,
        vec![entry(1, "e1"), entry(2, "other"), entry(3, "e3")],
    )
    .await;
    assert_ne!(
        open(&third).unwrap().1.chain_at(3).unwrap(),
        store.chain_at(3).unwrap()
    );
}

/// Rewrites entry `index` through redb, so redb's page checksums stay valid and only our own
/// record checks can notice.
fn rewrite(disk: &dyn Disk, index: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let db = disk.open_database("shard").unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut log = tx.open_table(Tables::new(ShardId(0)).log()).unwrap();
        let mut bytes = log.get(index).unwrap().unwrap().value().to_vec();
        f(&mut bytes);
        log.insert(index, bytes.as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_a_record_fails_the_open_naming_file_and_entry() {
    let disk = MemoryDisk::new();
    write(&disk, (1..=3).map(|i| entry(i, &format!("e{i}"))).collect()).await;
    rewrite(&disk, 2, |b| {
        let last = b.len() - 3;
        b[last] ^= 0x40;
    });
    let err = open(&disk).unwrap_err();
    assert_eq!(err.code(), "corrupted");
    let text = err.to_string();
    assert!(
        text.contains("memory:shard") && text.contains("log entry 2") && text.contains("checksum"),
        "{text}"
    );
}

#[tokio::test]
async fn a_record_that_does_not_extend_its_predecessor_fails_the_open() {
    let disk = MemoryDisk::new();
    write(&disk, (1..=3).map(|i| entry(i, &format!("e{i}"))).collect()).await;
    // A well-formed record with a valid checksum, but chained to the wrong predecessor.
    let (forged, _) = record::encode(&entry(2, "forged"), &GENESIS);
    rewrite(&disk, 2, |b| *b = forged);
    let text = open(&disk).unwrap_err().to_string();
    assert!(
        text.contains("hash chain broken") && text.contains("log entry 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_corrupted_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FileDisk::new(dir.path()).unwrap();
    write(
        &disk,
        (1..=50)
            .map(|i| entry(i, &format!("event-type-{i:04}")))
            .collect(),
    )
    .await;
    let path = dir.path().join("shard.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"event-type-0025")
        .expect("record bytes in the file");
    bytes[at + 3] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Arc::new(disk)
        .open_database("shard")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_failed_store_refuses_later_writes() {
    let disk = MemoryDisk::new();
    let (node, mut store, _) = open(&disk).unwrap();
    node.fail("simulated fsync error");
    let err = store
        .blocking_append(vec![entry(1, "e1")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store stopped") && err.contains("simulated fsync error"),
        "{err}"
    );
    assert!(store.save_vote(&openraft::Vote::new(1, 1)).await.is_err());
}

/// openraft purges its log right after handing a snapshot to the state machine, before the
/// install is durable: the persisted purge point must not pass the durable state, or a crash
/// in between leaves a log purged beyond the state openraft restarts from.
#[tokio::test]
async fn a_purge_is_persisted_no_further_than_the_durable_state() {
    let disk = MemoryDisk::new();
    {
        let (node, mut store, mut sm) = open(&disk).unwrap();
        store
            .blocking_append(
                (1..=10)
                    .map(|i| entry(i, &format!("e{i}")))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        // Applied without fsync: nothing is known durable yet.
        sm.apply(
            (1..=4)
                .map(|i| entry(i, &format!("e{i}")))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 8))
            .await
            .unwrap();
        // openraft sees its purge at once.
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(8));
        drop((store, sm));
        node.close();
    }
    // Reopened, the state may be anything up to 4 (applies were not synced), so nothing was
    // persisted as purged.
    assert_eq!(purged_after_reopen(&disk).await, None);
    {
        let (node, mut store, mut sm) = open(&disk).unwrap();
        sm.apply(
            (5..=6)
                .map(|i| entry(i, &format!("e{i}")))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        // Building a snapshot makes the state durable (at 6).
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 8))
            .await
            .unwrap();
        drop((store, sm));
        node.close();
    }
    assert_eq!(purged_after_reopen(&disk).await, Some(6));
}

async fn purged_after_reopen(disk: &MemoryDisk) -> Option<u64> {
    let (node, mut store, sm) = open(disk).unwrap();
    let state = store.get_log_state().await.unwrap();
    drop((store, sm));
    node.close();
    state.last_purged_log_id.map(|id| id.index)
}

/// The state machine's stream index points into the log: a state ahead of the log's records
/// (the state half of a snapshot install without the log half) must not open.
#[tokio::test]
async fn a_shard_whose_state_is_ahead_of_its_log_refuses_to_open() {
    let disk = MemoryDisk::new();
    write(&disk, (1..=3).map(|i| entry(i, &format!("e{i}"))).collect()).await;
    {
        let db = disk.open_database("shard-state").unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx.open_table(Tables::new(ShardId(0)).sm_meta()).unwrap();
            let applied = LogId::new(CommittedLeaderId::new(1, 1), 5);
            let json = serde_json::to_vec(&applied).unwrap();
            meta.insert("applied", json.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = open(&disk).unwrap_err();
    assert_eq!(err.code(), "corrupted");
    assert!(err.to_string().contains("applied log entry 5"), "{err}");
}

fn clock() -> std::sync::Arc<dyn crate::seam::Clock> {
    std::sync::Arc::new(crate::seam::ManualClock::new(0))
}
