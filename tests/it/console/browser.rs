//! A headless Chromium driven over the DevTools protocol, for the console's tests: the
//! few commands they need (open a page, evaluate, click, type, emulate a phone or a dark
//! scheme, take a screenshot), spoken as JSON over the WebSocket the browser opens.
//!
//! Our own small client rather than a DevTools crate: the crates' typed messages are
//! untagged enums, which cannot read floating-point numbers once serde_json's
//! `arbitrary_precision` (which this crate needs) is on, so every event with a
//! timestamp was dropped and pages never finished loading for them.
//!
//! Chromium is looked for as `RHIZOME_CHROMIUM`, `/usr/bin/chromium`, then `chromium`,
//! `chromium-browser` and `google-chrome` on `PATH`. Without one the tests fail and say
//! how to install it, unless `RHIZOME_SKIP_BROWSER_TESTS=1` says to skip them. One
//! browser runs at a time: each takes a few hundred MB and the suite shares the machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Mutex, MutexGuard};
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for the page to show something before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::const_new(());

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A browser with one page open on a node's console.
pub struct Console {
    child: Child,
    sink: Mutex<Sink>,
    pending: Pending,
    next_id: AtomicU64,
    session: String,
    reader: tokio::task::JoinHandle<()>,
    name: &'static str,
    _profile: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RHIZOME_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Starts Chromium and reads the DevTools address it prints on stderr; the rest of its
/// stderr is drained by a thread, so the browser never blocks on a full pipe.
fn launch(executable: &Path, profile: &Path) -> (Child, String) {
    let mut command = Command::new(executable);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1280,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Chromium refuses to start its sandbox as root (containers, CI).
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        command.arg("--no-sandbox");
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", executable.display()));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.split_once("DevTools listening on ") {
                Some((_, url)) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(url.trim().to_owned()));
                    }
                }
                None if tx.is_some() && said.len() < 50 => said.push(line),
                None => {}
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(said.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(url)) => (child, url),
        Ok(Err(said)) => {
            let _ = child.kill();
            panic!(
                "{} exited without a DevTools address:\n{said}",
                executable.display()
            )
        }
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{} printed no DevTools address within 30 s",
                executable.display()
            )
        }
    }
}

impl Console {
    /// Opens `url` in a fresh headless browser; `None` when the browser tests are skipped
    /// (`RHIZOME_SKIP_BROWSER_TESTS=1`). `name` names the test's screenshots.
    pub async fn open(url: &str, name: &'static str) -> Option<Console> {
        if std::env::var("RHIZOME_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("{name}: skipped, RHIZOME_SKIP_BROWSER_TESTS=1");
            return None;
        }
        let Some(executable) = chromium() else {
            panic!(
                "the console's browser tests need Chromium, and none was found at \
                 /usr/bin/chromium or on PATH: install it (Debian: `apt-get install chromium`), \
                 point RHIZOME_CHROMIUM at it, or set RHIZOME_SKIP_BROWSER_TESTS=1 to skip them"
            );
        };
        let turn = ONE_BROWSER_AT_A_TIME.lock().await;
        let profile = tempfile::tempdir().expect("browser profile dir");
        let (child, ws_url) = launch(&executable, profile.path());
        let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot reach the browser at {ws_url}: {e}"));
        let (sink, mut stream) = socket.split();
        let pending: Pending = Arc::default();
        let answers = pending.clone();
        // Routes each answer to the command that waits for it; events are not needed.
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                if let Some(tx) = answers.lock().unwrap().remove(&id) {
                    let _ = tx.send(value);
                }
            }
        });
        let mut console = Console {
            child,
            sink: Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            session: String::new(),
            reader,
            name,
            _profile: profile,
            _turn: turn,
        };
        let target = console
            .browser_call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = console
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        console.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_owned();
        console.metrics(1280, 1000, 1.0, false).await;
        console.call("Page.navigate", json!({"url": url})).await;
        console
            .wait_until("the page loaded", "document.readyState === 'complete'")
            .await;
        Some(console)
    }

    async fn send(&self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("{method}: the browser connection is gone: {e}"));
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|_| panic!("{method}: the browser connection closed"));
        if let Some(error) = answer.get("error") {
            panic!("{method}: the browser refused: {error}");
        }
        answer["result"].clone()
    }

    async fn browser_call(&self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// A command to the page.
    async fn call(&self, method: &str, params: Value) -> Value {
        self.send(method, params, Some(&self.session)).await
    }

    async fn metrics(&self, width: u32, height: u32, scale: f64, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        )
        .await;
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval<T: DeserializeOwned>(&self, expression: &str) -> T {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        let value = result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null);
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the value of {expression} ({value}): {e}"))
    }

    /// The text of the first element matching `selector` ("" when there is none).
    pub async fn text(&self, selector: &str) -> String {
        self.eval(&format!(
            "document.querySelector({})?.textContent ?? ''",
            serde_json::to_string(selector).unwrap()
        ))
        .await
    }

    /// Waits until `check` (a JavaScript expression) is true in the page; on time-out,
    /// saves a screenshot and fails with what the page shows.
    pub async fn wait_until(&self, what: &str, check: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if self.eval::<bool>(&format!("Boolean({check})")).await {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.screenshot("timeout").await;
        let shown: String = self.eval("document.body.innerText").await;
        panic!(
            "{}: waited {PATIENCE:?} for {what}; the page shows:\n{shown}",
            self.name
        );
    }

    /// Waits until the number in the first element matching `selector` is at least `n`.
    pub async fn wait_count(&self, what: &str, selector: &str, n: u64) -> u64 {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait_until(
            what,
            &format!("Number(document.querySelector({sel})?.textContent) >= {n}"),
        )
        .await;
        self.text(selector).await.trim().parse().expect("a number")
    }

    /// Clicks the middle of the element matching `selector` with the mouse, as a user does.
    pub async fn click(&self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let (x, y): (f64, f64) = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Types `text` into the input matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        self.click(selector).await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Types the token into the page's token field, as an operator does.
    pub async fn use_token(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("#token-save").await;
        self.wait_until(
            "the token taken",
            "document.querySelector('#token-state').textContent.includes('in use')",
        )
        .await;
    }

    /// Shows the page as a phone does (a narrow, touch, high-density screen).
    pub async fn as_phone(&self) {
        self.metrics(390, 844, 2.0, true).await;
    }

    pub async fn prefer_dark(&self) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    }

    /// Saves the whole page as `NAME-SUFFIX.png` under the target dir's `console/`.
    pub async fn screenshot(&self, suffix: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{}-{suffix}.png", self.name));
        let (width, height): (f64, f64) = self
            .eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 image");
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Stops the browser (dropping the console does too).
    pub async fn close(self) {
        drop(self);
    }
}

impl Drop for Console {
    /// A failed test still stops its browser.
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
