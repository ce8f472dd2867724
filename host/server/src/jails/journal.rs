//! The systemd journal of one unit: `journalctl -f -o json -u UNIT` as a
//! child process (after the saved cursor when there is one, else from
//! now: `-n 0`), one JSON entry per line; its `MESSAGE` is the line, its
//! `__REALTIME_TIMESTAMP` the stamp, its `__CURSOR` the position saved.
//! A `journalctl` that exits or cannot start is started again after
//! [`RESTART_AFTER`].

use std::time::Duration;

use serde_json::Value;

/// Wait before starting `journalctl` again.
pub const RESTART_AFTER: Duration = Duration::from_secs(5);

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `MESSAGE` (a byte array is read as lossy UTF-8).
    pub message: String,
    /// `__REALTIME_TIMESTAMP` in Unix milliseconds.
    pub stamp: Option<u64>,
    /// `__CURSOR`.
    pub cursor: String,
}

/// Parse one line of `journalctl -o json`; `None` if it is not an entry
/// with a message and a cursor.
pub fn parse(line: &str) -> Option<Entry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let message = match v.get("MESSAGE")? {
        Value::String(s) => s.clone(),
        Value::Array(bytes) => {
            let b: Vec<u8> = bytes
                .iter()
                .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect::<Option<_>>()?;
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => return None,
    };
    let stamp = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|us| us / 1000);
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    Some(Entry {
        message,
        stamp,
        cursor,
    })
}

/// The arguments of `journalctl` for `unit`, after `cursor` if saved.
pub fn args(unit: &str, cursor: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = ["-f", "-o", "json", "--no-pager", "-u", unit]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    match cursor.filter(|c| !c.is_empty()) {
        Some(c) => a.push(format!("--after-cursor={c}")),
        None => a.extend(["-n".to_string(), "0".to_string()]),
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let line = r#"{"__CURSOR":"s=abc;i=1f","__REALTIME_TIMESTAMP":"1796608519123456","_SYSTEMD_UNIT":"ssh.service","MESSAGE":"Failed password for root from 10.0.0.1 port 2 ssh2"}"#;
        assert_eq!(
            parse(line),
            Some(Entry {
                message: "Failed password for root from 10.0.0.1 port 2 ssh2".into(),
                stamp: Some(1_796_608_519_123),
                cursor: "s=abc;i=1f".into(),
            })
        );
        let bytes = r#"{"__CURSOR":"c","MESSAGE":[104,105,255]}"#;
        assert_eq!(parse(bytes).unwrap().message, "hi\u{fffd}");
        assert_eq!(parse(r#"{"MESSAGE":"no cursor"}"#), None);
        assert_eq!(parse("not json"), None);
    }

    #[test]
    fn arguments_resume_after_the_cursor() {
        assert_eq!(
            args("ssh.service", Some("s=1")).join(" "),
            "-f -o json --no-pager -u ssh.service --after-cursor=s=1"
        );
        assert_eq!(
            args("ssh", None).join(" "),
            "-f -o json --no-pager -u ssh -n 0"
        );
    }
}
