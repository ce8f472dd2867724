//! Every key of `portcullis.example.toml` (its commented keys and the proxy
//! block included), changed one at a time and reloaded, is either applied
//! (the running configuration the next request reads holds the new value)
//! or reported in `needs_restart`. A key that is neither fails.

use std::sync::Arc;

use toml::{Table, Value};

use super::{Reloader, Tables};
use crate::config::ServerConfig;
use crate::running::Live;

/// The example with its proxy block and commented keys switched on.
fn example() -> String {
    let text = include_str!("../../../../portcullis.example.toml");
    let mut out = String::new();
    let mut proxy = false;
    for line in text.lines() {
        if line.starts_with("# --- proxy mode") || line.starts_with("# --- log jail") {
            proxy = true;
            continue;
        }
        if line.starts_with("# --- end proxy mode") || line.starts_with("# --- end log jail") {
            proxy = false;
            continue;
        }
        let bare = line.strip_prefix("# ").unwrap_or(line);
        let key = bare.split(" = ").next().unwrap_or("");
        let commented_key = line.starts_with("# ")
            && bare.contains(" = ")
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && !["redis_cluster", "name", "password_hash"].contains(&key);
        if proxy || commented_key {
            out.push_str(bare);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn load(text: &str) -> Option<ServerConfig> {
    ServerConfig::from_str_env(text, "t.toml", std::iter::empty()).ok()
}

/// The last decimal digit of `s` moved on by one.
fn bump_digit(s: &str) -> Option<String> {
    let i = s.rfind(|c: char| c.is_ascii_digit())?;
    let d = s[i..].chars().next()?.to_digit(10)?;
    let mut out = s.to_string();
    out.replace_range(i..=i, &((d + 1) % 10).to_string());
    Some(out)
}

/// Other values a key could take, most likely valid first.
fn candidates(v: &Value) -> Vec<Value> {
    match v {
        Value::Boolean(b) => vec![Value::Boolean(!b)],
        Value::Integer(n) => [n + 1, n - 1, 1, 2]
            .into_iter()
            .filter(|m| m != n)
            .map(Value::Integer)
            .collect(),
        Value::Float(f) => vec![Value::Float(f + 0.5)],
        Value::String(s) => {
            let mut c: Vec<String> = Vec::new();
            if let Ok(d) = crate::config::parse_duration(s) {
                c.push(format!("{}ms", d.as_millis() + 1000));
            }
            c.extend(["memory", "caddy", "X-Real-IP", "nftables"].map(String::from));
            c.push(format!("{s}-aggressive"));
            c.push(format!("{s}x"));
            c.extend(bump_digit(s));
            c.into_iter()
                .filter(|x| x != s)
                .map(Value::String)
                .collect()
        }
        Value::Array(a) if a.is_empty() => vec![
            Value::Array(vec![Value::String("10.9.0.0/16".into())]),
            Value::Array(vec![Value::Integer(201)]),
        ],
        Value::Array(a) => {
            let mut c = vec![Value::Array(vec![Value::String("PUT".into())])];
            if a.len() > 1 {
                c.push(Value::Array(a[..a.len() - 1].to_vec()));
            }
            c.push(Value::Array(Vec::new()));
            c
        }
        _ => Vec::new(),
    }
}

/// Every leaf key: its dotted name (`login_routes[0].path`) and how to
/// reach it.
fn leaves(t: &Table, at: &str, out: &mut Vec<(String, Vec<String>)>, path: &[String]) {
    for (k, v) in t {
        let name = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        let mut p = path.to_vec();
        p.push(k.clone());
        match v {
            Value::Table(sub) => leaves(sub, &name, out, &p),
            Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let mut q = p.clone();
                    q.push(i.to_string());
                    if let Value::Table(sub) = item {
                        leaves(sub, &format!("{name}[{i}]"), out, &q);
                    }
                }
            }
            _ => out.push((name, p)),
        }
    }
}

fn at<'a>(t: &'a mut Table, path: &[String]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut v = t.get_mut(first)?;
    for step in rest {
        v = match v {
            Value::Table(t) => t.get_mut(step)?,
            Value::Array(a) => a.get_mut(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn reloader(cfg: &ServerConfig) -> (Reloader, Arc<Live>) {
    let live = Arc::new(Live::new(cfg.clone()).unwrap());
    let own = crate::pipeline::OwnTables::new(cfg).unwrap();
    let service = portcullis::Limiter::new(cfg.rules.clone(), Default::default()).unwrap();
    let service = portcullis::Guard::new(Arc::new(service), None);
    let tables = Tables {
        service: Arc::new(service),
        own: vec![own.admin, own.metrics],
        guesses: own.guesses,
        firewall: None,
    };
    (Reloader::new(None, live.clone(), tables), live)
}

#[tokio::test]
async fn every_example_key_is_applied_or_needs_a_restart() {
    let text = example();
    let base = load(&text).expect("the example loads");
    assert!(base.upstream.is_some() && base.metrics_token.is_some());
    let doc: Table = text.parse().unwrap();
    let mut keys = Vec::new();
    leaves(&doc, "", &mut keys, &[]);
    assert!(keys.len() > 60, "{}", keys.len());
    let mut neither = Vec::new();
    for (name, path) in keys {
        let old = at(&mut doc.clone(), &path).unwrap().clone();
        let changed = candidates(&old).into_iter().find_map(|v| {
            let mut d = doc.clone();
            *at(&mut d, &path)? = v;
            let new = load(&toml::to_string(&d).ok()?)?;
            (format!("{new:?}") != format!("{base:?}")).then_some(new)
        });
        let Some(new) = changed else {
            neither.push(format!("{name}: no valid change found"));
            continue;
        };
        let (r, live) = reloader(&base);
        let done = r.apply(new.clone()).unwrap();
        let applied = format!("{:?}", live.load().cfg) == format!("{new:?}");
        let leaf = name.rsplit('.').next().unwrap_or(&name);
        let reported = done.needs_restart.iter().any(|k| {
            *k == name
                || (name.starts_with("policies[") && k.ends_with(leaf))
                || (name.starts_with("jails[") && k == "jails")
        });
        if applied == reported {
            neither.push(format!(
                "{name}: applied {applied}, reported {reported} ({:?})",
                done.needs_restart
            ));
        }
    }
    assert!(neither.is_empty(), "{neither:#?}");
}
