//! SQLite persistence: write-through, snapshot, restore of remaining time,
//! refusal of unknown versions and corrupt files, and a SIGKILL crash test.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use portcullis::sqlite::{SqliteStore, StoreError};
use portcullis::Duration;
use portcullis::{Config, Decision, Reason};
use portcullis::{Guard, Limiter, LimiterOptions};

fn open(path: &std::path::Path) -> Guard {
    let (store, loaded) = SqliteStore::open(path).unwrap();
    let opts = LimiterOptions {
        max_entries: 10_000,
        shards: 8,
        seed: Some(loaded.seed),
    };
    let lim = Limiter::new(Config::default(), opts).unwrap();
    lim.import(portcullis::clock::wall(), &loaded.records)
        .unwrap();
    Guard::new(Arc::new(lim), Some(Arc::new(store)))
}

fn retry(d: Decision) -> Duration {
    match d {
        Decision::Deny { retry_after, .. } => retry_after,
        d => panic!("expected a denial, got {d:?}"),
    }
}

#[tokio::test]
async fn bans_blocks_and_locks_survive_a_restart_with_remaining_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let banned: IpAddr = "198.51.100.1".parse().unwrap();
    let locked: IpAddr = "198.51.100.2".parse().unwrap();
    {
        let g = open(&path);
        assert!(g.ban(banned).await);
        for _ in 0..10 {
            drop(g.login_failed("root", locked).await);
        }
        // No snapshot: only write-through has run. (Dropping takes none;
        // forgetting would keep the store's lock held in this process.)
        drop(g);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let g = open(&path);
    assert_eq!(g.check_request(banned).await.reason(), Some(Reason::Banned));
    let d = g.check_login("root", locked).await;
    assert_eq!(d.reason(), Some(Reason::PairLocked));
    let left = retry(d);
    assert!(
        left <= Duration::from_secs(299) && left >= Duration::from_secs(297),
        "{left:?}"
    );
    // The seed persisted too: the username hash still finds the pair.
    assert_eq!(
        g.check_login("ROOT", locked).await.reason(),
        Some(Reason::PairLocked)
    );
    // Lifting writes through as well.
    assert!(g.lift(banned).await > 0);
    drop(g);
    let g = open(&path);
    assert!(g.check_request(banned).await.is_allowed());
}

#[tokio::test]
async fn snapshot_replaces_and_reloads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let g = open(&path);
    for i in 0..20u8 {
        g.check_request(IpAddr::from([10, 0, 0, i])).await;
    }
    g.snapshot().await;
    drop(g);
    let g = open(&path);
    assert_eq!(g.limiter().len(), 20);
    match g
        .limiter()
        .peek_request_at(IpAddr::from([10, 0, 0, 3]), portcullis::clock::now())
    {
        Decision::Allow { remaining, .. } => assert_eq!(remaining, 49),
        d => panic!("{d:?}"),
    }
}

#[test]
fn unknown_schema_version_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE x (y); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::UnknownVersion { found: 99, .. }));
    let msg = err.to_string();
    assert!(msg.contains("future.db") && msg.contains("99"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file untouched");
}

#[test]
fn a_corrupt_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(
        &path,
        b"this is not a database, not even close, but long enough to look like one".repeat(100),
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(err.to_string().contains("garbage.db"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "never overwritten");
}

#[test]
fn a_malformed_row_refuses_the_whole_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute(
            "INSERT INTO entries VALUES (0, zeroblob(16), 0, '[1,2]', '[]', NULL, 0, NULL, 1, NULL)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO entries VALUES (0, zeroblob(15), 0, '[]', '[]', NULL, 0, NULL, 1, NULL)",
            [],
        )
        .unwrap();
    }
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("16 bytes"), "{err}");
}

/// The child half of the crash test: block one address, ban another, say
/// READY, and wait to be killed.
#[test]
#[ignore = "run by crash_test_sigkill_loses_no_ban"]
fn crash_child() {
    let Ok(path) = std::env::var("PORTCULLIS_CRASH_DB") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let g = open(std::path::Path::new(&path));
        g.ban("203.0.113.66".parse().unwrap()).await;
        let blocked: IpAddr = "203.0.113.77".parse().unwrap();
        // Three violation windows, 61 s apart, on the limiter's clock.
        let l = g.limiter().clone();
        let t = portcullis::clock::now();
        for w in 0..3u64 {
            for _ in 0..51 {
                let o = l.check_request_at(blocked, t + Duration::from_secs(61 * (w + 1)));
                g.persist(o.changes).await;
            }
        }
        println!("READY");
        std::thread::sleep(std::time::Duration::from_secs(600));
    });
}

