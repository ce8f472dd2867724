//! The application behind portcullis (proxy mode) or behind nginx/Caddy
//! (forward-auth mode): a small HTTP/1.1 server on a free loopback port,
//! one thread per connection, that records every request it sees (method,
//! target as sent, headers, body, peer) so a test asserts what the
//! application saw, not only the status the client got.
//!
//! It answers `200 upstream ok` except on its login route, which it
//! routes as common frameworks do: method case-insensitively `POST`, the
//! path decoded, `//` and dot segments resolved, `;params` dropped, case
//! folded, a trailing `/` or a `.json`/`.xml` format suffix ignored. There
//! it checks the password (`right` for any username starting with
//! `alice`) from a JSON or form body: `200` or `401 wrong password`. With
//! a [`Reporter`] it also reports each check to portcullis's login-result
//! API, as a forward-auth application does, and refuses (like a wrong
//! password) a login portcullis says is locked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::raw::Raw;

/// The password the upstream accepts.
pub const RIGHT: &str = "right";

/// A request the upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    /// The request target as sent (lossy UTF-8 of the raw bytes).
    pub target: String,
    /// Header names lowercase, in order, repeated ones repeated.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// On the login route: the username and whether the password was
    /// right (a password check happened).
    pub login: Option<(String, bool)>,
}

impl Seen {
    /// Every value of header `name` (lowercase).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Compact, for failure messages: the request line.
    pub fn short(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// Where a forward-auth application reports its login results.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub portcullis: SocketAddr,
    pub token: String,
}

/// The running upstream; stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    reporter: Arc<Mutex<Option<Reporter>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reporter = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (seen.clone(), reporter.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        Upstream {
            addr,
            seen,
            reporter,
            stop,
        }
    }

    /// Report login checks to portcullis from now on.
    pub fn report_to(&self, r: Reporter) {
        *self.reporter.lock().unwrap() = Some(r);
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests carrying `x-matrix-cell: <cell>`.
    pub fn seen_cell(&self, cell: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.all("x-matrix-cell").contains(&cell))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Password checks made so far.
    pub fn logins(&self) -> usize {
        self.seen().iter().filter(|s| s.login.is_some()).count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// One connection: one request, one answer, closed.
fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>, reporter: &Mutex<Option<Reporter>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(peer) = conn.peer_addr() else { return };
    let mut rd = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let Some(mut req) = read_request(&mut rd, peer) else {
        return;
    };
    let (status, body) = match login_of(&req) {
        None => (200, "upstream ok".to_string()),
        Some((user, password)) => {
            let ok = user.starts_with("alice") && password == RIGHT;
            req.login = Some((user.clone(), ok));
            let rep = reporter.lock().unwrap().clone();
            let allowed = match rep {
                Some(r) => report(&r, &req, &user, ok),
                None => ok,
            };
            if allowed {
                (200, format!("{{\"ok\":true,\"user\":\"{user}\"}}"))
            } else {
                (401, "wrong password".to_string())
            }
        }
    };
    seen.lock().unwrap().push(req);
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut w = conn;
    let _ = w.write_all(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let _ = w.flush();
}

fn read_request(rd: &mut BufReader<TcpStream>, peer: SocketAddr) -> Option<Seen> {
    let mut line = Vec::new();
    rd.read_until(b'\n', &mut line).ok()?;
    let line = trim_crlf(&line);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = String::from_utf8_lossy(parts.next()?).into_owned();
    let target = String::from_utf8_lossy(parts.next()?).into_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = Vec::new();
        rd.read_until(b'\n', &mut h).ok()?;
        let h = trim_crlf(&h);
        if h.is_empty() {
            break;
        }
        let h = String::from_utf8_lossy(h);
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(rd)?
    } else {
        let n: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut b = vec![0; n];
        rd.read_exact(&mut b).ok()?;
        b
    };
    Some(Seen {
        peer,
        method,
        target,
        headers,
        body,
        login: None,
    })
}

fn read_chunked(rd: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut l = String::new();
        rd.read_line(&mut l).ok()?;
        let size = usize::from_str_radix(l.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            let mut end = String::new();
            rd.read_line(&mut end).ok()?;
            return Some(out);
        }
        let mut b = vec![0; size + 2];
        rd.read_exact(&mut b).ok()?;
        out.extend_from_slice(&b[..size]);
    }
}

fn trim_crlf(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The path as a framework routes it (see the module doc).
pub fn routed_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        let seg = percent_decode(seg).to_lowercase();
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_string()),
        }
    }
    if let Some(last) = out.last_mut() {
        for suffix in [".json", ".xml"] {
            if let Some(s) = last.strip_suffix(suffix) {
                *last = s.to_string();
            }
        }
    }
    format!("/{}", out.join("/"))
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(username, password)` when `req` is a login on the login route.
fn login_of(req: &Seen) -> Option<(String, String)> {
    if !req.method.eq_ignore_ascii_case("POST") || routed_path(&req.target) != "/login" {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&req.body) {
            return v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        }
        form_urlencoded::parse(&req.body)
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    Some((field("username")?, field("password").unwrap_or_default()))
}

/// The client address as the application reads it: the last
/// `X-Forwarded-For` entry, else `X-Real-IP`, else the peer.
pub fn client_of(req: &Seen) -> String {
    if let Some(last) = req
        .all("x-forwarded-for")
        .last()
        .and_then(|v| v.rsplit(',').next())
    {
        return last.trim().to_string();
    }
    if let Some(v) = req.all("x-real-ip").first() {
        return v.trim().to_string();
    }
    req.peer.ip().to_string()
}

/// Report a check; whether the login may succeed (recorded and right).
fn report(r: &Reporter, req: &Seen, user: &str, ok: bool) -> bool {
    let body = serde_json::json!({"ip": client_of(req), "username": user, "ok": ok});
    let ans = Raw::new("POST", b"/v1/login-result")
        .bearer(&r.token)
        .json(&body)
        .send(IpAddr::from([127, 0, 0, 1]), r.portcullis);
    let Ok(a) = ans else { return false };
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    ok && a.status == 200 && v["recorded"] == true
}
