//! Time-series compression: bytes per point and decode speed of the Gorilla blocks the
//! time-series view stores (`themis_storage::gorilla`), on generated host-metric series at 10 s
//! intervals, against the paper's 1.37 bytes per point (Pelkonen et al., VLDB 2015, §4.1.2).
//!
//! The generator (seeded, deterministic) writes, per host, series of three kinds, each a
//! realistic shape of a host agent's output:
//! - `cpu_percent`: CPU usage in whole percent (as `top`/Telegraf `usage_*` rounded), a
//!   mean-reverting walk around a per-host level, with bursts;
//! - `cpu_percent_0.1`: the same walk at 0.1 % resolution (decimal fractions: most mantissa
//!   bits change between samples, the hard case for XOR encoding);
//! - `mem_used_mb`: an integer gauge that stays unchanged for minutes, then steps.
//!
//! Timestamps are 10 s apart; 95 % exactly on the interval, 5 % off by up to ±20 ms (scrape
//! jitter). Blocks hold two hours (720 points), as in the paper; bytes count the whole stored
//! block (a 47-byte header with the encoder's state, then the bit stream) and the stream alone.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use themis_storage::gorilla::{Block, HEADER_BYTES};

/// One kind's result.
#[derive(Debug, Clone)]
pub struct KindResult {
    /// The series kind.
    pub kind: &'static str,
    /// Points encoded.
    pub points: u64,
    /// Bytes of the stored blocks (headers included).
    pub bytes: u64,
    /// Bytes of the bit streams alone.
    pub stream_bytes: u64,
    /// Decoded points per second on one core (best of three passes).
    pub decode_per_s: f64,
    /// Encoded points per second on one core.
    pub encode_per_s: f64,
}

impl KindResult {
    /// Stored bytes per point.
    pub fn bytes_per_point(&self) -> f64 {
        self.bytes as f64 / self.points as f64
    }

    /// Stream bytes per point.
    pub fn stream_bytes_per_point(&self) -> f64 {
        self.stream_bytes as f64 / self.points as f64
    }
}

/// The series kinds.
pub const KINDS: [&str; 3] = ["cpu_percent", "cpu_percent_0.1", "mem_used_mb"];

const STEP_MS: i64 = 10_000;
const BLOCK_POINTS: usize = 720;

/// Generates `hosts` series of `kind`, `points` each.
pub fn generate(kind: &str, hosts: usize, points: usize, seed: u64) -> Vec<Vec<(i64, f64)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..hosts)
        .map(|_| {
            let level: f64 = rng.gen_range(5.0..60.0);
            let mut cpu = level;
            let mut mem: i64 = rng.gen_range(500..16_000);
            let start = 1_700_000_000_000i64;
            (0..points as i64)
                .map(|i| {
                    let jitter = if rng.gen_bool(0.05) {
                        rng.gen_range(-20..=20)
                    } else {
                        0
                    };
                    let ts = start + i * STEP_MS + jitter;
                    // Mean reversion, noise, and a rare burst.
                    cpu += (level - cpu) * 0.1 + rng.gen_range(-2.0..2.0);
                    if rng.gen_bool(0.01) {
                        cpu += rng.gen_range(10.0..40.0);
                    }
                    cpu = cpu.clamp(0.0, 100.0);
                    if rng.gen_bool(0.02) {
                        mem += rng.gen_range(-200..=200);
                    }
                    let value = match kind {
                        "cpu_percent" => cpu.round(),
                        "cpu_percent_0.1" => (cpu * 10.0).round() / 10.0,
                        _ => mem as f64,
                    };
                    (ts, value)
                })
                .collect()
        })
        .collect()
}

/// Encodes and decodes every series of `kind`, in two-hour blocks.
pub fn measure(kind: &'static str, hosts: usize, points: usize, seed: u64) -> KindResult {
    let series = generate(kind, hosts, points, seed);
    let started = Instant::now();
    let blocks: Vec<Vec<u8>> = series
        .iter()
        .flat_map(|s| s.chunks(BLOCK_POINTS))
        .map(|chunk| Block::encode(chunk).expect("ordered points").to_bytes())
        .collect();
    let encode_s = started.elapsed().as_secs_f64();
    let total: u64 = series.iter().map(|s| s.len() as u64).sum();
    let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
    let stream_bytes = bytes - (blocks.len() * HEADER_BYTES) as u64;
    // Decode (parse the stored form and iterate every point), best of three passes.
    let mut best = f64::MAX;
    let mut check = 0.0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let mut n = 0u64;
        for bytes in &blocks {
            let block = Block::from_bytes(bytes).expect("a stored block");
            for (t, v) in block.iter() {
                n += 1;
                check += v + t as f64 * 0.0;
            }
        }
        assert_eq!(n, total, "every point decodes");
        best = best.min(started.elapsed().as_secs_f64());
    }
    std::hint::black_box(check);
    // Round trip, bit for bit.
    let decoded: Vec<(i64, u64)> = blocks
        .iter()
        .flat_map(|b| Block::from_bytes(b).unwrap().decode())
        .map(|(t, v)| (t, v.to_bits()))
        .collect();
    let original: Vec<(i64, u64)> = series
        .iter()
        .flatten()
        .map(|&(t, v)| (t, v.to_bits()))
        .collect();
    assert!(
        decoded == original,
        "{kind}: decoding returns the points bit for bit"
    );
    KindResult {
        kind,
        points: total,
        bytes,
        stream_bytes,
        decode_per_s: total as f64 / best,
        encode_per_s: total as f64 / encode_s,
    }
}

/// A markdown table of the results.
pub fn markdown(results: &[KindResult], hosts: usize, points: usize) -> String {
    let mut out = format!(
        "{hosts} series per kind × {points} points at 10 s ({:.1} h), two-hour blocks, one core\n\n\
         | kind | points | bytes/point (stored) | bytes/point (stream) | vs paper's 1.37 | decode points/s | encode points/s |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        points as f64 * 10.0 / 3600.0
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.2}x | {:.0} M | {:.0} M |\n",
            r.kind,
            r.points,
            r.bytes_per_point(),
            r.stream_bytes_per_point(),
            r.bytes_per_point() / 1.37,
            r.decode_per_s / 1e6,
            r.encode_per_s / 1e6
        ));
    }
    out
}
