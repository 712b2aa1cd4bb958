//! A simulated network between in-process nodes: every call goes straight to the target node's
//! [`Log::handle_peer`], unless a fault says otherwise. Faults: nodes down (calls are refused,
//! as by a closed port), one-way or two-way partitions (calls are lost: they time out), and
//! random message loss drawn from a seeded generator.
//!
//! Invariant: a refused call never reaches its target; a lost call may have reached it (loss
//! is drawn for the request or the answer), so callers see exactly the outcomes a real network
//! gives them.

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
    rng: StdRng,
}

/// The network and the nodes attached to it.
#[derive(Debug)]
pub struct SimNetwork {
    nodes: Mutex<BTreeMap<NodeId, Arc<Log>>>,
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
                rng: StdRng::seed_from_u64(seed),
            }),
            loss_delay: Duration::from_millis(20),
        })
    }

    /// The transport node `id` uses.
    pub fn transport(self: &Arc<Self>, id: NodeId) -> Arc<dyn Transport> {
        Arc::new(NodeTransport {
            from: id,
            net: self.clone(),
        })
    }

    /// Attaches node `id`'s log (calls to it before this are refused).
    pub fn attach(&self, id: NodeId, log: Arc<Log>) {
        self.nodes.lock().expect("nodes lock").insert(id, log);
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

    /// Removes every fault.
    pub fn heal(&self) {
        let mut f = self.faults.lock().expect("faults lock");
        f.down.clear();
        f.cut.clear();
        f.loss = 0.0;
    }
}

/// One node's end of the network.
#[derive(Debug)]
struct NodeTransport {
    from: NodeId,
    net: Arc<SimNetwork>,
}

/// What the faults decide for one call.
enum Fate {
    Refused,
    LostRequest,
    LostAnswer,
    Delivered,
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
        let fate = {
            let mut f = self.net.faults.lock().expect("faults lock");
            if f.down.contains(&to) || f.down.contains(&self.from) {
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
                    Fate::Delivered
                }
            }
        };
        let lost = || async {
            tokio::time::sleep(self.net.loss_delay.min(deadline)).await;
            Err(TransportError::Timeout(to, deadline))
        };
        let target = self.net.nodes.lock().expect("nodes lock").get(&to).cloned();
        match (fate, target) {
            (Fate::Refused, _) | (_, None) => {
                Err(TransportError::Unreachable(to, "the node is down".into()))
            }
            (Fate::LostRequest, _) => lost().await,
            (Fate::LostAnswer, Some(log)) => {
                let _ = log.handle_peer(channel, request).await;
                lost().await
            }
            (Fate::Delivered, Some(log)) => {
                match tokio::time::timeout(deadline, log.handle_peer(channel, request)).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err(TransportError::Unreachable(to, e)),
                    Err(_) => Err(TransportError::Timeout(to, deadline)),
                }
            }
        }
    }
}
