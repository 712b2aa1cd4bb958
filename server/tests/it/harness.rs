//! Starts the real `themis` binary on a loopback port with its own data directory, and stops it
//! with SIGTERM or SIGKILL. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // test harness: real threads and real time

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `themis serve`.
pub struct Server {
    child: Child,
    pub base: String,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_themis")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a server on `data_dir` and waits (at most 60 s) until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start(data_dir, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts a server; on failure returns what it printed to stderr.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_on(data_dir, &format!("127.0.0.1:{}", free_port()), extra)
    }

    /// Starts a server whose API listens on `listen`; on failure returns its stderr.
    pub fn try_start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Server, String> {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen, "--log", "warn"])
            .args(extra)
            .stdin(Stdio::null());
        Self::try_start_command(command, listen)
    }

    /// Runs `command` (a `themis serve` whose API listens on `listen`, perhaps under a wrapper
    /// that execs it) and waits as [`Server::start`] does; on failure returns its stderr.
    pub fn try_start_command(mut command: Command, listen: &str) -> Result<Server, String> {
        let listen = listen.to_owned();
        // Small columnar runs, so the tests' state views flush and merge runs.
        if !command
            .get_envs()
            .any(|(k, _)| k == "THEMIS_STATE_FLUSH_ROWS")
        {
            command.env("THEMIS_STATE_FLUSH_ROWS", "16");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn themis");
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let name = listen.clone();
        std::thread::spawn(move || {
            // A panic in a server is a bug whatever the test checks: show it in the test's
            // output (with the next lines, the location and message).
            let mut echo = 0;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("panicked at") {
                    echo = 3;
                }
                if echo > 0 {
                    echo -= 1;
                    eprintln!("[themis {name}] {line}");
                }
                let _ = err_tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match out_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("themis listening on") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    // Every line (`iter`, not `try_iter`): the reader thread may still be
                    // reading when the process has exited; it ends at the end of stderr.
                    return Err(err_rx.iter().collect::<Vec<_>>().join("\n"));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status}: {}",
                    err_rx.iter().collect::<Vec<_>>().join("\n")
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("did not listen within 60 s".into());
            }
        }
        Ok(Server {
            child,
            base: format!("http://{listen}"),
        })
    }

    /// Sends `signal` (for example `STOP` or `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status (waits at most 30 s, then kills).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server ignored SIGTERM for 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-member etcd (Debian `etcd-server`) on loopback ports with its own data directory,
/// killed when dropped.
pub struct Etcd {
    child: Child,
    /// Client endpoint, `127.0.0.1:port`.
    pub endpoint: String,
}

impl Etcd {
    /// Starts etcd in `dir` and waits (at most 30 s) until it accepts connections.
    pub fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is not installed: run ./scripts/test, which installs Debian etcd-server");
        let etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{client}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI with `args`; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run themis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
