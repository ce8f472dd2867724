//! One line against a jail's patterns: a failed or successful login of
//! (username, address), or why the line counts for nothing.

use std::net::IpAddr;

use crate::config::filter::Pattern;
use crate::config::jails::JailConfig;

/// What a line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A failed attempt.
    Failure {
        /// The username (`""` when the line names none).
        user: String,
        /// The client.
        ip: IpAddr,
    },
    /// A successful login.
    Success {
        /// The username (`""` when the line names none).
        user: String,
        /// The client.
        ip: IpAddr,
    },
}

/// Why a line is not an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No pattern matched.
    Unmatched,
    /// An ignore pattern matched.
    Ignored,
    /// A pattern matched but its address is not an IP address.
    NoAddress,
}

/// The address a pattern captured, IPv4-mapped IPv6 read as IPv4.
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches(|c| c == '[' || c == ']');
    let text = text.split('%').next().unwrap_or(text);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn first(patterns: &[Pattern], line: &str) -> Option<Result<(String, IpAddr), Skip>> {
    patterns.iter().find_map(|p| {
        let c = p.regex.captures(line)?;
        let user = c.name("user").map_or("", |u| u.as_str()).trim().to_string();
        let ip = c.name("host").and_then(|h| address(h.as_str()));
        Some(ip.map(|ip| (user, ip)).ok_or(Skip::NoAddress))
    })
}

/// Classify `line` (ignore patterns first, then failure, then success).
pub fn classify(jail: &JailConfig, line: &str) -> Result<Event, Skip> {
    if jail.ignore.iter().any(|p| p.regex.is_match(line)) {
        return Err(Skip::Ignored);
    }
    if let Some(r) = first(&jail.failure, line) {
        let (user, ip) = r?;
        return Ok(Event::Failure { user, ip });
    }
    match first(&jail.success, line) {
        Some(r) => r.map(|(user, ip)| Event::Success { user, ip }),
        None => Err(Skip::Unmatched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn jail() -> JailConfig {
        let text = r#"
[[jails]]
name = "ssh"
filter = "sshd"
path = "/var/log/auth.log"
ignore = ['for ignoreme ']
"#;
        let cfg = ServerConfig::from_str_env(text, "t.toml", std::iter::empty()).unwrap();
        cfg.jails.into_iter().next().unwrap()
    }

    #[test]
    fn lines_become_events_or_reasons() {
        let j = jail();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            classify(
                &j,
                "Failed password for root from ::ffff:10.1.2.3 port 22 ssh2"
            ),
            Ok(Event::Failure {
                user: "root".into(),
                ip: ip("10.1.2.3")
            })
        );
        assert_eq!(
            classify(
                &j,
                "Accepted password for bob from 2001:db8::1 port 22 ssh2"
            ),
            Ok(Event::Success {
                user: "bob".into(),
                ip: ip("2001:db8::1")
            })
        );
        assert_eq!(
            classify(&j, "Failed password for root from 999.1.2.3 port 22 ssh2"),
            Err(Skip::NoAddress)
        );
        assert_eq!(
            classify(
                &j,
                "Failed password for ignoreme from 10.1.2.3 port 22 ssh2"
            ),
            Err(Skip::Ignored)
        );
        assert_eq!(
            classify(&j, "Server listening on 0.0.0.0 port 22."),
            Err(Skip::Unmatched)
        );
    }
}
