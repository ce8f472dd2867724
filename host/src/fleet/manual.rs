//! Manual bans of addresses and ranges across a fleet ([`crate::manual`]).
//!
//! One Redis hash, `<ns>:manual` (one key: Redis Cluster compatible), maps
//! each range (`203.0.113.0/24`, `2001:db8::1/128`) to
//! `<until_ms or ->|<created_ms>|<reason>`; its field `~v` counts changes.
//! Every server keeps the whole set in its local [`RangeSet`]
//! (`portcullis_core::RangeSet`, checked on every request with no Redis
//! call) and reloads it when `~v` moves ([`RedisLimiter::manual_version`],
//! polled each second by the fleet engine), so a ban made on one server
//! holds on all of them within about a second, and keeps holding on each
//! while Redis is away.

use portcullis_core::Cidr;

use super::{FleetError, RedisLimiter};
use crate::manual::{parse_range, ManualBan};

/// The change counter's field.
const VERSION: &str = "~v";

/// A decision as a hash value.
fn encode(b: &ManualBan) -> String {
    let until = b
        .until_ms
        .map_or_else(|| "-".to_string(), |u| u.to_string());
    format!("{until}|{}|{}", b.created_ms, b.reason)
}

/// A hash field and value as a decision; `None` if malformed.
fn decode(field: &str, value: &str) -> Option<ManualBan> {
    let range = parse_range(field).ok()?;
    let mut parts = value.splitn(3, '|');
    let until_ms = match parts.next()? {
        "-" => None,
        u => Some(u.parse().ok()?),
    };
    let created_ms = parts.next()?.parse().ok()?;
    let reason = parts.next()?.to_string();
    Some(ManualBan {
        range,
        until_ms,
        reason,
        created_ms,
    })
}

impl RedisLimiter {
    fn manual_key(&self) -> String {
        format!("{}:manual", self.ns)
    }

    /// Add or replace a manual decision for the whole fleet.
    pub async fn manual_put(&self, b: &ManualBan) -> Result<(), FleetError> {
        let mut con = self.con.clone();
        let key = self.manual_key();
        let mut p = redis::pipe();
        p.atomic()
            .hset(&key, b.range.to_string(), encode(b))
            .ignore()
            .hincr(&key, VERSION, 1)
            .ignore();
        self.timed(p.query_async::<()>(&mut con)).await
    }

    /// Lift exactly `range` for the whole fleet; whether it was there.
    pub async fn manual_delete(&self, range: &Cidr) -> Result<bool, FleetError> {
        let mut con = self.con.clone();
        let key = self.manual_key();
        let mut p = redis::pipe();
        p.atomic()
            .hdel(&key, range.to_string())
            .hincr(&key, VERSION, 1)
            .ignore();
        let (n,): (i64,) = self.timed(p.query_async(&mut con)).await?;
        Ok(n > 0)
    }

    /// The change counter (0 before the first change).
    pub async fn manual_version(&self) -> Result<u64, FleetError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.manual_key()).arg(VERSION);
        let v: Option<u64> = self.timed(cmd.query_async(&mut con)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Every manual decision of the fleet and the change counter they are
    /// at (malformed fields are skipped and logged).
    pub async fn manual_all(&self) -> Result<(u64, Vec<ManualBan>), FleetError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.manual_key());
        let all: Vec<(String, String)> = self.timed(cmd.query_async(&mut con)).await?;
        let mut version = 0;
        let mut out = Vec::with_capacity(all.len());
        for (field, value) in all {
            if field == VERSION {
                version = value.parse().unwrap_or(0);
            } else if let Some(b) = decode(&field, &value) {
                out.push(b);
            } else {
                tracing::warn!(field = %field, "malformed manual ban in redis skipped");
            }
        }
        Ok((version, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_any_reason() {
        for (range, until, reason) in [
            ("203.0.113.0/24", None, ""),
            ("2001:db8::1", Some(1_700_000_000_000u64), "a|b|c"),
        ] {
            let b = ManualBan {
                range: parse_range(range).unwrap(),
                until_ms: until,
                reason: reason.into(),
                created_ms: 42,
            };
            assert_eq!(decode(&b.range.to_string(), &encode(&b)), Some(b));
        }
        assert_eq!(decode("203.0.113.0/24", "soon|1|x"), None);
        assert_eq!(decode("10.0.0.0/4", "-|1|x"), None, "too wide");
    }
}
