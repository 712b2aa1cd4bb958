//! A simulated network between in-process nodes: every call goes straight to the target node's
//! [`Log::handle_peer`], unless a fault says otherwise. Faults: nodes down (calls are refused,
//! as by a closed port), one-way or two-way partitions (calls are lost: they time out), random
//! message loss, random delay (which reorders concurrent calls) and duplicated Raft RPCs, all
//! drawn from a seeded generator.
//!
//! Invariants: a refused call never reaches its target; a lost call may have reached it (loss
//! is drawn for the request or the answer), so callers see exactly the outcomes a real network
//! gives them. A node's transport belongs to one incarnation: after a crash, whatever the dead
//! incarnation still sends is refused. Only Raft RPCs are duplicated: the peer transport is one
//! TCP connection per node pair, which never duplicates, but Raft must (and does) tolerate a
//! message delivered twice, so duplicating them tests that; forwarded appends are never
//! resent (see `Log::handle_peer`), so duplicating them would model a bug we do not have.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use themis_log::Log;
use themis_log::seam::{NodeId, Transport, TransportError};

#[derive(Debug)]
struct Faults {
    down: BTreeSet<NodeId>,
    /// (from, to): calls from `from` to `to` are lost.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability that a request or its answer is lost.
    loss: f64,
    /// Most delay added to a delivered call, in ms (0: none).
    delay_max_ms: u64,
    /// Probability that a Raft RPC is delivered twice.
    duplicate: f64,
    rng: StdRng,
}

/// The network and the nodes attached to it.
#[derive(Debug)]
pub struct SimNetwork {
    /// Each node's current incarnation and log.
    nodes: Mutex<BTreeMap<NodeId, (u64, Arc<Log>)>>,
    faults: Mutex<Faults>,
    /// How long a lost call takes to fail (capped by its deadline).
    loss_delay: Duration,
}

impl SimNetwork {
    /// A network without faults whose random loss is drawn from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            nodes: Mutex::default(),
            faults: Mutex::new(Faults {
                down: BTreeSet::new(),
                cut: BTreeSet::new(),
                loss: 0.0,
                delay_max_ms: 0,
                duplicate: 0.0,
                rng: StdRng::seed_from_u64(seed),
            }),
            loss_delay: Duration::from_millis(20),
        })
    }

    /// The transport incarnation `incarnation` of node `id` uses.
    pub fn transport(self: &Arc<Self>, id: NodeId, incarnation: u64) -> Arc<dyn Transport> {
        Arc::new(NodeTransport {
            from: id,
            incarnation,
            net: self.clone(),
        })
    }

    /// Attaches incarnation `incarnation` of node `id` (calls to it before this are refused).
    pub fn attach(&self, id: NodeId, incarnation: u64, log: Arc<Log>) {
        self.nodes
            .lock()
            .expect("nodes lock")
            .insert(id, (incarnation, log));
    }

    /// Detaches node `id` (it crashed): calls to it are refused until a new incarnation is
    /// attached.
    pub fn detach(&self, id: NodeId) {
        self.nodes.lock().expect("nodes lock").remove(&id);
    }

    /// Takes node `id` down (`true`) or up again.
    pub fn set_down(&self, id: NodeId, down: bool) {
        let mut f = self.faults.lock().expect("faults lock");
        if down {
            f.down.insert(id);
        } else {
            f.down.remove(&id);
        }
    }

    /// Cuts (or restores) both directions between `a` and every node in `others`.
    pub fn isolate(&self, a: NodeId, others: &[NodeId], cut: bool) {
        let mut f = self.faults.lock().expect("faults lock");
        for &b in others {
            for pair in [(a, b), (b, a)] {
                if cut {
                    f.cut.insert(pair);
                } else {
                    f.cut.remove(&pair);
                }
            }
        }
    }

    /// Sets the probability that a request or an answer is lost.
    pub fn set_loss(&self, loss: f64) {
        self.faults.lock().expect("faults lock").loss = loss.clamp(0.0, 1.0);
    }

    /// Cuts (or restores) the one direction from `a` to `b`.
    pub fn cut_one_way(&self, a: NodeId, b: NodeId, cut: bool) {
        let mut f = self.faults.lock().expect("faults lock");
        if cut {
            f.cut.insert((a, b));
        } else {
            f.cut.remove(&(a, b));
        }
    }

    /// Sets the most delay a delivered call gets (drawn uniformly from 0 to it).
    pub fn set_delay_max(&self, delay: Duration) {
        self.faults.lock().expect("faults lock").delay_max_ms = delay.as_millis() as u64;
    }

    /// Sets the probability that a Raft RPC is delivered twice.
    pub fn set_duplicate(&self, p: f64) {
        self.faults.lock().expect("faults lock").duplicate = p.clamp(0.0, 1.0);
    }

    /// Removes every network fault (nodes taken down stay down: they come back by restarting).
    pub fn heal(&self) {
        let mut f = self.faults.lock().expect("faults lock");
        f.cut.clear();
        f.loss = 0.0;
        f.delay_max_ms = 0;
        f.duplicate = 0.0;
    }
}

