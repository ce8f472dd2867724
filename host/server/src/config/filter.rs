//! A log jail's line patterns: regular expressions (the `regex` crate's
//! syntax) with fail2ban's tags, so its filters carry over, and the filters
//! portcullis ships (`sshd`, `sshd-aggressive`).
//!
//! Tags: `<HOST>` (also `<ADDR>`) is an IPv4 or IPv6 address, `<IP4>` and
//! `<IP6>` one of that family; exactly one of them per pattern, captured as
//! the address. `<F-USER>…</F-USER>` (or `<F-ALT_USER>…</F-ALT_USER>`)
//! captures the username; any other `<F-NAME>…</F-NAME>` is a plain group.
//! Names are never resolved: a line whose address does not parse is
//! skipped and counted.
//!
//! A pattern is searched anywhere in the line; end it with `$` when text an
//! attacker chooses (a username) comes before the address, so that a name
//! like `x from 1.2.3.4` cannot pose as the address (the shipped filters
//! all do), and keep what may follow the address strict: a free-text tail
//! such as `(?::.*)?` lets a username ending in `from 1.2.3.4:` frame that
//! address. The shipped sshd patterns accept only sshd's own key type and
//! fingerprint after the address (a certificate's line, with its
//! client-chosen key ID, is not counted).

use regex::Regex;

/// One compiled line pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// As written.
    pub source: String,
    /// Compiled, with the named groups `host` and (maybe) `user`.
    pub regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// An address of either family: dotted quads, or hex groups with colons
/// (an IPv4 tail allowed); the parse decides.
const ANY: &str = r"\[?(?P<host>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*[0-9A-Fa-f](?:%[0-9A-Za-z]+)?)\]?";
const IP4: &str = r"(?P<host>[0-9]{1,3}(?:\.[0-9]{1,3}){3})";
const IP6: &str = r"\[?(?P<host>[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*[0-9A-Fa-f](?:%[0-9A-Za-z]+)?)\]?";

/// What a tag stands for, and whether it is an address or a username
/// (`None`: not a tag, a `<` of the pattern's own).
fn tag(t: &str) -> Option<(&'static str, u32, u32)> {
    Some(match t {
        "<HOST>" | "<ADDR>" => (ANY, 1, 0),
        "<IP4>" => (IP4, 1, 0),
        "<IP6>" => (IP6, 1, 0),
        "<F-USER>" | "<F-ALT_USER>" => ("(?P<user>", 0, 1),
        t if t.starts_with("</F-") => (")", 0, 0),
        t if t.starts_with("<F-") => ("(?:", 0, 0),
        _ => return None,
    })
}

/// Why a jail pattern is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// A failure or success pattern captures no address.
    #[error("has no <HOST> (or <ADDR>, <IP4>, <IP6>)")]
    NoHost,
    /// More than one address tag.
    #[error("has more than one address tag")]
    TwoHosts,
    /// More than one `<F-USER>`.
    #[error("has more than one <F-USER>")]
    TwoUsers,
    /// The expanded pattern is not a valid regular expression.
    #[error("{pattern:?} is not a valid pattern: {first}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The last line of the regex crate's message.
        first: String,
        /// The regex crate's error.
        #[source]
        source: regex::Error,
    },
}

/// `pattern` with its tags replaced by groups; `Err` says what is wrong.
fn expand(pattern: &str, need_host: bool) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len() + 64);
    let mut hosts = 0;
    let mut users = 0;
    let mut rest = pattern;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('>').map_or(tail.len(), |e| e + 1);
        let Some((replacement, host, user)) = tag(&tail[..end]) else {
            out.push('<');
            rest = &tail[1..];
            continue;
        };
        hosts += host;
        users += user;
        out.push_str(replacement);
        rest = &tail[end..];
    }
    out.push_str(rest);
    match (hosts, users) {
        (0, _) if need_host => Err(PatternError::NoHost),
        (h, _) if h > 1 => Err(PatternError::TwoHosts),
        (_, u) if u > 1 => Err(PatternError::TwoUsers),
        _ => Ok(out),
    }
}

/// Compile one failure or success pattern (it must capture an address).
pub fn compile(pattern: &str) -> Result<Pattern, PatternError> {
    compile_as(pattern, true)
}

/// Compile one ignore pattern (an address tag is optional).
pub fn compile_ignore(pattern: &str) -> Result<Pattern, PatternError> {
    compile_as(pattern, false)
}

