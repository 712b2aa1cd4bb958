//! [`Log`]: the shards this node hosts and the ring that routes a URN to its shard. The entry
//! point for appends (validation, routing, per-shard atomicity) and reads.
//!
//! Invariant: the shard count of a data directory never changes silently. It is recorded on first
//! start, and opening with another count fails, since placement would send streams to shards that
//! do not hold them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use rand::rngs::StdRng;
use redb::{ReadableDatabase, TableDefinition};

use crate::cluster::{NodeInfo, Placement};
use crate::entry::{Proposal, ProposedEvent};
use crate::event::{EventInput, EventLimits, ExpectedRevision};
use crate::ids::{Lsn, ShardId};
use crate::ring::Ring;
use crate::seam::{Clock, Entropy, NodeId, Transport, TransportError, random_uuid};
use crate::shard::{Appended, Shard, ShardConfig, StreamPage};
use crate::store::{NodeStore, StoreConfig};
use crate::token::Token;
use crate::urn::Urn;
use crate::{Error, Result};

const NODE_META: TableDefinition<&str, u64> = TableDefinition::new("node");

/// Tunables of the node's log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Address other nodes reach this node at (recorded in Raft membership).
    pub advertise: String,
    /// Number of shards (fixed when the data directory is created).
    pub shards: u32,
    /// Shard tunables.
    pub shard: ShardConfig,
    /// Store tunables.
    pub store: StoreConfig,
    /// Per-event limits.
    pub limits: EventLimits,
    /// Most events in one append.
    pub batch_events_max: usize,
    /// Where every shard's replicas live, in a cluster; `None` runs every shard on this node
    /// alone.
    pub topology: Option<Topology>,
    /// Whether an append that reaches a node that does not lead its shard is forwarded to the
    /// leader (otherwise it fails with [`Error::NotLeader`], naming the leader).
    pub forwarding: bool,
    /// How long an append or a read waits for its shard to elect a leader.
    pub leader_wait: Duration,
    /// How long a forwarded append or read may take.
    pub forward_timeout: Duration,
}

/// The cluster as this node knows it: replica placement and the registered nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Replicas of every shard.
    pub placement: Placement,
    /// Nodes by id, with their addresses.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            advertise: "127.0.0.1:8765".into(),
            shards: 4,
            shard: ShardConfig::default(),
            store: StoreConfig::default(),
            limits: EventLimits::default(),
            batch_events_max: 10_000,
            topology: None,
            forwarding: true,
            leader_wait: Duration::from_secs(3),
            forward_timeout: Duration::from_secs(30),
        }
    }
}

/// How a stream read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every append acknowledged before the read began (read index through the
    /// shard's leader).
    #[default]
    Linearizable,
    /// Whatever this node's replica has applied, however far behind the leader it is.
    Stale,
}

/// One shard as its leader (or, without one, this node's replica) sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: ShardId,
    /// The node that answered.
    pub reported_by: NodeId,
    /// The leader, when known.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
    /// Highest LSN known committed.
    pub commit_lsn: u64,
    /// Highest LSN applied by the reporting replica.
    pub applied_lsn: u64,
    /// Voters and learners with their replication state.
    pub replicas: Vec<ReplicaStatus>,
    /// Why the leader could not be asked, when it could not.
    pub error: Option<String>,
}

/// One replica of a shard, as the leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    /// The node holding it.
    pub node: NodeId,
    /// Whether it votes (false: a learner catching up).
    pub voter: bool,
    /// Highest LSN the leader knows it holds (the leader's own last LSN for itself); unknown
    /// when the reporter is not the leader.
    pub matched_lsn: Option<u64>,
    /// Entries it is behind the leader's last LSN.
    pub lag: Option<u64>,
}

/// The Raft members of shard `id` by the placement, with their peer addresses.
fn members_of(t: &Topology, id: ShardId) -> BTreeMap<NodeId, BasicNode> {
    t.placement
        .replicas(id)
        .iter()
        .map(|&n| {
            let peer = t.nodes.get(&n).map(|i| i.peer.clone()).unwrap_or_default();
            (n, BasicNode::new(peer))
        })
        .collect()
}

