//! The SQLite store is exclusively ours and writable (issue 14, findings 8,
//! 9 and 11): the real binary refuses, with one line naming the file, a
//! store it cannot write, a store another server holds, and a file that is
//! not a portcullis store (which it leaves byte for byte as it was); the
//! CLI's `--db` mode refuses a store in use; a snapshot never deletes rows
//! it did not load or write.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::sqlite::SqliteStore;
use portcullis::{Guard, Limiter, LimiterOptions};

mod common;
use common::{free_port, Server, BIN};

/// How long a refused start may take before we call it a start.
const LIVENESS: Duration = Duration::from_secs(20);

/// Run `cmd` (a `portcullis serve` that must be refused): its exit status
/// and its stderr lines. Panics if it is still running after [`LIVENESS`],
/// i.e. it started serving on a store it had to refuse.
fn refused(mut cmd: Command) -> (ExitStatus, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + LIVENESS;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server started (still running after {LIVENESS:?}): {:?}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// `portcullis serve` on `db` with a free port and nothing else set.
fn serve(bin: &Path, db: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env_clear()
        .env(
            "PORTCULLIS_SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("PORTCULLIS_STORE__PATH", db)
        .env("PORTCULLIS_LOG", "info");
    cmd
}

/// The one stderr line that names `db` and says `what`; fails unless there
/// is exactly one (a start-up error is printed once).
fn the_line<'a>(lines: &'a [String], db: &Path, what: &str) -> &'a str {
    let name = db.display().to_string();
    let hits: Vec<&String> = lines.iter().filter(|l| l.contains(&name)).collect();
    assert_eq!(hits.len(), 1, "one line naming {name}: {lines:#?}");
    assert!(hits[0].contains(what), "{:?} says {what:?}", hits[0]);
    hits[0]
}

/// Every file in `dir` with its bytes.
fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_store_it_cannot_write_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("readonly.db");
    drop(SqliteStore::open(&db).unwrap());
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&db).unwrap();
    // Root writes a 0444 file regardless, so as root the server runs as
    // `nobody` (setpriv, util-linux) on a copy of the binary in the
    // world-readable temp dir: the one way to a read-only file root also
    // honours on every file system (`chattr +i` needs ext4-like ones,
    // read-only bind mounts need CAP_SYS_ADMIN).
    let probe = dir.path().join("whoami");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    let (status, lines) = if root {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let bin = dir.path().join("portcullis");
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("running as root: this test needs setpriv (util-linux)");
        let inner = serve(&bin, &db);
        let mut cmd = Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(inner.get_args())
            .env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        refused(cmd)
    } else {
        refused(serve(Path::new(BIN), &db))
    };
    assert!(!status.success(), "{status:?}");
    the_line(&lines, &db, "not writable");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[tokio::test]
async fn a_second_server_on_a_store_in_use_is_refused_and_the_ban_survives() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let env = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "2"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let get = |s: &Server| {
        let url = s.url("/");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    let first = Server::start(&db, &env);
    get(&first).await;
    get(&first).await;
    assert_eq!(get(&first).await, 403, "banned on the first violation");
    let pid = first.child.id();

    let (db2, pid2) = (db.clone(), pid.to_string());
    let (status, lines) = tokio::task::spawn_blocking(move || {
        let mut cmd = serve(Path::new(BIN), &db2);
        for (k, v) in env {
            cmd.env(k, v);
        }
        refused(cmd)
    })
    .await
    .unwrap();
    assert!(!status.success(), "{status:?}");
    let line = the_line(&lines, &db, "in use by a running server");
    assert!(line.contains(&format!("pid {pid2}")), "{line}");

    // Another path to the same file meets the same lock.
    let alias = dir.path().join("alias.db");
    std::os::unix::fs::symlink(&db, &alias).unwrap();
    let alias2 = alias.clone();
    let (status, lines) =
        tokio::task::spawn_blocking(move || refused(serve(Path::new(BIN), &alias2)))
            .await
            .unwrap();
    assert!(!status.success(), "{status:?}");
    the_line(&lines, &alias, "in use by a running server");

    // The CLI's file mode is refused too, and says why.
    let out = Command::new(BIN)
        .args(["bans", "--json", "--db"])
        .arg(&db)
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&db.display().to_string())
            && err.contains("in use by a running server")
            && err.contains(&format!("pid {pid}"))
            && err.contains("--url"),
        "{err}"
    );

    // The first server is untouched, and its ban outlives a restart.
    assert_eq!(get(&first).await, 403);
    assert!(first.stop().success());
    let again = Server::start(&db, &env);
    assert_eq!(get(&again).await, 403, "the ban survived");
}

