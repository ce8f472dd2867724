//! The real front proxies of forward-auth mode: Debian's nginx
//! (`auth_request`) and Caddy (`forward_auth`), each started on a free
//! loopback port with the snippet shipped in `docs/forward-auth/` (its
//! addresses replaced), in front of an upstream, asking a running
//! portcullis. A missing binary skips (`None`), except under `CI=true`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A binary from PATH or the sbin directories; `None` skips the test
/// (a failure under `CI=true`).
pub fn peer_binary(name: &str, test: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {name} not found and CI=true");
        }
        eprintln!("{test}: SKIPPED, {name} not found (apt-get install {name})");
    }
    found
}

/// A peer process, killed on drop.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until the peer listens on `port`; its `log` in the panic if not.
/// `Err` when it exited because the port was taken meanwhile (a free port
/// is only free until someone binds it): the caller tries another port.
pub fn wait_listening(port: u16, child: &mut Child, log: &Path) -> Result<(), ()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            let text = log();
            if text.contains("already in use") {
                return Err(());
            }
            panic!("peer exited: {st}\n{text}");
        }
        assert!(Instant::now() < deadline, "peer did not listen\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Start a peer on a free port with `start`, again on another port if
/// the one picked was taken before the peer bound it.
fn on_free_port(mut start: impl FnMut(u16) -> Option<Child>) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(child) = start(port) {
            return (child, port);
        }
    }
    panic!("peer: five free ports were taken before it could bind them");
}

/// The shipped snippet `docs/forward-auth/<file>` with its addresses replaced.
pub fn snippet(file: &str, subst: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/forward-auth")
        .join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in subst {
        assert!(text.contains(from), "{file} lacks {from}");
        text = text.replace(from, to);
    }
    text
}

/// A running front proxy.
pub struct Front {
    pub peer: Peer,
    /// Where clients send the application's requests.
    pub addr: SocketAddr,
}

impl Front {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// nginx with `docs/forward-auth/nginx.conf`, asking portcullis at
/// `portcullis` (host:port) and proxying to `upstream`; its files in `dir`.
pub fn nginx(bin: &Path, dir: &Path, portcullis: &str, upstream: SocketAddr) -> Front {
    let (child, port) = on_free_port(|port| nginx_on(bin, dir, portcullis, upstream, port));
    Front {
        peer: Peer(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn nginx_on(
    bin: &Path,
    dir: &Path,
    portcullis: &str,
    upstream: SocketAddr,
    port: u16,
) -> Option<Child> {
    let server = snippet(
        "nginx.conf",
        &[
            ("listen 80;", format!("listen 127.0.0.1:{port};")),
            ("127.0.0.1:8080", portcullis.to_string()),
            ("127.0.0.1:3000", upstream.to_string()),
        ],
    );
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {server}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    match wait_listening(port, &mut child, &dir.join("error.log")) {
        Ok(()) => Some(child),
        Err(()) => {
            let _ = child.wait();
            None
        }
    }
}

/// Caddy with `docs/forward-auth/Caddyfile`, asking portcullis at
/// `portcullis` (host:port) and proxying to `upstream`; its files in `dir`.
pub fn caddy(bin: &Path, dir: &Path, portcullis: &str, upstream: SocketAddr) -> Front {
    let (child, port) = on_free_port(|port| caddy_on(bin, dir, portcullis, upstream, port));
    Front {
        peer: Peer(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn caddy_on(
    bin: &Path,
    dir: &Path,
    portcullis: &str,
    upstream: SocketAddr,
    port: u16,
) -> Option<Child> {
    let site = snippet(
        "Caddyfile",
        &[
            // `bind`: loopback only (Caddy listens on every address else).
            (
                ":80 {",
                format!("http://127.0.0.1:{port} {{\n\tbind 127.0.0.1"),
            ),
            ("127.0.0.1:8080", portcullis.to_string()),
            ("127.0.0.1:3000", upstream.to_string()),
        ],
    );
    let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
    let conf_path = dir.join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(bin)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    match wait_listening(port, &mut child, &dir.join("caddy.log")) {
        Ok(()) => Some(child),
        Err(()) => {
            let _ = child.wait();
            None
        }
    }
}
