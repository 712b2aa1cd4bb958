//! The serving side of traffic between nodes: [`PeerState`] hands each call (Raft RPCs,
//! forwarded appends, read-index, status and membership requests) to [`Log::handle_peer`] once
//! the log is open. The wire protocol is in [`crate::wire_tcp`].

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use themis_log::Log;

/// The peer listener's state: the log, once it is open (calls before that are refused).
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    log: Arc<OnceLock<Arc<Log>>>,
}

impl PeerState {
    /// Starts answering calls with `log`.
    pub fn set(&self, log: Arc<Log>) {
        let _ = self.log.set(log);
    }

    /// Answers one call; an `Err` is `(refused before handling, why)`.
    pub async fn handle(&self, channel: &str, body: Bytes) -> Result<Bytes, (bool, String)> {
        let Some(log) = self.log.get() else {
            return Err((true, "the node is starting".into()));
        };
        log.handle_peer(channel, body).await.map_err(|e| (true, e))
    }
}
