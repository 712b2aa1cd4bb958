use serde_json::{Value, json};
use themis_log::seam::SeededEntropy;

use super::*;

fn cursors() -> Cursors {
    Cursors::new(Arc::new(SeededEntropy::new(1)))
}

fn rows(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!(i)).collect()
}

#[test]
fn batches_follow_in_order_and_the_cursor_closes_after_the_last() {
    let c = cursors();
    let first = c.start(rows(5), 2, "t".into(), 0);
    assert_eq!(
        (first.result.clone(), first.count, first.has_more),
        (rows(2), 5, true)
    );
    let id = first.cursor.expect("a cursor");
    let second = c.next(&id, 1).expect("open");
    assert_eq!(
        (second.result, second.has_more, second.cursor.as_deref()),
        (vec![json!(2), json!(3)], true, Some(id.as_str()))
    );
    let last = c.next(&id, 2).expect("open");
    assert_eq!(
        (last.result, last.has_more, last.cursor, last.token),
        (vec![json!(4)], false, None, "t".to_owned())
    );
    assert_eq!(c.next(&id, 3).unwrap_err().status(), StatusCode::NOT_FOUND);
    // An answer that fits in one batch opens none.
    let whole = c.start(rows(2), 2, "t".into(), 0);
    assert_eq!((whole.has_more, whole.cursor), (false, None));
}

#[test]
fn cursor_ids_differ_with_seeded_entropy() {
    let c = cursors();
    let ids: std::collections::BTreeSet<String> = (0..100)
        .map(|_| c.start(rows(2), 1, "t".into(), 0).cursor.unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
}

#[test]
fn an_unused_cursor_expires() {
    let c = cursors();
    let id = c.start(rows(3), 1, "t".into(), 0).cursor.unwrap();
    let ttl = Cursors::TTL.as_millis() as u64;
    assert!(c.next(&id, ttl - 1).is_ok(), "use renews it");
    assert_eq!(
        c.next(&id, 2 * ttl - 1).unwrap_err().status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_least_recently_used_cursor_goes_when_rows_or_cursors_run_out() {
    let c = cursors();
    let big = Cursors::ROWS_HELD_MAX / 2;
    let a = c.start(rows(big + 1), 1, "t".into(), 0).cursor.unwrap();
    let b = c.start(rows(big / 2), 1, "t".into(), 1).cursor.unwrap();
    // a is used after b: b is now the least recently used.
    c.next(&a, 2).unwrap();
    let d = c.start(rows(big), 1, "t".into(), 3).cursor.unwrap();
    assert_eq!(
        c.next(&b, 4).unwrap_err().status(),
        StatusCode::NOT_FOUND,
        "b went"
    );
    assert!(
        c.next(&a, 5).is_ok() && c.next(&d, 5).is_ok(),
        "a and d stay"
    );
    // The count bound: OPEN_MAX small cursors, then one more pushes out the oldest.
    let c = cursors();
    let ids: Vec<String> = (0..Cursors::OPEN_MAX as u64)
        .map(|t| c.start(rows(2), 1, "t".into(), t).cursor.unwrap())
        .collect();
    c.start(rows(2), 1, "t".into(), Cursors::OPEN_MAX as u64);
    assert_eq!(
        c.next(&ids[0], 2_000).unwrap_err().status(),
        StatusCode::NOT_FOUND
    );
    assert!(c.next(&ids[1], 2_000).is_ok());
}