#[test]
fn crash_test_sigkill_loses_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PORTCULLIS_CRASH_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let ready = lines.any(|l| l.map(|l| l.contains("READY")).unwrap_or(false));
    assert!(ready, "child got ready");
    let killed_at = std::time::Instant::now();
    // SIGKILL: no destructor, no snapshot, no flush.
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let g = open(&path);
        assert_eq!(
            g.check_request("203.0.113.66".parse().unwrap())
                .await
                .reason(),
            Some(Reason::Banned)
        );
        let d = g.check_request("203.0.113.77".parse().unwrap()).await;
        assert_eq!(d.reason(), Some(Reason::Blocked));
        // The block was 15 min from (child's clock + 183 s); remaining is what is left of it.
        let expected =
            std::time::Duration::from_secs(15 * 60 + 183).saturating_sub(killed_at.elapsed());
        let got = std::time::Duration::from_micros(retry(d).as_micros());
        let diff = got.as_secs_f64() - expected.as_secs_f64();
        assert!(
            diff.abs() <= 1.0,
            "remaining {got:?}, expected {expected:?} ± 1 s"
        );
    });
}

#[tokio::test]
async fn only_bans_blocks_and_locks_are_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiet.db");
    let g = open(&path);
    // A flood of fresh addresses, each allowed: nothing to persist.
    for i in 0..200u8 {
        let o = g
            .limiter()
            .check_request_at(IpAddr::from([10, 1, 0, i]), portcullis::clock::now());
        assert!(
            o.changes.is_empty(),
            "a new, unpinned key is not written through"
        );
    }
    let o = g
        .limiter()
        .ban_at("10.9.9.9".parse().unwrap(), portcullis::clock::now());
    assert_eq!(o.changes.len(), 1, "a ban is");
    let rows = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    g.persist(o.changes).await;
    assert_eq!(rows(), 1);
}

/// Write-through follows what the core reports changed: a ban, a block, a
/// lock, a lift and a successful login each persist exactly the records
/// of the keys whose ban, block or lock moved, and the file then holds
/// exactly the rows still in force.
#[tokio::test]
async fn each_call_writes_through_exactly_the_records_it_changed() {
    use portcullis::clock::{read, Now};
    use portcullis::{Addr, Key};
    use portcullis_core::UserHasher;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exact.db");
    let (store, loaded) = SqliteStore::open(&path).unwrap();
    let mut config = Config::default();
    config.requests.max_requests = 1;
    config.blocks.block_after = 1;
    config.login.max_failures = 3;
    config.login.ip_max_failures = Some(3);
    let opts = LimiterOptions {
        max_entries: 1_000,
        shards: 4,
        seed: Some(loaded.seed),
    };
    let lim = Limiter::new(config, opts).unwrap();
    let g = Guard::new(Arc::new(lim), Some(Arc::new(store)));
    let lim = g.limiter().clone();
    let user = |name: &str| UserHasher::new(lim.seed()).hash(name);
    let addr = |ip: IpAddr| Addr::from_ip(ip, 64);
    let keys = |c: &Vec<portcullis::Record>| c.iter().map(|r| r.key).collect::<Vec<_>>();
    let rows = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let now: Now = read();

    // A ban: the request key, banned.
    let banned: IpAddr = "203.0.113.1".parse().unwrap();
    let o = lim.ban_at(banned, now);
    assert_eq!(keys(&o.changes), [Key::request(addr(banned))]);
    assert!(o.changes[0].banned);
    g.persist(o.changes).await;

    // A block: only the request that sets it writes, the request key.
    let flood: IpAddr = "203.0.113.2".parse().unwrap();
    let o = lim.check_request_at(flood, now);
    assert!(o.decision.is_allowed() && o.changes.is_empty());
    let o = lim.check_request_at(flood, now);
    assert_eq!(o.decision.reason(), Some(Reason::Blocked));
    assert_eq!(keys(&o.changes), [Key::request(addr(flood))]);
    assert!(o.changes[0].block_until.is_some());
    g.persist(o.changes).await;
    let o = lim.check_request_at(flood, now);
    assert!(o.changes.is_empty(), "a standing block changes nothing");

    // A lock: failures below the limit write nothing; the one that locks
    // writes the pair and the ip, both locked.
    let guesser: IpAddr = "203.0.113.3".parse().unwrap();
    for _ in 0..2 {
        let o = lim.login_failed_at("carol", guesser, now);
        assert!(o.changes.is_empty());
    }
    let o = lim.login_failed_at("carol", guesser, now);
    let pair = Key::login_user(user("carol"), addr(guesser));
    let lip = Key::login_ip(addr(guesser));
    assert_eq!(keys(&o.changes), [pair, lip]);
    assert!(o.changes.iter().all(|r| r.lock_until.is_some()));
    g.persist(o.changes).await;
    assert_eq!(rows(), 4, "ban, block, pair lock, ip lock");

    // A successful login: the locked pair goes (an empty record deletes
    // its row); the ip's lock stays.
    let o = lim.login_succeeded_at("carol", guesser, now);
    assert_eq!(keys(&o.changes), [pair]);
    assert!(o.changes[0].hold(now.unix_ms()).is_none());
    g.persist(o.changes).await;
    assert_eq!(rows(), 3);

    // A success with nothing locked writes nothing.
    let o = lim.login_succeeded_at("dave", guesser, now);
    assert!(o.changes.is_empty());

    // A lift: the ban's key alone; then the ip lock's.
    let o = lim.lift_at(banned, now);
    assert_eq!(
        (o.decision, keys(&o.changes)),
        (1, vec![Key::request(addr(banned))])
    );
    g.persist(o.changes).await;
    let o = lim.lift_at(guesser, now);
    assert_eq!((o.decision, keys(&o.changes)), (1, vec![lip]));
    g.persist(o.changes).await;
    assert_eq!(rows(), 1, "only the block is left");
    let o = lim.lift_at(guesser, now);
    assert!(o.changes.is_empty(), "nothing left to lift");
}