fn compile_as(pattern: &str, need_host: bool) -> Result<Pattern, PatternError> {
    let expanded = expand(pattern, need_host)?;
    let regex = Regex::new(&expanded).map_err(|source| {
        let first = source.to_string();
        let first = first.lines().last().unwrap_or("").trim().to_string();
        PatternError::Regex {
            pattern: pattern.to_string(),
            first,
            source,
        }
    })?;
    Ok(Pattern {
        source: pattern.to_string(),
        regex,
    })
}

/// What a shipped filter holds.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Failure lines: each match is one failed attempt.
    pub failure: &'static [&'static str],
    /// Success lines: each match settles as a successful login.
    pub success: &'static [&'static str],
    /// Lines never counted, though a failure pattern matches.
    pub ignore: &'static [&'static str],
}

/// OpenSSH's `sshd`: one line per failed password (or key, or
/// keyboard-interactive) attempt, whatever the log (`sshd -E` file,
/// syslog's `auth.log`, the journal's messages).
const SSHD_FAILURE: &[&str] = &[
    r"Failed (?:password|publickey|keyboard-interactive/pam|none|hostbased|gssapi-with-mic) for (?:invalid user )?<F-USER>.*?</F-USER> from <HOST>(?: port \d+)?(?: ssh\d*)?(?:: [A-Za-z0-9-]+ SHA256:[A-Za-z0-9+/=]+)?\s*$",
];

/// The lines `sshd-aggressive` adds: every other line of a refused client
/// (an unknown user, PAM's failures, a connection dropped while
/// authenticating, too many attempts). One attempt can write two or three
/// of them: each counts.
const SSHD_AGGRESSIVE: &[&str] = &[
    r"Failed (?:password|publickey|keyboard-interactive/pam|none|hostbased|gssapi-with-mic) for (?:invalid user )?<F-USER>.*?</F-USER> from <HOST>(?: port \d+)?(?: ssh\d*)?(?:: [A-Za-z0-9-]+ SHA256:[A-Za-z0-9+/=]+)?\s*$",
    r"[iI](?:llegal|nvalid) user <F-USER>.*?</F-USER> from <HOST>(?: port \d+)?\s*$",
    r"User <F-USER>\S+|.*?</F-USER> from <HOST> not allowed because .+$",
    r"(?:error: )?PAM: [aA]uthentication (?:failure|error|failed) for (?:illegal user )?<F-USER>.*?</F-USER> from <HOST>(?: via \S+)?\s*$",
    r"pam_[a-z_]+\(sshd:auth\): authentication failure;(?:\s+(?:logname|e?uid|tty|ruser)=\S*)*\s+rhost=<HOST>(?:\s+user=<F-USER>\S*</F-USER>)?\s*$",
    r"[aA]uthentication (?:failure|error|failed) for <F-USER>.*?</F-USER> from <HOST>(?: via \S+)?\s*$",
    r"(?:error: )?maximum authentication attempts exceeded for (?:invalid user )?<F-USER>.*?</F-USER> from <HOST>(?: port \d+)?(?: ssh\d*)?(?: \[preauth\])?\s*$",
    r"(?:Connection (?:closed|reset)|Disconnected) (?:by|from) (?:authenticating|invalid) user <F-USER>\S+|.*?</F-USER> <HOST>(?: port \d+)? \[preauth\]\s*$",
];

/// A successful login of `sshd`.
const SSHD_SUCCESS: &[&str] = &[
    r"Accepted (?:password|publickey|keyboard-interactive/pam|hostbased|gssapi-with-mic) for <F-USER>.*?</F-USER> from <HOST>(?: port \d+)?(?: ssh\d*)?(?:: [A-Za-z0-9-]+ SHA256:[A-Za-z0-9+/=]+)?\s*$",
];

/// The shipped filters by name.
pub fn preset(name: &str) -> Option<Preset> {
    match name {
        "sshd" => Some(Preset {
            failure: SSHD_FAILURE,
            success: SSHD_SUCCESS,
            ignore: &[],
        }),
        "sshd-aggressive" => Some(Preset {
            failure: SSHD_AGGRESSIVE,
            success: SSHD_SUCCESS,
            ignore: &[],
        }),
        _ => None,
    }
}

/// The shipped filters' names.
pub const PRESETS: &[&str] = &["sshd", "sshd-aggressive"];

#[cfg(test)]
mod tests {
    use super::*;

    fn caught(p: &Pattern, line: &str) -> Option<(String, Option<String>)> {
        let c = p.regex.captures(line)?;
        Some((
            c.name("host")?.as_str().to_string(),
            c.name("user").map(|u| u.as_str().to_string()),
        ))
    }

