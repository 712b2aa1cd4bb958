//! `themis-sim`: run a simulated cluster from a seed, check that a seed replays identically, or
//! sweep many seeds.
#![allow(clippy::disallowed_methods)] // reports real time next to virtual time

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use themis_simulator::faults::FaultSpec;
use themis_simulator::run::{Report, RunOptions, run};
use themis_storage::canary::{self, Canary};

/// mimalloc, as in the server: the simulated disks and redb allocate and copy a lot.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "themis-sim",
    about = "Deterministic ThemisDB cluster simulation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, clap::Args)]
struct Options {
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Virtual time of the workload and fault phase (e.g. `10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = themis_log::units::parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Most think time between a client's operations (the load: 4 clients at 30ms make about
    /// 150 operations per simulated second).
    #[arg(long, default_value = "30ms", value_parser = themis_log::units::parse_duration)]
    think: Duration,
    /// `none`, `light` (loss, partitions), `heavy` (every kind), `swarm` (a seeded subset per
    /// seed) or `list:KIND,...` (kinds: loss, delay, duplicate, partition, crash, power, fsync,
    /// clock).
    #[arg(long, default_value = "none")]
    faults: String,
    /// Entries between Raft snapshots (small: long outages end in snapshot installs).
    #[arg(long, default_value_t = 64)]
    snapshot_every: u64,
    /// Run a deliberately broken variant (builds with `--features canaries` only):
    /// ack-before-fsync, commit-without-quorum, fsync-retry, skip-expected-revision,
    /// resume-skips-entry.
    #[arg(long)]
    canary: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one simulation, check it, and print its trace hash.
    Run {
        /// The seed of every random draw.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        options: Options,
    },
    /// Run the same seed twice and compare the traces.
    CheckDeterminism {
        /// The seed of every random draw.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        options: Options,
    },
    /// Run seeds one after another until a budget of seeds or real time is spent; stop at the
    /// first failure.
    Sweep {
        /// First seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Seeds at most.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Real seconds at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        /// Expect a failure (a canary): exit 0 when one seed fails, 1 when none does.
        #[arg(long)]
        expect_failure: bool,
        #[command(flatten)]
        options: Options,
    },
    /// Run every seed listed in a regression-corpus file (one `seed [faults] [options]` per
    /// line; `#` starts a comment).
    Corpus {
        /// The corpus file.
        file: std::path::PathBuf,
        #[command(flatten)]
        options: Options,
    },
}

fn options(seed: u64, o: &Options) -> Result<RunOptions, String> {
    if o.nodes == 0 || o.shards == 0 || o.clients == 0 {
        return Err("--nodes, --shards and --clients must be at least 1".into());
    }
    let canary = match &o.canary {
        None => None,
        Some(name) => {
            let c = Canary::parse(name).ok_or_else(|| {
                let names: Vec<&str> = Canary::ALL.iter().map(|c| c.name()).collect();
                format!("unknown --canary {name:?}: use one of {}", names.join(", "))
            })?;
            if !canary::COMPILED {
                return Err(
                    "--canary needs a build with the canaries feature: cargo run -p \
                     themis-simulator --features canaries --bin themis-sim -- ..."
                        .into(),
                );
            }
            Some(c)
        }
    };
    Ok(RunOptions {
        seed,
        nodes: o.nodes,
        shards: o.shards,
        duration: o.duration,
        clients: o.clients,
        think_max: o.think,
        faults: FaultSpec::parse(&o.faults, seed)?,
        canary,
        snapshot_every: o.snapshot_every,
    })
}

fn reproduce(seed: u64, o: &Options) -> String {
    let mut cmd = format!(
        "themis-sim run --seed {seed} --nodes {} --shards {} --duration {}ms --clients {} --think {}ms --faults {} --snapshot-every {}",
        o.nodes,
        o.shards,
        o.duration.as_millis(),
        o.clients,
        o.think.as_millis(),
        o.faults,
        o.snapshot_every
    );
    if let Some(c) = &o.canary {
        cmd = format!(
            "cargo run -p themis-simulator --features canaries --bin themis-sim -- {} --canary {c}",
            cmd.trim_start_matches("themis-sim ")
        );
    }
    cmd
}

fn describe(r: &RunOptions) -> String {
    format!(
        "seed {} nodes {} shards {} replication {} duration {:?} clients {} think {:?} faults {} snapshot-every {} canary {}",
        r.seed,
        r.nodes,
        r.shards,
        r.nodes.min(3),
        r.duration,
        r.clients,
        r.think_max,
        r.faults.describe(),
        r.snapshot_every,
        r.canary.map_or("none", Canary::name)
    )
}

fn summary(r: &Report, real: Duration) -> String {
    let c = &r.checked;
    format!(
        "trace hash {:016x}: {:?} simulated in {:.2?} ({:.0}x); {} appends acknowledged, {} \
         refused by expected revision, {} unknown ({} of them applied), {} reads checked, {} resources' views checked on every replica ({} live vectors in state and index, {} documents in fulltext indexes, {} time-series points, {} graph vertices and edges), {} events \
         received by a subscriber checked against the logs; {} \
         faults, {} crashes, {} failed fsyncs, {} snapshots installed; converged {:?} after \
         healing",
        r.hash,
        r.simulated,
        real,
        r.simulated.as_secs_f64() / real.as_secs_f64().max(1e-9),
        c.acknowledged,
        c.conflicts,
        c.unknown,
        c.unknown_applied,
        c.reads,
        c.resources,
        c.vectors,
        c.texts,
        c.points,
        c.graph,
        c.subscribed,
        r.faults.len(),
        r.disks.crashes,
        r.disks.failed_syncs,
        r.snapshots_installed,
        r.converged_after
    )
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { seed, options: o } => single(seed, &o, false),
        Command::CheckDeterminism { seed, options: o } => single(seed, &o, true),
        Command::Sweep {
            from,
            seeds,
            seconds,
            expect_failure,
            options: o,
        } => sweep(from, seeds, seconds, expect_failure, &o),
        Command::Corpus { file, options: o } => corpus(&file, &o),
    }
}

