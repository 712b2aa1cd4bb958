use proptest::prelude::*;

use super::*;

/// Any f64 bit pattern, with the special values over-represented.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        2 => (-1000i32..1000).prop_map(|n| f64::from(n) / 4.0),
        1 => Just(f64::NAN),
        1 => Just(f64::from_bits(0x7ff8_dead_beef_0001)), // a NaN with a payload
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(0.0),
        1 => Just(f64::MIN_POSITIVE / 2.0), // subnormal
    ]
}

/// Sorted timestamps: regular steps, jitter, duplicates and jumps up to the 32-bit bucket.
fn timestamps(n: usize) -> impl Strategy<Value = Vec<i64>> {
    let step = prop_oneof![
        4 => Just(10_000i64),
        2 => 9_990i64..10_010,
        2 => Just(0i64),
        1 => 0i64..5_000_000,
    ];
    (any::<i32>(), prop::collection::vec(step, n)).prop_map(|(start, steps)| {
        let mut ts = i64::from(start) * 1000;
        steps
            .into_iter()
            .map(|s| {
                ts += s;
                ts
            })
            .collect()
    })
}

fn points() -> impl Strategy<Value = Vec<(i64, f64)>> {
    (1usize..300).prop_flat_map(|n| {
        (timestamps(n), prop::collection::vec(value(), n))
            .prop_map(|(ts, vs)| ts.into_iter().zip(vs).collect())
    })
}

fn bits(points: &[(i64, f64)]) -> Vec<(i64, u64)> {
    points.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

proptest! {
    #[test]
    fn points_round_trip_bit_for_bit(points in points()) {
        let block = Block::encode(&points).expect("in order");
        prop_assert_eq!(block.len(), points.len());
        prop_assert_eq!(bits(&block.decode()), bits(&points));
        let stored = Block::from_bytes(&block.to_bytes()).expect("stored form");
        prop_assert_eq!(&stored, &block);
        prop_assert_eq!(bits(&stored.decode()), bits(&points));
    }

    #[test]
    fn appending_to_a_stored_block_equals_encoding_at_once(points in points(), cut in 0usize..300) {
        let cut = cut.clamp(1, points.len());
        let mut block = Block::from_bytes(&Block::encode(&points[..cut]).unwrap().to_bytes()).unwrap();
        for &(t, v) in &points[cut..] {
            block.push(t, v).unwrap();
        }
        prop_assert_eq!(block, Block::encode(&points).unwrap());
    }

    #[test]
    fn a_truncated_or_foreign_stored_form_is_refused(points in points(), cut in 1usize..40) {
        let bytes = Block::encode(&points).unwrap().to_bytes();
        let cut = cut.min(bytes.len());
        prop_assert!(Block::from_bytes(&bytes[..bytes.len() - cut]).is_none());
    }
}

#[test]
fn every_delta_of_delta_bucket_boundary_round_trips() {
    let mut points = vec![(0i64, 1.0)];
    let mut ts = 0i64;
    let mut delta = 0i64;
    for dod in [
        0i64,
        -64,
        63,
        64,
        -65,
        -256,
        255,
        256,
        -257,
        -2048,
        2047,
        2048,
        -2049,
        i64::from(i32::MAX) / 4,
        -(i64::from(i32::MAX) / 4),
    ] {
        delta += dod;
        // Keep the series ordered: reset the delta when the dod would go backwards.
        if delta < 0 {
            delta -= dod;
            continue;
        }
        ts += delta;
        points.push((ts, ts as f64));
    }
    let block = Block::encode(&points).unwrap();
    assert_eq!(bits(&block.decode()), bits(&points));
}

#[test]
fn out_of_order_and_too_distant_points_are_refused() {
    let mut block = Block::new(1_000, 1.0);
    assert_eq!(block.push(999, 2.0), Err(PushError::OutOfOrder));
    assert_eq!(block.push(1_000, 2.0), Ok(())); // a duplicate timestamp is kept
    assert_eq!(
        block.push(1_000 + i64::from(i32::MAX) + 1, 3.0),
        Err(PushError::TooFar)
    );
    assert_eq!(block.decode(), vec![(1_000, 1.0), (1_000, 2.0)]);
}

#[test]
fn a_regular_constant_series_costs_two_bits_a_point() {
    let points: Vec<(i64, f64)> = (0..1000).map(|i| (i * 10_000, 42.0)).collect();
    let block = Block::encode(&points).unwrap();
    // 64 bits of first value, 36 for the first delta (32-bit bucket), then 1 + 1 per point.
    assert_eq!(block.bit_len(), 64 + 4 + 32 + 1 + 998 * 2);
}
