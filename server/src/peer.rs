//! Traffic between nodes: the production [`Transport`] (HTTP/1.1 over TCP with pooled
//! keep-alive connections) and the peer listener that hands each call to [`Log::handle_peer`].
//!
//! Invariant: [`TransportError::Unreachable`] is reported only when the request certainly did
//! not reach the peer's handler (no connection, or the peer refused it before handling), so a
//! caller may retry it; any other failure is a timeout whose outcome is unknown.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use themis_log::seam::{NodeId, Transport, TransportError};
use themis_log::{Log, Topology};

/// Largest message between nodes (a Raft append carries up to 256 entries).
const PEER_BODY_BYTES_MAX: usize = 256 << 20;

/// Raft and forwarding calls to other nodes over HTTP, addressed by node id.
#[derive(Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// Node id → peer address (`host:port`).
    peers: RwLock<BTreeMap<NodeId, String>>,
}

impl HttpTransport {
    /// A transport that knows no peers yet.
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            peers: RwLock::default(),
        })
    }

    /// Learns the peer addresses of every node in `topology`.
    pub fn update(&self, topology: &Topology) {
        let peers = topology
            .nodes
            .values()
            .map(|n| (n.id, n.peer.clone()))
            .collect();
        *self.peers.write().expect("peers lock") = peers;
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(
        &self,
        to: NodeId,
        channel: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        let address = self.peers.read().expect("peers lock").get(&to).cloned();
        let Some(address) = address else {
            return Err(TransportError::Unreachable(
                to,
                "no address is known for this node".into(),
            ));
        };
        let url = format!("http://{address}/peer/{channel}");
        let sent = self
            .client
            .post(url)
            .timeout(deadline)
            .body(request)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(TransportError::Unreachable(to, e.to_string()));
            }
            Err(_) => return Err(TransportError::Timeout(to, deadline)),
        };
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_REQUEST {
            // Refused before any handling: starting up, or an unusable request.
            let text = response.text().await.unwrap_or_default();
            return Err(TransportError::Unreachable(to, format!("{status}: {text}")));
        }
        if !status.is_success() {
            return Err(TransportError::Timeout(to, deadline));
        }
        response
            .bytes()
            .await
            .map_err(|_| TransportError::Timeout(to, deadline))
    }
}

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
}

/// Routes of the peer listener: `POST /peer/<channel>`.
pub fn router(state: PeerState) -> Router {
    Router::new()
        .route("/peer/{*channel}", post(handle))
        .layer(DefaultBodyLimit::max(PEER_BODY_BYTES_MAX))
        .with_state(state)
}

async fn handle(
    State(state): State<PeerState>,
    Path(channel): Path<String>,
    body: Bytes,
) -> Response {
    let Some(log) = state.log.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the node is starting").into_response();
    };
    match log.handle_peer(&channel, body).await {
        Ok(answer) => answer.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
