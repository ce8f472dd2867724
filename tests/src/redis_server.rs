//! A real `redis-server` for tests: started on a free loopback port with
//! persistence off (`--save '' --appendonly no`), ready once it answers
//! `PING`, killed on drop. It can be stopped and started again on the same
//! port, for fault tests.
//!
//! The binary is `$PORTCULLIS_REDIS_SERVER` or `redis-server` on `PATH`.
//! [`RedisServer::start_or_skip`] returns `None` (printing `SKIP`) when it
//! is missing, except under `CI=true`, where a missing server fails the
//! test.
//!
//! [`RedisCluster`] is a real three-master Redis Cluster: three
//! `redis-server --cluster-enabled yes` on free loopback ports joined by
//! `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`
//! (`$PORTCULLIS_REDIS_CLI` or `redis-cli` on `PATH`), ready once every
//! node's `CLUSTER INFO` says `cluster_state:ok`. Its nodes run with
//! `cluster-require-full-coverage no` (a dead master takes only its own
//! slots down) and a 2 s `cluster-node-timeout`; a node can be killed and
//! started again on the same port with its cluster config file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server` owned by a test.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra arguments (cluster mode).
    extra: Vec<String>,
}

/// The redis-server binary, if one can be found.
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTCULLIS_REDIS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

impl RedisServer {
    /// Start a server for `test`, or return `None` after printing `SKIP`
    /// when no redis-server is installed. Panics when it is missing under
    /// `CI=true` or when it does not start.
    pub fn start_or_skip(test: &str) -> Option<RedisServer> {
        let Some(binary) = redis_server_binary() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: redis-server not found and CI=true");
            }
            eprintln!("SKIP {test}: redis-server not found (set PORTCULLIS_REDIS_SERVER)");
            return None;
        };
        match RedisServer::start(binary) {
            Ok(s) => Some(s),
            Err(e) => panic!("{test}: cannot start redis-server: {e}"),
        }
    }

    /// Start `binary` on a free loopback port and wait for `PING`.
    pub fn start(binary: PathBuf) -> std::io::Result<RedisServer> {
        Self::start_with(binary, &[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments.
    pub fn start_with(binary: PathBuf, extra: &[&str]) -> std::io::Result<RedisServer> {
        // Several attempts: the free port may be taken between probe and bind.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut s = RedisServer {
                binary: binary.clone(),
                port,
                dir: tempfile::tempdir()?,
                child: None,
                extra: extra.iter().map(|a| a.to_string()).collect(),
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    return Err(std::io::Error::other(format!(
                        "redis-server exited early: {status}"
                    )));
                }
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(std::io::Error::other("redis-server did not answer PING"))
    }

    /// Whether the server answers `PING` with `PONG`.
    pub fn ping(&self) -> bool {
        self.inline("PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Send one inline command (`CLUSTER INFO`) and return the raw reply
    /// read within half a second (`None`: no connection or no answer).
    pub fn inline(&self, command: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(buf.get(..n)?),
            }
            if complete(&out) {
                break;
            }
        }
        (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Freeze the process (SIGSTOP): connections stay open but nothing is
    /// answered, as with a hung or overloaded Redis.
    pub fn freeze(&self) -> std::io::Result<()> {
        self.signal("-STOP")
    }

    /// Resume a frozen process (SIGCONT).
    pub fn thaw(&self) -> std::io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> std::io::Result<()> {
        let Some(c) = self.child.as_ref() else {
            return Err(std::io::Error::other("redis-server is not running"));
        };
        let status = Command::new("kill")
            .arg(sig)
            .arg(c.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {sig} failed: {status}"
            )))
        }
    }

    /// Kill the server (state is lost: persistence is off).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        // The port was ours a moment ago; retry briefly if the OS is slow
        // to hand it back.
        let mut last = None;
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("restart failed")))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen process still dies on SIGKILL; continue it anyway so
            // nothing is left stopped.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `reply` holds one whole RESP reply (simple, error, integer or
/// bulk string; enough for the inline commands used here).
fn complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let Some((head, rest)) = text.split_once("\r\n") else {
        return false;
    };
    match head.strip_prefix('$') {
        Some(len) => match len.parse::<i64>() {
            Ok(n) if n >= 0 => rest.len() >= usize::try_from(n).unwrap_or(0) + 2,
            _ => true,
        },
        None => true,
    }
}

