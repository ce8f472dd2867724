//! The nft driver: portcullis's own `inet` table (an `input` chain, four
//! sets, one drop rule per set), changes as one transaction (`nft -j -f -`,
//! a single netlink batch however many elements it carries), and the sets
//! read back (`nft -j list table`). Commands and listings are the
//! `nftables` crate's typed JSON schema; the process is run here (tokio),
//! so `nft`'s standard error is kept and a failure says why.
//!
//! Taking an element out is `add` (a no-op if it is there, so the batch
//! never fails on an element the kernel already expired) then `delete`;
//! changing its end is the same, then `add` with the new timeout (nft's
//! `add` does not change an element that is there).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::process::Stdio;

use nftables::expr::{Elem, Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{
    Chain, Element as NftElement, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Set,
    SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;

use super::desired::{Diff, Element, SetKind, State, Until};
use crate::config::Firewall;

/// The chain portcullis creates in its table.
pub const CHAIN: &str = "input";

/// The chain's priority: before the usual `filter` (0).
pub const PRIORITY: i32 = -10;

/// Why `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started.
    #[error(
        "cannot run {program:?}: {source} (install nftables, or set firewall.nft to its path)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran and refused.
    #[error("{what}: nft: {stderr}{hint}")]
    Failed {
        /// What was asked.
        what: &'static str,
        /// Its standard error.
        stderr: String,
        /// What to do about it, when known.
        hint: &'static str,
    },
    /// Its listing did not parse.
    #[error("nft listing: {0}")]
    Listing(String),
}

/// Runs `nft` on portcullis's table.
#[derive(Clone, Debug)]
pub struct Nft {
    program: String,
    table: String,
    sets: [String; 4],
}

/// One batch's commands for one set: take out, then put in.
#[derive(Default)]
struct SetBatch {
    touch: Vec<Expression<'static>>,
    delete: Vec<Expression<'static>>,
    add: Vec<Expression<'static>>,
}

impl Nft {
    /// The driver for `cfg`'s table and sets.
    pub fn new(cfg: &Firewall) -> Nft {
        Nft {
            program: cfg.nft.clone(),
            table: cfg.table.clone(),
            sets: [
                cfg.set_v4.clone(),
                cfg.set_v6.clone(),
                cfg.ranges_v4.clone(),
                cfg.ranges_v6.clone(),
            ],
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn set_name(&self, k: SetKind) -> &str {
        let i = SetKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
        self.sets.get(i).map_or("", String::as_str)
    }

    fn kind_of(&self, name: &str) -> Option<SetKind> {
        SetKind::ALL.into_iter().find(|k| self.set_name(*k) == name)
    }

    /// Create the table, chain and sets if missing and write the chain's
    /// rules afresh (one transaction; the sets' elements stay).
    pub async fn setup(&self) -> Result<(), NftError> {
        let t: Cow<'static, str> = Cow::Owned(self.table.clone());
        let mut cmds = vec![
            NfObject::CmdObject(NfCmd::Add(NfListObject::Table(Table {
                family: NfFamily::INet,
                name: t.clone(),
                handle: None,
            }))),
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(self.chain(true)))),
        ];
        for k in SetKind::ALL {
            let mut flags = HashSet::from([SetFlag::Timeout]);
            if k.interval() {
                flags.insert(SetFlag::Interval);
            }
            cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Set(
                Box::new(Set {
                    family: NfFamily::INet,
                    table: t.clone(),
                    name: Cow::Owned(self.set_name(k).to_string()),
                    handle: None,
                    set_type: SetTypeValue::Single(if k.v4() {
                        SetType::Ipv4Addr
                    } else {
                        SetType::Ipv6Addr
                    }),
                    policy: None,
                    flags: Some(flags),
                    elem: None,
                    timeout: None,
                    gc_interval: None,
                    size: None,
                    comment: None,
                }),
            ))));
        }
        cmds.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(
            self.chain(false),
        ))));
        for k in SetKind::ALL {
            cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(
                self.drop_rule(k),
            ))));
        }
        self.transaction(cmds, "creating the table").await
    }

    fn chain(&self, base: bool) -> Chain<'static> {
        Chain {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Borrowed(CHAIN),
            _type: base.then_some(NfChainType::Filter),
            hook: base.then_some(NfHook::Input),
            prio: base.then_some(PRIORITY),
            policy: base.then_some(NfChainPolicy::Accept),
            ..Chain::default()
        }
    }

    /// `ip saddr @set counter drop` (`ip6` for the IPv6 sets).
    fn drop_rule(&self, k: SetKind) -> Rule<'static> {
        let proto = if k.v4() { "ip" } else { "ip6" };
        Rule {
            family: NfFamily::INet,
            table: Cow::Owned(self.table.clone()),
            chain: Cow::Borrowed(CHAIN),
            expr: Cow::Owned(vec![
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                        PayloadField {
                            protocol: Cow::Borrowed(proto),
                            field: Cow::Borrowed("saddr"),
                        },
                    ))),
                    right: Expression::String(Cow::Owned(format!("@{}", self.set_name(k)))),
                    op: Operator::EQ,
                }),
                Statement::Counter(Counter::Anonymous(None)),
                Statement::Drop(None),
            ]),
            handle: None,
            index: None,
            comment: None,
        }
    }

    /// Apply `d` at `now_ms` in one transaction.
    pub async fn apply(&self, d: &Diff, now_ms: u64) -> Result<(), NftError> {
        if d.is_empty() {
            return Ok(());
        }
        let mut by_set: BTreeMap<SetKind, SetBatch> = BTreeMap::new();
        for e in &d.remove {
            let b = by_set.entry(e.set).or_default();
            b.touch.push(value(e));
            b.delete.push(value(e));
        }
        for (e, until, replace) in &d.put {
            let b = by_set.entry(e.set).or_default();
            if *replace {
                b.touch.push(value(e));
                b.delete.push(value(e));
            }
            b.add.push(timed(e, *until, now_ms));
        }
        // nft checks a new interval against the set as it was before the
        // batch: a range that was hidden under one going now overlaps it
        // there. Then the removals go first, in a transaction of their own.
        let split = by_set
            .iter()
            .any(|(k, b)| k.ranges() && !b.delete.is_empty() && !b.add.is_empty());
        let mut out = Vec::new();
        let mut adds = Vec::new();
        for (k, b) in by_set {
            let el = |elem: Vec<Expression<'static>>| {
                NfListObject::Element(NftElement {
                    family: NfFamily::INet,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(self.set_name(k).to_string()),
                    elem: Cow::Owned(elem),
                })
            };
            if !b.touch.is_empty() {
                out.push(NfObject::CmdObject(NfCmd::Add(el(b.touch))));
                out.push(NfObject::CmdObject(NfCmd::Delete(el(b.delete))));
            }
            if !b.add.is_empty() {
                adds.push(NfObject::CmdObject(NfCmd::Add(el(b.add))));
            }
        }
        if split {
            self.transaction(out, "taking elements out").await?;
            self.transaction(adds, "putting elements in").await
        } else {
            out.extend(adds);
            self.transaction(out, "updating the sets").await
        }
    }

    /// The four sets' elements, with when each ends, at `now_ms`.
    pub async fn list(&self, now_ms: u64) -> Result<State, NftError> {
        let out = self
            .run(
                &["-j", "list", "table", "inet", &self.table],
                None,
                "listing the table",
            )
            .await?;
        let parsed: Nftables<'_> =
            serde_json::from_str(&out).map_err(|e| NftError::Listing(e.to_string()))?;
        let mut state = State::new();
        for o in parsed.objects.iter() {
            let NfObject::ListObject(NfListObject::Set(s)) = o else {
                continue;
            };
            let Some(kind) = self.kind_of(&s.name) else {
                continue;
            };
            for x in s.elem.iter().flat_map(|e| e.iter()) {
                match parse_elem(kind, x, now_ms) {
                    Some((e, until)) => {
                        state.insert(e, until);
                    }
                    None => tracing::warn!(set = %s.name, element = ?x, "unexpected nft element"),
                }
            }
        }
        Ok(state)
    }

    /// Send `cmds` as one `nft -j -f -` transaction.
    async fn transaction(
        &self,
        cmds: Vec<NfObject<'static>>,
        what: &'static str,
    ) -> Result<(), NftError> {
        let batch = Nftables {
            objects: Cow::Owned(cmds),
        };
        let json = serde_json::to_string(&batch).map_err(|e| NftError::Listing(e.to_string()))?;
        self.run(&["-j", "-f", "-"], Some(json), what)
            .await
            .map(drop)
    }

    /// Run `nft args`, `input` on its standard input; its output.
    async fn run(
        &self,
        args: &[&str],
        input: Option<String>,
        what: &'static str,
    ) -> Result<String, NftError> {
        let spawn = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await.map_err(spawn)?;
        }
        let out = child.wait_with_output().await.map_err(spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let hint = if stderr.contains("Operation not permitted") {
                " (nft needs CAP_NET_ADMIN: run portcullis as root or give it that capability)"
            } else {
                ""
            };
            return Err(NftError::Failed { what, stderr, hint });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// An element's value: an address, or a prefix in an interval set.
fn value(e: &Element) -> Expression<'static> {
    let addr = Expression::String(Cow::Owned(e.ip.to_string()));
    if e.set.interval() {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: u32::from(e.len),
        }))
    } else {
        addr
    }
}

