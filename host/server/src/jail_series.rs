//! The names of the log jails' metric series, and how an open `/metrics`
//! scrape hides what they would reveal of a lock. Its own module so the
//! exporter and the jails share it without importing each other.

/// Lines counted by jail and outcome.
pub const LINES: &str = "portcullis_jail_lines_total";
/// Failures of a jail that locked a (username, ip) pair or an ip.
pub const LOCKS: &str = "portcullis_jail_locks_total";

/// The jail series as an open `/metrics` scrape shows them with
/// `login.reveal_lock = false` (the exporter hides the lock counts the same way): no
/// lock count, and a failure from a locked address counted as a failure,
/// not `refused`.
pub fn hide_locks(text: &str) -> String {
    let refused = |l: &str| l.starts_with(LINES) && l.contains("outcome=\"refused\"");
    let jail_of = |l: &str| {
        l.split("jail=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let hidden: Vec<(Option<String>, f64)> = text
        .lines()
        .filter(|l| refused(l))
        .map(|l| (jail_of(l), value(l).unwrap_or(0.0)))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if refused(line) || line.starts_with(LOCKS) {
            continue;
        }
        let failure = line.starts_with(LINES) && line.contains("outcome=\"failure\"");
        match (failure, line.rsplit_once(' ')) {
            (true, Some((head, v))) => {
                let jail = jail_of(line);
                let more: f64 = hidden
                    .iter()
                    .filter(|(j, _)| *j == jail)
                    .map(|(_, v)| v)
                    .sum();
                let v = v.parse::<f64>().unwrap_or(0.0) + more;
                out.push_str(&format!("{head} {v}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_open_scrape_does_not_tell_a_lock_from_a_miss() {
        let text = "portcullis_jail_lines_total{jail=\"a\",outcome=\"failure\"} 5\n\
portcullis_jail_lines_total{jail=\"a\",outcome=\"refused\"} 3\n\
portcullis_jail_lines_total{jail=\"b\",outcome=\"failure\"} 1\n\
portcullis_jail_lines_total{jail=\"a\",outcome=\"unmatched\"} 7\n\
portcullis_jail_locks_total{jail=\"a\"} 1\n";
        let out = super::hide_locks(text);
        assert_eq!(
            out,
            "portcullis_jail_lines_total{jail=\"a\",outcome=\"failure\"} 8\n\
portcullis_jail_lines_total{jail=\"b\",outcome=\"failure\"} 1\n\
portcullis_jail_lines_total{jail=\"a\",outcome=\"unmatched\"} 7\n"
        );
    }
}
