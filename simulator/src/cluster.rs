//! An in-process cluster: N nodes running the real `Log` (openraft groups, stores, forwarding)
//! on simulated disks, joined by a [`SimNetwork`], with replicas placed as `themis cluster init`
//! would place them. Nodes can crash (lose power: unsynced writes are lost or torn) and restart
//! from what their disk kept.
//!
//! With `inline` storage and a [`TokioClock`] on a paused current-thread runtime, everything
//! runs on one thread in virtual time and the same seed replays the same run (see `run`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use themis_log::cluster::{ClusterSpec, NodeInfo, Placement};
use themis_log::seam::{Clock, NodeId, SeededEntropy};
use themis_log::{Log, LogConfig, Topology};
use themis_materializers::{Materializer, MaterializerConfig};

use crate::clock::{NodeClock, TokioClock};
use crate::disk::{DiskStats, SimDisk};
use crate::network::SimNetwork;

/// A running in-process cluster.
#[derive(Debug)]
pub struct SimCluster {
    /// The network joining the nodes.
    pub net: Arc<SimNetwork>,
    /// The nodes' logs, by id (1..=n), while they run.
    nodes: Mutex<BTreeMap<NodeId, Arc<Log>>>,
    /// Their views, while they run.
    views: Mutex<BTreeMap<NodeId, Arc<Materializer>>>,
    /// What never dies with a node: its disk and clock, and its incarnation count.
    machines: BTreeMap<NodeId, Machine>,
    options: SimOptions,
    topology: Topology,
    /// Snapshots installed by incarnations that have since crashed.
    snapshots_installed_before: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Machine {
    disk: SimDisk,
    clock: NodeClock,
    incarnation: Mutex<u64>,
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
    /// The seed of every random draw (network, disks, event ids, election timeouts).
    pub seed: u64,
    /// Run storage work inline instead of on storage threads (required on one thread).
    pub inline: bool,
    /// Entries between Raft snapshots (and log purges); small values make a long outage end in
    /// a snapshot install.
    pub snapshot_every: u64,
}

impl SimCluster {
    /// Starts `n` nodes with `shards` shards of `replication` replicas, seeded by `seed`, with
    /// storage threads (for tests on a multi-threaded runtime).
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
            snapshot_every: 0,
        })
        .await
    }

    /// Starts a cluster as `o` says; call it inside a tokio runtime (its clock is the
    /// runtime's).
    pub async fn start_with(o: SimOptions) -> themis_log::Result<Self> {
        let net = SimNetwork::new(o.seed);
        let spec = ClusterSpec {
            shards: o.shards,
            replication: o.replication,
            initial_nodes: o.nodes as u32,
        };
        let ids: Vec<NodeId> = (1..=o.nodes).collect();
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
        let base = TokioClock::new(1_764_115_200_000);
        let machines = ids
            .iter()
            .map(|&id| {
                let machine = Machine {
                    disk: SimDisk::new(o.seed ^ (id << 48) ^ 0xd15c),
                    clock: NodeClock::new(base.clone()),
                    incarnation: Mutex::new(0),
                };
                (id, machine)
            })
            .collect();
        let cluster = Self {
            net,
            nodes: Mutex::default(),
            views: Mutex::default(),
            machines,
            options: o,
            topology,
            snapshots_installed_before: Default::default(),
        };
        // Nodes open concurrently: a shard's first replica initializes its group, and the
        // others must be reachable for it to elect a leader.
        let opens = ids.iter().map(|&id| cluster.boot(id));
        futures::future::try_join_all(opens).await?;
        Ok(cluster)
    }

    /// Opens node `id`'s next incarnation on its disk and attaches it to the network.
    async fn boot(&self, id: NodeId) -> themis_log::Result<()> {
        let machine = &self.machines[&id];
        let incarnation = {
            let mut i = machine.incarnation.lock().expect("incarnation lock");
            *i += 1;
            *i
        };
        let mut config = LogConfig {
            node_id: id,
            advertise: format!("sim-node-{id}"),
            shards: self.options.shards,
            topology: Some(self.topology.clone()),
            store: themis_log::store::StoreConfig {
                inline: self.options.inline,
                ..Default::default()
            },
            ..Default::default()
        };
        config.shard.snapshot_every = self.options.snapshot_every;
        let log = Log::open(
            config,
            Arc::new(machine.disk.clone()),
            Arc::new(machine.clock.clone()),
            // A new incarnation draws new randomness, as a restarted process would.
            Arc::new(SeededEntropy::new(
                self.options.seed ^ id ^ (incarnation << 32),
            )),
            self.net.transport(id, incarnation),
        )
        .await?;
        let log = Arc::new(log);
        let views = Materializer::start(
            log.clone(),
            &machine.disk,
            Arc::new(machine.clock.clone()),
            // Small columnar runs, so runs are flushed and merged within a short simulation
            // (the checker compares every replica's state views with a fold of the log).
            MaterializerConfig {
                state_flush_rows: 4,
                ..MaterializerConfig::default()
            },
        )
        .await
        .map_err(|e| themis_log::Error::Storage(format!("views of node {id}: {e}")))?;
        self.views.lock().expect("views lock").insert(id, views);
        self.nodes
            .lock()
            .expect("nodes lock")
            .insert(id, log.clone());
        self.net.attach(id, incarnation, log);
        Ok(())
    }

    /// Shards.
    pub fn shards(&self) -> u32 {
        self.options.shards
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.machines.keys().copied().collect()
    }

    /// Node `id`'s log, while it runs.
    pub fn node(&self, id: NodeId) -> Option<Arc<Log>> {
        self.nodes.lock().expect("nodes lock").get(&id).cloned()
    }

    /// Node `id`'s views, while it runs.
    pub fn views(&self, id: NodeId) -> Option<Arc<Materializer>> {
        self.views.lock().expect("views lock").get(&id).cloned()
    }

    /// The running nodes.
    pub fn running(&self) -> Vec<(NodeId, Arc<Log>)> {
        let nodes = self.nodes.lock().expect("nodes lock");
        nodes.iter().map(|(id, log)| (*id, log.clone())).collect()
    }

    /// Node `id`'s wall clock (to jump it).
    pub fn clock(&self, id: NodeId) -> &NodeClock {
        &self.machines[&id].clock
    }

    /// Node `id`'s disk.
    pub fn disk(&self, id: NodeId) -> &SimDisk {
        &self.machines[&id].disk
    }

    /// Disk statistics summed over the nodes.
    pub fn disk_stats(&self) -> DiskStats {
        let mut sum = DiskStats::default();
        for m in self.machines.values() {
            let s = m.disk.stats();
            sum.syncs += s.syncs;
            sum.failed_syncs += s.failed_syncs;
            sum.crashes += s.crashes;
            sum.sectors_kept += s.sectors_kept;
            sum.sectors_lost += s.sectors_lost;
        }
        sum
    }

    /// Raft snapshots installed so far by every incarnation of every node (a replica that fell
    /// behind the leader's purged log catches up this way).
    pub fn snapshots_installed(&self) -> u64 {
        let running: u64 = self
            .running()
            .iter()
            .map(|(_, log)| snapshots_installed(log, self.options.shards))
            .sum();
        running
            + self
                .snapshots_installed_before
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Node `id` loses power: it leaves the network, its disk keeps only what was synced (and
    /// a seeded part of what was not), and its Raft groups stop. Does nothing to a node that
    /// is down.
    pub async fn crash(&self, id: NodeId) {
        if let Some(log) = self.lose_power(id) {
            // Stop the dead incarnation's tasks; every disk call they make fails now.
            let _ = tokio::time::timeout(Duration::from_secs(5), log.shutdown()).await;
        }
    }

    /// Every node loses power at the same instant: all disks crash first, then the dead
    /// incarnations are stopped.
    pub async fn power_loss(&self) {
        let dead: Vec<Arc<Log>> = self
            .ids()
            .into_iter()
            .filter_map(|id| self.lose_power(id))
            .collect();
        for log in dead {
            let _ = tokio::time::timeout(Duration::from_secs(5), log.shutdown()).await;
        }
    }

    /// The instant of a power loss of node `id`: it leaves the network, its views die with it,
    /// its disk crashes. Returns the dead incarnation, still to be stopped (`None`: it was down).
    fn lose_power(&self, id: NodeId) -> Option<Arc<Log>> {
        let log = self.nodes.lock().expect("nodes lock").remove(&id)?;
        // The views die with the node: their handles fail once the disk has crashed.
        self.views.lock().expect("views lock").remove(&id);
        self.net.detach(id);
        self.machines[&id].disk.crash();
        self.snapshots_installed_before.fetch_add(
            snapshots_installed(&log, self.options.shards),
            std::sync::atomic::Ordering::Relaxed,
        );
        Some(log)
    }

    /// Restarts node `id` from its disk (after [`crash`](Self::crash)); a node that runs is
    /// left alone.
    pub async fn restart(&self, id: NodeId) -> themis_log::Result<()> {
        if self.node(id).is_some() {
            return Ok(());
        }
        self.boot(id).await
    }

    /// Waits until every shard has a leader on every running node that holds it.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> themis_log::Result<()> {
        for (_, log) in self.running() {
            log.wait_for_leaders(timeout).await?;
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for (_, log) in self.running() {
            log.shutdown().await;
        }
    }

    /// The virtual clock shared by the nodes (without their wall-clock skew).
    pub fn now(&self) -> Duration {
        self.machines
            .values()
            .next()
            .map_or(Duration::ZERO, |m| m.clock.monotonic())
    }
}

fn snapshots_installed(log: &Log, shards: u32) -> u64 {
    (0..shards)
        .filter_map(|s| log.shard(themis_log::ShardId(s)).ok())
        .map(|sh| {
            sh.store()
                .stats()
                .snapshots_installed
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum()
}
