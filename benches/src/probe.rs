//! The machine's durable-write limit measured in the same run: 4 KiB writes to a preallocated
//! file, each followed by `fdatasync`, at queue depth 1 (performance.md §4.1, rule 1).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// One probe's result.
#[derive(Debug, Clone, Copy)]
pub struct FsyncProbe {
    /// fdatasync calls per second.
    pub per_second: f64,
    /// Median latency of one write + fdatasync.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl FsyncProbe {
    /// `fast` when p50 is under 0.5 ms (performance.md's regime rule).
    pub fn regime(&self) -> &'static str {
        if self.p50 < Duration::from_micros(500) {
            "fast"
        } else {
            "slow"
        }
    }
}

/// Runs the probe for `duration` in `dir`.
pub fn fsync_probe(dir: &Path, duration: Duration) -> anyhow::Result<FsyncProbe> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = vec![0u8; 4096];
    for _ in 0..256 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < duration {
        let t = Instant::now();
        file.seek(SeekFrom::Start((i % 256) * 4096))?;
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed());
        i += 1;
    }
    let elapsed = start.elapsed();
    std::fs::remove_file(&path)?;
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok(FsyncProbe {
        per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    })
}
