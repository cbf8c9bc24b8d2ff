//! A `rhizome serve` child process and the HTTP calls the bench makes to it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

/// How long a node may take to print its `listening` line, and its links to connect.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A run fails when a receiver's head stops moving for this long: slow is fine, stuck is a bug.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often heads are polled (`GET /status`); small next to the shortest run.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A `rhizome serve` child process. Dropping it kills the process (also on error paths),
/// then removes its temp dir.
pub struct NodeProc {
    pub name: String,
    child: Child,
    pub url: String,
    /// The admin token the node wrote (its listening line names the file): `/links` and
    /// `/policies` take it.
    token: String,
    log: PathBuf,
    /// Holds the store and the log; removed after `Drop for NodeProc` has killed the process.
    _dir: TempDir,
}

impl NodeProc {
    /// Starts `rhizome serve` on a free loopback port, durable in a temp dir unless `memory`.
    pub async fn spawn(bin: &Path, name: &str, memory: bool, extra: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rhizome-bench-{name}-"))
            .tempdir()
            .context("cannot create a temp dir")?;
        let log = dir.path().join("node.log");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if memory {
            cmd.arg("--memory");
        } else {
            cmd.arg("--data").arg(dir.path().join("data"));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // Info logs per link and batch would cost the nodes time we are measuring.
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).context("cannot create the node's log file")?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the node's stdout is not piped")?;
        let mut node = NodeProc {
            name: name.to_owned(),
            child,
            url: String::new(),
            token: String::new(),
            log,
            _dir: dir,
        };
        // A blocking read in a thread: a node that hangs before listening must not hang us.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep reading: a later println into a closed pipe would kill the node.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match tokio::time::timeout(STARTUP_TIMEOUT, rx).await {
            Ok(Ok(Ok(line))) if !line.is_empty() => line,
            _ => return Err(node.failure("did not print its listening line")),
        };
        let first: Value = serde_json::from_str(&line)
            .with_context(|| format!("node {name}'s first line is not JSON: {line:?}"))?;
        node.url = first["listening"]
            .as_str()
            .with_context(|| format!("node {name}'s first line has no `listening`: {line:?}"))?
            .to_owned();
        let token_file = first["adminTokenFile"].as_str().with_context(|| {
            format!("node {name}'s first line has no `adminTokenFile`: {line:?}")
        })?;
        node.token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read node {name}'s admin token {token_file}"))?
            .trim()
            .to_owned();
        Ok(node)
    }

    /// An error saying what went wrong, with the node's exit status and log tail.
    fn failure(&mut self, what: &str) -> anyhow::Error {
        let exit = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            _ => "still running".to_owned(),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        anyhow!(
            "node {} {what} ({exit}); last log lines:\n{tail}",
            self.name
        )
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(self.failure("stopped")),
        }
    }

    /// The process id, for `perf record -p` while a run is going.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set in KiB, from the kernel's high-water mark (Linux only).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident set now, in KiB (Linux only).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix(field))?;
        line.trim().strip_suffix("kB")?.trim().parse().ok()
    }

    /// Sends SIGTERM, as a supervisor stopping the node would, and waits for it to exit;
    /// how long that took.
    #[cfg(unix)]
    pub async fn terminate(&mut self, within: Duration) -> Result<Duration> {
        let pid = i32::try_from(self.child.id()).context("the pid does not fit a pid_t")?;
        let started = Instant::now();
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        ensure!(
            unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
            "cannot send SIGTERM to node {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
        while started.elapsed() < within {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("node {} still running {within:?} after SIGTERM", self.name)
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs_of(&self.child.id().to_string())
    }

    /// Resets the high-water mark to the current resident set (`clear_refs` 5, Linux >= 4.0),
    /// so a later [`NodeProc::peak_rss_kib`] covers only what came after.
    pub fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").is_ok()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // SIGKILL: nothing on these stores is worth a graceful shutdown, and it cannot hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) used so far by process `pid` (`self` for this one), in
/// seconds (Linux only). Less sensitive than wall time to what else runs on a shared machine.
pub fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux builds for every mainstream architecture.
    Some(ticks as f64 / 100.0)
}

/// The node binary: `explicit` when given (`--rhizome`, to run another build, such as the
/// binary of an older commit, beside the same bench), else `target/<profile>/rhizome`, next
/// to `target/<profile>/examples/bench`.
pub fn node_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(bin) = explicit {
        ensure!(bin.is_file(), "--rhizome {}: no such file", bin.display());
        return Ok(bin.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find this example's own path")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("unexpected example path {}", exe.display()))?;
    let bin = profile_dir.join(format!("rhizome{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        bin.is_file(),
        "{} not found: run `cargo build --release` first (`cargo run --example` builds the \
         example only, not the rhizome binary)",
        bin.display()
    );
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(e)) = (modified(&bin), modified(&exe)) {
        if b < e {
            eprintln!(
                "note: {} is older than this example; if src/ changed since, run \
                 `cargo build --release` so the nodes run the current code",
                bin.display()
            );
        }
    }
    Ok(bin)
}

/// `GET` a route of the node with its admin token, which every route takes.
pub async fn get_json(client: &reqwest::Client, node: &NodeProc, path: &str) -> Result<Value> {
    let url = format!("{}{path}", node.url);
    let response = client
        .get(&url)
        .bearer_auth(&node.token)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

/// `POST` a JSON body to a route of the node with its admin token; the answer as JSON.
pub async fn post_json(
    client: &reqwest::Client,
    node: &NodeProc,
    path: &str,
    body: &Value,
) -> Result<Value> {
    let url = format!("{}{path}", node.url);
    let response = client
        .post(&url)
        .bearer_auth(&node.token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("POST {url}: {status}: {text}");
    }
    response
        .json()
        .await
        .with_context(|| format!("POST {url}: not JSON"))
}

pub async fn head(client: &reqwest::Client, node: &NodeProc) -> Result<u64> {
    let status = get_json(client, node, "/status").await?;
    status["store"]["head"]
        .as_u64()
        .with_context(|| format!("node {}: /status has no store.head: {status}", node.name))
}

pub async fn links(client: &reqwest::Client, node: &NodeProc) -> Result<Vec<Value>> {
    let body = get_json(client, node, "/links").await?;
    Ok(body["links"].as_array().cloned().unwrap_or_default())
}

/// Waits until every node holds `n` deltas; fails if one's head stops moving or it dies.
pub async fn wait_for_heads(
    client: &reqwest::Client,
    nodes: &mut [&mut NodeProc],
    n: u64,
) -> Result<()> {
    let mut last = vec![(0u64, Instant::now()); nodes.len()];
    loop {
        let mut all = true;
        for (node, (seen, moved)) in nodes.iter_mut().zip(&mut last) {
            if *seen >= n {
                continue;
            }
            node.ensure_running()?;
            let h = head(client, node).await?;
            if h > *seen {
                (*seen, *moved) = (h, Instant::now());
            } else if moved.elapsed() > STALL_TIMEOUT {
                let links = links(client, node).await.unwrap_or_default();
                bail!(
                    "node {} stuck at {h} of {n} deltas for {}s; its links: {}",
                    node.name,
                    STALL_TIMEOUT.as_secs(),
                    Value::Array(links)
                );
            }
            all &= h >= n;
        }
        if all {
            return Ok(());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until the node shows at least `want` links with status `connected`.
pub async fn wait_connected(
    client: &reqwest::Client,
    node: &mut NodeProc,
    want: usize,
) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        node.ensure_running()?;
        let links = links(client, node).await?;
        if links.iter().filter(|l| l["status"] == "connected").count() >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "node {} has fewer than {want} connected links after {}s; its links: {}",
                node.name,
                STARTUP_TIMEOUT.as_secs(),
                Value::Array(links)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
