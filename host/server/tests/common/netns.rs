//! Network namespaces a test creates (never the host's own network or
//! ruleset): `ip netns add pc-<pid>-<n>`, loopback up, deleted when the
//! [`Netns`] is dropped (its nftables tables and veth ends go with it).
//! Servers run in one with `ip netns exec` ([`Netns::serve`]); probes run
//! on a thread that joined it ([`Netns::run`], `setns(2)`). Needs root and
//! `ip` and `nft`: outside CI a test without them skips with the reason,
//! with `CI=true` it fails ([`Netns::create_or_skip`]).

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Server, BIN, TOKEN};

const IP: &str = "/usr/sbin/ip";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of this test process.
pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Why this machine cannot run the namespace tests, if it cannot.
fn missing() -> Option<String> {
    if !Netns::is_root() {
        return Some(
            "not root (network namespaces and nft need CAP_SYS_ADMIN / CAP_NET_ADMIN)".into(),
        );
    }
    if !Path::new(IP).exists() {
        return Some(format!("{IP} missing (install iproute2)"));
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("nft missing (install nftables)".into());
    }
    None
}

impl Netns {
    /// Whether this process runs as root.
    pub fn is_root() -> bool {
        is_root()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Netns {
    /// A fresh namespace with loopback up, or `None` (skip) when this
    /// machine cannot make one; with `CI=true` that fails instead.
    pub fn create_or_skip(test: &str) -> Option<Netns> {
        let why = missing().or_else(|| Netns::create().err());
        match why {
            None => Some(Netns::create().ok()?),
            Some(why) => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "CI must run {test}: {why}"
                );
                eprintln!("SKIP {test}: {why}");
                None
            }
        }
    }

    fn create() -> Result<Netns, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("pc-{}-{n}", std::process::id());
        run(Command::new(IP).args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, String> {
        run(Command::new(IP).args(["-n", &self.name]).args(args))
    }

    /// `ip netns exec <ns> program args`.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = run(Command::new(IP)
            .args(["netns", "exec", &self.name, program])
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nft args` in the namespace, its output.
    pub fn nft(&self, args: &[&str]) -> String {
        self.exec("nft", args).unwrap()
    }

    /// The elements of set `set` of table `inet <table>`, as nft prints
    /// them (`127.0.0.2`, `10.1.0.0/16`), without timeouts.
    pub fn elements(&self, table: &str, set: &str) -> Vec<String> {
        let out = self.nft(&["-j", "list", "set", "inet", table, set]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut got = Vec::new();
        for o in v["nftables"].as_array().unwrap() {
            for e in o["set"]["elem"].as_array().into_iter().flatten() {
                let val = if e["elem"].is_object() {
                    &e["elem"]["val"]
                } else {
                    e
                };
                got.push(match &val["prefix"] {
                    serde_json::Value::Null => val.as_str().unwrap().to_string(),
                    p => format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]),
                });
            }
        }
        got.sort();
        got
    }

    /// Run `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap();
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `portcullis serve` in the namespace on `listen`, with `env` (the
    /// test token, store at `db`, info logs).
    pub fn serve(&self, listen: SocketAddr, db: &Path, env: &[(&str, String)]) -> Server {
        let mut cmd = Command::new(IP);
        cmd.args(["netns", "exec", &self.name, BIN, "serve"])
            .env_clear()
            .env("PORTCULLIS_SERVER__LISTEN", listen.to_string())
            .env("PORTCULLIS_STORE__PATH", db)
            .env("PORTCULLIS_SERVER__ADMIN_TOKEN", TOKEN)
            .env("PORTCULLIS_LOG", "info")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn(cmd, format!("http://{listen}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(IP)
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A veth pair between `a` and `b`, up, with `on_a` and `on_b` (`addr/len`).
pub fn link(a: &Netns, on_a: &[&str], b: &Netns, on_b: &[&str]) {
    let id = std::process::id() % 100_000;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (format!("pcv{id}a{n}"), format!("pcv{id}b{n}"));
    run(Command::new(IP).args([
        "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
    ]))
    .unwrap();
    for (ns, dev, addrs) in [(a, &va, on_a), (b, &vb, on_b)] {
        for addr in addrs {
            ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        }
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
}

/// Whether a TCP handshake from `from` to `to` completes within `wait`
/// (call inside the namespace). A dropped SYN times out: false.
pub fn connects(from: IpAddr, to: SocketAddr, wait: Duration) -> bool {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    match s.connect_timeout(&to.into(), wait) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
        Err(e) => panic!("connect {from} -> {to}: {e} (expected success or a timeout)"),
    }
}
