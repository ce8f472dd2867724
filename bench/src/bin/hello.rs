//! A bare hyper HTTP/1.1 hello-world, the ceiling `bench/request_path.sh`
//! holds portcullis's own `GET /` against: one current-thread tokio
//! runtime per core, each accepting on its own `SO_REUSEPORT` socket
//! bound to the same address (the shape `portcullis serve` has), and a
//! fixed 13-byte `text/plain` answer.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features http --bin hello -- 127.0.0.1:PORT [WORKERS]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: hello ADDR [WORKERS]");
        std::process::exit(2);
    };
    let workers = args
        .get(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(addr)))
        .collect();
    eprintln!("hello listening on http://{addr} ({workers} workers)");
    for t in threads {
        let _ = t.join();
    }
}

fn worker(addr: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let s = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("socket");
        s.set_reuseaddr(true).expect("reuseaddr");
        s.set_reuseport(true).expect("reuseport");
        s.bind(addr).expect("bind");
        let l: TcpListener = s.listen(1024).expect("listen");
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"Hello, World!")))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