/// Hops a forwarded request may take before it gives up (a leader change while forwarding can
/// send it one node further).
const FORWARD_HOPS_MAX: u8 = 2;
/// Pause between attempts at routing a request whose leader could not be reached.
const ROUTE_RETRY: Duration = Duration::from_millis(25);
/// Format version of a forwarded append.
const FORWARD_VERSION: u8 = 1;

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {source}")]
pub struct BatchError {
    /// Index of the event in the batch.
    pub index: usize,
    /// What is wrong with it.
    pub source: crate::event::InvalidEvent,
}

/// A batch that passed [`Log::validate`], ready to append.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    events: Vec<ProposedEvent>,
    /// Whether answering from the applied state first can help: only batches with client ids
    /// (possible retries) or expected revisions (possible conflicts) need the lookup.
    precheck: bool,
}

impl ValidatedBatch {
    /// The events, in batch order.
    pub fn events(&self) -> impl Iterator<Item = &crate::event::Event> {
        self.events.iter().map(|p| &p.event)
    }

    /// A batch that skipped [`Log::validate`], for tests that need entries an older version
    /// with fewer checks could have committed (the views must not stop on them).
    #[doc(hidden)]
    pub fn unchecked(events: Vec<ProposedEvent>) -> ValidatedBatch {
        ValidatedBatch {
            events,
            precheck: false,
        }
    }
}

/// The answer to an append: per shard, and the token covering all of them.
#[derive(Debug, Clone)]
pub struct AppendResult {
    /// Token covering every position written.
    pub token: Token,
    /// One result per shard touched, in shard order.
    pub shards: Vec<(ShardId, Result<Appended>)>,
}

/// The shards this node hosts.
#[derive(Debug)]
pub struct Log {
    node_id: NodeId,
    ring: Ring,
    /// Indexed by shard id; `None` where this node holds no replica. Replicas are opened and
    /// closed at run time when the placement changes.
    shards: RwLock<Vec<Option<Arc<Shard>>>>,
    /// What opening a replica at run time needs.
    store: NodeStore,
    clock: Arc<dyn Clock>,
    shard_config: ShardConfig,
    topology: RwLock<Option<Topology>>,
    transport: Arc<dyn Transport>,
    forwarding: bool,
    leader_wait: Duration,
    forward_timeout: Duration,
    limits: EventLimits,
    batch_events_max: usize,
    ids: Mutex<StdRng>,
}

impl Log {
    /// Opens (or creates) every shard on `disk` and starts their Raft groups.
    pub async fn open(
        config: LogConfig,
        disk: Arc<dyn themis_storage::Disk>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        transport: Arc<dyn Transport>,
    ) -> Result<Log> {
        if config.shards == 0 || config.shards > 4096 {
            return Err(Error::Config(format!(
                "shards must be between 1 and 4096, not {}",
                config.shards
            )));
        }
        check_shard_count(disk.as_ref(), config.shards)?;
        crate::seam::seed_raft_rng(entropy.as_ref());
        let open = |name: &str| {
            disk.open_database(name).map_err(|e| match e {
                themis_storage::Error::Database { location, source } => Error::Corrupted {
                    location,
                    detail: source.to_string(),
                },
                other => Error::Storage(other.to_string()),
            })
        };
        let (db, state_db) = (open("log")?, open("state")?);
        let store = NodeStore::open(
            db,
            state_db,
            disk.describe("log"),
            config.store.clone(),
            clock.clone(),
        )?;
        if let Some(t) = &config.topology
            && t.placement.shards.len() != config.shards as usize
        {
            return Err(Error::Config(format!(
                "the placement covers {} shards, the node was started with {}",
                t.placement.shards.len(),
                config.shards
            )));
        }
        let mut shards = Vec::with_capacity(config.shards as usize);
        for i in 0..config.shards {
            let id = ShardId(i);
            // Members of a new group, and whether this node initializes it.
            let (members, bootstrap) = match &config.topology {
                None => (
                    BTreeMap::from([(config.node_id, BasicNode::new(&config.advertise))]),
                    true,
                ),
                Some(t) => {
                    if !t.placement.replicas(id).contains(&config.node_id) {
                        shards.push(None);
                        continue;
                    }
                    (
                        members_of(t, id),
                        t.placement.bootstraps(id, config.node_id),
                    )
                }
            };
            let shard = Shard::open(
                id,
                config.node_id,
                members,
                bootstrap,
                &store,
                clock.clone(),
                transport.clone(),
                &config.shard,
            )
            .await?;
            shards.push(Some(Arc::new(shard)));
        }
        Ok(Log {
            node_id: config.node_id,
            ring: Ring::new(config.shards),
            shards: RwLock::new(shards),
            store,
            clock,
            shard_config: config.shard,
            topology: RwLock::new(config.topology),
            transport,
            forwarding: config.forwarding,
            leader_wait: config.leader_wait,
            forward_timeout: config.forward_timeout,
            limits: config.limits,
            batch_events_max: config.batch_events_max,
            ids: Mutex::new(entropy.stream("event-ids")),
        })
    }

