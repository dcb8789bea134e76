//! Shared by the CLI's integration tests: a real `medicodax serve` on loopback in a
//! temporary data folder, and the paths of the third-party peers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_medicodax");

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// `tests/interop`, or where `MEDICODAX_INTEROP_DIR` says it is.
pub fn interop_dir() -> PathBuf {
    std::env::var_os("MEDICODAX_INTEROP_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("tests/interop"))
}

/// The interop virtualenv's Python (PyJWT, jwcrypto, joserfc, authlib, mcp).
pub fn python() -> PathBuf {
    let py = interop_dir().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run scripts/test-deps.sh to install the Python peers (or set MEDICODAX_INTEROP_DIR)", py.display());
    py
}

/// Checks that the Node peers are installed.
pub fn require_node_modules(package: &str) {
    let p = interop_dir().join("node_modules").join(package).join("package.json");
    assert!(p.exists(), "the Node package {package} is missing ({}): run scripts/test-deps.sh", p.display());
}

/// A running `medicodax serve` (the embedded sandbox default), killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin password, when this start created the admin.
    pub admin_password: Option<String>,
    /// The data folder.
    pub data_dir: PathBuf,
    /// Lines the server wrote to standard error after it started.
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `medicodax --data-dir DIR serve --listen 127.0.0.1:0` and waits for its address.
    pub fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["--data-dir", &data_dir.to_string_lossy(), "serve", "--listen", "127.0.0.1:0"])
            .env("MEDICODAX_LOG", "warn")
            .env_remove("MEDICODAX_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start medicodax serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        // Reads stderr to the end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let (mut url, mut password) = (None, None);
        let mut seen = Vec::new();
        while url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("medicodax serve did not start; it said:\n{}", seen.join("\n")));
            if let Some(p) = line.strip_prefix("created dashboard user `admin` with password: ") {
                password = Some(p.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("gateway listening on ") {
                url = rest.split_whitespace().next().map(str::to_owned);
            }
            seen.push(line);
        }
        Server { child, url: url.expect("listening line"), admin_password: password, data_dir: data_dir.to_owned(), stderr: rx }
    }

    /// The embedded coding agent's key file.
    pub fn agent_key(&self) -> PathBuf {
        self.data_dir.join("keys/agents/coding-agent.pem")
    }

    /// SIGTERM, so the gateway shuts down cleanly (final checkpoint), then waits.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "medicodax serve exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("medicodax serve did not stop on SIGTERM");
    }

    /// SIGKILL: no shutdown work at all.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
