//! `themis`: run a node (`serve`) or talk to one (`append`, `read`, `get`, `log`, `admin`,
//! `cluster`).

use clap::{Parser, Subcommand};
use serde_json::Value;
use themis_server::client::{Client, json_arg};
use themis_server::config::ServeArgs;

/// mimalloc instead of glibc malloc: allocation and free were about 12% of the server's CPU
/// under load (perf, docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "themis",
    version,
    about = "ThemisDB: a log-centric, event-sourced, multi-model database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ServerArg {
    /// The server to talk to.
    #[arg(long, env = "THEMIS_SERVER", default_value = "http://127.0.0.1:8765")]
    server: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (single node, embedded metadata, local data directory by default).
    Serve(ServeArgs),
    /// Append one event to a stream.
    Append {
        /// The stream, urn:themis:{model}:{namespace}:{id}.
        urn: String,
        /// put, patch, delete, link, unlink or points.
        #[arg(long)]
        op: String,
        /// Event data, a JSON object.
        #[arg(long)]
        data: Option<String>,
        /// Event type (defaults to the op).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Event id (a UUID) for idempotent retries; drawn by the server when absent.
        #[arg(long)]
        id: Option<String>,
        /// any, no_stream, exists, -1 or a revision number.
        #[arg(long)]
        expected_revision: Option<String>,
        /// Vector (JSON array) for vector puts.
        #[arg(long)]
        vector: Option<String>,
        /// Edge target URN for link/unlink.
        #[arg(long)]
        to: Option<String>,
        /// Edge label for link/unlink.
        #[arg(long)]
        label: Option<String>,
        /// Points (JSON [[ts_ms, value], ...]) for timeseries.
        #[arg(long)]
        points: Option<String>,
        /// Metadata, a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Read a stream's events.
    Read {
        /// The stream.
        urn: String,
        /// First revision to read.
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        /// Most events to read.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Create and inspect a cluster whose metadata lives in etcd.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Read a document resource's current state from the node's document view.
    Get {
        /// The resource, urn:themis:document:{namespace}:{id}.
        urn: String,
        /// Wait until the view covers this token (from an append's answer).
        #[arg(long)]
        min_token: Option<String>,
        /// How long to wait for --min-token, like 5s.
        #[arg(long)]
        timeout: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Run one SQL query over the node's views (tables: relational namespaces by name,
    /// document namespaces as document.<ns>).
    Sql {
        /// The query, e.g. "SELECT count(*) FROM orders".
        sql: String,
        /// Wait until the views cover this token (from an append's answer).
        #[arg(long)]
        min_token: Option<String>,
        /// How long to wait for --min-token and to run, like 5s.
        #[arg(long)]
        timeout: Option<String>,
        /// Answer format.
        #[arg(long, value_enum, default_value = "json")]
        format: SqlFormat,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Print a change stream's events as NDJSON, reconnecting by itself (to the next
    /// --server, if several) from the last cursor received.
    Tail(themis_server::tail::TailOptions),
    /// Administer the node's views.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Read a shard's committed log.
    Log {
        /// The shard.
        shard: u32,
        /// First LSN to read.
        #[arg(long, default_value_t = 0)]
        from_lsn: u64,
        /// Most entries to read.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Every view of every shard on the node: watermark, lag, and with --digest a content
    /// digest.
    Views {
        /// Compute content digests.
        #[arg(long)]
        digest: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Drop a view and replay it from the log (of one shard, or of every shard on the node).
    RebuildView {
        /// The view kind (document).
        kind: String,
        /// Only this shard.
        #[arg(long)]
        shard: Option<u32>,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Write the cluster's shape into etcd (once; again with the same shape is a no-op). Nodes
    /// started with `themis serve --etcd` wait for it, then place replicas once the initial
    /// nodes have registered.
    Init {
        /// etcd endpoints, comma-separated `host:port`.
        #[arg(long, env = "THEMIS_ETCD")]
        etcd: String,
        /// Number of shards.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Replicas per shard.
        #[arg(long, default_value_t = 3)]
        replication: u32,
        /// Nodes that must register before replicas are placed (default: the replication).
        #[arg(long)]
        initial_nodes: Option<u32>,
    },
    /// Move one shard's replica from a node to another, without unavailability (learner,
    /// catch up, promote, remove).
    MoveReplica {
        /// The shard.
        shard: u32,
        /// The node whose replica leaves.
        from: u64,
        /// The node that receives it (registered and running).
        to: u64,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Give a newly started node its share of replicas, moved one at a time from the most
    /// loaded nodes.
    AddNode {
        /// The node (already started with `themis serve --etcd ... --node-id N`).
        node: u64,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Move every replica off a node, one at a time, to the least loaded other nodes.
    RemoveNode {
        /// The node to empty.
        node: u64,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show nodes, shards, leaders, replicas, commit LSNs and per-replica lag.
    Status {
        /// Print the JSON of `GET /v1/cluster` instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // SQL planning recurses over expression trees (themis_query::MAX_NESTING); 16 MiB of
    // (lazily committed) stack per thread keeps the deepest accepted query far from the end.
    builder.thread_stack_size(16 << 20);
    if let Command::Serve(ServeArgs {
        worker_threads: Some(n),
        ..
    }) = &cli.command
    {
        builder.worker_threads((*n).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_moves(client: &Client, moves: &[(u32, u64, u64)]) -> anyhow::Result<()> {
    if moves.is_empty() {
        println!("nothing to move: the replicas are already balanced");
    }
    for (i, (shard, from, to)) in moves.iter().enumerate() {
        client.move_replica(*shard, *from, *to).await.map_err(|e| {
            anyhow::anyhow!(
                "move {} of {} (shard {shard}: node {from} -> node {to}) failed: {e}; the earlier moves stand, run the command again to continue",
                i + 1,
                moves.len()
            )
        })?;
        println!(
            "moved shard {shard}'s replica from node {from} to node {to} ({}/{})",
            i + 1,
            moves.len()
        );
    }
    Ok(())
}

/// Answer formats of `themis sql`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SqlFormat {
    /// One JSON object with columns, rows and the token.
    Json,
    /// One JSON object per row per line.
    Ndjson,
    /// A header line and one line per row.
    Csv,
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
                .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", args.log))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                // Spans (debug ones time query phases) print their busy and idle time.
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_writer(std::io::stderr)
                .init();
            themis_server::node::serve(args).await
        }
        Command::Append {
            urn,
            op,
            data,
            event_type,
            id,
            expected_revision,
            vector,
            to,
            label,
            points,
            metadata,
            server,
        } => {
            let mut event = serde_json::json!({ "op": op });
            let fields = [
                ("data", data),
                ("vector", vector),
                ("points", points),
                ("metadata", metadata),
            ];
            for (name, value) in fields {
                if let Some(text) = value {
                    event[name] = json_arg(&format!("--{name}"), &text)?;
                }
            }
            for (name, value) in [
                ("type", event_type),
                ("id", id),
                ("to", to),
                ("label", label),
            ] {
                if let Some(text) = value {
                    event[name] = Value::from(text);
                }
            }
            let client = Client::new(&server.server)?;
            print(
                &client
                    .append(&urn, event, expected_revision.as_deref())
                    .await?,
            );
            Ok(())
        }
        Command::Read {
            urn,
            from_revision,
            limit,
            server,
        } => {
            print(
                &Client::new(&server.server)?
                    .read(&urn, from_revision, limit)
                    .await?,
            );
            Ok(())
        }
        Command::Cluster {
            command:
                ClusterCommand::Init {
                    etcd,
                    shards,
                    replication,
                    initial_nodes,
                },
        } => {
            let spec = themis_log::cluster::ClusterSpec {
                shards,
                replication,
                initial_nodes: initial_nodes.unwrap_or(replication),
            };
            let meta = themis_server::meta::EtcdMetaStore::connect(&etcd).await?;
            let outcome = themis_log::cluster::init(&meta, spec).await?;
            let what = match outcome {
                themis_log::cluster::InitOutcome::Created => "initialized",
                themis_log::cluster::InitOutcome::AlreadyInitialized => "was already initialized",
            };
            println!(
                "cluster {what}: {shards} shards, replication {replication}, placement once {} nodes registered",
                spec.initial_nodes
            );
            Ok(())
        }
        Command::Cluster {
            command:
                ClusterCommand::MoveReplica {
                    shard,
                    from,
                    to,
                    server,
                },
        } => {
            let status = Client::new(&server.server)?
                .move_replica(shard, from, to)
                .await?;
            println!("moved shard {shard}'s replica from node {from} to node {to}");
            print!("{}", themis_server::client::render_cluster(&status));
            Ok(())
        }
        Command::Cluster {
            command: ClusterCommand::AddNode { node, server },
        } => {
            let client = Client::new(&server.server)?;
            let moves = themis_server::client::plan_add(&client.cluster().await?, node)?;
            run_moves(&client, &moves).await
        }
        Command::Cluster {
            command: ClusterCommand::RemoveNode { node, server },
        } => {
            let client = Client::new(&server.server)?;
            let moves = themis_server::client::plan_remove(&client.cluster().await?, node)?;
            run_moves(&client, &moves).await
        }
        Command::Cluster {
            command: ClusterCommand::Status { json, server },
        } => {
            let status = Client::new(&server.server)?.cluster().await?;
            if json {
                print(&status);
            } else {
                print!("{}", themis_server::client::render_cluster(&status));
            }
            Ok(())
        }
        Command::Sql {
            sql,
            min_token,
            timeout,
            format,
            server,
        } => {
            let accept = match format {
                SqlFormat::Json => "application/json",
                SqlFormat::Ndjson => "application/x-ndjson",
                SqlFormat::Csv => "text/csv",
            };
            let text = Client::new(&server.server)?
                .sql(&sql, min_token.as_deref(), timeout.as_deref(), accept)
                .await?;
            match format {
                SqlFormat::Json => match serde_json::from_str::<Value>(&text) {
                    Ok(v) => print(&v),
                    Err(_) => print!("{text}"),
                },
                _ => print!("{text}"),
            }
            Ok(())
        }
        Command::Get {
            urn,
            min_token,
            timeout,
            server,
        } => {
            print(
                &Client::new(&server.server)?
                    .resource(&urn, min_token.as_deref(), timeout.as_deref())
                    .await?,
            );
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Views { digest, server },
        } => {
            print(&Client::new(&server.server)?.views(digest).await?);
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::RebuildView {
                    kind,
                    shard,
                    server,
                },
        } => {
            print(
                &Client::new(&server.server)?
                    .rebuild_view(&kind, shard)
                    .await?,
            );
            Ok(())
        }
        Command::Tail(options) => {
            themis_server::tail::tail(&options, &mut std::io::stdout().lock()).await
        }
        Command::Log {
            shard,
            from_lsn,
            limit,
            server,
        } => {
            print(
                &Client::new(&server.server)?
                    .log(shard, from_lsn, limit)
                    .await?,
            );
            Ok(())
        }
    }
}
