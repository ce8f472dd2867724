//! The connection under [`RedisLimiter`]: one Redis node (a
//! [`ConnectionManager`]) or a Redis Cluster (the redis crate's
//! [`ClusterConnection`], which follows `MOVED`/`ASK` and refreshes its
//! slot map), behind one [`Con`] that implements
//! [`redis::aio::ConnectionLike`], so every call (script calls, plain
//! commands, the manual-bans hash's `MULTI`/`EXEC`) runs on either.
//!
//! ## Per-node health (cluster)
//!
//! Each call's first key names its slot ([`redis::cluster_routing::get_slot`]),
//! so each outcome is put down to the master serving that slot (the map
//! comes from `CLUSTER SLOTS`, refreshed by [`RedisLimiter::probe_nodes`]).
//! A failed call marks its node down, a successful one marks it up; each
//! transition is logged once and counted (`portcullis_redis_node_outages_total`,
//! `portcullis_redis_node_up`, label `node`). With one master dead, the
//! keys of its slots fail (and the fleet engine decides them locally, or
//! refuses them with `fail_closed`) while the other masters keep deciding.
//! A node marked down is probed each second with a key of its own slots;
//! the first answer marks it up again.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{get_slot, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{redact, FleetError, RedisLimiter};

/// Slots of a Redis Cluster (0..16384).
pub const SLOTS: u16 = 16384;

/// Counter: a cluster node went from up to down, label `node` (`host:port`).
pub const NODE_OUTAGES: &str = "portcullis_redis_node_outages_total";
/// Gauge: 1 while a cluster node answers, 0 while it is down, label `node`.
pub const NODE_UP: &str = "portcullis_redis_node_up";

/// Where the fleet's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// One Redis server (`redis://host:port/db`).
    Single(String),
    /// A Redis Cluster: the URLs of some of its nodes (the rest are found
    /// with `CLUSTER SLOTS`).
    Cluster(Vec<String>),
}

impl Endpoint {
    /// The URL or URLs, passwords hidden.
    pub fn redacted(&self) -> String {
        match self {
            Endpoint::Single(u) => redact(u),
            Endpoint::Cluster(us) => us.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","),
        }
    }
}

/// One node or a cluster, as one [`ConnectionLike`]. Cheap to clone (both
/// multiplex).
#[derive(Clone)]
pub(crate) enum Con {
    /// Boxed: the manager is large, the cluster handle small.
    Single(Box<ConnectionManager>),
    Cluster(ClusterConnection),
}

/// Masters and their slot ranges, as `CLUSTER SLOTS` gives them.
type SlotMap = Vec<(String, Vec<(u16, u16)>)>;

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(cmd, offset, count),
            Con::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

/// Open `endpoint`, the first connection bounded by a multiple of
/// `timeout`.
pub(crate) async fn open(endpoint: &Endpoint, timeout: StdDuration) -> Result<Con, FleetError> {
    let bound = timeout.saturating_mul(4).max(StdDuration::from_millis(200));
    let url = endpoint.redacted();
    let connect = |source| FleetError::Connect {
        url: url.clone(),
        source,
    };
    match endpoint {
        Endpoint::Single(u) => {
            let client = redis::Client::open(u.as_str()).map_err(|source| FleetError::BadUrl {
                url: redact(u),
                source,
            })?;
            let cm_config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(1)
                .set_max_delay(100);
            let connecting = ConnectionManager::new_with_config(client, cm_config);
            // The manager retries; bound the whole first connection.
            match tokio::time::timeout(bound, connecting).await {
                Ok(Ok(con)) => Ok(Con::Single(Box::new(con))),
                Ok(Err(source)) => Err(connect(source)),
                Err(_) => Err(FleetError::Timeout(bound)),
            }
        }
        Endpoint::Cluster(us) => {
            if us.is_empty() {
                return Err(FleetError::Unexpected(
                    "empty redis_cluster node list".into(),
                ));
            }
            for u in us {
                redis::Client::open(u.as_str()).map_err(|source| FleetError::BadUrl {
                    url: redact(u),
                    source,
                })?;
            }
            let client = ClusterClient::builder(us.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // MOVED/ASK redirects use retries too; the per-call
                // timeout bounds them all.
                .retries(3)
                .min_retry_wait(5)
                .max_retry_wait(100)
                .build()
                .map_err(|source| FleetError::BadUrl {
                    url: url.clone(),
                    source,
                })?;
            // The cluster connection is made once; bound it (a cluster
            // slow to find is an outage, retried by the fleet engine).
            match tokio::time::timeout(bound, client.get_async_connection()).await {
                Ok(Ok(con)) => Ok(Con::Cluster(con)),
                Ok(Err(source)) => Err(connect(source)),
                Err(_) => Err(FleetError::Timeout(bound)),
            }
        }
    }
}

/// A master of the cluster and how it fares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    /// `host:port` as the cluster announces it.
    pub addr: String,
    /// The slot ranges it serves (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Its last call (or probe) succeeded.
    pub up: bool,
    /// How many times it went down.
    pub outages: u64,
}

