//! JSON views of the backends' state that the admin API and the dashboard
//! both show: status, ban rows, Redis Cluster nodes.

use portcullis::ceil_secs;
use portcullis::{Engine, Status};
use serde_json::json;

/// A backend's status as the JSON `/admin/status` starts from; the fleet
/// fields only for a fleet backend.
pub(crate) fn status_json(s: &Status) -> serde_json::Value {
    let mut v = json!({
        "backend": s.backend,
        "store": s.store,
        "entries": s.entries,
        "capacity": s.capacity,
        "evictions": s.evictions,
        "table_full": s.table_full,
        "purged": s.purged,
        "store_errors": s.store_errors,
    });
    if let (Some(f), Some(o)) = (&s.fleet, v.as_object_mut()) {
        o.insert("fallback_active".into(), json!(f.fallback_active));
        o.insert("fail_closed".into(), json!(f.fail_closed));
        o.insert("namespace".into(), json!(f.namespace));
        o.insert("nodes".into(), nodes_json(&f.nodes));
        // Where the reconciliation queue is kept on disk (null: nowhere).
        let journal = f
            .journal
            .as_ref()
            .map(|p| json!({"path": p, "entries": f.queued}));
        o.insert("journal".into(), json!(journal));
    }
    v
}

/// A Redis Cluster's masters as JSON: `[{node, slots: "0-5460", up,
/// outages}]` (empty for one Redis).
pub(crate) fn nodes_json(nodes: &[portcullis::fleet::NodeHealth]) -> serde_json::Value {
    nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.addr,
                "slots": n.slot_list(),
                "up": n.up,
                "outages": n.outages,
            })
        })
        .collect()
}

/// The ban list as JSON values; manual decisions last (kind `manual`,
/// with the operator's reason as `note`).
pub(crate) async fn bans_json(engine: &dyn Engine) -> serde_json::Value {
    let bans = engine.bans().await;
    let mut rows: Vec<serde_json::Value> = bans.iter().map(ban_row).collect();
    let manual = engine.manual_bans().await;
    let now_ms = portcullis::clock::unix_ms();
    rows.extend(
        crate::manual_api::rows(&manual, now_ms)
            .into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("ms_left");
                }
                r
            }),
    );
    json!(rows)
}

/// One blocked, banned or locked key as a JSON row (`/admin/bans`; the
/// dashboard adds `ms_left`, `shadow` and `policy` to it), with `jail`: the
/// log jail that locked the address (`crate::jails::origins`), if one did.
pub(crate) fn ban_row(b: &portcullis::Hold) -> serde_json::Value {
    let ip = b.addr.ip();
    let mut row = json!({
        "ip": ip.to_string(),
        "kind": b.kind.as_str(),
        "reason": b.reason.as_str(),
        "seconds_left": b.left.map(ceil_secs),
    });
    if let (Some(jail), Some(o)) = (crate::jails::origins::of(ip), row.as_object_mut()) {
        o.insert("jail".into(), json!(jail));
    }
    row
}

/// Mark every row `"shadow": shadow`: while the service policy shadows,
/// its blocks and bans are recorded but not enforced.
pub(crate) fn mark_shadow(mut rows: serde_json::Value, shadow: bool) -> serde_json::Value {
    if let Some(rows) = rows.as_array_mut() {
        for r in rows.iter_mut().filter_map(|r| r.as_object_mut()) {
            r.insert("shadow".into(), json!(shadow));
        }
    }
    rows
}
