//! Node assembly: the production seams (files, the system clock, OS randomness, no peers yet)
//! wired into the log, and the HTTP server in front of it with graceful shutdown.
//!
//! Invariant: the listener opens only after every shard has a leader, so the first request a
//! client can send is served.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use themis_log::seam::{NoPeers, OsEntropy, SystemClock};
use themis_log::{Log, LogConfig, ShardConfig};
use themis_storage::FileDisk;

use crate::api::{self, ApiLimits, AppState};
use crate::config::ServeArgs;
use crate::metrics::Metrics;

/// Runs a node until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let disk = FileDisk::new(&args.data_dir)
        .with_context(|| format!("cannot use data directory {}", args.data_dir.display()))?;
    let config = LogConfig {
        node_id: args.node_id,
        advertise: args.listen.to_string(),
        shards: args.shards,
        shard: ShardConfig {
            proposer: themis_log::shard::ProposerConfig {
                in_flight_max: args.proposals_in_flight_max.max(1),
                ..Default::default()
            },
            ..Default::default()
        },
        store: themis_log::store::StoreConfig {
            dedup_window: args.dedup_window,
            ..Default::default()
        },
        batch_events_max: args.batch_events_max,
        ..Default::default()
    };
    let clock = Arc::new(SystemClock::new());
    let log = Log::open(
        config,
        Arc::new(disk),
        clock.clone(),
        Arc::new(OsEntropy),
        Arc::new(NoPeers),
    )
    .await
    .with_context(|| format!("cannot open the log in {}", args.data_dir.display()))?;
    let log = Arc::new(log);
    log.wait_for_leaders(Duration::from_secs(30))
        .await
        .context("shards did not elect a leader")?;

    let state = AppState {
        log: log.clone(),
        metrics: Arc::new(Metrics::default()),
        limits: ApiLimits {
            body_bytes_max: args.body_bytes_max,
            request_timeout: args.request_timeout,
            ..Default::default()
        },
        clock,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, data_dir = %args.data_dir.display(), shards = args.shards, "themis listening");
    // A line for scripts and tests that wait for the server to be ready.
    println!("themis listening on http://{local}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("http server failed")?;
    tracing::info!("shutting down");
    log.shutdown().await;
    Ok(())
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