fn single(seed: u64, o: &Options, twice: bool) -> ExitCode {
    let opts = match options(seed, o) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", describe(&opts));
    let real = Instant::now();
    let first = match run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: seed {seed} failed:\n{e}reproduce: {}",
                reproduce(seed, o)
            );
            return ExitCode::FAILURE;
        }
    };
    println!("{}", summary(&first, real.elapsed()));
    if !first.failovers.is_empty() {
        println!(
            "failovers (leader crash to new leader, to first acknowledged append): {:?}",
            first.failovers
        );
    }
    if twice {
        match run(&opts) {
            Ok(second) if second.same_run(&first) => {
                if second.disks != first.disks {
                    println!(
                        "note: disk statistics differ ({:?} then {:?}) although the runs match",
                        first.disks, second.disks
                    );
                }
                println!("deterministic: the second run matches")
            }
            Ok(second) => {
                let diff = first
                    .trace
                    .iter()
                    .zip(&second.trace)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("first difference:\n  {a}\n  {b}"))
                    .unwrap_or_else(|| "the traces differ in length".into());
                eprintln!(
                    "error: not deterministic: {:016x} then {:016x}; {diff}\nreproduce: {}",
                    first.hash,
                    second.hash,
                    reproduce(seed, o)
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!(
                    "error: the second run failed:\n{e}reproduce: {}",
                    reproduce(seed, o)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn sweep(from: u64, seeds: u64, seconds: u64, expect_failure: bool, o: &Options) -> ExitCode {
    let real = Instant::now();
    let mut ran = 0u64;
    let mut simulated = Duration::ZERO;
    let mut failovers = Vec::new();
    for seed in from..from.saturating_add(seeds) {
        if seconds > 0 && real.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        let opts = match options(seed, o) {
            Ok(opts) => opts,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        ran += 1;
        match run(&opts) {
            Ok(r) => {
                simulated += r.simulated;
                failovers.extend(r.failovers);
            }
            Err(e) if expect_failure => {
                println!(
                    "caught at seed {seed} (the {ran}. seed run):\n{e}reproduce: {}",
                    reproduce(seed, o)
                );
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!(
                    "error: seed {seed} failed ({}):\n{e}reproduce: {}",
                    describe(&opts),
                    reproduce(seed, o)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let elapsed = real.elapsed();
    let quantiles = |mut v: Vec<Duration>| {
        v.sort();
        let q = |p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .map_or("-".to_owned(), |d| format!("{d:?}"))
        };
        format!("p50 {}, p99 {}, max {}", q(0.5), q(0.99), q(1.0))
    };
    println!(
        "{ran} seeds passed in {elapsed:.1?} ({:.1} seeds/min); {simulated:?} simulated ({:.0}x \
         real time); {} leader crashes: new leader {}; first acknowledged append {}",
        ran as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9),
        simulated.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
        failovers.len(),
        quantiles(
            failovers
                .iter()
                .map(|f: &(Duration, Duration)| f.0)
                .collect()
        ),
        quantiles(failovers.iter().map(|f| f.1).collect()),
    );
    if expect_failure {
        eprintln!("error: no seed of {ran} failed, but a failure was expected");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A corpus line's options after its seed and faults: `--duration D`, `--think D`,
/// `--clients N`, `--snapshot-every N`.
fn line_options<'a>(
    o: &mut Options,
    mut parts: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    let parse_duration = |v: &str| themis_log::units::parse_duration(v);
    let parse_n = |v: &str| v.parse::<u64>().map_err(|e| format!("{v:?}: {e}"));
    while let Some(key) = parts.next() {
        let value = parts
            .next()
            .ok_or_else(|| format!("option {key} has no value"))?;
        match key {
            "--duration" => o.duration = parse_duration(value)?,
            "--think" => o.think = parse_duration(value)?,
            "--clients" => o.clients = parse_n(value)? as usize,
            "--snapshot-every" => o.snapshot_every = parse_n(value)?,
            other => {
                return Err(format!(
                    "unknown option {other} (a corpus line takes --duration, --think, --clients, \
                     --snapshot-every)"
                ));
            }
        }
    }
    Ok(())
}

fn corpus(file: &std::path::Path, o: &Options) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut ran = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(seed), faults) = (
            parts.next().and_then(|s| s.parse::<u64>().ok()),
            parts.next(),
        ) else {
            eprintln!(
                "error: {}:{}: expected `SEED [FAULTS] [OPTIONS]`, got {line:?}",
                file.display(),
                n + 1
            );
            return ExitCode::FAILURE;
        };
        let mut o = o.clone();
        if let Some(f) = faults {
            o.faults = f.to_owned();
        }
        if let Err(e) = line_options(&mut o, parts) {
            eprintln!("error: {}:{}: {e}", file.display(), n + 1);
            return ExitCode::FAILURE;
        }
        let opts = match options(seed, &o) {
            Ok(opts) => opts,
            Err(e) => {
                eprintln!("error: {}:{}: {e}", file.display(), n + 1);
                return ExitCode::FAILURE;
            }
        };
        ran += 1;
        if let Err(e) = run(&opts) {
            eprintln!(
                "error: corpus seed {seed} failed again:\n{e}reproduce: {}",
                reproduce(seed, &o)
            );
            return ExitCode::FAILURE;
        }
    }
    println!("{ran} corpus seeds passed");
    ExitCode::SUCCESS
}
