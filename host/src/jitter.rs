//! The random part of a block's jitter (`blocks.block_jitter`, fail2ban's
//! `bantime.rndtime`): the core has no RNG, so the host draws the fraction
//! from the operating system's RNG and passes it in
//! ([`portcullis_core::Limiter::check_request_with`]).

use portcullis_core::{Config, Jitter};

/// A fresh random [`Jitter`] when `config` has a block jitter, else
/// [`Jitter::NONE`] (no RNG call). An RNG failure gives no jitter (logged):
/// a block still starts, only without its random extra.
pub fn draw(config: &Config) -> Jitter {
    if config.blocks.block_jitter.as_ticks() == 0 {
        return Jitter::NONE;
    }
    let mut b = [0u8; 2];
    match getrandom::getrandom(&mut b) {
        Ok(()) => Jitter(u16::from_le_bytes(b)),
        Err(e) => {
            tracing::warn!(error = %e, "no randomness for the block jitter");
            Jitter::NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Duration;

    #[test]
    fn no_jitter_configured_draws_none_and_a_jitter_draws_spread_values() {
        let mut c = Config::default();
        assert_eq!(draw(&c), Jitter::NONE);
        c.blocks.block_jitter = Duration::from_secs(60);
        let draws: std::collections::HashSet<u16> = (0..64).map(|_| draw(&c).0).collect();
        // 64 draws of 16 random bits: all equal with probability 2^-1008.
        assert!(draws.len() > 1, "{draws:?}");
    }

    #[test]
    fn blocks_of_the_host_limiter_get_a_random_extra_within_the_jitter() {
        use crate::{Limiter, LimiterOptions};
        use portcullis_core::{Decision, Reason};
        let mut c = Config::default();
        c.requests.max_requests = 1;
        c.blocks.block_after = 1;
        c.blocks.block_jitter = Duration::from_secs(600);
        let l = Limiter::new(c.clone(), LimiterOptions::default()).unwrap();
        let mut lengths = std::collections::HashSet::new();
        for i in 0..16u8 {
            let ip = std::net::IpAddr::from([192, 0, 2, i]);
            let now = crate::clock::read();
            assert!(l.check_request_at(ip, now).decision.is_allowed());
            let Decision::Deny {
                reason,
                retry_after,
            } = l.check_request_at(ip, now).decision
            else {
                panic!("not denied");
            };
            assert_eq!(reason, Reason::Blocked);
            assert!(retry_after >= c.blocks.block_for, "{retry_after:?}");
            assert!(
                retry_after < c.blocks.block_for + c.blocks.block_jitter,
                "{retry_after:?}"
            );
            lengths.insert(retry_after.as_ticks());
        }
        assert!(lengths.len() > 1, "random extras: {lengths:?}");
    }
}
