//! Node assembly: the production seams (files, the system clock, OS randomness, HTTP between
//! nodes, etcd) wired into the log, and the HTTP server in front of it with graceful shutdown.
//!
//! Invariants: a single node opens its API only after every shard has a leader and has applied
//! its local log, so the first request a client can send is served; a cluster node opens its
//! peer listener before anything else (peers must reach it to elect leaders) and its API once
//! its replicas are open (reads are linearizable by default, so an unready replica never answers
//! from stale state unless asked to).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use themis_log::cluster::{self, NodeInfo};
use themis_log::seam::{
    Clock, LeaseId, MetaError, MetaStore, MetaWatch, NoPeers, OsEntropy, SystemClock, Transport,
};
use themis_log::{Log, LogConfig, ShardConfig, Topology};
use themis_storage::FileDisk;

use themis_materializers::{Materializer, MaterializerConfig};

use crate::api::{self, ApiLimits, AppState};
use crate::config::ServeArgs;
use crate::http_server::HttpLimits;
use crate::meta::EtcdMetaStore;
use crate::metrics::Metrics;
use crate::peer::PeerState;
use crate::wire_tcp::TcpTransport;

/// How long a starting cluster node waits for `themis cluster init` and for the initial nodes.
const CLUSTER_START_WAIT: Duration = Duration::from_secs(120);
/// How often a cluster node re-reads nodes and placement from the metadata store.
const TOPOLOGY_REFRESH: Duration = Duration::from_secs(1);

