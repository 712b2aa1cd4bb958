use redb::{ReadableDatabase, TableDefinition};

use super::*;

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn write_and_reopen(disk: &dyn Disk) {
    {
        let db = disk.open_database("a").unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(T).unwrap().insert(1, &b"one"[..]).unwrap();
        tx.commit().unwrap();
    }
    let db = disk.open_database("a").unwrap();
    let tx = db.begin_read().unwrap();
    let value = tx
        .open_table(T)
        .unwrap()
        .get(1)
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(value, b"one");
}

#[test]
fn memory_disk_survives_reopen() {
    write_and_reopen(&MemoryDisk::new());
}

#[test]
fn file_disk_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    write_and_reopen(&FileDisk::new(dir.path()).unwrap());
}

#[test]
#[allow(clippy::disallowed_methods)] // test: a real thread and a real sleep
fn a_memory_database_is_open_at_most_once() {
    let disk = MemoryDisk::new();
    let first = disk.open_database("a").unwrap();
    let second = {
        let disk = disk.clone();
        std::thread::spawn(move || disk.open_database("a").map(|_| ()))
    };
    // The second open waits for the first instance to close, then succeeds.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !second.is_finished(),
        "opened while the first instance was open"
    );
    drop(first);
    second.join().unwrap().unwrap();
}