/// A lift of an address with more locked pairs than the core's changed
/// set names one by one still writes every one of them (the set spills to
/// the address), and nothing of other addresses.
#[test]
fn a_lift_of_many_locked_pairs_writes_them_all() {
    let mut config = Config::default();
    config.login.max_failures = 1;
    config.login.ip_max_failures = Some(1);
    let opts = LimiterOptions {
        max_entries: 1_000,
        shards: 1,
        seed: None,
    };
    let lim = Limiter::new(config, opts).unwrap();
    let now = portcullis::clock::read();
    let (a, other): (IpAddr, IpAddr) = (
        "203.0.113.9".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
    );
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6"];
    assert!(users.len() > portcullis_core::CHANGED_KEYS);
    for u in users {
        drop(lim.login_failed_at(u, a, now));
    }
    drop(lim.login_failed_at("x", other, now));
    let o = lim.lift_at(a, now);
    assert_eq!(o.decision, users.len() + 1, "every pair and the ip");
    assert_eq!(o.changes.len(), users.len() + 1);
    assert!(o
        .changes
        .iter()
        .all(|r| r.key.addr().ip() == a && r.hold(now.unix_ms()).is_none()));
}

/// Issue 17, item 3: manual decisions are written through, come back on
/// reopening (the loader hands them over), and those that ended are purged
/// from memory and from the file.
#[tokio::test]
async fn manual_bans_are_written_through_and_ended_ones_purged() {
    use portcullis::{parse_range, ManualBan};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let now = portcullis::clock::unix_ms();
    let ban = |r: &str, until_ms: Option<u64>| ManualBan {
        range: parse_range(r).unwrap(),
        until_ms,
        reason: format!("because {r}"),
        created_ms: now,
    };
    {
        let g = open(&path);
        g.ban_range(ban("203.0.113.0/24", None)).await.unwrap();
        g.ban_range(ban("2001:db8::/32", Some(now + 3_600_000)))
            .await
            .unwrap();
        // Ends 300 ms from now.
        g.ban_range(ban("198.51.100.9", Some(now + 300)))
            .await
            .unwrap();
        let ip: IpAddr = "203.0.113.4".parse().unwrap();
        assert_eq!(g.check_request(ip).await.reason(), Some(Reason::Banned));
        // Replacing keeps one row per range.
        g.ban_range(ban("203.0.113.0/24", None)).await.unwrap();
        // No snapshot, no clean close: written through.
        std::mem::forget(g);
    }
    let rows = |p: &std::path::Path| -> Vec<String> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT range FROM manual_bans ORDER BY range")
            .unwrap();
        let v = s
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        v
    };
    assert_eq!(
        rows(&path),
        ["198.51.100.9/32", "2001:db8::/32", "203.0.113.0/24"]
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    // The forgotten guard still holds the file's lock: read it by copy.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let _ = std::fs::copy(path.with_extension("db-wal"), copy.with_extension("db-wal"));
    let (store, loaded) = SqliteStore::open(&copy).unwrap();
    let mut got: Vec<(String, String)> = loaded
        .manual
        .iter()
        .map(|b| (b.range.to_string(), b.reason.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "198.51.100.9/32".to_string(),
                "because 198.51.100.9".to_string()
            ),
            ("2001:db8::/32".into(), "because 2001:db8::/32".into()),
            ("203.0.113.0/24".into(), "because 203.0.113.0/24".into()),
        ]
    );
    let lim = Limiter::new(Config::default(), LimiterOptions::default()).unwrap();
    for b in loaded.manual {
        lim.manual().add(b).unwrap();
    }
    let g = Guard::new(Arc::new(lim), Some(Arc::new(store)));
    assert_eq!(g.manual_bans().len(), 2, "the ended block is not listed");
    assert_eq!(g.purge_manual().await, 1);
    assert_eq!(rows(&copy), ["2001:db8::/32", "203.0.113.0/24"]);
    let r = parse_range("2001:db8::/32").unwrap();
    assert!(g.unban_range(&r).await.is_some());
    assert_eq!(rows(&copy), ["203.0.113.0/24"]);
}