/// Runs a node until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.raft_heartbeat.is_zero()
        || args.raft_election_min <= args.raft_heartbeat
        || args.raft_election_max <= args.raft_election_min
    {
        bail!(
            "Raft timing must satisfy 0 < heartbeat < election min < election max, not {:?} / {:?} / {:?}",
            args.raft_heartbeat,
            args.raft_election_min,
            args.raft_election_max
        );
    }
    for (flag, timeout) in [
        ("--http-header-timeout", args.http_header_timeout),
        ("--http-body-timeout", args.http_body_timeout),
        ("--http-idle-timeout", args.http_idle_timeout),
        ("--http-write-timeout", args.http_write_timeout),
    ] {
        if timeout.is_zero() {
            bail!("{flag} must be more than 0 (a connection would never be served)");
        }
    }
    if args.http_connections_max == 0 {
        bail!("--http-connections-max must be at least 1");
    }
    // Before any file is opened: every connection and data file needs a descriptor.
    let open_files = crate::open_files::raise();
    let http_limits = HttpLimits {
        header_timeout: args.http_header_timeout,
        body_timeout: args.http_body_timeout,
        idle_timeout: args.http_idle_timeout,
        write_timeout: args.http_write_timeout,
        connections_max: crate::open_files::connections_cap(
            args.http_connections_max,
            open_files.soft,
        ),
    };
    if http_limits.connections_max < args.http_connections_max {
        tracing::warn!(
            open_files = ?open_files.soft,
            "serving at most {} HTTP connections, not {} (--http-connections-max): the open-file limit leaves no more",
            http_limits.connections_max,
            args.http_connections_max
        );
    }
    let disk = FileDisk::new(&args.data_dir)
        .with_context(|| format!("cannot use data directory {}", args.data_dir.display()))?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    let mut config = LogConfig {
        node_id: args.node_id,
        advertise: advertise.clone(),
        shards: args.shards,
        shard: ShardConfig {
            proposer: themis_log::shard::ProposerConfig {
                in_flight_max: args.proposals_in_flight_max.max(1),
                ..Default::default()
            },
            timing: themis_log::raft::RaftTiming {
                heartbeat_interval: args.raft_heartbeat,
                election_timeout_min: args.raft_election_min,
                election_timeout_max: args.raft_election_max,
            },
            snapshot_every: args.snapshot_every,
        },
        store: themis_log::store::StoreConfig {
            dedup_window: args.dedup_window,
            ..Default::default()
        },
        batch_events_max: args.batch_events_max,
        forwarding: args.forwarding,
        forward_timeout: args.request_timeout,
        ..Default::default()
    };
    let clock = Arc::new(SystemClock::new());

    // Cluster mode: peer listener first, then registration and placement from etcd.
    let mut cluster = None;
    let transport: Arc<dyn Transport> = match &args.etcd {
        None => Arc::new(NoPeers),
        Some(endpoints) => {
            let Some(peer_listen) = args.peer_listen else {
                bail!(
                    "--peer-listen is required with --etcd (the address other nodes reach this one at)"
                );
            };
            let meta: Arc<dyn MetaStore> = Arc::new(
                EtcdMetaStore::connect(endpoints)
                    .await
                    .context("cannot reach the metadata store")?,
            );
            let transport = Arc::new(TcpTransport::default());
            let peers = PeerState::default();
            let listener = tokio::net::TcpListener::bind(peer_listen)
                .await
                .with_context(|| format!("cannot listen on {peer_listen} for peers"))?;
            let peer_local = listener.local_addr()?;
            tokio::spawn(crate::wire_tcp::serve(listener, peers.clone()));
            let me = NodeInfo {
                id: args.node_id,
                api: advertise.clone(),
                peer: peer_local.to_string(),
            };
            let (topology, lease) =
                join_cluster(meta.as_ref(), &me, args.lease_ttl, clock.as_ref()).await?;
            tracing::info!(
                node = me.id,
                shards = topology.placement.shards.len(),
                hosted = ?topology.placement.hosted_by(me.id),
                "joined the cluster"
            );
            config.shards = topology.placement.shards.len() as u32;
            transport.set_peers(peer_addresses(&topology));
            config.topology = Some(topology);
            cluster = Some((meta, me, lease, peers, transport.clone()));
            transport
        }
    };

    // Before anything holds the views database: compaction needs it to itself.
    let views_disk = disk.clone();
    themis_log::seam::run_blocking(move || themis_materializers::compact_views(&views_disk))
        .await
        .context("the thread compacting the views database failed")?
        .context("compacting the views database")?;
    let log = Log::open(
        config,
        Arc::new(disk.clone()),
        clock.clone(),
        Arc::new(OsEntropy),
        transport,
    )
    .await
    .with_context(|| format!("cannot open the log in {}", args.data_dir.display()))?;
    let log = Arc::new(log);
    let meta_for_api = cluster.as_ref().map(|(meta, ..)| meta.clone());
    match cluster {
        None => log
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .context("shards did not elect a leader")?,
        Some((meta, me, lease, peers, transport)) => {
            peers.set(log.clone());
            tokio::spawn(keep_registered(
                meta.clone(),
                me,
                lease,
                args.lease_ttl,
                log.clone(),
                transport,
                clock.clone(),
            ));
        }
    }

    themis_materializers::runs::set_cache_bytes(args.view_cache_bytes);
    themis_query::tables::budget::set_decoded_bytes(args.query_cache_bytes);
    let views = Materializer::start(
        log.clone(),
        &disk,
        clock.clone(),
        MaterializerConfig {
            index_dir: Some(args.data_dir.join("indexes")),
            state_flush_rows: args.state_flush_rows as usize,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("cannot open the views in {}", args.data_dir.display()))?;
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let state = AppState {
        cursors: Arc::new(crate::api::cursors::Cursors::new(Arc::new(OsEntropy))),
        subscriptions: Arc::new(themis_log::subscribe::Hub::new(
            themis_log::subscribe::SubscribeConfig {
                subscribers_max: args.subscribers_max,
                ring_entries: args.subscribe_ring_entries,
                queue_items: args.subscribe_queue_items,
                ..Default::default()
            },
        )),
        closing: closing_rx,
        log: log.clone(),
        views: views.clone(),
        metrics: metrics.clone(),
        limits: ApiLimits {
            body_bytes_max: args.body_bytes_max,
            request_timeout: args.request_timeout,
            heartbeat: args.subscribe_heartbeat,
            linger: args.subscribe_linger,
            ..Default::default()
        },
        clock,
        meta: meta_for_api,
        query: themis_query::QueryEngine::new(
            log.clone(),
            views.clone(),
            themis_query::QueryConfig::default(),
        ),
    };
    if args.warm_queries {
        // Before listening: the first queries then cost what later ones do.
        let query = state.query.clone();
        match themis_log::seam::run_blocking(move || query.warm()).await {
            Ok(Ok(namespaces)) => tracing::info!(
                namespaces,
                decoded_bytes = themis_query::tables::budget::decoded_bytes(),
                "query tables warm"
            ),
            Ok(Err(e)) => tracing::warn!("warming the query tables failed: {e}"),
            Err(e) => tracing::warn!("warming the query tables failed: {e}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, data_dir = %args.data_dir.display(), shards = log.shard_count(), "themis listening");
    // A line for scripts and tests that wait for the server to be ready.
    println!("themis listening on http://{local}");
    crate::http_server::serve(
        listener,
        api::router(state),
        http_limits,
        metrics,
        async move {
            shutdown_signal().await;
            // Subscriptions never end by themselves: end them so shutdown does not wait on them.
            let _ = closing.send(true);
        },
    )
    .await;
    tracing::info!("shutting down");
    if let Err(e) = views.shutdown().await {
        tracing::warn!("views: final sync failed: {e}");
    }
    log.shutdown().await;
    Ok(())
}

/// Waits for the cluster spec, registers this node, and waits for the placement.
async fn join_cluster(
    meta: &dyn MetaStore,
    me: &NodeInfo,
    lease_ttl: Duration,
    clock: &dyn Clock,
) -> anyhow::Result<(Topology, LeaseId)> {
    let deadline = clock.monotonic() + CLUSTER_START_WAIT;
    let spec = loop {
        if let Some(spec) = cluster::read_spec(meta).await? {
            break spec;
        }
        if clock.monotonic() > deadline {
            bail!(
                "the cluster is not initialized: run `themis cluster init --etcd ... --shards N --replication R`"
            );
        }
        tracing::info!("waiting for `themis cluster init`");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let lease = cluster::register(meta, me, lease_ttl).await?;
    loop {
        if let Some(placement) = cluster::ensure_placement(meta, &spec).await? {
            let nodes = cluster::nodes(meta).await?;
            return Ok((Topology { placement, nodes }, lease));
        }
        // Keep the registration alive while waiting for the other initial nodes.
        meta.keep_alive(lease).await?;
        if clock.monotonic() > deadline {
            bail!(
                "only {} of the {} initial nodes registered in time",
                cluster::nodes(meta).await?.len(),
                spec.initial_nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps this node registered (renewing its lease, registering again if it lapsed) and the
/// log's and transport's view of nodes and placement fresh.
#[allow(clippy::too_many_arguments)]
async fn keep_registered(
    meta: Arc<dyn MetaStore>,
    me: NodeInfo,
    lease: LeaseId,
    lease_ttl: Duration,
    log: Arc<Log>,
    transport: Arc<TcpTransport>,
    clock: Arc<dyn Clock>,
) {
    let mut lease = Some(lease);
    let renew_every = (lease_ttl / 3).max(Duration::from_millis(200));
    let mut renewed_at = clock.monotonic();
    let mut watch: Option<Box<dyn MetaWatch>> = None;
    loop {
        if lease.is_none() || clock.monotonic().saturating_sub(renewed_at) >= renew_every {
            renewed_at = clock.monotonic();
            let renewed = match lease {
                Some(l) => meta.keep_alive(l).await,
                None => Err(MetaError::LeaseExpired(0)),
            };
            if let Err(e) = renewed {
                if !matches!(e, MetaError::LeaseExpired(0)) {
                    tracing::warn!("registration lease: {e}; registering again");
                }
                lease = cluster::register(meta.as_ref(), &me, lease_ttl)
                    .await
                    .inspect_err(|e| tracing::warn!("cannot register: {e}"))
                    .ok();
            }
        }
        if let (Ok(Some((placement, _))), Ok(nodes)) = (
            cluster::read_placement(meta.as_ref()).await,
            cluster::nodes(meta.as_ref()).await,
        ) {
            // Nodes whose registration lapsed keep their last known address: they may be back.
            let mut known = log.topology().map(|t| t.nodes).unwrap_or_default();
            known.extend(nodes);
            let topology = Topology {
                placement,
                nodes: known,
            };
            if log.topology().as_ref() != Some(&topology) {
                transport.set_peers(peer_addresses(&topology));
                log.set_topology(topology);
            }
            // Open replicas the placement gave this node, close those it took away.
            match log.reconcile().await {
                Ok((opened, closed)) if !opened.is_empty() || !closed.is_empty() => {
                    tracing::info!(?opened, ?closed, "replicas changed with the placement");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot open or close replicas: {e}"),
            }
        }
        // Wake on the next metadata change (a placement move, a node joining), or after the
        // refresh period at the latest (lease renewal, and a fallback when watching fails).
        if watch.is_none() {
            watch = meta
                .watch(cluster::PREFIX)
                .await
                .inspect_err(|e| tracing::warn!("cannot watch the metadata: {e}; polling"))
                .ok();
        }
        let period = tokio::time::sleep(TOPOLOGY_REFRESH);
        match &mut watch {
            Some(w) => {
                tokio::select! {
                    _ = period => {}
                    changed = w.changed() => {
                        if let Err(e) = changed {
                            tracing::warn!("metadata watch ended: {e}");
                            watch = None;
                        }
                    }
                }
            }
            None => period.await,
        }
    }
}

/// Node id → peer address, from the topology.
fn peer_addresses(topology: &Topology) -> std::collections::BTreeMap<u64, String> {
    topology
        .nodes
        .values()
        .map(|n| (n.id, n.peer.clone()))
        .collect()
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
