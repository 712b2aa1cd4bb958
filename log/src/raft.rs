//! openraft glue: the type configuration of every shard's Raft group, the Raft timing defaults,
//! and the network client that sends Raft RPCs through the [`Transport`] seam.
//!
//! Invariant: Raft traffic leaves a node only through `Transport`, addressed to the channel
//! `raft/<shard>/<rpc>`, so the simulator can intercept every message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, SnapshotPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entry::{Outcome, Proposal};
use crate::ids::ShardId;
use crate::seam::{NodeId, Transport, TransportError};

openraft::declare_raft_types!(
    /// The Raft type configuration of a shard group.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = Runtime,
);

/// openraft's async runtime: tokio's tasks, timers and channels, but randomness (election
/// timeouts) from [`crate::seam::raft_rng`], which is seeded through the Entropy seam instead of
/// the thread RNG, so a simulated cluster draws the same timeouts from the same seed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

impl openraft::AsyncRuntime for Runtime {
    type JoinError = <openraft::TokioRuntime as openraft::AsyncRuntime>::JoinError;
    type JoinHandle<T: Send + 'static> =
        <openraft::TokioRuntime as openraft::AsyncRuntime>::JoinHandle<T>;
    type Sleep = <openraft::TokioRuntime as openraft::AsyncRuntime>::Sleep;
    type Instant = <openraft::TokioRuntime as openraft::AsyncRuntime>::Instant;
    type TimeoutError = <openraft::TokioRuntime as openraft::AsyncRuntime>::TimeoutError;
    type Timeout<R, T: std::future::Future<Output = R> + Send> =
        <openraft::TokioRuntime as openraft::AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = rand::rngs::StdRng;
    type OneshotSender<T: Send> =
        <openraft::TokioRuntime as openraft::AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError =
        <openraft::TokioRuntime as openraft::AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: Send> =
        <openraft::TokioRuntime as openraft::AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: std::future::Future + Send + 'static,
        T::Output: Send + 'static,
    {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::sleep_until(deadline)
    }

    fn timeout<R, F: std::future::Future<Output = R> + Send>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::timeout(duration, future)
    }

    fn timeout_at<R, F: std::future::Future<Output = R> + Send>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        crate::seam::raft_rng()
    }

    fn oneshot<T: Send>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        <openraft::TokioRuntime as openraft::AsyncRuntime>::oneshot()
    }
}

/// A Raft entry of a shard log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A shard's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// Raft timing of every shard group.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
}

/// Defaults tuned for failover under a second on loopback (docs/BENCHMARKS.md, `themis-bench
/// cluster`): a follower that stops hearing from its leader campaigns after the leader lease
/// (openraft: the election timeout's upper bound) plus a random timeout, 200 + 100..200 ms; one
/// with a shorter log waits twice the upper bound longer. 50/150/300 ms gave a failover p99 of
/// 1.2 s over 57 samples.
impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(40),
            election_timeout_min: Duration::from_millis(100),
            election_timeout_max: Duration::from_millis(200),
        }
    }
}

/// The openraft configuration of shard `shard`. With `snapshot_every` > 0 a snapshot is built
/// every that many entries and the log before it is purged (logically: the records stay, they
/// are the events), so a replica that fell further behind catches up by installing a snapshot
/// and then the tail; with 0 snapshots are built only on demand and lagging replicas replay
/// the log.
pub fn config(shard: ShardId, timing: &RaftTiming, snapshot_every: u64) -> Arc<Config> {
    let (snapshot_policy, keep) = match snapshot_every {
        0 => (SnapshotPolicy::Never, u64::MAX),
        n => (SnapshotPolicy::LogsSinceLast(n), 0),
    };
    let config = Config {
        cluster_name: format!("themis-shard-{}", shard.0),
        heartbeat_interval: timing.heartbeat_interval.as_millis() as u64,
        election_timeout_min: timing.election_timeout_min.as_millis() as u64,
        election_timeout_max: timing.election_timeout_max.as_millis() as u64,
        snapshot_policy,
        max_in_snapshot_log_to_keep: keep,
        max_payload_entries: 256,
        ..Default::default()
    };
    Arc::new(config.validate().expect("raft timing is valid"))
}

/// Creates [`TransportNetwork`] clients for one shard's Raft group.
#[derive(Debug, Clone)]
pub struct TransportNetworkFactory {
    shard: ShardId,
    transport: Arc<dyn Transport>,
}

impl TransportNetworkFactory {
    /// A factory for shard `shard` over `transport`.
    pub fn new(shard: ShardId, transport: Arc<dyn Transport>) -> Self {
        Self { shard, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for TransportNetworkFactory {
    type Network = TransportNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        TransportNetwork {
            shard: self.shard,
            target,
            transport: self.transport.clone(),
        }
    }
}

/// Sends one shard's Raft RPCs to one target node as JSON over the transport.
#[derive(Debug)]
pub struct TransportNetwork {
    shard: ShardId,
    target: NodeId,
    transport: Arc<dyn Transport>,
}

impl TransportNetwork {
    async fn call<Req, Resp, E>(
        &self,
        rpc: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = format!("raft/{}/{rpc}", self.shard.0);
        let answer = self
            .transport
            .call(self.target, &channel, Bytes::from(body), option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout(..) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let answer: Result<Resp, E> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for TransportNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer = self.call("append", &rpc, &option).await;
        if answer.is_err()
            && themis_storage::canary::active(themis_storage::canary::Canary::CommitWithoutQuorum)
        {
            // The canary: count a follower that did not answer as having stored the entries.
            return Ok(AppendEntriesResponse::Success);
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// Serves one Raft RPC that arrived on channel `raft/<shard>/<rpc>`: decodes the JSON request,
/// hands it to the shard's Raft and encodes its `Result` as JSON, as [`TransportNetwork`]
/// expects. An `Err` means the request was unusable.
pub async fn serve_rpc(raft: &Raft, rpc: &str, body: &[u8]) -> Result<Bytes, String> {
    fn decode<T: DeserializeOwned>(rpc: &str, body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("undecodable {rpc} request: {e}"))
    }
    let answer = match rpc {
        "append" => serde_json::to_vec(&raft.append_entries(decode(rpc, body)?).await),
        "vote" => serde_json::to_vec(&raft.vote(decode(rpc, body)?).await),
        "snapshot" => serde_json::to_vec(&raft.install_snapshot(decode(rpc, body)?).await),
        other => return Err(format!("unknown raft rpc {other:?}")),
    };
    answer.map(Bytes::from).map_err(|e| e.to_string())
}
