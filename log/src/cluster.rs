//! Cluster metadata kept in the [`MetaStore`]: the cluster's shape (shard count, replication
//! factor), the registered nodes (under leases, so a dead node's entry lapses), and the placement
//! of every shard's replicas on nodes.
//!
//! Invariants: the cluster spec is written once and never changes; the placement is written
//! with compare-and-put only, so nodes that race to create or change it agree on one version;
//! placement is a pure function of the spec and the node ids it was computed from.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::ShardId;
use crate::seam::{LeaseId, MetaError, MetaStore, NodeId};

/// Every key ThemisDB writes into the metadata store starts with this.
pub const PREFIX: &str = "/themis/v1/";

/// Key of the [`ClusterSpec`].
pub fn spec_key() -> String {
    format!("{PREFIX}cluster")
}

/// Key prefix of the registered nodes.
pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

/// Key of node `id`'s [`NodeInfo`] (zero-padded, so keys sort by id).
pub fn node_key(id: NodeId) -> String {
    format!("{}{id:020}", nodes_prefix())
}

/// Key of the [`Placement`].
pub fn placement_key() -> String {
    format!("{PREFIX}placement")
}

/// The cluster's shape, fixed by `themis cluster init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: u32,
    /// Nodes that must have registered before the first placement is computed.
    pub initial_nodes: u32,
}

impl ClusterSpec {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > 4096 {
            return Err(format!(
                "shards must be between 1 and 4096, not {}",
                self.shards
            ));
        }
        if self.replication == 0 || self.replication > 7 {
            return Err(format!(
                "replication must be between 1 and 7, not {}",
                self.replication
            ));
        }
        if self.initial_nodes < self.replication {
            return Err(format!(
                "initial nodes ({}) must be at least the replication factor ({})",
                self.initial_nodes, self.replication
            ));
        }
        Ok(())
    }
}

/// A registered node: how clients and peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Address of its HTTP API.
    pub api: String,
    /// Address of its peer (Raft and forwarding) listener.
    pub peer: String,
}

/// Which nodes hold each shard's replicas. The first replica of a new shard bootstraps its Raft
/// group; the order spreads those first leaders over the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Replica node ids per shard, indexed by shard id.
    pub shards: Vec<Vec<NodeId>>,
    /// Replica moves per shard since the first placement (absent: none).
    #[serde(default)]
    pub moves: Vec<u64>,
}

impl Placement {
    /// Spreads `spec.replication` replicas of each shard over `nodes` (sorted and deduplicated
    /// first): shard `s` goes to the `replication` nodes starting at position `s mod n`.
    pub fn compute(spec: &ClusterSpec, nodes: &[NodeId]) -> Result<Placement, String> {
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let r = spec.replication as usize;
        if nodes.len() < r {
            return Err(format!(
                "{} nodes cannot hold {r} replicas of each shard",
                nodes.len()
            ));
        }
        let n = nodes.len();
        let shards = (0..spec.shards as usize)
            .map(|s| (0..r).map(|k| nodes[(s + k) % n]).collect())
            .collect();
        Ok(Placement {
            shards,
            moves: vec![0; spec.shards as usize],
        })
    }

    /// Whether `node` initializes shard `shard`'s Raft group when it finds it new: only the
    /// first replica of the first placement. A replica added by a move joins as a learner.
    pub fn bootstraps(&self, shard: ShardId, node: NodeId) -> bool {
        self.replicas(shard).first() == Some(&node)
            && self.moves.get(shard.0 as usize).copied().unwrap_or(0) == 0
    }

    /// Adds `to` as a replica of `shard` (a move's first step).
    pub fn add_replica(&mut self, shard: ShardId, to: NodeId) -> Result<(), String> {
        let replicas = self
            .shards
            .get_mut(shard.0 as usize)
            .ok_or_else(|| format!("shard {} does not exist", shard.0))?;
        if !replicas.contains(&to) {
            replicas.push(to);
        }
        self.moves.resize(self.shards.len(), 0);
        self.moves[shard.0 as usize] += 1;
        Ok(())
    }

    /// Removes `from` from `shard`'s replicas (a move's last step).
    pub fn remove_replica(&mut self, shard: ShardId, from: NodeId) -> Result<(), String> {
        let replicas = self
            .shards
            .get_mut(shard.0 as usize)
            .ok_or_else(|| format!("shard {} does not exist", shard.0))?;
        replicas.retain(|&n| n != from);
        Ok(())
    }