/// One node's end of the network.
#[derive(Debug)]
struct NodeTransport {
    from: NodeId,
    incarnation: u64,
    net: Arc<SimNetwork>,
}

/// What the faults decide for one call.
enum Fate {
    Refused,
    LostRequest,
    LostAnswer,
    /// Delivered after a delay, and maybe a second time.
    Delivered(Duration, bool),
}

#[async_trait]
impl Transport for NodeTransport {
    async fn call(
        &self,
        to: NodeId,
        channel: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        let (target, alive) = {
            let nodes = self.net.nodes.lock().expect("nodes lock");
            let alive = nodes
                .get(&self.from)
                .is_some_and(|(i, _)| *i == self.incarnation);
            (nodes.get(&to).map(|(_, log)| log.clone()), alive)
        };
        let fate = {
            let mut f = self.net.faults.lock().expect("faults lock");
            if !alive || f.down.contains(&to) || f.down.contains(&self.from) {
                Fate::Refused
            } else if f.cut.contains(&(self.from, to)) {
                Fate::LostRequest
            } else {
                let loss = f.loss;
                if loss > 0.0 && f.rng.gen_bool(loss) {
                    Fate::LostRequest
                } else if loss > 0.0 && f.rng.gen_bool(loss) || f.cut.contains(&(to, self.from)) {
                    Fate::LostAnswer
                } else {
                    let (delay_max, duplicate) = (f.delay_max_ms, f.duplicate);
                    let delay = if delay_max > 0 {
                        Duration::from_millis(f.rng.gen_range(0..=delay_max))
                    } else {
                        Duration::ZERO
                    };
                    let twice = duplicate > 0.0
                        && channel.starts_with("raft/")
                        && f.rng.gen_bool(duplicate);
                    Fate::Delivered(delay, twice)
                }
            }
        };
        let lost = || async {
            tokio::time::sleep(self.net.loss_delay.min(deadline)).await;
            Err(TransportError::Timeout(to, deadline))
        };
        match (fate, target) {
            (Fate::Refused, _) | (_, None) => {
                Err(TransportError::Unreachable(to, "the node is down".into()))
            }
            (Fate::LostRequest, _) => lost().await,
            (Fate::LostAnswer, Some(log)) => {
                let channel = channel.to_owned();
                tokio::spawn(async move {
                    let _ = log.handle_peer(&channel, request).await;
                });
                lost().await
            }
            (Fate::Delivered(delay, twice), Some(log)) => {
                if twice {
                    let (log, channel, request) =
                        (log.clone(), channel.to_owned(), request.clone());
                    tokio::spawn(async move {
                        let _ = log.handle_peer(&channel, request).await;
                    });
                }
                // The receiver handles the call in its own task, as a server does: a caller
                // that gives up (or crashes) does not cancel it halfway.
                let channel = channel.to_owned();
                let handler = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    log.handle_peer(&channel, request).await
                });
                match tokio::time::timeout(deadline, handler).await {
                    Ok(Ok(Ok(answer))) => Ok(answer),
                    Ok(Ok(Err(e))) => Err(TransportError::Unreachable(to, e)),
                    Ok(Err(join)) => Err(TransportError::Unreachable(to, join.to_string())),
                    Err(_) => Err(TransportError::Timeout(to, deadline)),
                }
            }
        }
    }
}
