//! Configuration of `themis serve`: every flag has a `THEMIS_*` environment variable and a
//! default that runs a single node on loopback with a local data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `themis serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Data directory (created when missing).
    #[arg(long, env = "THEMIS_DATA_DIR", default_value = "./themis-data")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    #[arg(long, env = "THEMIS_LISTEN", default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
    /// Number of shards; fixed when the data directory is created.
    #[arg(long, env = "THEMIS_SHARDS", default_value_t = 4)]
    pub shards: u32,
    /// This node's id.
    #[arg(long, env = "THEMIS_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Largest request body, in bytes (larger ones get 413).
    #[arg(long, env = "THEMIS_BODY_BYTES_MAX", default_value_t = 16 << 20)]
    pub body_bytes_max: usize,
    /// How long an append may wait for its commit (e.g. 500ms, 30s, 2m).
    #[arg(long, env = "THEMIS_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long a client has to send a complete request head: from the connection's opening for
    /// its first request, from the first byte for later ones. A late head closes the connection.
    #[arg(long, env = "THEMIS_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// How long a client has to send a whole request body, counted from when the server first
    /// waits for it (408 `request_timeout` after it, and the connection is closed).
    #[arg(long, env = "THEMIS_HTTP_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "THEMIS_HTTP_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// How long a response may wait for a client that reads nothing (its socket buffer stays
    /// full) before the connection is closed; subscriptions included.
    #[arg(long, env = "THEMIS_HTTP_WRITE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_write_timeout: Duration,
    /// Most HTTP connections open at once (at most what the open-file limit leaves after a
    /// reserve for data files and peers); more get 503 `too_many_connections`.
    #[arg(long, env = "THEMIS_HTTP_CONNECTIONS_MAX", default_value_t = 10_000)]
    pub http_connections_max: usize,
    /// How long event ids are remembered for idempotent retries (by commit timestamps).
    #[arg(long, env = "THEMIS_DEDUP_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub dedup_window: Duration,
    /// Most events in one append request.
    #[arg(long, env = "THEMIS_BATCH_EVENTS_MAX", default_value_t = 10_000)]
    pub batch_events_max: usize,
    /// Entries per shard proposed and not yet answered; appends arriving meanwhile are
    /// group-committed into the next entry.
    #[arg(long, env = "THEMIS_PROPOSALS_IN_FLIGHT_MAX", default_value_t = 1)]
    pub proposals_in_flight_max: usize,
    /// Most concurrent change-stream subscriptions on this node (more get 503
    /// `too_many_subscribers`).
    #[arg(long, env = "THEMIS_SUBSCRIBERS_MAX", default_value_t = 1024)]
    pub subscribers_max: usize,
    /// Entries each shard keeps in memory for live subscribers; one that falls further behind
    /// reads from storage.
    #[arg(long, env = "THEMIS_SUBSCRIBE_RING_ENTRIES", default_value_t = 1024)]
    pub subscribe_ring_entries: usize,
    /// Deliveries queued for one subscriber before it reads from storage instead.
    #[arg(long, env = "THEMIS_SUBSCRIBE_QUEUE_ITEMS", default_value_t = 1024)]
    pub subscribe_queue_items: usize,
    /// Under load, a subscription writes at most once per this period, gathering what arrives
    /// meanwhile into one write (after a quiet spell the first message goes at once); 0 writes
    /// every message as soon as it is ready.
    #[arg(long, env = "THEMIS_SUBSCRIBE_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub subscribe_linger: Duration,
    /// Default heartbeat period of a subscription (a subscriber may ask for another with
    /// `heartbeat=`).
    #[arg(long, env = "THEMIS_SUBSCRIBE_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub subscribe_heartbeat: Duration,
    /// etcd endpoints (comma-separated `host:port`): run as a member of the cluster whose
    /// metadata lives there (see `themis cluster init`). Without it the node runs alone on its
    /// embedded metadata.
    #[arg(long, env = "THEMIS_ETCD")]
    pub etcd: Option<String>,
    /// Address the peer listener (Raft and forwarded requests between nodes) listens on;
    /// required with --etcd.
    #[arg(long, env = "THEMIS_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Address clients and other nodes use to reach this node's HTTP API (default: --listen).
    #[arg(long, env = "THEMIS_ADVERTISE")]
    pub advertise: Option<String>,
    /// Forward an append or read that reaches a node not leading its shard to the leader
    /// (otherwise answer 421 `not_leader` with the leader's address).
    #[arg(long, env = "THEMIS_FORWARDING", default_value_t = true, action = clap::ArgAction::Set)]
    pub forwarding: bool,
    /// How long this node's registration in etcd outlives its last renewal.
    #[arg(long, env = "THEMIS_LEASE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Raft heartbeat period of every shard (all nodes of a cluster should agree).
    #[arg(long, env = "THEMIS_RAFT_HEARTBEAT", default_value = "40ms", value_parser = parse_duration)]
    pub raft_heartbeat: Duration,
    /// Lower bound of the randomized Raft election timeout. A follower that stops hearing
    /// from its leader campaigns after the leader lease (the upper bound) plus a random
    /// timeout between the bounds, so failover takes about 1.5-2x the upper bound.
    #[arg(long, env = "THEMIS_RAFT_ELECTION_MIN", default_value = "100ms", value_parser = parse_duration)]
    pub raft_election_min: Duration,
    /// Upper bound of the randomized Raft election timeout (and the leader lease).
    #[arg(long, env = "THEMIS_RAFT_ELECTION_MAX", default_value = "200ms", value_parser = parse_duration)]
    pub raft_election_max: Duration,
    /// Entries of a shard's log between Raft snapshots; after each, the log before it counts as
    /// purged, so a replica that falls further behind catches up by installing the snapshot
    /// (state and log records) and then the tail. 0 (the default): snapshots only on demand,
    /// lagging replicas replay the log. A snapshot holds the shard's whole history in memory
    /// while it is built and sent.
    #[arg(long, env = "THEMIS_SNAPSHOT_EVERY", default_value_t = 0)]
    pub snapshot_every: u64,
    /// Resources of one namespace the document and relational views keep row by row before
    /// moving them into a compressed columnar run (and rows per block of a run). Every node of
    /// a cluster must use the same value (replicas compare their views' digests).
    #[arg(long, env = "THEMIS_STATE_FLUSH_ROWS", default_value_t = themis_materializers::document::FLUSH_ROWS_DEFAULT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub state_flush_rows: u32,
    /// Bytes of decoded columnar blocks kept in memory for point reads and patches (least
    /// recently used first out).
    #[arg(long, env = "THEMIS_VIEW_CACHE_BYTES", default_value_t = themis_materializers::runs::CACHE_BYTES_DEFAULT)]
    pub view_cache_bytes: usize,
    /// Bytes of block columns decoded for queries and kept for the next ones (a column of a
    /// cold chunk goes first when they pass it, and is decoded again when read). A query
    /// holds the columns it reads until it ends, above this budget.
    #[arg(long, env = "THEMIS_QUERY_CACHE_BYTES", default_value_t = themis_query::tables::budget::DECODED_BYTES_DEFAULT)]
    pub query_cache_bytes: usize,
    /// Before listening, take every relational namespace's table and decode its columns
    /// (within `--query-cache-bytes`), so that the first queries after a start cost what
    /// later ones do; `false` listens sooner and lets the first queries decode.
    #[arg(long, env = "THEMIS_WARM_QUERIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub warm_queries: bool,
    /// Threads of the async runtime (HTTP, Raft); default: one per CPU.
    #[arg(long, env = "THEMIS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Log filter (tracing env-filter syntax). hnsw_rs logs every graph drop at info.
    #[arg(
        long,
        env = "THEMIS_LOG",
        default_value = "info,openraft=warn,hnsw_rs=warn,tantivy=warn"
    )]
    pub log: String,
}

pub use themis_log::units::parse_duration;