/// Schema version 3's journal (a fleet server's outage queue): rows are
/// upserted and deleted in order and read back at the next open; a
/// version 2 file is migrated to 3 with an empty journal.
#[tokio::test]
async fn the_journal_keeps_its_rows_in_order_and_version_2_is_migrated() {
    use portcullis::sqlite::SCHEMA_VERSION;
    use portcullis::{Addr, KeyKind};
    use portcullis::{Imposed, JournalChange, JournalKey, JournalRow};
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("j.db");
    let key = |kind, a: u8, user: &str| JournalKey {
        kind,
        addr: Addr::from_octets([a; 16]),
        username: user.into(),
    };
    let row = |k: JournalKey, lock: Option<u64>| JournalRow {
        key: k,
        imposed: Imposed {
            banned: lock.is_none(),
            block_until_ms: None,
            block_level: 0,
            last_block_start_ms: None,
            lock_until_ms: lock,
            violations_ms: vec![5, 6],
        },
    };
    let (store, loaded) = SqliteStore::open(&p).unwrap();
    assert!(loaded.journal.is_empty());
    let ban = row(key(KeyKind::Request, 1, ""), None);
    let lock = row(key(KeyKind::LoginUser, 2, "alice"), Some(9_000));
    // Handed over in this order: the second put of the lock wins, the ban
    // is deleted.
    let first = store.write_journal(vec![
        JournalChange::Put(ban.clone()),
        JournalChange::Put(lock.clone()),
    ]);
    let mut later = lock.clone();
    later.imposed.lock_until_ms = Some(12_000);
    let second = store.write_journal(vec![
        JournalChange::Put(later.clone()),
        JournalChange::Delete(ban.key.clone()),
    ]);
    first.await.unwrap();
    second.await.unwrap();
    store.close().unwrap();
    let (store, loaded) = SqliteStore::open(&p).unwrap();
    assert_eq!(loaded.journal, vec![later]);
    store.close().unwrap();

    // A version 2 file (no journal table) opens, migrated.
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("DROP TABLE journal; DROP TABLE jail_positions; PRAGMA user_version = 2;")
        .unwrap();
    drop(c);
    let (store, loaded) = SqliteStore::open(&p).unwrap();
    assert!(loaded.journal.is_empty());
    store.close().unwrap();
    let v: i64 = rusqlite::Connection::open(&p)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

/// Schema version 4's jail positions (the server's log jails): written
/// through, read back after a reopen, one row per jail; a version 3 file
/// is migrated to 4 with none.
#[tokio::test]
async fn jail_positions_survive_a_reopen_and_version_3_is_migrated() {
    use portcullis::sqlite::{JailPosition, SCHEMA_VERSION};
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("j.db");
    let (store, _) = SqliteStore::open(&p).unwrap();
    assert!(store.jail_positions().await.unwrap().is_empty());
    let pos = |offset| JailPosition {
        jail: "sshd".into(),
        source: "/var/log/auth.log".into(),
        device: 66,
        inode: 1234,
        offset,
        cursor: String::new(),
    };
    store.write_jail_position(pos(10)).await.unwrap();
    store.write_jail_position(pos(99)).await.unwrap();
    let journal = JailPosition {
        jail: "ssh-journal".into(),
        source: "journal:ssh.service".into(),
        cursor: "s=1;i=2".into(),
        ..JailPosition::default()
    };
    store.write_jail_position(journal.clone()).await.unwrap();
    store.close().unwrap();
    let (store, _) = SqliteStore::open(&p).unwrap();
    let mut got = store.jail_positions().await.unwrap();
    got.sort_by(|a, b| a.jail.cmp(&b.jail));
    assert_eq!(got, vec![journal, pos(99)]);
    store.close().unwrap();

    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("DROP TABLE jail_positions; PRAGMA user_version = 3;")
        .unwrap();
    drop(c);
    let (store, _) = SqliteStore::open(&p).unwrap();
    assert!(store.jail_positions().await.unwrap().is_empty());
    store.close().unwrap();
    let v: i64 = rusqlite::Connection::open(&p)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}
