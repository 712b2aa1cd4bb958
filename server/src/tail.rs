//! `themis tail`: prints a subscription's events as NDJSON, one per line, and keeps going across
//! disconnects, server restarts and failover: it reconnects (to the next server given, if
//! several) from the cursor of the last message it received, so what it prints has no gap and
//! no duplicate. With `--group` it starts from the group's checkpoint and stores its cursor
//! there as it goes.
// A client command, not part of a node: it waits and backs off on the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Client, ServerProblem};

/// What `themis tail` was asked to do (its flags).
#[derive(Debug, Clone, clap::Args)]
pub struct TailOptions {
    /// Where to start without a checkpoint: earliest, latest, a cursor (r1.…) or a token.
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Consumer group: start from its checkpoint and store the cursor there as it goes.
    #[arg(long)]
    pub group: Option<String>,
    /// Filter `key=value` (keys: urn, model, ns, type); repeat for several.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop once every shard's head is reached.
    #[arg(long)]
    pub until_caught_up: bool,
    /// How often the group's checkpoint is stored, like 1s.
    #[arg(long, default_value = "1s", value_parser = themis_log::units::parse_duration)]
    pub checkpoint_every: Duration,
    /// Give up after failing to reconnect for this long, like 30s (default: never).
    #[arg(long, value_parser = themis_log::units::parse_duration)]
    pub give_up_after: Option<Duration>,
    /// Servers to read from, comma-separated; tried in turn after a failure.
    #[arg(
        long = "server",
        env = "THEMIS_SERVER",
        default_value = "http://127.0.0.1:8765",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
}

/// Runs `themis tail`, writing events to `out`.
pub async fn tail(options: &TailOptions, out: &mut impl Write) -> anyhow::Result<()> {
    if options.servers.is_empty() {
        bail!("no server given");
    }
    let clients = options
        .servers
        .iter()
        .map(|s| Client::new(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut state = State {
        cursor: None,
        stored: None,
        printed: 0,
        last_checkpoint: Instant::now(),
    };
    let mut server = 0;
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    if let Some(group) = &options.group {
        state.cursor = start_from_checkpoint(&clients, group, options).await?;
        state.stored = state.cursor.clone();
    }
    loop {
        let client = &clients[server % clients.len()];
        let before = state.cursor.clone();
        let from = before.clone().unwrap_or_else(|| options.from.clone());
        match follow(client, &from, options, &mut state, out).await {
            Ok(()) => {
                checkpoint(client, options, &mut state, true).await?;
                return Ok(());
            }
            Err(e) => {
                if refused(&e) {
                    return Err(e);
                }
                if state.cursor != before {
                    // The connection made progress before it failed: start counting afresh.
                    failing_since = None;
                    backoff = Duration::from_millis(100);
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if options.give_up_after.is_some_and(|g| since.elapsed() > g) {
                    return Err(e.context("gave up reconnecting"));
                }
                eprintln!("themis tail: {e:#}; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                server += 1;
            }
        }
    }
}

/// A refusal every server will repeat (a bad cursor, filter or group name, an expired
/// position: a 4xx other than 408, 421 and 429) ends the command; anything else is retried.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServerProblem>()
        .is_some_and(|p| (400..500).contains(&p.status) && ![408, 421, 429].contains(&p.status))
}

struct State {
    /// The cursor after the last message received.
    cursor: Option<String>,
    /// The cursor last stored as the group's checkpoint.
    stored: Option<String>,
    printed: u64,
    last_checkpoint: Instant,
}

async fn start_from_checkpoint(
    clients: &[Client],
    group: &str,
    options: &TailOptions,
) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    let mut i = 0;
    loop {
        match clients[i % clients.len()].checkpoint(group).await {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => return Ok(None),
            Err(e) => {
                if refused(&e) || options.give_up_after.is_some_and(|g| started.elapsed() > g) {
                    return Err(e.context("cannot read the group's checkpoint"));
                }
                eprintln!("themis tail: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                i += 1;
            }
        }
    }
}

/// Stores the group's checkpoint when it moved and `force` or the period passed.
async fn checkpoint(
    client: &Client,
    options: &TailOptions,
    state: &mut State,
    force: bool,
) -> anyhow::Result<()> {
    let (Some(group), Some(cursor)) = (&options.group, &state.cursor) else {
        return Ok(());
    };
    if state.stored.as_ref() == Some(cursor)
        || !(force || state.last_checkpoint.elapsed() >= options.checkpoint_every)
    {
        return Ok(());
    }
    client
        .put_checkpoint(group, cursor)
        .await
        .context("cannot store the group's checkpoint")?;
    state.stored = Some(cursor.clone());
    state.last_checkpoint = Instant::now();
    Ok(())
}

/// Reads one connection until it ends. Ok when the command is done (count, caught up).
async fn follow(
    client: &Client,
    from: &str,
    options: &TailOptions,
    state: &mut State,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let response = client.subscribe(from, &options.filters).await?;
    let mut body = response.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the subscription broke off")?;
        for &b in chunk.iter() {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let message: Value =
                serde_json::from_slice(&line).context("the server sent a line that is not JSON")?;
            line.clear();
            match message["type"].as_str() {
                Some("error") => {
                    return Err(ServerProblem {
                        status: message["status"].as_u64().unwrap_or(500) as u16,
                        code: message["code"].as_str().unwrap_or("unknown").to_owned(),
                        detail: message["detail"].as_str().unwrap_or("no detail").to_owned(),
                    }
                    .into());
                }
                Some("event") => {
                    serde_json::to_writer(&mut *out, &message)?;
                    out.write_all(b"\n")?;
                    state.printed += 1;
                }
                _ => {}
            }
            if let Some(c) = message["cursor"].as_str() {
                state.cursor = Some(c.to_owned());
            }
            let done = options.count.is_some_and(|n| state.printed >= n)
                || (options.until_caught_up && message["type"] == "caught_up");
            if done {
                out.flush()?;
                return Ok(());
            }
            if message["type"] != "event" {
                out.flush()?;
                checkpoint(client, options, state, false).await?;
            }
        }
        out.flush()?;
        checkpoint(client, options, state, false).await?;
    }
    bail!("the server closed the subscription")
}
