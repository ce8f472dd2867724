//! Kernel enforcement: every hold portcullis decides (a ban, a block, an
//! address lock, a manual decision on an address or range) mirrored into
//! nftables sets, so the kernel drops a held address's packets before a
//! handshake, on every port of the machine (`[firewall] kind =
//! "nftables"`; `docs/firewall.md`).
//!
//! | module | holds |
//! | --- | --- |
//! | [`desired`] | elements, what the kernel should hold, differences |
//! | [`nft`] | the table, chain and sets; transactions through `nft -j` |
//! | [`tap`] | the engine wrapper that notes holds as they are decided |
//! | [`sync`] | the task: noted changes in, periodic full reconcile |
//! | [`fleet`] | holds told to and heard from other servers (Redis pub/sub) |
//!
//! portcullis owns one `inet` table (`firewall.table`) and touches nothing
//! else; the table stays when portcullis stops (holds keep being
//! enforced) and is brought back in line with the store when it starts.

pub mod desired;
pub mod fleet;
pub mod nft;
pub mod sync;
pub mod tap;

use std::sync::Arc;

use portcullis::Engine;
use portcullis::Guard;

use crate::config::{ServerConfig, StoreKind};

/// Full reconciles of the sets with the store.
pub const RECONCILES: &str = "portcullis_firewall_reconciles_total";
/// Elements a full reconcile found wrong in the kernel (missing, stray,
/// another end).
pub const DRIFT: &str = "portcullis_firewall_drift_total";
/// Elements put in or taken out.
pub const UPDATES: &str = "portcullis_firewall_updates_total";
/// nft calls that failed.
pub const ERRORS: &str = "portcullis_firewall_errors_total";
/// Elements in the sets, as far as portcullis knows.
pub const ELEMENTS: &str = "portcullis_firewall_elements";

/// Why the firewall could not start (each names the setting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirewallError {
    /// Creating portcullis's table, chain and sets failed (no `nft`, no
    /// `CAP_NET_ADMIN`, ...).
    #[error("firewall.kind = \"nftables\": {0}")]
    Setup(#[source] nft::NftError),
    /// The fleet's pub/sub link could not be made.
    #[error("firewall.kind = \"nftables\": {0}")]
    Link(#[source] fleet::LinkError),
    /// The first rebuild of the sets from the store failed.
    #[error("firewall.kind = \"nftables\": rebuilding the sets: {0}")]
    Rebuild(#[source] nft::NftError),
}

/// A running mirror: the wrapped engine to serve with, and its tap (a
/// reload asks it for a rebuild).
pub struct Running {
    /// The service's engine with its holds noted.
    pub engine: Arc<dyn Engine>,
    /// Where changes are noted.
    pub tap: Arc<tap::Tap>,
}

fn describe() {
    metrics::describe_counter!(
        RECONCILES,
        "Full reconciles of the nftables sets with the store."
    );
    metrics::describe_counter!(
        DRIFT,
        "Elements a full reconcile found wrong in the kernel's sets."
    );
    metrics::describe_counter!(
        UPDATES,
        "Elements put into or taken out of the nftables sets."
    );
    metrics::describe_counter!(ERRORS, "nft calls that failed.");
    metrics::describe_gauge!(ELEMENTS, "Elements in portcullis's nftables sets.");
    metrics::counter!(ERRORS).increment(0);
    metrics::counter!(DRIFT).increment(0);
}

/// Start the mirror for `engine` (the service's, whose manual decisions
/// are `local`'s): create the table, bring the sets in line with the store
/// (one transaction), start the task and, on a Redis fleet, the fleet
/// channel. `None` when `firewall.kind` is off.
pub async fn start(
    cfg: &ServerConfig,
    engine: Arc<dyn Engine>,
    local: Guard,
) -> Result<Option<Running>, FirewallError> {
    let fw = &cfg.firewall;
    if !fw.enabled() {
        return Ok(None);
    }
    describe();
    let nft = nft::Nft::new(fw);
    nft.setup().await.map_err(FirewallError::Setup)?;
    let tap = Arc::new(tap::Tap::new(fw.locks, cfg.rules.ipv6_prefix));
    tap.set_shadow(cfg.shadow);
    let link = match cfg.store {
        StoreKind::Redis => {
            let url = cfg.redis_cluster.first().unwrap_or(&cfg.redis_url);
            let link = fleet::FleetLink::new(url, portcullis::fleet::NAMESPACE)
                .map_err(FirewallError::Link)?;
            tokio::spawn(link.clone().listen(tap.clone()));
            Some(link)
        }
        _ => None,
    };
    let mut task = sync::Sync::new(
        nft,
        tap.clone(),
        engine.clone(),
        fw.reconcile_interval,
        link,
    );
    task.full().await.map_err(FirewallError::Rebuild)?;
    tokio::spawn(task.run());
    tracing::info!(table = %fw.table, "firewall: holds mirrored into nftables (inet {})", fw.table);
    Ok(Some(Running {
        engine: Arc::new(tap::Mirrored::new(
            engine,
            tap.clone(),
            local,
            cfg.store == StoreKind::Redis,
        )),
        tap,
    }))
}
