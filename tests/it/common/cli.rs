//! The real `rhizome` binary, run as an operator runs it: `rhizome serve` processes on a
//! free port, and one-shot commands whose exit code and output a test reads.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rhizome"))
}

/// A `rhizome serve` process, killed when the test ends (even by a panic) unless
/// [`Serving::stop`] stopped it first.
pub struct Serving {
    child: Child,
    /// `http://ADDR`, what the client commands take as `--node`.
    pub url: String,
    pub system_id: String,
    /// The file holding its admin token, as its first line says (`None` when configured).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// `http://ADDR` of its `--admin-listen` address, when it has one.
    pub admin_url: Option<String>,
    /// The lines it prints after the first (`--events`), read as they come: the pipe
    /// stays open, so printing never fails while the test runs.
    stdout: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts `rhizome serve --listen 127.0.0.1:0` with `extra` flags (among them the
    /// store: `--memory` or `--data DIR`), and reads where it listens from the first
    /// line it prints.
    pub fn start<S: AsRef<OsStr>>(extra: &[S]) -> Serving {
        Serving::spawn("127.0.0.1:0", extra).expect("rhizome serve prints where it listens")
    }

    /// Starts `rhizome serve --listen ADDR` with `extra` flags; `None` when it exits
    /// without listening (for example while a fixed port is not free again yet).
    pub fn spawn<S: AsRef<OsStr>>(listen: &str, extra: &[S]) -> Option<Serving> {
        Serving::spawn_with(listen, extra, |_| {})
    }

    /// As [`Serving::spawn`], with the command set up by `setup` first (its stderr goes
    /// nowhere unless `setup` says otherwise).
    pub fn spawn_with<S: AsRef<OsStr>>(
        listen: &str,
        extra: &[S],
        setup: impl FnOnce(&mut Command),
    ) -> Option<Serving> {
        let mut cmd = bin();
        cmd.args(["serve", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("start rhizome serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            let _ = child.wait();
            return None;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Some(Serving {
            child,
            url: v["listening"].as_str().expect("listening url").to_owned(),
            system_id: v["systemId"].as_str().expect("system id").to_owned(),
            admin_token_file: v["adminTokenFile"].as_str().map(Into::into),
            admin_url: v["adminListening"].as_str().map(str::to_owned),
            stdout: rx,
        })
    }

    /// The next stdout line that is JSON and satisfies `pick` (an `--events` line, say),
    /// skipping the others; panics naming `what` after 15 s.
    pub fn next_json(&self, what: &str, mut pick: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if pick(&v) {
                    return v;
                }
            }
        }
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed or closed).
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// Stops the process with SIGTERM, as a service manager would, and asserts that it
    /// exits cleanly.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    }

    /// Whether `rhizome get` finds the delta `id` on this node.
    pub fn has_delta(&self, id: &str) -> bool {
        run(&["get", "--node", &self.url, id]).ok()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // After `stop` the exit status is known: no signal goes to a reused pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rhizome serve --memory` with `extra` flags.
pub fn serve(extra: &[&str]) -> Serving {
    Serving::start(&[&["--memory"], extra].concat())
}

/// What a CLI run gave: its arguments (for messages), exit code, stdout, stderr.
pub struct Ran {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts that the run failed and that its stderr says each of `words`.
    pub fn assert_fails_saying(&self, words: &[&str]) {
        assert!(
            !self.ok(),
            "rhizome {:?} succeeded: {}",
            self.args,
            self.out
        );
        for word in words {
            assert!(self.err.contains(word), "no {word:?} in: {}", self.err);
        }
    }

    /// Asserts that the run succeeded; each stdout line decoded as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        assert!(self.ok(), "rhizome {:?} failed: {}", self.args, self.err);
        self.out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// Runs the CLI with nothing on stdin.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Ran {
    run_command(bin(), args, None)
}

/// Runs the CLI in `dir`, with nothing on stdin.
pub fn run_in<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Ran {
    let mut cmd = bin();
    cmd.current_dir(dir);
    run_command(cmd, args, None)
}

/// Runs the CLI with `input` on stdin.
pub fn run_with_stdin<S: AsRef<OsStr>>(args: &[S], input: &str) -> Ran {
    run_command(bin(), args, Some(input))
}

fn run_command<S: AsRef<OsStr>>(mut cmd: Command, args: &[S], input: Option<&str>) -> Ran {
    let mut child = cmd
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rhizome");
    if let Some(text) = input {
        // Dropped at the end of the statement: the command sees the end of its input.
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("rhizome output");
    Ran {
        args: args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect(),
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls until `check` gives a value, for at most 15 s; panics naming `what` after.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `check` holds, for at most 15 s; panics naming `what` after.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()));
}
