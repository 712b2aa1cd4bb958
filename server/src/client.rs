//! The command-line client: `themis append`, `read` and `log` speak the HTTP API and turn its
//! problem+json answers into readable messages and non-zero exit codes.

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// A problem answered by the server, shown to the user as `error: <detail> (<code>)`.
#[derive(Debug, thiserror::Error)]
#[error("{detail} ({code}, HTTP {status})")]
pub struct ServerProblem {
    /// HTTP status.
    pub status: u16,
    /// The problem's code.
    pub code: String,
    /// The problem's detail.
    pub detail: String,
}

/// An HTTP client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base` (for example `http://127.0.0.1:8765`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("invalid server address {base:?}: it must start with http:// or https://");
        }
        Ok(Self {
            base,
            http: reqwest::Client::new(),
        })
    }

    async fn answer(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {} to {what}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer to {what}"))?;
        let json: Value = serde_json::from_slice(&body)
            .map_err(|_| anyhow!("the server answered {status} with a body that is not JSON"))?;
        if status.is_success() {
            return Ok(json);
        }
        Err(ServerProblem {
            status: status.as_u16(),
            code: json["code"].as_str().unwrap_or("unknown").to_owned(),
            detail: json["detail"].as_str().unwrap_or("no detail").to_owned(),
        }
        .into())
    }

    /// Appends one event to `urn`.
    pub async fn append(
        &self,
        urn: &str,
        event: Value,
        expected: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut body = serde_json::json!({ "events": [event] });
        if let Some(expected) = expected {
            let value = match expected.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(expected),
            };
            body["expected_revision"] = value;
        }
        let url = format!("{}/v1/streams/{}", self.base, urn);
        self.answer(self.http.post(url).json(&body), "append").await
    }

    /// Reads a page of `urn`.
    pub async fn read(&self, urn: &str, from_revision: u64, limit: usize) -> anyhow::Result<Value> {
        let url = format!(
            "{}/v1/streams/{}?from_revision={from_revision}&limit={limit}",
            self.base, urn
        );
        self.answer(self.http.get(url), "read the stream").await
    }

    /// Reads a page of shard `shard`'s log.
    pub async fn log(&self, shard: u32, from_lsn: u64, limit: usize) -> anyhow::Result<Value> {
        let url = format!(
            "{}/v1/log/{shard}?from_lsn={from_lsn}&limit={limit}",
            self.base
        );
        self.answer(self.http.get(url), "read the log").await
    }
}

impl Client {
    /// The cluster status (`GET /v1/cluster`).
    pub async fn cluster(&self) -> anyhow::Result<Value> {
        let url = format!("{}/v1/cluster", self.base);
        self.answer(self.http.get(url), "read the cluster status")
            .await
    }
}

/// Renders `GET /v1/cluster` as text: the nodes, then one line per shard with its leader,
/// term, commit and apply LSNs, and each replica's lag (`*` marks the leader, `~` a learner,
/// `?` an unknown lag).
pub fn render_cluster(status: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mode: {}, answered by node {}",
        status["mode"].as_str().unwrap_or("?"),
        status["node"]
    );
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    if !nodes.is_empty() {
        let _ = writeln!(out, "\nnodes:");
        for n in &nodes {
            let _ = writeln!(
                out,
                "  {:>4}  api {}  peer {}",
                n["id"],
                n["api"].as_str().unwrap_or("?"),
                n["peer"].as_str().unwrap_or("?")
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:>5} {:>6} {:>6} {:>10} {:>10}  replicas (node:lag)",
        "shard", "leader", "term", "commit", "applied"
    );
    for s in status["shards"].as_array().cloned().unwrap_or_default() {
        let leader = s["leader"].as_u64();
        let replicas: Vec<String> = s["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let node = r["node"].as_u64().unwrap_or(0);
                let mark = if Some(node) == leader {
                    "*"
                } else if r["voter"] == false {
                    "~"
                } else {
                    ""
                };
                let lag = r["lag"]
                    .as_u64()
                    .map_or_else(|| "?".to_owned(), |l| l.to_string());
                format!("{node}{mark}:{lag}")
            })
            .collect();
        let _ = write!(
            out,
            "{:>5} {:>6} {:>6} {:>10} {:>10}  {}",
            s["shard"],
            leader.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            s["term"],
            s["commit_lsn"],
            s["applied_lsn"],
            replicas.join(" ")
        );
        if let Some(e) = s["error"].as_str() {
            let _ = write!(out, "  ({e})");
        }
        out.push('\n');
    }
    out
}

/// Parses a JSON command-line argument, naming the flag in the error.
pub fn json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow!("{flag} is not valid JSON: {e}"))
}
