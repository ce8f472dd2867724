//! Rule 6: penalty back-off, `min(base × multiplier^k, max)`.
//!
//! The multiplier may be fractional (a [`Growth`](crate::Growth) in
//! thousandths); each step rounds down to the tick as `Growth` defines.
//!
//! `k` is the number of failures of the same (username, ip) in the failure
//! window before this one, so consecutive failures cost 1, 2, 4, 8, 16, 30,
//! 30 … seconds at the defaults. The caller delays its *response*; the
//! server keeps serving.

use crate::Duration;

use crate::config::PenaltyRules;
use crate::time::grown;

/// The delay for a failure with `k` earlier failures in the window.
pub fn delay(rules: &PenaltyRules, k: u32) -> Duration {
    Duration::from_ticks(grown(
        rules.base.as_ticks(),
        rules.multiplier,
        k,
        rules.max.as_ticks(),
    ))
}

impl PenaltyRules {
    /// Rule 6's delay for a failure with `earlier` failures of the same
    /// (username, ip) before it in the window: `min(base × multiplier^earlier, max)`.
    pub fn delay(&self, earlier: u32) -> Duration {
        delay(self, earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn default_sequence_is_1_2_4_8_16_30_30() {
        let rules = Config::default().penalty;
        let secs: [u64; 7] = core::array::from_fn(|k| delay(&rules, k as u32).as_secs());
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delay(&rules, u32::MAX).as_secs(), 30);
    }

    #[test]
    fn a_fractional_multiplier_grows_by_its_factor() {
        let mut rules = Config::default().penalty;
        rules.multiplier = crate::Growth::from_thousandths(1500);
        let ms: [u64; 10] = core::array::from_fn(|k| delay(&rules, k as u32).as_millis());
        assert_eq!(
            ms,
            [1000, 1500, 2250, 3375, 5062, 7593, 11390, 17085, 25628, 30000]
        );
    }
}
