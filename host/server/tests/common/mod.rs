//! The real `portcullis` binary on a free loopback port, for end-to-end
//! tests, and the request helpers the test files share. Beside it:
//! [`raw`] (a byte-exact HTTP client from any 127/8 address), [`upstream`]
//! (a recording application), [`peers`] (nginx and Caddy with the shipped
//! forward-auth snippets) and [`stack`] (all of them in one of the
//! server's modes, for `tests/matrix.rs`).
#![allow(dead_code)]

pub mod netns;
pub mod peers;
pub mod raw;
pub mod stack;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
pub const TOKEN: &str = "test-admin-token";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Child,
    pub base: String,
    log: mpsc::Receiver<String>,
    /// The lines logged before "listening on".
    pub early: Vec<String>,
}

impl Server {
    pub fn start(db: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(db, env, None)
    }

    pub fn start_with(db: &Path, env: &[(&str, &str)], config: Option<&Path>) -> Server {
        Self::start_custom(db, env, config, |_| {})
    }

    /// Like `start_with`, with a last say on the command (e.g. limits).
    pub fn start_custom(
        db: &Path,
        env: &[(&str, &str)],
        config: Option<&Path>,
        customize: impl FnOnce(&mut Command),
    ) -> Server {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("PORTCULLIS_STORE__PATH", db)
            .env("PORTCULLIS_SERVER__ADMIN_TOKEN", TOKEN)
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        customize(&mut cmd);
        Server::spawn(cmd, format!("http://127.0.0.1:{port}"))
    }

    /// Run `cmd` (a `portcullis serve`, its stderr piped) and wait for its
    /// "listening on" line; `base` is the URL it serves.
    pub fn spawn(mut cmd: Command, base: String) -> Server {
        let mut child = cmd.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("listening on") => break,
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "server did not start: {:?}\n{}",
                    child.try_wait(),
                    seen.join("\n")
                ),
            }
        }
        Server {
            child,
            base,
            log: rx,
            early: seen,
        }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    pub fn logs(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGTERM and wait: the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        if !status.success() {
            // The reason is in the server's own last words.
            std::thread::sleep(Duration::from_millis(100));
            for l in self.log.try_iter() {
                eprintln!("server: {l}");
            }
        }
        std::mem::forget(self);
        status
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the admin API with the test token, as JSON.
pub async fn admin_json(s: &Server, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(s.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET /` as client `who` (the server must trust loopback as a proxy,
/// so X-Forwarded-For names the client).
pub async fn get_as(s: &Server, who: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url("/"))
        .header("x-forwarded-for", who)
        .send()
        .await
        .unwrap()
}

/// The status of [`get_as`].
pub async fn hit(s: &Server, who: &str) -> u16 {
    get_as(s, who).await.status().as_u16()
}

/// `/metrics` as Prometheus text, asked as client 198.18.0.1 where the
/// server trusts loopback as a proxy, so the scrape has its own address.
pub async fn metrics_text(s: &Server) -> String {
    reqwest::Client::new()
        .get(s.url("/metrics"))
        .header("x-forwarded-for", "198.18.0.1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the unlabelled sample `name` in `/metrics`.
pub async fn metric(s: &Server, name: &str) -> u64 {
    let text = metrics_text(s).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// A reqwest client whose connections come from `local` (any 127/8
/// address plays another client).
pub fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The first value of header `name` of `r`, as text.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// `GET /` with `headers`: the status.
pub async fn get_with(s: &Server, headers: &[(&str, &str)]) -> u16 {
    let mut rb = reqwest::Client::new().get(s.url("/"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap().status().as_u16()
}

/// `tests/ui`: the browser scripts and their `node_modules`.
pub fn ui_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui")
}

/// Whether a browser test can run: node, Debian's chromium and
/// `tests/ui/node_modules` (`npm ci`). Missing ones fail the test under
/// `CI=true` and make it print SKIP (`false`) otherwise.
pub fn browser_or_skip(test: &str) -> bool {
    let why = if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "node not found".to_string()
    } else if !Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium not found (apt-get install chromium)".to_string()
    } else if !ui_dir().join("node_modules/playwright-core").exists() {
        "tests/ui/node_modules/playwright-core missing (npm ci in tests/ui)".to_string()
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} cannot run under CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// `node tests/ui/<script> <args…>`, killed if it runs past `within`;
/// asserts it finished and succeeded.
pub async fn run_ui_script(script: &str, args: Vec<std::ffi::OsString>, within: Duration) {
    let path = ui_dir().join(script);
    let status = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(&path)
            .args(&args)
            .spawn()
            .expect("node runs");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let status = status.unwrap_or_else(|| panic!("{script} did not finish within {within:?}"));
    assert!(status.success(), "{script} failed: {status}");
}
