//! The time a log line carries at its start, as Unix milliseconds: a
//! syslog stamp (`Dec  7 01:55:19`, no year, no zone, in the year that
//! puts it nearest to now) or an RFC 3339 / ISO 8601 one
//! (`2026-12-07T01:55:19.123+01:00`, `2026-12-07 01:55:19`).
//! A line without one is stamped with the time it is read.
//!
//! A stamp without a zone is the writer's local time, whose offset the
//! jail does not know (syslog's classic format on a host east of UTC
//! would otherwise look hours ahead, and every line would be skipped as
//! "from the future"). Such a stamp is read as the *earliest* instant it
//! can mean: its wall-clock time at UTC+14, [`MAX_OFFSET_MS`] before the
//! same digits read as UTC. The stamp only decides whether a line is from
//! the future, so a zoneless line is refused only when no zone on Earth
//! makes it present.

use std::sync::OnceLock;

use regex::Regex;

/// The largest offset from UTC a zone has (UTC+14, Kiribati).
pub const MAX_OFFSET_MS: i64 = 14 * 3_600_000;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn syslog_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})")
            .expect("a fixed pattern")
    })
}

fn iso_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?",
        )
        .expect("a fixed pattern")
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of Unix time `ms`.
fn year_of(ms: u64) -> i64 {
    let days = i64::try_from(ms / 86_400_000).unwrap_or(0);
    // From days to a civil year (the inverse of `days_from_civil`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

fn ms_of(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some((((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + s) * 1000)
}

fn num(c: &regex::Captures<'_>, i: usize) -> i64 {
    c.get(i).and_then(|m| m.as_str().parse().ok()).unwrap_or(0)
}

fn syslog(line: &str, now_ms: u64) -> Option<u64> {
    let c = syslog_re().captures(line)?;
    let month = MONTHS
        .iter()
        .position(|m| Some(*m) == c.get(1).map(|x| x.as_str()))?;
    let month = i64::try_from(month).ok()? + 1;
    let at = |y| ms_of(y, month, num(&c, 2), num(&c, 3), num(&c, 4), num(&c, 5));
    let now = i64::try_from(now_ms).ok()?;
    let y = year_of(now_ms);
    // The year nearest to now: a December line read in January is last
    // year's, a January line read in December next year's.
    let best = [y - 1, y, y + 1]
        .into_iter()
        .filter_map(at)
        .min_by_key(|t| (t - now).abs())?;
    u64::try_from(best.saturating_sub(MAX_OFFSET_MS)).ok()
}

fn iso(line: &str) -> Option<u64> {
    let c = iso_re().captures(line)?;
    let base = ms_of(
        num(&c, 1),
        num(&c, 2),
        num(&c, 3),
        num(&c, 4),
        num(&c, 5),
        num(&c, 6),
    )?;
    let frac = c.get(7).map_or(0, |f| {
        let digits: String = f.as_str().chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().unwrap_or(0)
    });
    let offset = match c.get(8).map(|z| z.as_str()) {
        None => MAX_OFFSET_MS,
        Some("Z") | Some("z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z.chars().filter(char::is_ascii_digit).collect();
            let (h, m) = digits.split_at(2);
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?) * 60_000
        }
    };
    u64::try_from(base + frac - offset).ok()
}

/// The stamp at the start of `line` (Unix ms), if it has one; `now_ms`
/// places a syslog stamp's year.
pub fn parse(line: &str, now_ms: u64) -> Option<u64> {
    iso(line).or_else(|| syslog(line, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07T01:55:19Z.
    const NOW: u64 = 1_796_608_519_000;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(ms_of(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(ms_of(2026, 12, 7, 1, 55, 19), Some(NOW as i64));
        assert_eq!(year_of(NOW), 2026);
        assert_eq!(year_of(0), 1970);
    }

    #[test]
    fn syslog_stamps_take_the_nearest_year() {
        // No zone: the earliest instant the wall-clock time can mean.
        let early = NOW - MAX_OFFSET_MS as u64;
        assert_eq!(parse("Dec  7 01:55:19 host sshd[1]: x", NOW), Some(early));
        assert_eq!(parse("Dec  7 01:56:19 host", NOW), Some(early + 60_000));
        let jan = parse("Jan  2 00:00:00 x", NOW).unwrap();
        assert_eq!(
            jan,
            (ms_of(2027, 1, 2, 0, 0, 0).unwrap() - MAX_OFFSET_MS) as u64
        );
        // A host at UTC+9 writes its local 10:55:19 at NOW: not the future.
        let tokyo = parse("Dec  7 10:55:19 host sshd[1]: x", NOW).unwrap();
        assert!(tokyo <= NOW);
        assert_eq!(parse("Feb 30 00:00:00", NOW).map(|_| ()), Some(()));
        assert_eq!(parse("Failed password for x", NOW), None);
    }

    #[test]
    fn iso_stamps_with_zones() {
        assert_eq!(parse("2026-12-07T01:55:19Z sshd", NOW), Some(NOW));
        assert_eq!(
            parse("2026-12-07 01:55:19 sshd", NOW),
            Some(NOW - MAX_OFFSET_MS as u64)
        );
        assert_eq!(
            parse("2026-12-07T02:55:19.250+01:00 x", NOW),
            Some(NOW + 250)
        );
        assert_eq!(parse("2026-12-07T01:25:19-0030 x", NOW), Some(NOW));
        assert_eq!(parse("2026-13-07T01:55:19Z", NOW), None);
    }
}
