//! The fleet [`Engine`](crate::engine::Engine): decisions in Redis, with the
//! local limiter as the fallback when Redis is away.

use std::sync::Arc;

use crate::engine::Engine;
use crate::guard::Guard;
use crate::server::config::ServerConfig;

/// Connect to Redis per `cfg`, falling back to `local`.
pub async fn connect(_cfg: &ServerConfig, _local: Guard) -> Result<Arc<dyn Engine>, String> {
    Err("the redis store is not wired into the server yet".into())
}
