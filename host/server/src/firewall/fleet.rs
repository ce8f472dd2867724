//! Holds across a fleet: each server publishes the holds its own answers
//! imposed and the lifts it made on a Redis pub/sub channel
//! (`<namespace>:firewall`), and every server puts what it hears into its
//! own sets at once. A message is text, one change a line, after the
//! sender's id (so a server skips its own):
//!
//! ```text
//! <sender id hex>
//! hold <address>/<prefix> <end, Unix ms, or "-" until lifted>
//! lift <address>
//! ```
//!
//! Pub/sub delivers to whoever listens at that moment: a server that was
//! away from Redis catches up at its next full reconcile, which reads the
//! fleet's holds from Redis itself (`Engine::bans`). Manual decisions need
//! no message: each server's copy follows Redis already (the firewall task
//! reads it each second).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::desired::{Element, SetKind, Until};
use super::tap::Tap;

/// Why the fleet link could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The Redis address is not one.
    #[error("{url:?}: {source}")]
    Url {
        /// The address as configured.
        url: String,
        /// The redis crate's reason.
        #[source]
        source: redis::RedisError,
    },
    /// The system gave no randomness for the server's id.
    #[error("no randomness for the link's id: {0}")]
    Rng(#[source] getrandom::Error),
}

/// This server's line to the fleet's channel.
pub struct FleetLink {
    client: redis::Client,
    channel: String,
    id: String,
    con: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl FleetLink {
    /// A link through the Redis at `url` (one node of a cluster will do:
    /// pub/sub reaches every node), on `<namespace>:firewall`.
    pub fn new(url: &str, namespace: &str) -> Result<Arc<FleetLink>, LinkError> {
        let client = redis::Client::open(url).map_err(|source| LinkError::Url {
            url: url.to_string(),
            source,
        })?;
        let mut raw = [0u8; 8];
        getrandom::getrandom(&mut raw).map_err(LinkError::Rng)?;
        Ok(Arc::new(FleetLink {
            client,
            channel: format!("{namespace}:firewall"),
            id: format!("{:016x}", u64::from_le_bytes(raw)),
            con: Mutex::new(None),
        }))
    }

    /// Tell the fleet about `holds` imposed and `lifted` addresses here.
    /// A failure is logged: the others' reconcile finds them later.
    pub async fn publish(&self, holds: &[(Element, Until)], lifted: &[IpAddr]) {
        let msg = encode(&self.id, holds, lifted);
        let mut slot = self.con.lock().await;
        if slot.is_none() {
            match self.client.get_multiplexed_async_connection().await {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "firewall: cannot reach redis to tell the fleet");
                    return;
                }
            }
        }
        let Some(con) = slot.as_mut() else { return };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(&msg)
            .query_async(con)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "firewall: could not tell the fleet; its reconcile will");
            *slot = None;
        }
    }

    /// Listen on the channel for as long as the process runs, handing
    /// what other servers say to `tap`; reconnects after a second.
    pub async fn listen(self: Arc<Self>, tap: Arc<Tap>) {
        loop {
            if let Err(e) = self.listen_once(&tap).await {
                tracing::debug!(error = %e, "firewall: fleet channel lost; reconnecting");
            }
            tokio::time::sleep(StdDuration::from_secs(1)).await;
        }
    }

    async fn listen_once(&self, tap: &Tap) -> redis::RedisResult<()> {
        let mut sub = self.client.get_async_pubsub().await?;
        sub.subscribe(&self.channel).await?;
        tracing::info!(channel = %self.channel, "firewall: listening to the fleet");
        let mut stream = sub.on_message();
        while let Some(m) = stream.next().await {
            let Ok(text) = m.get_payload::<String>() else {
                continue;
            };
            apply(&text, &self.id, tap);
        }
        Ok(())
    }
}

/// A message for `holds` and `lifted`, from `id`.
fn encode(id: &str, holds: &[(Element, Until)], lifted: &[IpAddr]) -> String {
    let mut out = String::from(id);
    for (e, until) in holds {
        let end = until.map_or("-".to_string(), |u| u.to_string());
        out.push_str(&format!("\nhold {}/{} {end}", e.ip, e.len));
    }
    for ip in lifted {
        out.push_str(&format!("\nlift {ip}"));
    }
    out
}

/// Hand a message's changes to `tap`, unless `own` sent it.
fn apply(text: &str, own: &str, tap: &Tap) {
    let mut lines = text.lines();
    if lines.next().is_none_or(|id| id == own) {
        return;
    }
    for line in lines {
        match parse(line) {
            Some(Change::Hold(e, until)) => tap.heard_hold(e, until),
            Some(Change::Lift(ip)) => tap.heard_lift(ip),
            None => tracing::debug!(line, "firewall: fleet message not understood"),
        }
    }
}

/// One line of a message.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Hold(Element, Until),
    Lift(IpAddr),
}

fn parse(line: &str) -> Option<Change> {
    let mut w = line.split(' ');
    match (w.next()?, w.next()?, w.next()) {
        ("hold", net, Some(end)) => {
            let (ip, len) = net.split_once('/')?;
            let ip: IpAddr = ip.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let set = if ip.is_ipv4() {
                SetKind::Addr4
            } else {
                SetKind::Addr6
            };
            if len > if ip.is_ipv4() { 32 } else { 128 } {
                return None;
            }
            let until = match end {
                "-" => None,
                n => Some(n.parse().ok()?),
            };
            Some(Change::Hold(Element { set, ip, len }, until))
        }
        ("lift", ip, None) => Some(Change::Lift(ip.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let v4 = Element::hold("192.0.2.7".parse().unwrap(), 64);
        let v6 = Element::hold("2001:db8:1:2::9".parse().unwrap(), 64);
        let lift: IpAddr = "192.0.2.8".parse().unwrap();
        let msg = encode("ab", &[(v4, Some(123)), (v6, None)], &[lift]);
        let got: Vec<_> = msg.lines().skip(1).map(parse).collect();
        assert_eq!(
            got,
            [
                Some(Change::Hold(v4, Some(123))),
                Some(Change::Hold(v6, None)),
                Some(Change::Lift(lift))
            ]
        );
        assert_eq!(parse("hold 192.0.2.7/33 -"), None);
        assert_eq!(parse("nonsense"), None);
    }
}