    #[test]
    fn every_shipped_pattern_compiles() {
        for name in PRESETS {
            let p = preset(name).unwrap();
            for s in p.failure.iter().chain(p.success).chain(p.ignore) {
                compile(s).unwrap();
            }
        }
    }

    #[test]
    fn tags_are_checked() {
        assert!(compile("no address here")
            .unwrap_err()
            .to_string()
            .contains("<HOST>"));
        assert!(compile("<HOST> and <IP4>")
            .unwrap_err()
            .to_string()
            .contains("more than one"));
        assert!(compile("from <HOST> (")
            .unwrap_err()
            .to_string()
            .contains("not a valid"));
        let p = compile(r"<F-X>x</F-X> <F-USER>\w+</F-USER> at <IP6>$").unwrap();
        assert_eq!(
            caught(&p, "x bob at 2001:db8::1"),
            Some(("2001:db8::1".into(), Some("bob".into())))
        );
    }

    #[test]
    fn sshd_lines_give_address_and_user() {
        let fail = compile(SSHD_FAILURE[0]).unwrap();
        let cases = [
            ("Failed password for root from 10.0.0.7 port 2222 ssh2", "10.0.0.7", "root"),
            (
                "Dec  7 01:55:19 h sshd[9]: Failed password for invalid user a b from 2001:db8::7 port 1 ssh2",
                "2001:db8::7",
                "a b",
            ),
            (
                "Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 10.0.0.8 port 5 ssh2",
                "10.0.0.8",
                "x from 6.6.6.6 port 1 ssh2",
            ),
            // A username ending in a colon must not frame 1.2.3.4 by
            // hiding the real address in a free-text tail: the tail after
            // the address is sshd's key type and fingerprint, nothing else.
            (
                "Failed password for invalid user a from 1.2.3.4: from 10.0.0.9 port 5 ssh2",
                "10.0.0.9",
                "a from 1.2.3.4:",
            ),
            (
                "Failed password for invalid user a from 1.2.3.4: X SHA256:abc from 10.0.0.9 port 5 ssh2",
                "10.0.0.9",
                "a from 1.2.3.4: X SHA256:abc",
            ),
            (
                "Failed publickey for git from 10.0.0.10 port 6 ssh2: ED25519 SHA256:q0Zk+9b/x=",
                "10.0.0.10",
                "git",
            ),
        ];
        for (line, host, user) in cases {
            assert_eq!(
                caught(&fail, line),
                Some((host.into(), Some(user.into()))),
                "{line}"
            );
        }
        let pam = compile(SSHD_AGGRESSIVE[4]).unwrap();
        let line = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.9  user=alice";
        assert_eq!(
            caught(&pam, line),
            Some(("192.0.2.9".into(), Some("alice".into())))
        );
        let closed = compile(SSHD_AGGRESSIVE[7]).unwrap();
        let line = "Connection closed by authenticating user root 127.0.0.1 port 54230 [preauth]";
        assert_eq!(
            caught(&closed, line),
            Some(("127.0.0.1".into(), Some("root".into())))
        );
        // Lines Debian's sshd 9.2 wrote under hydra (`sshd -E`): which
        // filter counts them.
        let sshd = |name: &str, line: &str| {
            let p = preset(name).unwrap();
            p.failure
                .iter()
                .filter(|s| compile(s).unwrap().regex.is_match(line))
                .count()
        };
        let real = [
            ("Received disconnect from 10.77.0.2 port 48670:11: Bye Bye [preauth]", 0, 0),
            ("Disconnected from authenticating user pcjailtest 10.77.0.2 port 48670 [preauth]", 0, 1),
            ("Failed password for pcjailtest from 10.77.0.2 port 48676 ssh2", 1, 1),
            ("Connection closed by authenticating user pcjailtest 10.77.0.2 port 48676 [preauth]", 0, 1),
            ("Invalid user admin from 10.77.0.2 port 48700", 0, 1),
            ("Server listening on 0.0.0.0 port 2222.", 0, 0),
        ];
        for (line, normal, aggressive) in real {
            assert_eq!(sshd("sshd", line), normal, "{line}");
            assert_eq!(sshd("sshd-aggressive", line).min(1), aggressive, "{line}");
        }
        let ok = compile(SSHD_SUCCESS[0]).unwrap();
        let line = "Accepted password for bob from 10.0.0.9 port 4 ssh2";
        assert_eq!(
            caught(&ok, line),
            Some(("10.0.0.9".into(), Some("bob".into())))
        );
    }
}
