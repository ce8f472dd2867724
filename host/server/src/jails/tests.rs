//! The follower across rotation, truncation and restarts, and the
//! feeder's outcomes against a real local guard.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use portcullis::sqlite::JailPosition;

use super::feed::{Feeder, Outcome};
use super::follow::Tail;
use crate::config::ServerConfig;

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn lines(t: &mut Tail) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let c = t.read().unwrap();
        out.extend(c.lines);
        if !c.more {
            return out;
        }
    }
}

fn saved(t: &mut Tail) -> JailPosition {
    let at = t.read().unwrap().at;
    JailPosition {
        jail: "j".into(),
        source: "s".into(),
        device: at.0,
        inode: at.1,
        offset: at.2,
        cursor: String::new(),
    }
}

#[test]
fn a_file_present_at_first_start_is_read_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "old 1\nold 2\n");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty());
    append(&log, "new 1\nnew");
    assert_eq!(lines(&mut t), ["new 1"]);
    append(&log, " 2\n");
    assert_eq!(lines(&mut t), ["new 2"]);
}

#[test]
fn a_file_that_appears_later_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty());
    append(&log, "a\nb\n");
    assert_eq!(lines(&mut t), ["a", "b"]);
}

#[test]
fn rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty()); // started before the file existed
    append(&log, "1\n");
    assert_eq!(lines(&mut t), ["1"]);
    append(&log, "2\n3 unterminated");
    std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
    // Renamed, no new file yet: the old one is kept.
    assert_eq!(lines(&mut t), ["2"]);
    append(&log, "4\n");
    assert_eq!(lines(&mut t), ["3 unterminated", "4"]);
    append(&log, "5\n");
    assert_eq!(lines(&mut t), ["5"]);
}

#[test]
fn lines_written_late_to_the_renamed_file_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    append(&log, "1\n");
    assert_eq!(lines(&mut t), ["1"]);
    let old = dir.path().join("auth.log.1");
    std::fs::rename(&log, &old).unwrap();
    append(&log, "2 new\n");
    assert_eq!(lines(&mut t), ["2 new"]);
    // The writer has not reopened its log yet: it still appends to the
    // renamed file.
    append(&old, "1b late\n");
    append(&log, "3 new\n");
    assert_eq!(lines(&mut t), ["1b late", "3 new"]);
    // Quiet long enough, the old file is let go.
    for _ in 0..super::follow::OLD_FILE_GRACE {
        assert!(lines(&mut t).is_empty());
    }
    append(&old, "too late\n");
    assert!(lines(&mut t).is_empty());
}

#[test]
fn the_rest_of_an_over_long_line_is_not_a_line_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty());
    let long = "x".repeat(super::follow::MAX_READ + 100);
    append(
        &log,
        &format!("{long} Failed password for root from 10.0.0.1 port 1 ssh2\nnext\n"),
    );
    let got = lines(&mut t);
    assert_eq!(got.len(), 2, "the cut line, then the next one");
    assert_eq!(got[0].len(), super::follow::MAX_READ);
    assert_eq!(got[1], "next");
}

#[test]
fn truncation_in_place_reads_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty()); // started before the file existed
    append(&log, "one long line\ntwo\n");
    assert_eq!(lines(&mut t), ["one long line", "two"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "x\n");
    assert_eq!(lines(&mut t), ["x"]);
}

#[test]
fn a_restart_resumes_at_the_saved_position_without_recount_or_skip() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut t = Tail::new(log.clone(), None);
    assert!(lines(&mut t).is_empty()); // started before the file existed
    append(&log, "a\nb\n");
    assert_eq!(lines(&mut t), ["a", "b"]);
    let pos = saved(&mut t);
    drop(t);
    // Written while the server was down.
    append(&log, "c\nd\n");
    let mut t = Tail::new(log.clone(), Some(pos.clone()));
    assert_eq!(lines(&mut t), ["c", "d"]);
    // Rotated while down: the rest of the old file, then the new one.
    let pos = saved(&mut t);
    drop(t);
    append(&log, "e\n");
    std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
    append(&log, "f\n");
    let mut t = Tail::new(log.clone(), Some(pos));
    assert_eq!(lines(&mut t), ["e", "f"]);
}

fn feeder(max_failures: u32) -> (Feeder, Arc<portcullis::Guard>) {
    let text = format!(
        "[login]\nmax_failures = {max_failures}\n[[jails]]\nname = \"ssh\"\nfilter = \"sshd\"\npath = \"/x\"\n"
    );
    let cfg = ServerConfig::from_str_env(&text, "t.toml", std::iter::empty()).unwrap();
    let limiter = portcullis::Limiter::new(cfg.rules.clone(), Default::default()).unwrap();
    let guard = Arc::new(portcullis::Guard::new(Arc::new(limiter), None));
    let jail = Arc::new(cfg.jails[0].clone());
    (Feeder::new(jail, guard.clone(), 300_000), guard)
}

#[tokio::test]
async fn future_duplicate_and_addressless_lines_are_skipped() {
    let (mut f, guard) = feeder(3);
    let now = 1_796_608_519_000;
    let line = |s: &str| {
        format!("Dec  7 01:55:19 h sshd[1]: Failed password for root from {s} port 1 ssh2")
    };
    let l = line("10.0.0.1");
    assert_eq!(f.line(&l, Some(now), now).await, Outcome::Failure);
    assert_eq!(f.line(&l, Some(now), now).await, Outcome::Duplicate);
    let later = Some(now + super::feed::FUTURE_SLACK_MS + 1000);
    assert_eq!(f.line(&line("10.0.0.2"), later, now).await, Outcome::Future);
    assert_eq!(
        f.line(&line("10.0.0.300"), Some(now), now).await,
        Outcome::NoAddress
    );
    assert_eq!(
        f.line("Server listening", None, now).await,
        Outcome::Unmatched
    );
    // Unstamped lines are never duplicates (sshd -E writes no stamps).
    let bare = "Failed password for root from 10.0.0.9 port 1 ssh2";
    assert_eq!(f.line(bare, None, now).await, Outcome::Failure);
    assert_eq!(f.line(bare, None, now).await, Outcome::Failure);
    assert_eq!(f.line(bare, None, now).await, Outcome::Failure);
    assert_eq!(f.line(bare, None, now).await, Outcome::Refused);
    let ip = "10.0.0.9".parse().unwrap();
    assert!(guard.bans().iter().any(|b| b.addr.ip() == ip));
    assert_eq!(super::origins::of(ip).as_deref(), Some("ssh"));
    // Nothing was counted for the skipped lines' addresses.
    for s in ["10.0.0.2"] {
        let d = guard.check_login("root", s.parse().unwrap()).await;
        assert!(d.is_allowed());
    }
}
