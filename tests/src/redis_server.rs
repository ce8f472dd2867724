//! A real `redis-server` for tests: started on a free loopback port with
//! persistence off (`--save '' --appendonly no`), ready once it answers
//! `PING`, killed on drop. It can be stopped and started again on the same
//! port, for fault tests.
//!
//! The binary is `$PORTCULLIS_REDIS_SERVER` or `redis-server` on `PATH`.
//! [`RedisServer::start_or_skip`] returns `None` (printing `SKIP`) when it
//! is missing, except under `CI=true`, where a missing server fails the
//! test.

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
        // Several attempts: the free port may be taken between probe and bind.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut s = RedisServer {
                binary: binary.clone(),
                port,
                dir: tempfile::tempdir()?,
                child: None,
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
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
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

fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}
