//! An in-process cluster: N nodes running the real `Log` (openraft groups, stores, forwarding)
//! on in-memory disks, joined by a [`SimNetwork`], with replicas placed as `themis cluster init`
//! would place them.
//!
//! Not deterministic yet: each node's storage threads are OS threads and time is tokio's real
//! clock; the deterministic executor is the next step of the simulator issue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use themis_log::cluster::{ClusterSpec, NodeInfo, Placement};
use themis_log::seam::{Clock, NodeId, SeededEntropy, SystemClock};
use themis_log::{Log, LogConfig, Topology};
use themis_storage::MemoryDisk;

use crate::network::SimNetwork;

/// A running in-process cluster.
#[derive(Debug)]
pub struct SimCluster {
    /// The network joining the nodes.
    pub net: Arc<SimNetwork>,
    /// The nodes' logs, by id (1..=n).
    pub nodes: BTreeMap<NodeId, Arc<Log>>,
}

/// How a simulated cluster runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Nodes (ids 1..=n).
    pub nodes: u64,
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: u32,
    /// The seed of every random draw (network loss, event ids, election timeouts).
    pub seed: u64,
    /// Run storage work inline instead of on storage threads (required on one thread).
    pub inline: bool,
    /// The nodes' clock.
    pub clock: Arc<dyn Clock>,
}

impl SimCluster {
    /// Starts `n` nodes with `shards` shards of `replication` replicas, seeded by `seed`, with
    /// storage threads and the system clock.
    pub async fn start(
        n: u64,
        shards: u32,
        replication: u32,
        seed: u64,
    ) -> themis_log::Result<Self> {
        Self::start_with(SimOptions {
            nodes: n,
            shards,
            replication,
            seed,
            inline: false,
            clock: Arc::new(SystemClock::new()),
        })
        .await
    }

    /// Starts a cluster as `o` says.
    pub async fn start_with(o: SimOptions) -> themis_log::Result<Self> {
        let SimOptions {
            nodes: n,
            shards,
            replication,
            seed,
            inline,
            clock,
        } = o;
        let net = SimNetwork::new(seed);
        let spec = ClusterSpec {
            shards,
            replication,
            initial_nodes: n as u32,
        };
        let ids: Vec<NodeId> = (1..=n).collect();
        let placement = Placement::compute(&spec, &ids).map_err(themis_log::Error::Config)?;
        let infos: BTreeMap<NodeId, NodeInfo> = ids
            .iter()
            .map(|&id| {
                let info = NodeInfo {
                    id,
                    api: format!("sim-node-{id}"),
                    peer: format!("sim-node-{id}"),
                };
                (id, info)
            })
            .collect();
        let topology = Topology {
            placement,
            nodes: infos,
        };
        // Nodes open concurrently: a shard's first replica initializes its group, and the
        // others must be reachable for it to elect a leader.
        let opens = ids.iter().map(|&id| {
            let (net, topology, clock) = (net.clone(), topology.clone(), clock.clone());
            async move {
                let config = LogConfig {
                    node_id: id,
                    advertise: format!("sim-node-{id}"),
                    shards,
                    topology: Some(topology),
                    store: themis_log::store::StoreConfig {
                        inline,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let log = Log::open(
                    config,
                    Arc::new(MemoryDisk::new()),
                    clock,
                    Arc::new(SeededEntropy::new(seed ^ id)),
                    net.transport(id),
                )
                .await?;
                let log = Arc::new(log);
                net.attach(id, log.clone());
                Ok::<_, themis_log::Error>((id, log))
            }
        });
        let nodes = futures::future::try_join_all(opens)
            .await?
            .into_iter()
            .collect();
        Ok(Self { net, nodes })
    }

    /// Node `id`'s log.
    pub fn node(&self, id: NodeId) -> &Arc<Log> {
        &self.nodes[&id]
    }

    /// Waits until every shard has a leader on every node that holds it.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> themis_log::Result<()> {
        for log in self.nodes.values() {
            log.wait_for_leaders(timeout).await?;
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for log in self.nodes.values() {
            log.shutdown().await;
        }
    }
}