impl NodeHealth {
    /// Its slot ranges as `0-5460,10923-16383`.
    pub fn slot_list(&self) -> String {
        self.slots
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// The masters of a cluster, their slots and health.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    nodes: RwLock<Vec<NodeHealth>>,
}

impl Nodes {
    pub(crate) fn snapshot(&self) -> Vec<NodeHealth> {
        self.nodes.read().clone()
    }

    pub(crate) fn any_down(&self) -> bool {
        self.nodes.read().iter().any(|n| !n.up)
    }

    /// The outcome of a call on `slot`.
    pub(crate) fn note(&self, slot: u16, ok: bool, error: Option<&FleetError>) {
        {
            let nodes = self.nodes.read();
            match nodes.iter().find(|n| n.serves(slot)) {
                Some(n) if n.up == ok => return,
                None => return,
                Some(_) => {}
            }
        }
        let mut nodes = self.nodes.write();
        let Some(n) = nodes.iter_mut().find(|n| n.serves(slot)) else {
            return;
        };
        if n.up == ok {
            return;
        }
        n.up = ok;
        let labels = [("node", n.addr.clone())];
        metrics::gauge!(NODE_UP, &labels).set(f64::from(u8::from(ok)));
        if ok {
            tracing::info!(node = %n.addr, slots = %n.slot_list(), "redis cluster node is back: its slots decide in the fleet store again");
        } else {
            n.outages = n.outages.saturating_add(1);
            metrics::counter!(NODE_OUTAGES, &labels).increment(1);
            match error {
                Some(e) => {
                    tracing::warn!(node = %n.addr, slots = %n.slot_list(), error = %e, "redis cluster node unavailable: keys of its slots are decided without the fleet store until it is back")
                }
                None => {
                    tracing::warn!(node = %n.addr, slots = %n.slot_list(), "redis cluster node unavailable: keys of its slots are decided without the fleet store until it is back")
                }
            }
        }
    }

    /// Take a fresh slot map; nodes keep their health by address. Slots
    /// the map leaves out (a failed master may be dropped from it) stay
    /// with the node that had them.
    fn replace(&self, fresh: SlotMap) {
        let mut nodes = self.nodes.write();
        let covered: u32 = fresh
            .iter()
            .flat_map(|(_, r)| r.iter())
            .map(|&(a, b)| u32::from(b.saturating_sub(a)) + 1)
            .sum();
        let mut out: Vec<NodeHealth> = fresh
            .into_iter()
            .map(|(addr, slots)| {
                let old = nodes.iter().find(|n| n.addr == addr);
                NodeHealth {
                    up: old.is_none_or(|n| n.up),
                    outages: old.map_or(0, |n| n.outages),
                    addr,
                    slots,
                }
            })
            .collect();
        if covered < u32::from(SLOTS) {
            for n in nodes.iter() {
                if !out.iter().any(|o| o.addr == n.addr) {
                    out.push(n.clone());
                }
            }
        }
        for n in &out {
            metrics::gauge!(NODE_UP, "node" => n.addr.clone()).set(f64::from(u8::from(n.up)));
        }
        out.sort_by_key(|n| n.slots.first().map_or(u16::MAX, |s| s.0));
        *nodes = out;
    }
}

/// `CLUSTER SLOTS` as `(host:port, ranges)` per master.
fn parse_slots(v: Value) -> Result<SlotMap, FleetError> {
    let bad = || FleetError::Unexpected("CLUSTER SLOTS reply".into());
    let Value::Array(entries) = v else {
        return Err(bad());
    };
    let mut out: SlotMap = Vec::new();
    for e in entries {
        let Value::Array(parts) = e else {
            return Err(bad());
        };
        let mut it = parts.into_iter();
        let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(master))) =
            (it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let mut m = master.into_iter();
        let host = match m.next() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(&h).into_owned(),
            Some(Value::SimpleString(h)) => h,
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = m.next() else {
            return Err(bad());
        };
        let (Ok(a), Ok(b)) = (u16::try_from(a), u16::try_from(b)) else {
            return Err(bad());
        };
        let addr = format!("{host}:{port}");
        match out.iter_mut().find(|(x, _)| *x == addr) {
            Some((_, r)) => r.push((a, b)),
            None => out.push((addr, vec![(a, b)])),
        }
    }
    for (_, r) in &mut out {
        r.sort_unstable();
    }
    Ok(out)
}