/// An element with the time left of its hold (whole seconds, rounded up),
/// none for a hold until lifted.
fn timed(e: &Element, until: Until, now_ms: u64) -> Expression<'static> {
    let timeout = until.map(|end| {
        let ms = end.saturating_sub(now_ms).max(1);
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    });
    Expression::Named(NamedExpression::Elem(Elem {
        val: Box::new(value(e)),
        timeout,
        expires: None,
        comment: None,
        counter: None,
    }))
}

/// A listed element of set `kind`, with its end.
fn parse_elem(kind: SetKind, x: &Expression<'_>, now_ms: u64) -> Option<(Element, Until)> {
    let (val, until) = match x {
        Expression::Named(NamedExpression::Elem(el)) => {
            let until = match (el.expires, el.timeout) {
                (Some(s), _) | (None, Some(s)) => {
                    Some(now_ms.saturating_add(u64::from(s).saturating_mul(1000)))
                }
                (None, None) => None,
            };
            (el.val.as_ref(), until)
        }
        other => (other, None),
    };
    let (ip, len) = match val {
        Expression::String(s) => {
            let ip: IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
        Expression::Named(NamedExpression::Prefix(p)) => match p.addr.as_ref() {
            Expression::String(s) => (s.parse().ok()?, u8::try_from(p.len).ok()?),
            _ => return None,
        },
        _ => return None,
    };
    Some((Element { set: kind, ip, len }, until))
}