/// A foreign file: start-up must refuse it without writing a byte, leaving
/// no WAL, no new journal mode, no `user_version` or `application_id`.
fn assert_foreign_refused(setup: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(name);
    let (version, journal) = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(setup).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let j: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        (v, j)
    };
    let before = snapshot_dir(dir.path());
    let (status, lines) = refused(serve(Path::new(BIN), &db));
    assert!(!status.success(), "{status:?}");
    the_line(&lines, &db, "not a portcullis store");
    // Only the lock file is new; the database is byte-identical, no -wal.
    let mut after = snapshot_dir(dir.path());
    after.retain(|(p, _)| !p.to_string_lossy().ends_with(".lock"));
    assert_eq!(after, before, "nothing written next to or into {name}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let a: i64 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let j: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!((v, a, j), (version, 0, journal));
}

#[test]
fn another_programs_database_is_refused_untouched() {
    assert_foreign_refused(
        "CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT);
         INSERT INTO users VALUES ('alice', 'x');",
        "app.db",
    );
}

#[test]
fn a_database_with_a_clashing_user_version_is_refused_untouched() {
    assert_foreign_refused(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY);
         PRAGMA user_version = 1;",
        "clash.db",
    );
}

#[tokio::test]
async fn a_snapshot_keeps_rows_it_never_loaded_or_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("diff.db");
    let (store, loaded) = SqliteStore::open(&db).unwrap();
    let store = Arc::new(store);
    let opts = LimiterOptions {
        max_entries: 1_000,
        shards: 2,
        seed: Some(loaded.seed),
    };
    let limiter = Arc::new(Limiter::new(portcullis::Config::default(), opts).unwrap());
    let g = Guard::new(limiter.clone(), Some(store.clone()));
    let ours: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert!(g.ban(ours).await, "written through");
    // Someone else's row (e.g. written by a process that held the lock
    // before us and whose row we never loaded).
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute(
        "INSERT INTO entries VALUES (0, ?1, 0, '[]', '[]', NULL, 0, NULL, 1, NULL)",
        [[0xAAu8; 16].as_slice()],
    )
    .unwrap();
    let rows = || -> i64 {
        raw.query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(rows(), 2);
    let snap = || store.snapshot(limiter.export(portcullis::clock::wall()));
    snap().await.unwrap();
    assert_eq!(rows(), 2, "the snapshot kept the row it never saw");
    // Lifted in memory only: the snapshot deletes the row it wrote.
    limiter.lift(ours);
    snap().await.unwrap();
    assert_eq!(rows(), 1, "our lifted row is gone");
    let other: Vec<u8> = raw
        .query_row("SELECT addr FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(other, vec![0xAA; 16], "the other row is still there");
}

#[tokio::test]
async fn close_reports_a_failed_last_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fail.db");
    let (store, _) = SqliteStore::open(&db).unwrap();
    let rec = |i: u8| {
        let lim = Limiter::new(portcullis::Config::default(), LimiterOptions::default()).unwrap();
        lim.ban_at(
            std::net::IpAddr::from([192, 0, 2, i]),
            portcullis::clock::now(),
        );
        lim.export(portcullis::clock::wall())
    };
    store.snapshot(rec(1)).await.unwrap();
    // Break the file under the store: every snapshot from now on fails.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE entries")
        .unwrap();
    let err = store.snapshot(rec(2)).await.unwrap_err();
    assert!(err.to_string().contains("fail.db"), "{err}");
    let err = tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, portcullis::sqlite::StoreError::SnapshotFailed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("fail.db"), "{err}");
}

#[test]
fn a_store_from_before_application_id_still_opens_and_gets_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        // Version 1 exactly as earlier builds wrote it: no application_id.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE entries (
                 kind INTEGER NOT NULL, addr BLOB NOT NULL, user INTEGER NOT NULL,
                 log TEXT NOT NULL, violations TEXT NOT NULL, block_until INTEGER,
                 block_level INTEGER NOT NULL, last_block_start INTEGER,
                 banned INTEGER NOT NULL, lock_until INTEGER,
                 PRIMARY KEY (kind, addr, user)
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;
             INSERT INTO entries VALUES (0, zeroblob(16), 0, '[]', '[]', NULL, 0, NULL, 1, NULL);",
        )
        .unwrap();
    }
    let (store, loaded) = SqliteStore::open(&db).unwrap();
    assert_eq!(loaded.records.len(), 1);
    assert!(loaded.records[0].banned);
    store.close().unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let a: i64 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(a, i64::from(portcullis::sqlite::APPLICATION_ID));
}

#[tokio::test]
async fn a_failed_final_snapshot_makes_sigterm_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lost.db");
    let mut s = Server::start(&db, &[]);
    // A request log to save at shutdown.
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 200);
    // Break the file under the running server: the final snapshot fails.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE entries")
        .unwrap();
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = s.child.wait().unwrap();
    assert!(!status.success(), "the state was not saved: {status:?}");
    let lines = s.logs();
    let errors: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("portcullis: "))
        .collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(
        errors[0].contains("snapshot failed") && errors[0].contains("lost.db"),
        "{}",
        errors[0]
    );
}
