//! An open-loop HTTP/1.1 load generator: sends `GET URL` at a fixed total
//! rate spread over N keep-alive connections and reports latency
//! percentiles measured from each request's *intended* send time, so a
//! slow answer counts against every request it held up (no coordinated
//! omission, as wrk2 and `oha --qps` measure).
//!
//! Request k is due at `k / RATE` seconds after the start, on connection
//! `k mod N`. When a connection is still waiting for its previous answer
//! at that time, the request's latency runs from when it was due; when the
//! connection was free, from when it was actually sent (tokio's timer
//! wakes up to a millisecond late, and that lateness is the generator's,
//! not the server's). Requests due in the first WARMUP seconds are sent but
//! not recorded.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features http --bin openloop -- \
//!     http://127.0.0.1:PORT/ RATE SECONDS [CONNECTIONS=64] [THREADS=2] [WARMUP=2]
//! ```
//! Prints one line: `rate_target rate_done sent ok non2xx errors p50_us
//! p99_us p999_us max_us`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    uri: Uri,
    rate: f64,
    secs: f64,
    conns: usize,
    threads: usize,
    warmup: f64,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    non2xx: u64,
    errors: u64,
    /// Latencies in microseconds of the recorded requests.
    lat: Vec<u32>,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let Some(uri) = a.first().and_then(|u| u.parse::<Uri>().ok()) else {
        eprintln!("usage: openloop URL RATE SECONDS [CONNECTIONS] [THREADS] [WARMUP]");
        std::process::exit(2);
    };
    Args {
        uri,
        rate: num(1, 1000.0),
        secs: num(2, 10.0),
        conns: num(3, 64.0) as usize,
        threads: num(4, 2.0) as usize,
        warmup: num(5, 2.0),
    }
}

fn main() {
    let a = args();
    let threads = a.threads.clamp(1, a.conns.max(1));
    // One start instant for every thread's schedule.
    let start = std::time::Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (uri, conns, rate) = (a.uri.clone(), a.conns, a.rate);
            let (secs, warmup) = (a.secs, a.warmup);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let start = Instant::from_std(start);
                    let tasks: Vec<_> = (t..conns)
                        .step_by(threads)
                        .map(|c| {
                            let sched = Schedule {
                                start,
                                rate,
                                conns,
                                first: c,
                                secs,
                                warmup,
                            };
                            tokio::spawn(connection(uri.clone(), sched))
                        })
                        .collect();
                    let mut all = Tally::default();
                    for task in tasks {
                        let t = task.await.unwrap_or_default();
                        all.sent += t.sent;
                        all.ok += t.ok;
                        all.non2xx += t.non2xx;
                        all.errors += t.errors;
                        all.lat.extend(t.lat);
                    }
                    all
                })
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        let t = h.join().unwrap_or_default();
        all.sent += t.sent;
        all.ok += t.ok;
        all.non2xx += t.non2xx;
        all.errors += t.errors;
        all.lat.extend(t.lat);
    }
    all.lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.lat.is_empty() {
            return 0;
        }
        let i = ((all.lat.len() as f64) * p).ceil() as usize;
        all.lat[i.clamp(1, all.lat.len()) - 1]
    };
    let done = all.lat.len() as f64 / (a.secs - a.warmup).max(1e-9);
    println!(
        "{:.0} {:.0} {} {} {} {} {} {} {} {}",
        a.rate,
        done,
        all.sent,
        all.ok,
        all.non2xx,
        all.errors,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all.lat.last().copied().unwrap_or(0)
    );
}

/// When connection `first`'s requests are due.
struct Schedule {
    start: Instant,
    rate: f64,
    conns: usize,
    first: usize,
    secs: f64,
    warmup: f64,
}

async fn connection(uri: Uri, s: Schedule) -> Tally {
    let mut tally = Tally::default();
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let mut tx = None;
    for k in (s.first..).step_by(s.conns) {
        let due_s = k as f64 / s.rate;
        if due_s >= s.secs {
            break;
        }
        let due = s.start + Duration::from_secs_f64(due_s);
        let now = Instant::now();
        // Busy at its due time: latency counts from then; free: from the send.
        let from = if now > due {
            due
        } else {
            tokio::time::sleep_until(due).await;
            Instant::now()
        };
        if tx.is_none() {
            tx = open(&host, port).await;
        }
        let Some(sender) = tx.as_mut() else {
            tally.errors += 1;
            continue;
        };
        let req = Request::get(path.as_str())
            .header("host", authority.as_str())
            .body(Empty::<Bytes>::new())
            .expect("request");
        tally.sent += 1;
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                // nginx closes a keep-alive connection after 1000 requests.
                let close = resp
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let ok = match resp.into_body().collect().await {
                    Ok(_) => Some(status.is_success()),
                    Err(_) => None,
                };
                if close {
                    tx = None;
                }
                ok
            }
            Err(_) => None,
        };
        match ok {
            Some(true) => tally.ok += 1,
            Some(false) => tally.non2xx += 1,
            None => {
                tally.errors += 1;
                tx = None;
                continue;
            }
        }
        if due_s >= s.warmup {
            let us = Instant::now().duration_since(from).as_micros();
            tally.lat.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    tally
}

async fn open(host: &str, port: u16) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect((host, port)).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(tx)
}
