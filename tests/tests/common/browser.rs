//! Headless Chromium driven over the DevTools protocol, for tests of pages the nodes serve.
//!
//! Uses Debian's `chromium` (`.ci/run` installs it) or the binary named by
//! `RAFT_CHROMIUM`. Started with a fresh profile and without any background networking, so
//! it reaches nothing but the pages it is told to load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running headless browser; killed when dropped.
pub struct Browser {
    child: Child,
    devtools: String,
    _profile: tempfile::TempDir,
}

/// One tab, spoken to over its DevTools socket.
pub struct Page {
    socket: Socket,
    next_id: u64,
}

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("RAFT_CHROMIUM") {
        return PathBuf::from(p);
    }
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "no Chromium found: install Debian's `chromium` package (.ci/run does) or set RAFT_CHROMIUM to a Chromium binary"
    );
}

impl Browser {
    /// Starts Chromium headless with a new empty profile and waits for its DevTools socket.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start Chromium");
        let stderr = child.stderr.take().unwrap();
        // Chromium prints where its DevTools listen; read until then, then keep draining.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let ws = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(ws) => ws,
            Err(_) => {
                let _ = child.kill();
                panic!("Chromium did not open its DevTools socket within 60 s");
            }
        };
        // ws://127.0.0.1:PORT/devtools/browser/ID → http://127.0.0.1:PORT
        let host = ws
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        Browser {
            child,
            devtools: format!("http://{host}"),
            _profile: profile,
        }
    }

    /// The tab Chromium opened at start.
    pub async fn page(&self) -> Page {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let targets: Value = reqwest::get(format!("{}/json/list", self.devtools))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ws = targets.as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .map(String::from)
            });
            if let Some(ws) = ws {
                let (socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
                return Page { socket, next_id: 1 };
            }
            assert!(Instant::now() < deadline, "Chromium opened no tab");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page {
    /// Calls a DevTools method; its result (events met meanwhile are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(msg)).await.unwrap();
        let deadline = Duration::from_secs(60);
        loop {
            let next = tokio::time::timeout(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("the DevTools socket closed: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Loads `url`.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The value of a JavaScript expression in the page (`null` when it throws).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if !r["exceptionDetails"].is_null() {
            return Value::Null;
        }
        r["result"]["value"].clone()
    }

    /// The page's URL now.
    pub async fn url(&mut self) -> String {
        self.eval("location.href")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG screenshot of the page as `name` among the test artifacts; where.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// `target/test-artifacts`: files tests keep for people to look at (screenshots).
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-... → target/test-artifacts
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
