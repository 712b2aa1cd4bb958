//! `themis-sim`: run a simulated cluster from a seed, or check that a seed replays identically.
#![allow(clippy::disallowed_methods)] // reports real time next to virtual time

use clap::{Parser, Subcommand};
use themis_simulator::run::{RunOptions, run};

#[derive(Debug, Parser)]
#[command(
    name = "themis-sim",
    about = "Deterministic ThemisDB cluster simulation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Options {
    /// The seed of every random draw.
    #[arg(long)]
    seed: u64,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Appends of the client workload.
    #[arg(long, default_value_t = 60)]
    appends: u64,
    /// `none`, or `light`: 2% message loss and shard 0's leader partitioned for the middle
    /// third of the workload.
    #[arg(long, default_value = "none")]
    faults: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one simulation and print its trace hash.
    Run(Options),
    /// Run the same seed twice and compare the traces.
    CheckDeterminism(Options),
}

fn options(o: &Options) -> Result<RunOptions, String> {
    let faults = match o.faults.as_str() {
        "none" => false,
        "light" => true,
        other => return Err(format!("unknown --faults {other:?}: use none or light")),
    };
    if o.nodes == 0 || o.shards == 0 {
        return Err("--nodes and --shards must be at least 1".into());
    }
    Ok(RunOptions {
        seed: o.seed,
        nodes: o.nodes,
        shards: o.shards,
        appends: o.appends,
        faults,
    })
}

fn reproduce(o: &Options) -> String {
    format!(
        "themis-sim run --seed {} --nodes {} --shards {} --appends {} --faults {}",
        o.seed, o.nodes, o.shards, o.appends, o.faults
    )
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (o, twice) = match &cli.command {
        Command::Run(o) => (o, false),
        Command::CheckDeterminism(o) => (o, true),
    };
    let opts = match options(o) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "seed {} nodes {} shards {} replication {} appends {} faults {}",
        opts.seed,
        opts.nodes,
        opts.shards,
        opts.nodes.min(3),
        opts.appends,
        o.faults
    );
    let real = std::time::Instant::now();
    let first = match run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the run failed: {e}\nreproduce: {}", reproduce(o));
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "trace hash {:016x}: {:?} simulated in {:?}",
        first.hash,
        first.simulated,
        real.elapsed()
    );
    if twice {
        match run(&opts) {
            Ok(second) if second == first => println!("deterministic: the second run matches"),
            Ok(second) => {
                eprintln!(
                    "error: not deterministic: {:016x} then {:016x}\nreproduce: {}",
                    first.hash,
                    second.hash,
                    reproduce(o)
                );
                return std::process::ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!(
                    "error: the second run failed: {e}\nreproduce: {}",
                    reproduce(o)
                );
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
