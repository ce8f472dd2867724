//! A whole guarded stack in one of the server's modes, for the test
//! matrix (`tests/matrix.rs`): a recording [`Upstream`], `portcullis`
//! (the binary) configured for the mode, and in forward-auth modes the
//! real front proxy (nginx or Caddy with the shipped snippet). Everything
//! listens on free 127.0.0.1 ports and stops on drop.
//!
//! * demo: portcullis alone (its demo `/` and `POST /login`), no upstream;
//! * proxy: `[upstream] url` = the recording upstream, own routes under
//!   `/.portcullis`;
//! * proxy+shadow: the same with `[requests] shadow = true`;
//! * nginx / caddy: forward-auth; the client talks to the front proxy,
//!   which asks portcullis's `/check` and proxies to the upstream.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::peers::{self, Front};
use super::raw::{Answer, Raw};
use super::upstream::{Reporter, Upstream};
use super::{Server, TOKEN};

/// The report token of forward-auth stacks.
pub const REPORT_TOKEN: &str = "report-token-0123456789abcdef";
/// `[server] metrics_token` where the server accepts the key.
pub const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Demo,
    Proxy,
    ProxyShadow,
    Nginx,
    Caddy,
}

impl Mode {
    /// The four modes every guard runs in.
    pub const ALL: [Mode; 4] = [Mode::Demo, Mode::Proxy, Mode::Nginx, Mode::Caddy];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Demo => "demo",
            Mode::Proxy => "proxy",
            Mode::ProxyShadow => "proxy+shadow",
            Mode::Nginx => "nginx",
            Mode::Caddy => "caddy",
        }
    }

    pub fn is_proxy(self) -> bool {
        matches!(self, Mode::Proxy | Mode::ProxyShadow)
    }

    pub fn forward_auth(self) -> bool {
        matches!(self, Mode::Nginx | Mode::Caddy)
    }

    /// Whether an application sits behind (the upstream sees requests).
    pub fn has_app(self) -> bool {
        self != Mode::Demo
    }
}

/// What a guard adds to the base configuration: lines inside `[server]`,
/// and whole tables after it.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub server: String,
    pub tables: String,
    /// `[server] metrics_token` (when the server knows the key).
    pub metrics_token: bool,
}

/// A running stack.
pub struct Stack {
    pub mode: Mode,
    pub up: Upstream,
    pub pc: Server,
    pub front: Option<Front>,
    pub config: PathBuf,
    spec: Spec,
    /// Config keys this server does not know yet, left out.
    pub missing_keys: Vec<&'static str>,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// The stack, or `None` when the mode's front proxy is not installed
    /// (skipped; a failure under `CI=true`).
    pub fn start(mode: Mode, spec: Spec) -> Option<Stack> {
        let bin = match mode {
            Mode::Nginx => Some(peers::peer_binary("nginx", "matrix")?),
            Mode::Caddy => Some(peers::peer_binary("caddy", "matrix")?),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let up = Upstream::start();
        let config = dir.path().join("portcullis.toml");
        let (text, missing_keys) = render(mode, &spec, up.addr);
        std::fs::write(&config, text).unwrap();
        let pc = Server::start_with(&dir.path().join("p.db"), &[], Some(&config));
        let pc_addr = pc.base.trim_start_matches("http://").to_string();
        let front = match (mode, bin) {
            (Mode::Nginx, Some(b)) => Some(peers::nginx(&b, dir.path(), &pc_addr, up.addr)),
            (Mode::Caddy, Some(b)) => Some(peers::caddy(&b, dir.path(), &pc_addr, up.addr)),
            _ => None,
        };
        if mode.forward_auth() {
            up.report_to(Reporter {
                portcullis: pc_addr.parse().unwrap(),
                token: REPORT_TOKEN.into(),
            });
        }
        Some(Stack {
            mode,
            up,
            pc,
            front,
            config,
            spec,
            missing_keys,
            _dir: dir,
        })
    }

    /// portcullis's own address.
    pub fn pc_addr(&self) -> SocketAddr {
        self.pc.base.trim_start_matches("http://").parse().unwrap()
    }

    /// Where the application's requests go: the front proxy, or portcullis.
    pub fn app_addr(&self) -> SocketAddr {
        self.front
            .as_ref()
            .map(|f| f.addr)
            .unwrap_or_else(|| self.pc_addr())
    }

    /// portcullis's own routes' prefix (`/.portcullis` in proxy mode).
    pub fn prefix(&self) -> &'static str {
        if self.mode.is_proxy() {
            "/.portcullis"
        } else {
            ""
        }
    }