    /// Waits until every shard hosted here has a leader and has applied its local log.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<()> {
        for shard in self.shards() {
            shard.wait_for_leader(timeout).await?;
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Number of shards in the cluster.
    pub fn shard_count(&self) -> u32 {
        self.ring.shards().len() as u32
    }

    /// The shards this node holds a replica of, in id order.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .read()
            .expect("shards lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// This node's replica of shard `id`: an error names the valid range for an unknown shard
    /// and the replicas' nodes for a shard held elsewhere.
    pub fn shard(&self, id: ShardId) -> Result<Arc<Shard>> {
        let shards = self.shards.read().expect("shards lock");
        match shards.get(id.0 as usize) {
            Some(Some(shard)) => Ok(shard.clone()),
            Some(None) => Err(Error::NotHosted {
                shard: id,
                replicas: self.replicas(id),
            }),
            None => Err(Error::UnknownShard {
                shard: id,
                shards: shards.len() as u32,
            }),
        }
    }

    /// Opens the replicas the placement newly gives this node (they join as learners: the
    /// shard's leader adds them) and closes those it no longer gives it (a move removes a
    /// replica from the placement only after the Raft membership change committed). A closed
    /// replica's log and state are deleted, so adding it back later starts a clean learner
    /// instead of a replica that remembers an old membership. Returns the shards opened and
    /// closed.
    pub async fn reconcile(&self) -> Result<(Vec<ShardId>, Vec<ShardId>)> {
        let Some(topology) = self.topology() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (mut opened, mut closed) = (Vec::new(), Vec::new());
        for i in 0..self.shard_count() {
            let id = ShardId(i);
            let placed = topology.placement.replicas(id).contains(&self.node_id);
            let current = self.shards.read().expect("shards lock")[i as usize].clone();
            match (placed, current) {
                (true, None) => {
                    let shard = Shard::open(
                        id,
                        self.node_id,
                        members_of(&topology, id),
                        false,
                        &self.store,
                        self.clock.clone(),
                        self.transport.clone(),
                        &self.shard_config,
                    )
                    .await?;
                    self.shards.write().expect("shards lock")[i as usize] = Some(Arc::new(shard));
                    opened.push(id);
                }
                (false, Some(shard)) => {
                    self.shards.write().expect("shards lock")[i as usize] = None;
                    shard.shutdown().await;
                    shard.store().destroy().await?;
                    closed.push(id);
                }
                _ => {}
            }
        }
        Ok((opened, closed))
    }

    /// The ring that places streams on shards.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The shard holding `urn`'s stream.
    pub fn shard_id_for(&self, urn: &Urn) -> ShardId {
        self.ring.shard_for_urn(urn)
    }

    /// The cluster as this node knows it (`None` on a single node).
    pub fn topology(&self) -> Option<Topology> {
        self.topology.read().expect("topology lock").clone()
    }

    /// Replaces the known topology (new node addresses, a changed placement).
    pub fn set_topology(&self, topology: Topology) {
        *self.topology.write().expect("topology lock") = Some(topology);
    }

    /// The nodes holding replicas of `id` (this node alone on a single node).
    pub fn replicas(&self, id: ShardId) -> Vec<NodeId> {
        match &*self.topology.read().expect("topology lock") {
            Some(t) => t.placement.replicas(id).to_vec(),
            None => vec![self.node_id],
        }
    }

    /// Where node `id` can be reached, when known.
    pub fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.topology
            .read()
            .expect("topology lock")
            .as_ref()
            .and_then(|t| t.nodes.get(&id).cloned())
    }

    /// Where to send a request for shard `id`: `Ok(None)` when this node leads it, otherwise
    /// the leader this node knows of (waiting for an election if needed), or for a shard held
    /// elsewhere its first replica.
    async fn route(&self, id: ShardId) -> Result<Option<NodeId>> {
        let other_replica = || {
            self.replicas(id)
                .into_iter()
                .find(|&n| n != self.node_id)
                .map(Some)
                .ok_or(Error::Unavailable {
                    shard: id,
                    reason: "no other node is known to hold the shard".into(),
                })
        };
        match self.shard(id) {
            // A replica that has not joined its group yet (a learner being added) knows no
            // leader: ask a replica that does.
            Ok(shard) if !shard.joined() => other_replica(),
            Ok(shard) => {
                let leader = shard.leader(self.leader_wait).await?;
                Ok((leader != self.node_id).then_some(leader))
            }
            Err(Error::NotHosted { .. }) => other_replica(),
            Err(e) => Err(e),
        }
    }

    /// Sends `request` for shard `id` on `channel` to node `to` and decodes its JSON answer.
    /// The outer `Err` means the request was certainly not delivered, so it may be sent again.
    async fn forward<T: serde::de::DeserializeOwned>(
        &self,
        to: NodeId,
        id: ShardId,
        channel: String,
        request: Bytes,
    ) -> std::result::Result<Result<T>, Error> {
        match self
            .transport
            .call(to, &channel, request, self.forward_timeout)
            .await
        {
            Ok(answer) => Ok(
                serde_json::from_slice::<Result<T>>(&answer).unwrap_or_else(|e| {
                    Err(Error::OutcomeUnknown {
                        shard: id,
                        reason: format!("node {to} answered unreadably: {e}"),
                    })
                }),
            ),
            Err(e @ TransportError::Unreachable(..)) => Err(Error::Unavailable {
                shard: id,
                reason: e.to_string(),
            }),
            Err(e @ TransportError::Timeout(..)) => Ok(Err(Error::OutcomeUnknown {
                shard: id,
                reason: e.to_string(),
            })),
        }
    }

    /// Attempts at routing a request before giving up, [`ROUTE_RETRY`] apart: together they
    /// span the leader wait, so a request that meets a dead leader waits for the next one.
    fn route_attempts(&self) -> u32 {
        (self.leader_wait.as_millis() / ROUTE_RETRY.as_millis()).max(1) as u32
    }

    /// Appends one shard's part of a batch here when this node leads the shard, otherwise on
    /// its leader (forwarded at most [`FORWARD_HOPS_MAX`] times). A forward that could not be
    /// delivered (the leader died, an election is under way) is routed again until the leader
    /// wait has passed; a delivered one is never sent twice.
    async fn append_part(
        &self,
        id: ShardId,
        events: Vec<ProposedEvent>,
        precheck: bool,
        hops: u8,
    ) -> Result<Appended> {
        let mut events = events;
        let mut body: Option<Bytes> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(to) = self.route(id).await? else {
                return self.shard(id)?.append(events, precheck).await;
            };
            if !self.forwarding || hops >= FORWARD_HOPS_MAX {
                return Err(Error::NotLeader {
                    shard: id,
                    leader: Some(to),
                });
            }
            let bytes = match &body {
                Some(bytes) => bytes.clone(),
                None => {
                    let proposal = Proposal {
                        ts_ms: 0,
                        batches: vec![events],
                    };
                    let mut bytes = vec![FORWARD_VERSION, hops + 1, u8::from(precheck)];
                    bytes.extend(proposal.encode());
                    events = proposal.batches.into_iter().next().unwrap_or_default();
                    body.insert(Bytes::from(bytes)).clone()
                }
            };
            match self
                .forward(to, id, format!("append/{}", id.0), bytes)
                .await
            {
                Ok(answer) => return answer,
                Err(e) if attempt >= self.route_attempts() => return Err(e),
                Err(_) => tokio::time::sleep(ROUTE_RETRY).await,
            }
        }
    }

