//! `[[jails]]` as written and checked: a log source (a file, or the
//! systemd journal of a unit) and the line patterns that turn its lines
//! into failed and successful logins (see [`super::filter`] and
//! `docs/jails.md`).

use std::path::PathBuf;

use serde::Deserialize;

use super::filter::{self, Pattern};
use super::BadConfig;

/// One `[[jails]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with name and path or journal_unit"
)]
pub struct RawJail {
    name: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    journal_unit: Option<String>,
    #[serde(default)]
    failure: Vec<String>,
    #[serde(default)]
    success: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
}

/// Where a jail reads its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JailSource {
    /// A log file, followed across rotation.
    File(PathBuf),
    /// The systemd journal of one unit (`journalctl -u`).
    Journal(String),
}

impl JailSource {
    /// The file path or unit name, as the position store keeps it.
    pub fn label(&self) -> String {
        match self {
            JailSource::File(p) => p.display().to_string(),
            JailSource::Journal(u) => format!("journal:{u}"),
        }
    }
}

/// A checked jail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailConfig {
    /// Its name: in `/admin/bans`, the dashboard, `/metrics` and the
    /// position store.
    pub name: String,
    /// What it reads.
    pub source: JailSource,
    /// Failure lines (the filter's, then the entry's own).
    pub failure: Vec<Pattern>,
    /// Success lines.
    pub success: Vec<Pattern>,
    /// Lines never counted.
    pub ignore: Vec<Pattern>,
}

fn bad(key: String, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key,
        reason: reason.into(),
    }
}

/// Compile `written` (and a filter's `shipped`) as key `jails[i].<key>`.
fn patterns(
    at: &dyn Fn(&str) -> String,
    key: &str,
    shipped: &[&str],
    written: &[String],
) -> Result<Vec<Pattern>, BadConfig> {
    let compile = if key == "ignore" {
        filter::compile_ignore
    } else {
        filter::compile
    };
    let mut out = Vec::new();
    for s in shipped {
        out.push(compile(s).map_err(|e| bad(at("filter"), e.to_string()))?);
    }
    for (j, s) in written.iter().enumerate() {
        out.push(compile(s).map_err(|e| bad(format!("{}[{j}]", at(key)), e.to_string()))?);
    }
    Ok(out)
}

fn source(at: &dyn Fn(&str) -> String, j: &RawJail) -> Result<JailSource, BadConfig> {
    match (&j.path, &j.journal_unit) {
        (Some(_), Some(_)) => Err(bad(
            at("journal_unit"),
            "set either path (a log file) or journal_unit, not both",
        )),
        (None, None) => Err(bad(at("path"), "missing (or set journal_unit)")),
        (Some(p), None) if p.as_os_str().is_empty() => Err(bad(at("path"), "must not be empty")),
        (Some(p), None) => Ok(JailSource::File(p.clone())),
        (None, Some(u)) if u.trim().is_empty() || u.starts_with('-') => {
            Err(bad(at("journal_unit"), format!("{u:?} is not a unit name")))
        }
        (None, Some(u)) => Ok(JailSource::Journal(u.trim().to_string())),
    }
}

/// Check one entry.
fn check_one(i: usize, j: RawJail) -> Result<JailConfig, BadConfig> {
    let at = move |k: &str| format!("jails[{i}].{k}");
    let name = j.name.trim().to_string();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(
            at("name"),
            format!("{:?} must be letters, digits, '-' or '_'", j.name),
        ));
    }
    let preset = match &j.filter {
        None => filter::Preset {
            failure: &[],
            success: &[],
            ignore: &[],
        },
        Some(f) => filter::preset(f).ok_or_else(|| {
            bad(
                at("filter"),
                format!(
                    "{f:?} is not a shipped filter (known: {})",
                    filter::PRESETS.join(", ")
                ),
            )
        })?,
    };
    let source = source(&at, &j)?;
    let failure = patterns(&at, "failure", preset.failure, &j.failure)?;
    if failure.is_empty() {
        return Err(bad(
            at("failure"),
            "no failure pattern (set filter or failure)",
        ));
    }
    Ok(JailConfig {
        name,
        source,
        failure,
        success: patterns(&at, "success", preset.success, &j.success)?,
        ignore: patterns(&at, "ignore", preset.ignore, &j.ignore)?,
    })
}

/// Check every `[[jails]]` entry: names unique, one source each, every
/// pattern compiled.
pub fn check(raw: Vec<RawJail>) -> Result<Vec<JailConfig>, BadConfig> {
    let mut out: Vec<JailConfig> = Vec::new();
    for (i, j) in raw.into_iter().enumerate() {
        let j = check_one(i, j)?;
        if out.iter().any(|o| o.name == j.name) {
            return Err(bad(
                format!("jails[{i}].name"),
                format!("{:?} is used twice", j.name),
            ));
        }
        out.push(j);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{BadConfig, ServerConfig};

    fn load(text: &str) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(text, "t.toml", std::iter::empty())
    }

    #[test]
    fn the_example_jail_block_loads_uncommented() {
        let example = include_str!("../../../../portcullis.example.toml");
        let (_, rest) = example.split_once("# --- log jail").unwrap();
        let (block, _) = rest.split_once("# --- end log jail").unwrap();
        let block: String = block
            .lines()
            .skip(1)
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = load(&block).unwrap();
        let j = &c.jails[0];
        assert_eq!(j.name, "sshd");
        assert_eq!(
            j.source,
            super::JailSource::File("/var/log/auth.log".into())
        );
        assert_eq!(
            (j.failure.len(), j.success.len(), j.ignore.len()),
            (2, 2, 1)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let key = |t: &str| load(t).unwrap_err().to_string();
        let jail = |rest: &str| format!("[[jails]]\nname = \"ssh\"\n{rest}\n");
        let e = key(&jail("filter = \"nope\"\npath = \"/x\""));
        assert!(
            e.contains("jails[0].filter: \"nope\" is not a shipped filter"),
            "{e}"
        );
        let e = key(&jail("path = \"/x\""));
        assert!(e.contains("jails[0].failure: no failure pattern"), "{e}");
        let e = key(&jail("failure = ['from (<HOST>']\npath = \"/x\""));
        assert!(e.contains("jails[0].failure[0]: "), "{e}");
        let e = key(&jail("failure = ['no address']\npath = \"/x\""));
        assert!(e.contains("jails[0].failure[0]: has no <HOST>"), "{e}");
        let e = key(&jail("filter = \"sshd\""));
        assert!(e.contains("jails[0].path: missing"), "{e}");
        let e = key(&jail(
            "filter = \"sshd\"\npath = \"/x\"\njournal_unit = \"ssh\"",
        ));
        assert!(e.contains("jails[0].journal_unit: set either"), "{e}");
        let two = format!(
            "{}{}",
            jail("filter = \"sshd\"\npath = \"/x\""),
            jail("filter = \"sshd\"\npath = \"/y\"")
        );
        assert!(key(&two).contains("jails[1].name: \"ssh\" is used twice"));
        let e = key("[[jails]]\nname = \"a b\"\nfilter = \"sshd\"\npath = \"/x\"\n");
        assert!(e.contains("jails[0].name"), "{e}");
        let e = key("[[jails]]\nname = \"a\"\nfilter = \"sshd\"\npath = \"/x\"\nport = 22\n");
        assert!(e.contains("jails[0].port: unknown key"), "{e}");
    }
}