    /// An admin call with the token, from 127.0.0.1, straight to portcullis.
    pub fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
        let target = format!("{}{path}", self.prefix());
        let mut r = Raw::new(method, target.as_bytes()).bearer(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send(IpAddr::from([127, 0, 0, 1]), self.pc_addr())
            .unwrap_or_else(|e| panic!("{} admin {method} {path}: {e}", self.mode.name()))
    }

    /// `POST <prefix>/admin/bans {"ip": range}`: must be 201.
    pub fn ban(&self, range: &str) {
        let a = self.admin(
            "POST",
            "/admin/bans",
            Some(serde_json::json!({"ip": range, "reason": "matrix"})),
        );
        assert_eq!(
            a.status,
            201,
            "{} ban {range}: {}",
            self.mode.name(),
            a.text()
        );
    }

    /// Rewrite the config file with `tables` in place of the spec's and
    /// `POST <prefix>/admin/reload`; the reload's answer.
    pub fn reload_with(&mut self, tables: &str) -> Answer {
        self.spec.tables = tables.to_string();
        let (text, _) = render(self.mode, &self.spec, self.up.addr);
        std::fs::write(&self.config, text).unwrap();
        self.admin("POST", "/admin/reload", None)
    }

    /// `<prefix>/metrics` as an anonymous scraper would ask for it.
    pub fn metrics_anonymous(&self) -> Answer {
        let target = format!("{}/metrics", self.prefix());
        Raw::get(&target)
            .send(IpAddr::from([127, 0, 0, 1]), self.pc_addr())
            .unwrap_or_else(|e| panic!("{} metrics: {e}", self.mode.name()))
    }
}

/// The config text for `mode` and the keys left out because this server
/// does not know them.
fn render(mode: Mode, spec: &Spec, up: SocketAddr) -> (String, Vec<&'static str>) {
    let mut missing = Vec::new();
    let mut server = String::from("trusted_proxies = [\"127.0.0.1/32\"]\n");
    if mode == Mode::Nginx {
        server.push_str("client_ip_header = \"X-Real-IP\"\n");
    }
    if spec.metrics_token {
        if key_known("server", "metrics_token", &format!("\"{METRICS_TOKEN}\"")) {
            server.push_str(&format!("metrics_token = \"{METRICS_TOKEN}\"\n"));
        } else {
            missing.push("server.metrics_token");
        }
    }
    server.push_str(&spec.server);
    let mut text = format!("[server]\n{server}\n[store]\nkind = \"memory\"\n\n");
    if mode.forward_auth() {
        text.push_str(&format!(
            "[forward_auth]\nreport_token = \"{REPORT_TOKEN}\"\n"
        ));
        let name = mode.name();
        if key_known("forward_auth", "proxy", &format!("\"{name}\"")) {
            text.push_str(&format!("proxy = \"{name}\"\n"));
        } else {
            missing.push("forward_auth.proxy");
        }
        text.push('\n');
    }
    if mode.is_proxy() {
        text.push_str(&format!(
            "[upstream]\nurl = \"http://{up}\"\nconnect_timeout = \"2s\"\nresponse_timeout = \"10s\"\n\n"
        ));
    }
    let mut tables = spec.tables.clone();
    if mode == Mode::ProxyShadow {
        tables = with_shadow(&tables);
    }
    text.push_str(&tables);
    (text, missing)
}

/// `tables` with `shadow = true` in its `[requests]` (added if absent).
fn with_shadow(tables: &str) -> String {
    if tables.contains("[requests]\n") {
        tables.replacen("[requests]\n", "[requests]\nshadow = true\n", 1)
    } else {
        format!("[requests]\nshadow = true\n\n{tables}")
    }
}

/// Whether the server starts with `[table] key = value` (asked once per
/// key per test process: an unknown key is refused at start-up).
pub fn key_known(table: &str, key: &str, value: &str) -> bool {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, bool)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = format!("{table}.{key}");
    if let Some((_, known)) = cache.lock().unwrap().iter().find(|(k, _)| *k == id) {
        return *known;
    }
    let known = starts_with(&format!(
        "[store]\nkind = \"memory\"\n\n[{table}]\n{key} = {value}\n"
    ));
    cache.lock().unwrap().push((id, known));
    known
}

/// Whether `portcullis serve` comes up with `toml` (killed once it has).
fn starts_with(toml: &str) -> bool {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("probe.toml");
    std::fs::write(path, toml).unwrap();
    let mut child = Command::new(super::BIN)
        .arg("serve")
        .arg("--config")
        .arg(path)
        .env_clear()
        .env(
            "PORTCULLIS_SERVER__LISTEN",
            format!("127.0.0.1:{}", super::free_port()),
        )
        .env("PORTCULLIS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let up = BufReader::new(err)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("listening on"));
    let _ = child.kill();
    let _ = child.wait();
    up
}