    /// Reads up to `limit` events of `urn` from revision `from`. A linearizable read first
    /// learns the read index from the shard's leader and waits until this replica applied it.
    pub async fn read_stream(
        &self,
        urn: &Urn,
        from: u64,
        limit: usize,
        consistency: Consistency,
    ) -> Result<StreamPage> {
        let id = self.shard_id_for(urn);
        let shard = self.shard(id)?;
        if consistency == Consistency::Linearizable {
            let index = self.read_index(id, 0).await?;
            shard.wait_applied(index, self.forward_timeout).await?;
        }
        shard.read_stream(urn, from, limit)
    }

    /// The read index of shard `id`, from its leader (routed again, like an append, when the
    /// leader cannot be reached).
    async fn read_index(&self, id: ShardId, hops: u8) -> Result<Lsn> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let to = match self.route(id).await? {
                None => return self.shard(id)?.read_index().await,
                Some(to) if hops < FORWARD_HOPS_MAX => to,
                Some(to) => {
                    return Err(Error::NotLeader {
                        shard: id,
                        leader: Some(to),
                    });
                }
            };
            let body = Bytes::from(vec![hops + 1]);
            match self
                .forward(to, id, format!("read_index/{}", id.0), body)
                .await
            {
                Ok(answer) => return answer,
                Err(e) if attempt >= self.route_attempts() => return Err(e),
                Err(_) => tokio::time::sleep(ROUTE_RETRY).await,
            }
        }
    }

    /// Makes node `to` a voter of shard `id` in place of node `from`, on the shard's leader:
    /// `to` joins as a learner, and once it has caught up (within `catch_up`) one joint
    /// membership change swaps the voters. `to` must already run a replica of the shard (the
    /// placement names it). Repeating a finished move does nothing.
    pub async fn swap_voter(
        &self,
        id: ShardId,
        from: NodeId,
        to: NodeId,
        catch_up: Duration,
    ) -> Result<()> {
        // Leadership may move while the learner catches up or the change commits (a leader
        // steps down, an election after a restart): route again, as an append would. The
        // steps are idempotent: a learner already added is added again, a membership already
        // changed is left alone.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.swap_voter_hop(id, from, to, catch_up, 0).await {
                Err(Error::NotLeader { .. }) if attempt < self.route_attempts() => {
                    tokio::time::sleep(ROUTE_RETRY).await
                }
                done => return done,
            }
        }
    }

    async fn swap_voter_hop(
        &self,
        id: ShardId,
        from: NodeId,
        to: NodeId,
        catch_up: Duration,
        hops: u8,
    ) -> Result<()> {
        if let Some(leader) = self.route(id).await? {
            if hops >= FORWARD_HOPS_MAX {
                return Err(Error::NotLeader {
                    shard: id,
                    leader: Some(leader),
                });
            }
            let body = serde_json::to_vec(&(from, to, catch_up.as_millis() as u64, hops + 1))
                .expect("json");
            return self
                .forward(
                    leader,
                    id,
                    format!("membership/{}", id.0),
                    Bytes::from(body),
                )
                .await
                .unwrap_or_else(Err);
        }
        let shard = self.shard(id)?;
        let raft = shard.raft();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| Error::Unavailable {
            shard: id,
            reason: format!("{what}: {e}"),
        };
        let voters: std::collections::BTreeSet<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let target: std::collections::BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|&n| n != from)
            .chain([to])
            .collect();
        if voters == target {
            return Ok(());
        }
        if !voters.contains(&from) {
            return Err(Error::InvalidRequest(format!(
                "node {from} is not a voter of shard {} (voters: {voters:?})",
                id.0
            )));
        }
        let Some(node) = self.node_info(to) else {
            return Err(Error::InvalidRequest(format!(
                "node {to} is not registered in the cluster"
            )));
        };
        let moved = |e: &openraft::error::RaftError<
            NodeId,
            openraft::error::ClientWriteError<NodeId, BasicNode>,
        >| {
            e.forward_to_leader::<BasicNode>()
                .map(|f| Error::NotLeader {
                    shard: id,
                    leader: f.leader_id,
                })
        };
        raft.add_learner(to, BasicNode::new(node.peer), false)
            .await
            .map_err(|e| moved(&e).unwrap_or_else(|| unavailable("cannot add the learner", &e)))?;
        let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
        // Until the learner caught up, or this node no longer leads.
        let waited = raft
            .wait(Some(catch_up))
            .metrics(
                |m| {
                    m.current_leader != Some(m.id)
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&to))
                            .is_some_and(|matched| matched.is_some_and(|l| l.index >= last))
                },
                "the learner caught up",
            )
            .await
            .map_err(|e| unavailable(&format!("node {to} did not catch up"), &e))?;
        if waited.current_leader != Some(waited.id) {
            return Err(Error::NotLeader {
                shard: id,
                leader: waited.current_leader,
            });
        }
        raft.change_membership(target, false).await.map_err(|e| {
            moved(&e).unwrap_or_else(|| unavailable("the membership change failed", &e))
        })?;
        Ok(())
    }

    /// The status of every shard, from each shard's leader where it can be reached.
    pub async fn status(&self) -> Vec<ShardStatus> {
        let all = (0..self.shard_count()).map(|i| async move {
            let id = ShardId(i);
            match self.shard_status(id, 0).await {
                Ok(status) => status,
                Err(e) => {
                    let mut status = self
                        .shard(id)
                        .map(|s| self.local_status(&s))
                        .unwrap_or_else(|_| ShardStatus {
                            shard: id,
                            reported_by: self.node_id,
                            leader: None,
                            term: 0,
                            commit_lsn: 0,
                            applied_lsn: 0,
                            replicas: self
                                .replicas(id)
                                .into_iter()
                                .map(|node| ReplicaStatus {
                                    node,
                                    voter: true,
                                    matched_lsn: None,
                                    lag: None,
                                })
                                .collect(),
                            error: None,
                        });
                    status.error = Some(e.to_string());
                    status
                }
            }
        });
        futures::future::join_all(all).await
    }

    /// Shard `id`'s status from its leader.
    async fn shard_status(&self, id: ShardId, hops: u8) -> Result<ShardStatus> {
        match self.route(id).await? {
            None => Ok(self.local_status(&*self.shard(id)?)),
            Some(to) if hops < FORWARD_HOPS_MAX => self
                .forward(
                    to,
                    id,
                    format!("status/{}", id.0),
                    Bytes::from(vec![hops + 1]),
                )
                .await
                .unwrap_or_else(Err),
            Some(to) => Err(Error::NotLeader {
                shard: id,
                leader: Some(to),
            }),
        }
    }

    /// What this node's replica of `shard` knows.
    fn local_status(&self, shard: &Shard) -> ShardStatus {
        let m = shard.raft().metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone();
        let replicas = membership
            .nodes()
            .map(|(&node, _)| {
                let matched = if node == self.node_id && m.current_leader == Some(node) {
                    Some(last)
                } else {
                    replication
                        .as_ref()
                        .and_then(|r| r.get(&node))
                        .map(|id| id.map_or(0, |id| id.index))
                };
                ReplicaStatus {
                    node,
                    voter: voters.contains(&node),
                    matched_lsn: matched,
                    lag: matched.map(|x| last.saturating_sub(x)),
                }
            })
            .collect();
        ShardStatus {
            shard: shard.id(),
            reported_by: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            // The committed index is kept in memory; after a restart it is known again only
            // once something commits, but whatever was applied was committed.
            commit_lsn: shard
                .store()
                .stats()
                .committed
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(m.last_applied.map_or(0, |id| id.index)),
            applied_lsn: m.last_applied.map_or(0, |id| id.index),
            replicas,
            error: None,
        }
    }

    /// Serves a request from another node: Raft RPCs (`raft/<shard>/<rpc>`), forwarded appends
    /// (`append/<shard>`) and read-index requests (`read_index/<shard>`). The answer is JSON;
    /// an `Err` means the request itself was unusable (unknown channel, undecodable body).
    pub async fn handle_peer(
        &self,
        channel: &str,
        body: Bytes,
    ) -> std::result::Result<Bytes, String> {
        let mut parts = channel.split('/');
        let (kind, shard, rpc) = (parts.next(), parts.next(), parts.next());
        let id = shard
            .and_then(|s| s.parse::<u32>().ok())
            .map(ShardId)
            .ok_or_else(|| format!("channel {channel:?} names no shard"))?;
        let json = |v: serde_json::Result<Vec<u8>>| v.map(Bytes::from).map_err(|e| e.to_string());
        match (kind, rpc) {
            (Some("raft"), Some(rpc)) => {
                let shard = self.shard(id).map_err(|e| e.to_string())?;
                crate::raft::serve_rpc(shard.raft(), rpc, &body).await
            }
            (Some("append"), None) => {
                let (version, hops, precheck) = match body.get(..3) {
                    Some(&[v, h, p]) => (v, h, p != 0),
                    _ => return Err("forwarded append too short".into()),
                };
                if version != FORWARD_VERSION {
                    return Err(format!("forwarded append has unknown version {version}"));
                }
                let proposal = Proposal::decode(&body[3..]).map_err(|e| e.to_string())?;
                let events = proposal.batches.into_iter().flatten().collect();
                json(serde_json::to_vec(
                    &self.append_part(id, events, precheck, hops).await,
                ))
            }
            (Some("read_index"), None) => {
                let hops = body.first().copied().unwrap_or(FORWARD_HOPS_MAX);
                json(serde_json::to_vec(&self.read_index(id, hops).await))
            }
            (Some("membership"), None) => {
                let (from, to, catch_up_ms, hops): (NodeId, NodeId, u64, u8) =
                    serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let answer = self
                    .swap_voter_hop(id, from, to, Duration::from_millis(catch_up_ms), hops)
                    .await;
                json(serde_json::to_vec(&answer))
            }
            (Some("status"), None) => {
                let hops = body.first().copied().unwrap_or(FORWARD_HOPS_MAX);
                json(serde_json::to_vec(&self.shard_status(id, hops).await))
            }
            _ => Err(format!("unknown peer channel {channel:?}")),
        }
    }

    /// Event limits.
    pub fn limits(&self) -> &EventLimits {
        &self.limits
    }

    /// Validates a batch before anything is proposed. `url_urn` is the stream named by the URL,
    /// and `expected` its expected revision (applied to the batch's first event of that stream).
    pub fn validate(
        &self,
        inputs: Vec<EventInput>,
        url_urn: Option<&Urn>,
        expected: Option<ExpectedRevision>,
    ) -> std::result::Result<ValidatedBatch, BatchError> {
        let batch = self.validate_system(inputs, url_urn, expected)?;
        if let Some((index, p)) = batch
            .events
            .iter()
            .enumerate()
            .find(|(_, p)| p.event.urn.namespace().starts_with('_'))
        {
            return Err(BatchError {
                index,
                source: crate::event::InvalidEvent {
                    code: "reserved_namespace",
                    field: "urn".into(),
                    message: format!(
                        "namespace {:?} of {} is reserved (names starting with `_` belong to the \
                         database: namespace configs live there, written by PUT /v1/namespaces)",
                        p.event.urn.namespace(),
                        p.event.urn
                    ),
                },
            });
        }
        Ok(batch)
    }

    /// [`validate`](Self::validate) without the reserved-namespace rule, for events the
    /// database writes itself (namespace configs).
    pub fn validate_system(
        &self,
        inputs: Vec<EventInput>,
        url_urn: Option<&Urn>,
        expected: Option<ExpectedRevision>,
    ) -> std::result::Result<ValidatedBatch, BatchError> {
        if inputs.is_empty() || inputs.len() > self.batch_events_max {
            return Err(BatchError {
                index: 0,
                source: crate::event::InvalidEvent {
                    code: "invalid_batch",
                    field: "events".into(),
                    message: format!(
                        "a batch holds 1 to {} events, not {}",
                        self.batch_events_max,
                        inputs.len()
                    ),
                },
            });
        }
        let mut rng = self.ids.lock().expect("id rng lock");
        let mut draw = || random_uuid(&mut *rng);
        let mut out = Vec::with_capacity(inputs.len());
        let mut ids = std::collections::BTreeMap::new();
        let mut client_ids = false;
        for (index, input) in inputs.into_iter().enumerate() {
            let client_id = input.id.is_some();
            client_ids |= client_id;
            let (event, own) = input
                .validate(url_urn, &self.limits, &mut draw)
                .map_err(|source| BatchError { index, source })?;
            if let Some(first) = ids.insert(event.id, index) {
                return Err(BatchError {
                    index,
                    source: crate::event::InvalidEvent {
                        code: "duplicate_event_id",
                        field: "id".into(),
                        message: format!("event id {} is also used by event {first}", event.id),
                    },
                });
            }
            out.push(ProposedEvent {
                event,
                expected: own.unwrap_or_default(),
                client_id,
            });
        }
        if let Some(expected) = expected {
            let url = url_urn.expect("an expected revision comes with a stream url");
            let first = out
                .iter_mut()
                .find(|p| &p.event.urn == url)
                .expect("events target the url");
            if first.expected != ExpectedRevision::Any && first.expected != expected {
                return Err(BatchError {
                    index: 0,
                    source: crate::event::InvalidEvent {
                        code: "invalid_field",
                        field: "expected_revision".into(),
                        message:
                            "the request and its first event give different expected revisions"
                                .into(),
                    },
                });
            }
            first.expected = expected;
        }
        let expectations = out.iter().any(|p| p.expected != ExpectedRevision::Any);
        Ok(ValidatedBatch {
            events: out,
            precheck: client_ids || expectations,
        })
    }

    /// Appends a validated batch. Without `per_shard_atomicity`, a batch whose events fall in
    /// several shards is refused; with it, each shard's part is appended atomically on its own.
    pub async fn append(
        &self,
        batch: ValidatedBatch,
        per_shard_atomicity: bool,
    ) -> Result<AppendResult> {
        let ValidatedBatch { events, precheck } = batch;
        let mut groups: std::collections::BTreeMap<ShardId, Vec<ProposedEvent>> =
            Default::default();
        for p in events {
            groups
                .entry(self.ring.shard_for_urn(&p.event.urn))
                .or_default()
                .push(p);
        }
        if groups.len() > 1 && !per_shard_atomicity {
            return Err(Error::CrossShardBatch {
                shards: groups.keys().copied().collect(),
            });
        }
        let appends = groups.into_iter().map(|(id, events)| async move {
            (id, self.append_part(id, events, precheck, 0).await)
        });
        let shards = futures::future::join_all(appends).await;
        let mut token = Token::new();
        for (_, result) in &shards {
            if let Ok(appended) = result {
                token.observe(appended.position);
            }
        }
        Ok(AppendResult { token, shards })
    }

    /// Stops every shard's Raft group.
    pub async fn shutdown(&self) {
        for shard in self.shards() {
            shard.shutdown().await;
        }
    }
}

fn check_shard_count(disk: &dyn themis_storage::Disk, shards: u32) -> Result<()> {
    let location = disk.describe("node");
    let storage = |e: String| Error::Storage(format!("{location}: {e}"));
    let db = disk
        .open_database("node")
        .map_err(|e| storage(e.to_string()))?;
    let recorded = {
        let tx = db.begin_read().map_err(|e| storage(e.to_string()))?;
        match tx.open_table(NODE_META) {
            Ok(t) => t
                .get("shards")
                .map_err(|e| storage(e.to_string()))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage(e.to_string())),
        }
    };
    match recorded {
        Some(n) if n == u64::from(shards) => Ok(()),
        Some(n) => Err(Error::Config(format!(
            "the data directory was created with {n} shards, not {shards}; changing the shard count \
             would move streams between shards (start with --shards {n})"
        ))),
        None => {
            let tx = db.begin_write().map_err(|e| storage(e.to_string()))?;
            tx.open_table(NODE_META)
                .map_err(|e| storage(e.to_string()))?
                .insert("shards", u64::from(shards))
                .map_err(|e| storage(e.to_string()))?;
            tx.commit().map_err(|e| storage(e.to_string()))
        }
    }
}
