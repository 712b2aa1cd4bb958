//! The command-line client: `themis append`, `read` and `log` speak the HTTP API and turn its
//! problem+json answers into readable messages and non-zero exit codes.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
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

/// The problem in a failed answer's body (or a description of a body that is none).
fn problem(status: reqwest::StatusCode, body: &[u8]) -> ServerProblem {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    ServerProblem {
        status: status.as_u16(),
        code: json["code"].as_str().unwrap_or("unknown").to_owned(),
        detail: json["detail"].as_str().map_or_else(
            || format!("the server answered {status} with a body that is not a problem"),
            str::to_owned,
        ),
    }
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

    /// Sends `request`: the body of a success, or the server's problem as an error.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Bytes> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {} to {what}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("cannot read the answer to {what}"))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(problem(status, &body).into())
    }

    /// Sends `request` and reads its JSON answer.
    async fn answer(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let body = self.send(request, what).await?;
        serde_json::from_slice(&body)
            .map_err(|_| anyhow!("the server's answer to {what} is not JSON"))
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
    /// A document resource's current state, waiting up to `timeout` for `min_token`.
    pub async fn resource(
        &self,
        urn: &str,
        min_token: Option<&str>,
        timeout: Option<&str>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/v1/resources/{}", self.base, urn);
        let mut query = Vec::new();
        if let Some(t) = min_token {
            query.push(("min_token", t));
        }
        if let Some(t) = timeout {
            query.push(("timeout", t));
        }
        self.answer(self.http.get(url).query(&query), "read the resource")
            .await
    }

    /// Runs one SQL query; the answer's text in the format `accept` asks for.
    pub async fn sql(
        &self,
        sql: &str,
        min_token: Option<&str>,
        timeout: Option<&str>,
        accept: &str,
    ) -> anyhow::Result<String> {
        let mut body = serde_json::json!({ "sql": sql });
        if let Some(t) = min_token {
            body["min_token"] = Value::from(t);
        }
        if let Some(t) = timeout {
            body["timeout"] = Value::from(t);
        }
        let url = format!("{}/v1/query", self.base);
        let request = self.http.post(url).header("accept", accept).json(&body);
        let body = self.send(request, "run the query").await?;
        String::from_utf8(body.to_vec()).context("the query's answer is not UTF-8")
    }

    /// Opens a subscription (NDJSON) from `from` with `key=value` filters; the response whose
    /// body is the stream, or the server's problem.
    pub async fn subscribe(
        &self,
        from: &str,
        filters: &[String],
    ) -> anyhow::Result<reqwest::Response> {
        let mut query: Vec<(&str, &str)> = vec![("from", from)];
        query.extend(filters.iter().map(|f| ("filter", f.as_str())));
        let request = self
            .http
            .get(format!("{}/v1/subscribe", self.base))
            .query(&query)
            .header("accept", "application/x-ndjson");
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {} to subscribe", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Err(problem(status, &body).into())
    }

    /// The stored cursor of consumer group `group`, if it has one.
    pub async fn checkpoint(&self, group: &str) -> anyhow::Result<Option<String>> {
        let url = format!("{}/v1/consumers/{group}/checkpoint", self.base);
        match self.answer(self.http.get(url), "read the checkpoint").await {
            Ok(v) => Ok(v["cursor"].as_str().map(str::to_owned)),
            Err(e)
                if e.downcast_ref::<ServerProblem>()
                    .is_some_and(|p| p.code == "checkpoint_not_found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stores `cursor` as consumer group `group`'s checkpoint.
    pub async fn put_checkpoint(&self, group: &str, cursor: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/consumers/{group}/checkpoint", self.base);
        let body = serde_json::json!({ "cursor": cursor });
        self.answer(self.http.put(url).json(&body), "store the checkpoint")
            .await
    }

    /// The views of the node, with content digests when `digest`.
    pub async fn views(&self, digest: bool) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/views?digest={digest}", self.base);
        self.answer(self.http.get(url), "list the views").await
    }

    /// Starts rebuilding view `kind` (of `shard`, or of every shard the node holds).
    pub async fn rebuild_view(&self, kind: &str, shard: Option<u32>) -> anyhow::Result<Value> {
        let mut url = format!("{}/v1/admin/views/{kind}/rebuild", self.base);
        if let Some(s) = shard {
            url.push_str(&format!("?shard={s}"));
        }
        self.answer(self.http.post(url), "rebuild the view").await
    }

    /// Moves shard `shard`'s replica from node `from` to node `to`.
    pub async fn move_replica(&self, shard: u32, from: u64, to: u64) -> anyhow::Result<Value> {
        let url = format!("{}/v1/cluster/move-replica", self.base);
        let body = serde_json::json!({"shard": shard, "from": from, "to": to});
        self.answer(self.http.post(url).json(&body), "move the replica")
            .await
    }

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
                n["id"].as_u64().unwrap_or(0),
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
        // serde_json's Display ignores widths: format the numbers themselves.
        let n = |v: &Value| v.as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string());
        let _ = write!(
            out,
            "{:>5} {:>6} {:>6} {:>10} {:>10}  {}",
            n(&s["shard"]),
            leader.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            n(&s["term"]),
            n(&s["commit_lsn"]),
            n(&s["applied_lsn"]),
            replicas.join(" ")
        );
        if let Some(e) = s["error"].as_str() {
            let _ = write!(out, "  ({e})");
        }
        out.push('\n');
    }
    let views = status["views"].as_array().cloned().unwrap_or_default();
    if !views.is_empty() {
        let _ = writeln!(
            out,
            "views on node {}: {}",
            status["node"],
            views
                .iter()
                .map(|v| format!(
                    "{} shard {} at LSN {} (lag {} entries, {} ms)",
                    v["view"].as_str().unwrap_or("?"),
                    v["shard"],
                    v["watermark"],
                    v["lag_lsn"],
                    v["lag_ms"]
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out
}

/// Replicas per node and the replicas of each shard, from `GET /v1/cluster` (voters and
/// learners alike, as the shards' leaders report them).
fn replica_map(status: &Value) -> (BTreeMap<u64, usize>, Vec<Vec<u64>>) {
    let mut load: BTreeMap<u64, usize> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_u64())
        .map(|id| (id, 0))
        .collect();
    let shards: Vec<Vec<u64>> = status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            s["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["node"].as_u64())
                .collect()
        })
        .collect();
    for replicas in &shards {
        for n in replicas {
            *load.entry(*n).or_default() += 1;
        }
    }
    (load, shards)
}

/// The moves that empty node `node`: each of its replicas goes to the least loaded registered
/// node that holds no replica of that shard.
pub fn plan_remove(status: &Value, node: u64) -> anyhow::Result<Vec<(u32, u64, u64)>> {
    let (mut load, shards) = replica_map(status);
    if !load.contains_key(&node) {
        bail!("node {node} is neither registered nor holding replicas");
    }
    let mut moves = Vec::new();
    for (shard, replicas) in shards.iter().enumerate() {
        if !replicas.contains(&node) {
            continue;
        }
        let target = load
            .iter()
            .filter(|(n, _)| **n != node && !replicas.contains(n))
            .min_by_key(|(n, l)| (**l, **n))
            .map(|(n, _)| *n)
            .ok_or_else(|| {
                anyhow!(
                    "no registered node can take shard {shard}'s replica: every other node holds one; add a node first"
                )
            })?;
        *load.get_mut(&target).expect("known") += 1;
        *load.get_mut(&node).expect("known") -= 1;
        moves.push((shard as u32, node, target));
    }
    Ok(moves)
}

/// The moves that give the registered node `node` its share of replicas: from the most loaded
/// nodes, shards `node` does not hold yet, until it holds the average (rounded down).
pub fn plan_add(status: &Value, node: u64) -> anyhow::Result<Vec<(u32, u64, u64)>> {
    let (mut load, mut shards) = replica_map(status);
    if !load.contains_key(&node) {
        bail!(
            "node {node} is not registered: start it with `themis serve --etcd ... --node-id {node}` first"
        );
    }
    let total: usize = load.values().sum();
    let target = total / load.len();
    let mut moves = Vec::new();
    while load[&node] < target {
        let donor = load
            .iter()
            .filter(|(n, _)| **n != node)
            .max_by_key(|(n, l)| (**l, std::cmp::Reverse(**n)))
            .map(|(n, _)| *n)
            .expect("another node");
        if load[&donor] <= load[&node] + 1 {
            break;
        }
        let Some(shard) = shards
            .iter()
            .position(|r| r.contains(&donor) && !r.contains(&node))
        else {
            break;
        };
        shards[shard].retain(|n| *n != donor);
        shards[shard].push(node);
        *load.get_mut(&donor).expect("known") -= 1;
        *load.get_mut(&node).expect("known") += 1;
        moves.push((shard as u32, donor, node));
    }
    Ok(moves)
}

/// Parses a JSON command-line argument, naming the flag in the error.
pub fn json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow!("{flag} is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(nodes: &[u64], shards: &[&[u64]]) -> Value {
        serde_json::json!({
            "nodes": nodes.iter().map(|n| serde_json::json!({"id": n})).collect::<Vec<_>>(),
            "shards": shards.iter().map(|r| serde_json::json!({
                "replicas": r.iter().map(|n| serde_json::json!({"node": n})).collect::<Vec<_>>()
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn removing_a_node_spreads_its_replicas_over_the_others() {
        let s = status(
            &[1, 2, 3, 4, 5],
            &[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1], &[4, 1, 2]],
        );
        let moves = plan_remove(&s, 1).unwrap();
        // Node 5 holds nothing, so it takes all three (ending with three replicas, as the rest).
        assert_eq!(moves, [(0, 1, 5), (2, 1, 5), (3, 1, 5)]);
        let full = status(&[1, 2, 3], &[&[1, 2, 3]]);
        assert!(
            plan_remove(&full, 1)
                .unwrap_err()
                .to_string()
                .contains("add a node first")
        );
    }

    #[test]
    fn adding_a_node_takes_replicas_from_the_most_loaded() {
        let s = status(
            &[1, 2, 3, 4],
            &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2], &[1, 2, 3]],
        );
        let moves = plan_add(&s, 4).unwrap();
        assert_eq!(moves.len(), 3);
        let mut shards: Vec<Vec<u64>> =
            vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]];
        for (shard, from, to) in &moves {
            let r = &mut shards[*shard as usize];
            assert!(r.contains(from) && !r.contains(to));
            r.retain(|n| n != from);
            r.push(*to);
        }
        let on = |n: u64| shards.iter().filter(|r| r.contains(&n)).count();
        assert_eq!((on(1), on(2), on(3), on(4)), (3, 3, 3, 3));
        assert!(
            plan_add(&s, 9)
                .unwrap_err()
                .to_string()
                .contains("not registered")
        );
    }
}
