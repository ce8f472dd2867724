//! The tower layer in front of a plain hyper service, without axum: the
//! accept loop inserts the connection's address as a
//! [`PeerAddr`] request extension, which the layer keys the client by
//! (axum users get this from `ConnectInfo` instead; tonic users insert
//! it the same way). Limited clients get `429` + `Retry-After` before the
//! service is called.
//!
//! ```sh
//! cargo run -p portcullis --no-default-features --example hyper_service
//! for i in 1 2 3 4; do curl -si localhost:3001/ | head -1; done
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use portcullis::Config;
use portcullis::PeerAddr;
use portcullis::RateLimitLayer;
use portcullis::{Guard, Limiter, LimiterOptions};
use tower::{service_fn, Layer, ServiceExt};

/// The application: any `Service<Request<B>>` whose response body is
/// `From<String>` (the layer answers denials with a problem details body).
async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.requests.max_requests = 3; // per address per minute
    let limiter = Limiter::new(config, LimiterOptions::default())?;
    let layer = RateLimitLayer::new("requests", Guard::new(Arc::new(limiter), None));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        // Outermost first: tag the request with its peer, then limit it.
        let service =
            layer
                .layer(service_fn(hello))
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = conn.await {
                eprintln!("connection from {peer}: {e}");
            }
        });
    }
}