/// The `redis-cli` binary, if one can be found.
pub fn redis_cli_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTCULLIS_REDIS_CLI") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-cli"))
        .find(|p| p.is_file())
}

/// Slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The cluster slot of `key` (CRC16/XMODEM of its hash tag, or of the
/// whole key without one, modulo 16384), as Redis computes it.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let inner = b.get(open + 1..)?;
        let close = inner.iter().position(|&c| c == b'}')?;
        (close > 0).then(|| inner.get(..close)).flatten()
    });
    crc16(tagged.unwrap_or(b)) % CLUSTER_SLOTS
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A real three-master Redis Cluster owned by a test (see the module
/// documentation); every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The slot ranges each node serves (inclusive), from `CLUSTER NODES`.
    slots: Vec<Vec<(u16, u16)>>,
}

/// Arguments of a cluster node (its config file lives in its own dir).
const CLUSTER_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
    "--cluster-require-full-coverage",
    "no",
];

impl RedisCluster {
    /// Start a cluster for `test`, or `None` after printing `SKIP` when
    /// redis-server or redis-cli is missing. Panics when one is missing
    /// under `CI=true` or when the cluster does not form.
    pub fn start_or_skip(test: &str) -> Option<RedisCluster> {
        let found = (redis_server_binary(), redis_cli_binary());
        let (Some(server), Some(cli)) = found else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: redis-server or redis-cli not found and CI=true");
            }
            eprintln!(
                "SKIP {test}: redis-server or redis-cli not found (set PORTCULLIS_REDIS_SERVER, PORTCULLIS_REDIS_CLI)"
            );
            return None;
        };
        match RedisCluster::start(server, cli) {
            Ok(c) => Some(c),
            Err(e) => panic!("{test}: cannot start a redis cluster: {e}"),
        }
    }

    /// Start three cluster-enabled servers, create the cluster and wait
    /// until it is ok on every node.
    pub fn start(server: PathBuf, cli: PathBuf) -> std::io::Result<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(server.clone(), &CLUSTER_ARGS)?);
        }
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut c = RedisCluster {
            nodes,
            slots: Vec::new(),
        };
        c.wait_ok(Duration::from_secs(30))?;
        c.slots = c
            .nodes
            .iter()
            .map(|n| own_slots(&n.inline("CLUSTER NODES").unwrap_or_default()))
            .collect();
        let covered: u32 = c
            .slots
            .iter()
            .flatten()
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        if covered != u32::from(CLUSTER_SLOTS) {
            return Err(std::io::Error::other(format!(
                "cluster covers {covered} slots: {:?}",
                c.slots
            )));
        }
        Ok(c)
    }

    /// Wait until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.inline("CLUSTER INFO")
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.inline("CLUSTER INFO").unwrap_or_default())
                    .collect();
                return Err(std::io::Error::other(format!(
                    "cluster not ok within {within:?}: {states:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:port/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes (0, 1, 2).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The node serving `key`'s slot.
    pub fn node_of(&self, key: &str) -> usize {
        let slot = key_slot(key);
        self.slots
            .iter()
            .position(|r| r.iter().any(|&(a, b)| a <= slot && slot <= b))
            .expect("every slot is served")
    }

    /// The slot ranges node `i` serves.
    pub fn slots_of(&self, i: usize) -> &[(u16, u16)] {
        &self.slots[i]
    }

    /// Kill node `i` (its data is lost; its cluster config file stays).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Start node `i` again on its port with its cluster config file and
    /// wait until the whole cluster is ok again.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].restart()?;
        self.wait_ok(Duration::from_secs(60))
    }

    /// Send an inline command to every running node (e.g. `SCRIPT FLUSH`,
    /// `FLUSHALL`); whether every node answered without an error.
    pub fn each(&self, command: &str) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| n.inline(command).is_some_and(|r| !r.starts_with('-')))
    }
}

/// The slot ranges of the `myself` line of a `CLUSTER NODES` reply.
fn own_slots(nodes: &str) -> Vec<(u16, u16)> {
    let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(8)
        .filter_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(key_slot("123456789"), 0x31C3 % CLUSTER_SLOTS);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % CLUSTER_SLOTS);
        assert_eq!(
            own_slots("id 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-5460 7000\nx"),
            vec![(0, 5460), (7000, 7000)]
        );
    }
}
