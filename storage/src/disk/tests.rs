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