    /// The replicas of `shard` (empty for a shard out of range).
    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.shards.get(shard.0 as usize).map_or(&[], Vec::as_slice)
    }

    /// The shards with a replica on `node`.
    pub fn hosted_by(&self, node: NodeId) -> Vec<ShardId> {
        (0..self.shards.len() as u32)
            .map(ShardId)
            .filter(|&s| self.replicas(s).contains(&node))
            .collect()
    }
}

/// Why a cluster metadata operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A stored value is not what this version writes.
    #[error("metadata key {key} holds an unreadable value: {detail}")]
    Malformed {
        /// The key.
        key: String,
        /// What failed.
        detail: String,
    },
    /// The request contradicts the stored metadata.
    #[error("{0}")]
    Conflict(String),
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(bytes).map_err(|e| ClusterError::Malformed {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("metadata serializes"))
}

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// The spec was written.
    Created,
    /// The same spec was already there.
    AlreadyInitialized,
}

/// Writes the cluster spec once. Initializing again with the same spec is a no-op; with another
/// spec it is a conflict (shards and replication never change silently).
pub async fn init(meta: &dyn MetaStore, spec: ClusterSpec) -> Result<InitOutcome, ClusterError> {
    spec.validate().map_err(ClusterError::Conflict)?;
    let key = spec_key();
    if meta
        .compare_and_put(&key, 0, encode(&spec))
        .await?
        .is_some()
    {
        return Ok(InitOutcome::Created);
    }
    match read_spec(meta).await? {
        Some(existing) if existing == spec => Ok(InitOutcome::AlreadyInitialized),
        Some(existing) => Err(ClusterError::Conflict(format!(
            "the cluster is already initialized with {} shards, replication {} and {} initial nodes",
            existing.shards, existing.replication, existing.initial_nodes
        ))),
        None => Err(ClusterError::Conflict(
            "the cluster spec changed while it was being written; try again".into(),
        )),
    }
}

/// The cluster spec, if the cluster was initialized.
pub async fn read_spec(meta: &dyn MetaStore) -> Result<Option<ClusterSpec>, ClusterError> {
    let key = spec_key();
    meta.get(&key)
        .await?
        .map(|v| decode(&key, &v.value))
        .transpose()
}

/// Registers `node` under a new lease of `ttl`; the caller keeps the lease alive.
pub async fn register(
    meta: &dyn MetaStore,
    node: &NodeInfo,
    ttl: Duration,
) -> Result<LeaseId, ClusterError> {
    let lease = meta.grant_lease(ttl).await?;
    meta.put(&node_key(node.id), encode(node), Some(lease))
        .await?;
    Ok(lease)
}

/// The registered (live) nodes, by id.
pub async fn nodes(meta: &dyn MetaStore) -> Result<BTreeMap<NodeId, NodeInfo>, ClusterError> {
    let mut out = BTreeMap::new();
    for (key, value) in meta.list(&nodes_prefix()).await? {
        let info: NodeInfo = decode(&key, &value.value)?;
        out.insert(info.id, info);
    }
    Ok(out)
}

/// The placement and its revision, if one was written.
pub async fn read_placement(
    meta: &dyn MetaStore,
) -> Result<Option<(Placement, i64)>, ClusterError> {
    let key = placement_key();
    meta.get(&key)
        .await?
        .map(|v| Ok((decode(&key, &v.value)?, v.mod_revision)))
        .transpose()
}

/// The placement: the stored one, or one computed from the registered nodes and written with
/// compare-and-put once `spec.initial_nodes` have registered (`None` until then).
pub async fn ensure_placement(
    meta: &dyn MetaStore,
    spec: &ClusterSpec,
) -> Result<Option<Placement>, ClusterError> {
    if let Some((placement, _)) = read_placement(meta).await? {
        return Ok(Some(placement));
    }
    let nodes = nodes(meta).await?;
    if nodes.len() < spec.initial_nodes as usize {
        return Ok(None);
    }
    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    let placement = Placement::compute(spec, &ids).map_err(ClusterError::Conflict)?;
    if meta
        .compare_and_put(&placement_key(), 0, encode(&placement))
        .await?
        .is_some()
    {
        return Ok(Some(placement));
    }
    // Another node wrote it first: theirs is the placement.
    Ok(read_placement(meta).await?.map(|(p, _)| p))
}

