//! Starting the processes a benchmark compares: the `themis` binary and a real etcd, each on a
//! free loopback port with a temporary data directory, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    /// Its data directory (removed when dropped; `None` once handed to a restart).
    dir: Option<tempfile::TempDir>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's data directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Stops the child as an operator would (SIGTERM, then waits up to 120 s for it to exit;
    /// SIGKILL after that).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("the process did not exit within 120 s of SIGTERM")
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`; Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of the files under `path` (recursively).
pub fn tree_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return std::fs::metadata(path).map_or(0, |m| m.len());
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// CPU time (user + system) that process `pid` has used so far, from `/proc/<pid>/stat`
/// (Linux; clock ticks of 1/100 s, the USER_HZ every Linux ABI fixes).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces; utime and
    // stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where the `themis` binary built next to this one lives.
pub fn themis_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("themis");
    if !path.exists() {
        bail!(
            "{} does not exist: build it first with the same profile (cargo build -p themis-server --bin themis)",
            path.display()
        );
    }
    Ok(path)
}

/// A command for `program`, restricted to the CPUs in `cpus` (a `taskset` list such as `0` or
/// `0-1`) when given.
pub fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["--cpu-list", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Restricts every thread of this process to the CPUs in `cpus` (a `taskset` list).
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset --cpu-list {cpus} failed: {status}");
    }
    Ok(())
}

/// Starts `themis serve` with `shards` shards in a temporary directory under `parent`, on the
/// CPUs in `cpus` when given; returns its base URL.
pub fn start_themis(
    binary: &Path,
    parent: &Path,
    shards: u32,
    cpus: Option<&str>,
) -> anyhow::Result<(Guard, String)> {
    start_themis_in(binary, tempfile::tempdir_in(parent)?, shards, cpus)
}

/// Starts `themis serve` again on the data directory of `stopped` (see [`Guard::stop`]);
/// returns its new base URL.
pub fn restart_themis(
    binary: &Path,
    stopped: Guard,
    shards: u32,
    cpus: Option<&str>,
) -> anyhow::Result<(Guard, String)> {
    let mut stopped = stopped;
    let dir = stopped
        .dir
        .take()
        .context("the stopped process has no data directory")?;
    // Its child was reaped by `stop`: dropping the guard signals nothing.
    drop(stopped);
    start_themis_in(binary, dir, shards, cpus)
}

/// The servers' `--log` filter: `THEMIS_BENCH_SERVER_LOG` when set (for example
/// `warn,themis_query=debug` prints the phases of every SQL query), else `warn`.
fn server_log() -> String {
    std::env::var("THEMIS_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned())
}

fn start_themis_in(
    binary: &Path,
    dir: tempfile::TempDir,
    shards: u32,
    cpus: Option<&str>,
) -> anyhow::Result<(Guard, String)> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut child = pinned(binary, cpus)
        .args([
            "serve",
            "--listen",
            &listen,
            "--shards",
            &shards.to_string(),
            "--log",
            &server_log(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("themis listening on") => break,
            Some(_) => {}
            None => bail!("themis exited before listening"),
        }
    }
    Ok((
        Guard {
            child,
            dir: Some(dir),
        },
        format!("http://{listen}"),
    ))
}

/// Starts a single-node etcd (Debian `etcd-server`) in a temporary directory under `parent`;
/// returns its client endpoint. etcd fsyncs its WAL before acknowledging a put (its default).
/// It runs on the CPUs in `cpus` when given.
pub fn start_etcd(parent: &Path, cpus: Option<&str>) -> anyhow::Result<(Guard, String)> {
    let (mut guards, mut endpoints) = start_etcd_cluster(parent, 1, cpus)?;
    Ok((guards.remove(0), endpoints.remove(0)))
}

/// Starts `count` etcd members forming one cluster on loopback, in temporary directories under
/// `parent`; returns their guards and client endpoints once every member listens.
pub fn start_etcd_cluster(
    parent: &Path,
    count: usize,
    cpus: Option<&str>,
) -> anyhow::Result<(Vec<Guard>, Vec<String>)> {
    let ports: Vec<(u16, u16)> = (0..count)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut guards = Vec::with_capacity(count);
    let mut endpoints = Vec::with_capacity(count);
    for (i, (client, peer)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir_in(parent)?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = pinned(Path::new("etcd"), cpus)
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start etcd (install Debian etcd-server)")?;
        guards.push(Guard {
            child,
            dir: Some(dir),
        });
        endpoints.push(format!("127.0.0.1:{client}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (client, _) in &ports {
        while std::net::TcpStream::connect(("127.0.0.1", *client)).is_err() {
            if Instant::now() > deadline {
                bail!("etcd members did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((guards, endpoints))
}

/// One node of a themis cluster: fixed addresses and data directory, so it can be killed and
/// started again as the same node.
#[derive(Debug)]
pub struct ClusterNode {
    /// Node id.
    pub id: u64,
    /// HTTP API address.
    pub listen: String,
    /// Peer address.
    pub peer: String,
    dir: PathBuf,
    process: Option<Child>,
}

impl ClusterNode {
    /// A node with fresh loopback ports and a data directory `parent/n<id>`.
    pub fn new(parent: &Path, id: u64) -> anyhow::Result<Self> {
        Ok(Self {
            id,
            listen: format!("127.0.0.1:{}", free_port()?),
            peer: format!("127.0.0.1:{}", free_port()?),
            dir: parent.join(format!("n{id}")),
            process: None,
        })
    }

    /// The base URL of its API.
    pub fn base(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Starts `themis serve --etcd` without waiting for it (a cluster node listens only once
    /// the initial nodes have registered).
    pub fn spawn(
        &mut self,
        binary: &Path,
        etcd: &str,
        cpus: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<()> {
        let child = pinned(binary, cpus)
            .args(["serve", "--node-id", &self.id.to_string()])
            .args(extra)
            .args(["--listen", &self.listen, "--peer-listen", &self.peer])
            // openraft logs every failed RPC to a killed node as an error: expected here.
            .args(["--etcd", etcd, "--log", "error,openraft=off", "--data-dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        self.process = Some(child);
        Ok(())
    }

    /// Waits (at most `timeout`) until the API answers `/livez`.
    pub async fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &mut self.process
                && let Some(status) = child.try_wait()?
            {
                bail!("node {} exited with {status}", self.id);
            }
            let answer = http
                .get(format!("{}/livez", self.base()))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {} did not listen within {timeout:?}", self.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The python of `venv` (made with DuckDB when missing, see `sql::duckdb_python`), with the pip
/// `packages` installed when `import` fails.
pub fn venv_python(venv: &Path, import: &str, packages: &[&str]) -> anyhow::Result<PathBuf> {
    let python = crate::sql::duckdb_python(venv)?;
    let ok = Command::new(&python)
        .args(["-c", &format!("import {import}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("installing {} into {}", packages.join(", "), venv.display());
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .status()
            .context("cannot run pip")?;
        if !status.success() {
            bail!("pip install of {} failed ({status})", packages.join(", "));
        }
    }
    Ok(python)
}

/// Runs a peer's python `script` (its text) with the JSON `config` on the CPUs in `cpus`;
/// returns the JSON it prints. `dir` holds the script and config files.
pub fn run_peer_script(
    python: &Path,
    cpus: Option<&str>,
    dir: &Path,
    script: &str,
    config: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let (script_path, config_path) = (dir.join("peer.py"), dir.join("peer.json"));
    std::fs::write(&script_path, script)?;
    std::fs::write(&config_path, config.to_string())?;
    let output = pinned(python, cpus)
        .arg(&script_path)
        .arg(&config_path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!("the peer script failed: {}", output.status);
    }
    serde_json::from_slice(&output.stdout).context("the peer script's output is not JSON")
}