/// A key whose slot is `slot`'s node's (for probes): `<ns>:{probe:<n>}`.
fn key_in(ns: &str, n: &NodeHealth) -> Option<String> {
    (0u32..1_000_000)
        .map(|i| format!("{ns}:{{probe:{i}}}"))
        .find(|k| n.serves(get_slot(k.as_bytes())))
}

impl RedisLimiter {
    /// Whether this limiter talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.con, Con::Cluster(_))
    }

    /// The cluster's masters and their health (empty for one node).
    pub fn nodes(&self) -> Vec<NodeHealth> {
        self.nodes
            .as_ref()
            .map(|n| n.snapshot())
            .unwrap_or_default()
    }

    /// Whether this is a cluster whose slot map is known (so that each
    /// call's outcome is put down to a master).
    pub fn tracks_nodes(&self) -> bool {
        self.nodes
            .as_ref()
            .is_some_and(|n| !n.nodes.read().is_empty())
    }

    /// Whether the master serving `ip`'s keys is marked down (false for
    /// one node).
    pub fn on_down_node(&self, ip: std::net::IpAddr) -> bool {
        let Some(nodes) = &self.nodes else {
            return false;
        };
        let slot = get_slot(self.request_key(ip).as_bytes());
        nodes.nodes.read().iter().any(|n| !n.up && n.serves(slot))
    }

    /// Whether some master of the cluster is down (false for one node).
    pub fn any_node_down(&self) -> bool {
        self.nodes.as_ref().is_some_and(|n| n.any_down())
    }

    /// Put the outcome of a call whose first key is `key` down to its node.
    /// A node that answered, even with an error (a script error on one
    /// key's corrupt state), is up.
    pub(crate) fn note<T>(&self, key: &str, r: &Result<T, FleetError>) {
        if let Some(n) = &self.nodes {
            let failed = r.as_ref().err().filter(|e| node_failure(e));
            n.note(get_slot(key.as_bytes()), failed.is_none(), failed);
        }
    }

    /// Read the slot map again (`CLUSTER SLOTS`); a no-op for one node.
    pub async fn refresh_nodes(&self) -> Result<(), FleetError> {
        let Some(nodes) = &self.nodes else {
            return Ok(());
        };
        let mut con = self.con.clone();
        let v: Value = self
            .timed(redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con))
            .await?;
        nodes.replace(parse_slots(v)?);
        Ok(())
    }

    /// Try each master marked down with a key of its own slots (`EXISTS`);
    /// an answer marks it up. A no-op for one node.
    pub async fn probe_nodes(&self) {
        let Some(nodes) = &self.nodes else { return };
        for n in nodes.snapshot().into_iter().filter(|n| !n.up) {
            let Some(key) = key_in(&self.ns, &n) else {
                continue;
            };
            let mut con = self.con.clone();
            let r: Result<i64, FleetError> = self
                .timed(redis::cmd("EXISTS").arg(&key).query_async(&mut con))
                .await;
            self.note(&key, &r);
        }
    }

    /// `SCAN MATCH pattern` over the node serving `key`'s slot (one node:
    /// the server).
    pub(crate) async fn scan_slot_of(
        &self,
        key: &str,
        pattern: &str,
    ) -> Result<Vec<String>, FleetError> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            get_slot(key.as_bytes()),
            SlotAddr::Master,
        )));
        let r = self.scan_on(Some(route), pattern).await;
        self.note(key, &r);
        r
    }

    /// `SCAN MATCH pattern` over every master (one node: the server). A
    /// master that is down (or fails its scan, and is marked down) is
    /// skipped: the keys of the others are still listed.
    pub(crate) async fn scan_all(&self, pattern: &str) -> Result<Vec<String>, FleetError> {
        let Some(nodes) = &self.nodes else {
            return self.scan_on(None, pattern).await;
        };
        if nodes.snapshot().is_empty() {
            self.refresh_nodes().await?;
        }
        let mut keys = Vec::new();
        for n in nodes.snapshot() {
            let Some((host, port)) = n
                .addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            else {
                continue;
            };
            if !n.up {
                continue;
            }
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            match self.scan_on(Some(route), pattern).await {
                Ok(k) => keys.extend(k),
                Err(e) => match key_in(&self.ns, &n) {
                    Some(probe) => self.note(&probe, &Err::<(), _>(e)),
                    None => return Err(e),
                },
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn scan_on(
        &self,
        route: Option<RoutingInfo>,
        pattern: &str,
    ) -> Result<Vec<String>, FleetError> {
        let mut con = self.con.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = match (&mut con, &route) {
                (Con::Cluster(c), Some(route)) => {
                    let v = self.timed(c.route_command(&cmd, route.clone())).await?;
                    redis::from_redis_value(&v)?
                }
                _ => self.timed(cmd.query_async(&mut con)).await?,
            };
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Whether `e` says the node is away (no connection, no answer in time,
/// cluster down or loading) rather than that it answered with an error.
fn node_failure(e: &FleetError) -> bool {
    use redis::ErrorKind as K;
    match e {
        FleetError::Redis(e) => !matches!(
            e.kind(),
            K::ResponseError
                | K::ExtensionError
                | K::TypeError
                | K::NoScriptError
                | K::ExecAbortError
                | K::CrossSlot
                | K::InvalidClientConfig
        ),
        FleetError::Unexpected(_) | FleetError::Config(_) => false,
        _ => true,
    }
}

/// A fresh health table for a cluster connection (`None` for one node).
pub(crate) fn nodes_for(con: &Con) -> Option<Arc<Nodes>> {
    matches!(con, Con::Cluster(_)).then(|| Arc::new(Nodes::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str, slots: &[(u16, u16)]) -> (String, Vec<(u16, u16)>) {
        (addr.to_string(), slots.to_vec())
    }

    #[test]
    fn health_is_per_node_and_logged_per_transition() {
        let n = Nodes::default();
        n.replace(vec![
            node("a:1", &[(0, 5460)]),
            node("b:2", &[(5461, 10922)]),
            node("c:3", &[(10923, 16383)]),
        ]);
        assert!(!n.any_down());
        let e = FleetError::Unexpected("x".into());
        n.note(6000, false, Some(&e));
        n.note(6001, false, Some(&e));
        n.note(100, true, None);
        let s = n.snapshot();
        assert_eq!(
            s.iter().map(|n| (n.up, n.outages)).collect::<Vec<_>>(),
            [(true, 0), (false, 1), (true, 0)]
        );
        assert!(n.any_down());
        // The map loses the dead master: its slots stay with it, health kept.
        n.replace(vec![
            node("a:1", &[(0, 5460)]),
            node("c:3", &[(10923, 16383)]),
        ]);
        assert_eq!(
            n.snapshot().get(1).map(|n| (n.addr.as_str(), n.up)),
            Some(("b:2", false))
        );
        n.note(7000, true, None);
        assert!(!n.any_down());
        assert_eq!(n.snapshot().get(1).map(|n| n.outages), Some(1));
    }

    #[test]
    fn probe_keys_land_in_their_node() {
        let (addr, slots) = node("b:2", &[(5461, 10922)]);
        let n = NodeHealth {
            addr,
            slots,
            up: false,
            outages: 0,
        };
        let k = key_in("ns", &n).unwrap();
        assert!(n.serves(get_slot(k.as_bytes())), "{k}");
    }

    #[test]
    fn cluster_slots_reply_parses() {
        let entry = |a, b, port| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![
                    Value::BulkString(b"127.0.0.1".to_vec()),
                    Value::Int(port),
                    Value::BulkString(b"id".to_vec()),
                ]),
            ])
        };
        let v = Value::Array(vec![
            entry(0, 10, 7000),
            entry(11, 20, 7001),
            entry(21, 30, 7000),
        ]);
        assert_eq!(
            parse_slots(v).unwrap(),
            vec![
                node("127.0.0.1:7000", &[(0, 10), (21, 30)]),
                node("127.0.0.1:7001", &[(11, 20)])
            ]
        );
    }
}
