//! Slow and idle clients against the real binary (issue 14, findings 4
//! and 5): stalled request heads from 1 100 addresses, per-address caps,
//! header and body read timeouts, SIGTERM with a stalled client.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{admin_json, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const STALL: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ";

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.db");
    (d, p)
}

fn addr(s: &Server) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `s` from source address `from` (all of 127/8 is lo).
async fn connect_from(s: &Server, from: Ipv4Addr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    tokio::time::timeout(Duration::from_secs(2), sock.connect(addr(s)))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// Wait (up to about two seconds) until the server holds `n` connections
/// besides the one asking (`portcullis_connections_open` in `/metrics`).
async fn accepted(s: &Server, n: u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..100 {
        let open = match client.get(s.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
        if open >= (n + 1) as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read until the server closes (`Some(bytes read)`), or `None` if it is
/// still open after `within`.
async fn closed_within(c: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn raise_own_fd_limit() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_from_many_addresses_do_not_starve_the_server() {
    raise_own_fd_limit();
    let (_d, db) = tmp();
    // The reported set-up: 1 024 descriptors for the server.
    let s = Server::start_custom(&db, &[], None, |cmd| unsafe {
        cmd.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 1024, 1024));
    });
    let mut stalled = Vec::new();
    for i in 0..1100u32 {
        let from = Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8);
        if let Ok(mut c) = connect_from(&s, from).await {
            let _ = c.write_all(STALL).await;
            stalled.push(c);
        }
    }
    assert!(
        stalled.len() >= 1000,
        "opened {} connections",
        stalled.len()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let r = client
        .get(s.url("/"))
        .send()
        .await
        .expect("GET / answered within a second despite 1 100 stalled connections");
    assert_eq!(r.status(), 200);
    let m = client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_connections_timed_out_total{phase=\"evicted\"} "))
        .expect("eviction counter in /metrics")
        .parse()
        .unwrap();
    assert!(
        evicted > 0,
        "stalled connections were evicted at the cap:\n{m}"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_and_read_timeouts_close_connections() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_SERVER__MAX_CONNECTIONS_PER_IP", "4"),
            ("PORTCULLIS_SERVER__HEADER_READ_TIMEOUT", "4s"),
            ("PORTCULLIS_SERVER__BODY_READ_TIMEOUT", "1s"),
        ],
    );
    let one = Ipv4Addr::new(127, 0, 9, 9);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect_from(&s, one).await.unwrap();
        c.write_all(STALL).await.unwrap();
        held.push(c);
    }
    // Each worker accepts on its own socket, so a fifth connection could
    // be accepted before one of the four: wait until the four are in.
    accepted(&s, 4).await;
    // Connection 5 from the same address is closed at once, unanswered:
    // well before the 4 s header timeout that would close it otherwise
    // (2 s of slack for a loaded machine).
    let mut fifth = connect_from(&s, one).await.unwrap();
    let got = closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .expect("connection over the per-address cap is closed at once");
    assert!(got.is_empty(), "closed without an answer");
    // Another address is not affected.
    let mut other = connect_from(&s, Ipv4Addr::new(127, 0, 9, 10))
        .await
        .unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut other, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The four stalled heads are cut after header_read_timeout, not before.
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(8)).await.is_some(),
            "stalled head closed by the server"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3900),
        "closed too early: {took:?}"
    );

    // A login body trickled byte by byte is cut after body_read_timeout.
    let mut slow = connect_from(&s, Ipv4Addr::new(127, 0, 9, 11))
        .await
        .unwrap();
    slow.write_all(
        b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let (mut rd, mut wr) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if wr.write_all(b"{").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let done = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "trickled body cut and connection closed");
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(
        got.starts_with(b"HTTP/1.1 4"),
        "a client error for the unfinished body: {}",
        String::from_utf8_lossy(&got)
    );
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_client_exits_within_the_grace_and_saves() {
    let (_d, db) = tmp();
    let env = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "1"),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_SERVER__SHUTDOWN_GRACE", "1s"),
    ];
    let mut s = Server::start(&db, &env);
    let c = reqwest::Client::new();
    assert_eq!(c.get(s.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/")).send().await.unwrap().status(), 429);
    // A client holding a half-sent request.
    let mut stalled = connect_from(&s, Ipv4Addr::new(127, 0, 7, 7)).await.unwrap();
    stalled.write_all(STALL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = s.child.id().to_string();
    let t0 = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "still running {:?} after SIGTERM (grace 1 s)",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit 0: {status:?}");
    let logs = s.logs().join("\n");
    assert!(logs.contains("final snapshot taken"), "{logs}");
    assert!(closed_within(&mut stalled, Duration::from_secs(1))
        .await
        .is_some());
    drop(s);
    // The block made before is there after a restart from the same file.
    let s = Server::start(&db, &env[..2]);
    let bans = admin_json(&s, "/admin/bans").await;
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|b| b["ip"] == "127.0.0.1"),
        "{bans}"
    );
}