/// Moves shard `shard`'s replica on node `from` to node `to` without making the shard
/// unavailable: the placement first names `to` as an extra replica (so `to` opens it and the
/// leader can add it as a learner), the shard's leader swaps the voters once `to` has caught up
/// (within `catch_up`), and only then the placement drops `from` (which closes its replica).
/// Each step is idempotent, so a failed move can be repeated.
pub async fn move_replica(
    meta: &dyn MetaStore,
    log: &crate::Log,
    shard: ShardId,
    from: NodeId,
    to: NodeId,
    catch_up: Duration,
) -> Result<Placement, MoveError> {
    if from == to {
        return Err(MoveError::Invalid(format!(
            "moving a replica from node {from} to itself does nothing"
        )));
    }
    let registered = nodes(meta).await?;
    if !registered.contains_key(&to) {
        return Err(MoveError::Invalid(format!(
            "node {to} is not registered (start it with `themis serve --etcd ... --node-id {to}`)"
        )));
    }
    // Step 1: `to` becomes an extra replica.
    let placement = update_placement(meta, |p| {
        let replicas = p.replicas(shard);
        if replicas.is_empty() {
            return Err(format!("shard {} does not exist", shard.0));
        }
        if !replicas.contains(&from) && !replicas.contains(&to) {
            return Err(format!(
                "node {from} holds no replica of shard {} (replicas: {replicas:?})",
                shard.0
            ));
        }
        if replicas.contains(&to) {
            return Ok(false);
        }
        p.add_replica(shard, to)?;
        Ok(true)
    })
    .await?;
    refresh(log, &placement, registered.clone()).await?;
    // Step 2: the leader swaps the voters once `to` caught up.
    log.swap_voter(shard, from, to, catch_up).await?;
    // Step 3: `from` leaves the placement.
    let placement = update_placement(meta, |p| {
        if !p.replicas(shard).contains(&from) {
            return Ok(false);
        }
        p.remove_replica(shard, from)?;
        Ok(true)
    })
    .await?;
    refresh(log, &placement, registered).await?;
    // Moving the leader's own replica away costs an election: answer once the shard has a
    // leader among its new replicas, so the caller's next look at the cluster is the new one.
    let replicas = placement.replicas(shard).to_vec();
    for _ in 0..100 {
        let status = log.status().await;
        let settled = status
            .iter()
            .find(|s| s.shard == shard)
            .is_some_and(|s| s.error.is_none() && s.leader.is_some_and(|l| replicas.contains(&l)));
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(placement)
}

/// Why a move failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MoveError {
    /// The move makes no sense for this cluster.
    #[error("{0}")]
    Invalid(String),
    /// Metadata could not be read or written.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The shard's Raft group refused or failed.
    #[error(transparent)]
    Log(#[from] crate::Error),
}

impl From<MetaError> for MoveError {
    fn from(e: MetaError) -> Self {
        MoveError::Cluster(e.into())
    }
}

/// Applies `change` to the stored placement with compare-and-put, retrying when another
/// writer got there first. `change` returns whether it changed anything.
async fn update_placement(
    meta: &dyn MetaStore,
    change: impl Fn(&mut Placement) -> Result<bool, String>,
) -> Result<Placement, MoveError> {
    loop {
        let Some((mut placement, revision)) = read_placement(meta).await? else {
            return Err(MoveError::Invalid(
                "the cluster has no placement yet: its initial nodes have not all registered"
                    .into(),
            ));
        };
        if !change(&mut placement).map_err(MoveError::Invalid)? {
            return Ok(placement);
        }
        if meta
            .compare_and_put(&placement_key(), revision, encode(&placement))
            .await?
            .is_some()
        {
            return Ok(placement);
        }
    }
}

/// Gives `log` the new placement at once (other nodes see it within their refresh period).
async fn refresh(
    log: &crate::Log,
    placement: &Placement,
    nodes: BTreeMap<NodeId, NodeInfo>,
) -> Result<(), MoveError> {
    let mut known = log.topology().map(|t| t.nodes).unwrap_or_default();
    known.extend(nodes);
    log.set_topology(crate::Topology {
        placement: placement.clone(),
        nodes: known,
    });
    log.reconcile().await?;
    Ok(())
}

#[cfg(test)]
mod tests;
