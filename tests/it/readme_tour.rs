//! The README's tour, run as pasted: every ```sh block the README marks with a
//! `<!-- tour: ... -->` comment runs in `bash`, in an empty temporary folder (what the
//! tour assumes: the repository root, whose tour folders are ignored by git), with the
//! built `rhizome` first on PATH, and its output must contain what the comment lists, in
//! order. So the README and this test cannot drift apart.
//!
//! The comment: `<!-- tour: WHAT` on its first line, then one expected piece of output per
//! line, then `-->`. `WHAT` containing `after stopping the nodes` stops the nodes earlier
//! blocks started, as a reader presses Ctrl-C before the next section.
//!
//! What a reader does by hand, the harness does for them, and only that:
//! - `rhizome serve ...` (a line of its own, with its `\` continuations) is what a reader
//!   runs in another terminal: it runs in the background, its output to a log, and the
//!   block goes on once the node answers; every node is stopped at the end (SIGTERM, then
//!   SIGKILL), even when the test fails.
//! - The repository's `policies/` and `filters/` are copied into the folder: blocks that
//!   use them (`--policies ./policies`) see them as from the repository root.
//! - The README's ports 8080, 8081 and 8082 are replaced by free ones (two tests, or a node the
//!   developer runs, may hold them); `RHIZOME_NODE` names the first, for the commands
//!   written without `--node`, and a `serve` without `--listen` listens there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One marked block: what it is, what its output must contain, and its lines.
struct TourBlock {
    what: String,
    expect: Vec<String>,
    script: String,
}

/// The marked ```sh blocks of `readme`, in order.
fn tour_blocks(readme: &str) -> Vec<TourBlock> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(what) = line.trim().strip_prefix("<!-- tour:") else {
            continue;
        };
        let mut what = what.trim().to_owned();
        let mut expect = Vec::new();
        if let Some(w) = what.strip_suffix("-->") {
            what = w.trim().to_owned();
        } else {
            for l in lines.by_ref() {
                if l.trim() == "-->" {
                    break;
                }
                expect.push(l.trim().to_owned());
            }
        }
        let fence = lines.find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "a tour comment must precede a ```sh block ({what})"
        );
        let script: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push(TourBlock {
            what,
            expect,
            script: script.join("\n"),
        });
    }
    blocks
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The nodes the tour started; stopped on drop, the test passing or not.
struct Nodes {
    pids: PathBuf,
}

impl Nodes {
    fn stop(&self) {
        let pids = std::fs::read_to_string(&self.pids).unwrap_or_default();
        for signal in ["-TERM", "-KILL"] {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args([signal, pid]).output();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = std::fs::remove_file(&self.pids);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The block as bash runs it: ports swapped, `serve` lines sent to the background.
fn as_run(block: &TourBlock, ports: [u16; 3], dir: &Path, nodes: &Nodes, n: usize) -> String {
    let text = block
        .script
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", ports[2]))
        .replace("\\\n", " ");
    let mut out = String::from("set -e\n");
    for (i, line) in text.lines().enumerate() {
        let command = line.split(" #").next().unwrap_or_default().trim();
        if !command.starts_with("rhizome serve") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let listen = words
            .iter()
            .position(|w| *w == "--listen")
            .map(|i| words[i + 1].to_owned());
        let (command, listen) = match listen {
            Some(l) => (command.to_owned(), l),
            None => {
                let l = format!("127.0.0.1:{}", ports[0]);
                (format!("{command} --listen {l}"), l)
            }
        };
        let log = dir.join(format!("serve-{n}-{i}.log"));
        out.push_str(&format!(
            "{command} > {log} 2>&1 &\necho $! >> {pids}\n\
             for _ in $(seq 100); do rhizome status --node http://{listen} > /dev/null 2>&1 && break; sleep 0.1; done\n\
             rhizome status --node http://{listen} > /dev/null || {{ cat {log}; exit 1; }}\n",
            log = log.display(),
            pids = nodes.pids.display(),
        ));
    }
    out
}

#[test]
fn the_readme_tour_runs_as_pasted_issue_16() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let blocks = tour_blocks(&readme);
    assert!(
        blocks.len() >= 4,
        "the tour's blocks are marked in README.md"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_rhizome")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ports = [free_port(), free_port(), free_port()];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for folder in ["policies", "filters"] {
        let copied = Command::new("cp")
            .arg("-r")
            .arg(repo.join(folder))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(copied.success(), "copying {folder}/");
    }
    let nodes = Nodes {
        pids: dir.path().join("nodes.pids"),
    };
    for (n, block) in blocks.iter().enumerate() {
        if block.what.contains("after stopping the nodes") {
            nodes.stop();
        }
        let script = as_run(block, ports, dir.path(), &nodes, n);
        let ran = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("RHIZOME_NODE", format!("http://127.0.0.1:{}", ports[0]))
            .output()
            .expect("bash");
        let out = String::from_utf8_lossy(&ran.stdout);
        let err = String::from_utf8_lossy(&ran.stderr);
        assert!(
            ran.status.success(),
            "tour block {n} ({}) failed:\n{script}\n--- stdout\n{out}\n--- stderr\n{err}",
            block.what
        );
        let mut rest: &str = &out;
        for want in &block.expect {
            match rest.find(want.as_str()) {
                Some(at) => rest = &rest[at + want.len()..],
                None => panic!(
                    "tour block {n} ({}): {want:?} not in its output (after the earlier \
                     expectations):\n{out}\n--- stderr\n{err}",
                    block.what
                ),
            }
        }
    }
    nodes.stop();
}
