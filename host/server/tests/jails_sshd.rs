//! Log jails end to end (issue 26 items 2 and 3).
//!
//! `hydra_against_a_real_sshd_is_dropped_by_the_kernel`: Debian's OpenSSH
//! server, started by the test in a network namespace it creates (loopback
//! up, a veth pair to a second namespace for the attacker at 10.77.<n>.2;
//! the honest client logs in over the server namespace's loopback, from
//! 127.0.0.1), password login through PAM, logging to a file (`sshd -E`).
//! The test user is `pcjailtest` (created with `useradd` if missing, its
//! password set with `chpasswd` on every run). portcullis runs in the
//! server's namespace with `[firewall] kind = "nftables"` and follows the
//! log with the shipped `sshd` filter; THC-Hydra's `ssh` module guesses
//! with 4 tasks and a list whose right password comes well after
//! `max_failures`.
//!
//! What holds: exactly `max_failures` of the attacker's failure lines are
//! counted, then its address is locked and put in the kernel's set; sshd
//! logs at most `max_failures + 8` failed attempts from it (the 4 tasks'
//! attempts already sent when the lock lands: hydra's tasks guess in
//! step, each waits out PAM's failure delay, and the follower reads the
//! log every 200 ms; on a loaded machine one more round can start before
//! the kernel rule is in), a new connection from it gets no SYN-ACK and hydra
//! finds nothing; `/admin/bans`, the dashboard's data and `/metrics` name
//! the jail; the right password from the other address logs in (hydra:
//! `1 valid password found`).
//!
//! `a_restart_resumes_the_log_where_it_stopped`: the position saved in the
//! store: lines written while the server is down are counted once after
//! the restart, lines read before it are not counted again.
//!
//! `the_journal_source_resumes_after_its_cursor`: the journal source with a
//! stand-in `journalctl` (no journald runs here).
//!
//! The sshd test needs root, `ip`, `nft`, `sshd`, `ssh-keygen`, `hydra`,
//! `useradd`/`chpasswd`: under `CI=true` a missing one fails; otherwise the
//! test is skipped with the reason printed.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{connects, Netns};
use common::raw::Raw;
use common::{metrics_text, Server, BIN, TOKEN};

const USER: &str = "pcjailtest";
const RIGHT: &str = "pc-jail-Right-42";
const MAX_FAILURES: u32 = 5;
const TASKS: u32 = 4;
const PORTCULLIS: &str = "127.0.0.1:8080";

/// Why this machine cannot run the sshd test besides what [`Netns`]
/// checks (`None`: it can).
fn missing() -> Option<String> {
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/ssh-keygen",
        "/usr/bin/hydra",
        "/usr/sbin/useradd",
        "/usr/sbin/chpasswd",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} missing (install openssh-server, hydra, passwd)"
            ));
        }
    }
    None
}

/// The server's and the attacker's namespaces, or `None` (skip).
fn namespaces(test: &str) -> Option<(Netns, Netns)> {
    let srv = Netns::create_or_skip(test)?;
    let atk = Netns::create_or_skip(test)?;
    if let Some(why) = missing() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must run {test}: {why}"
        );
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    Some((srv, atk))
}

fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}: {st}");
}

/// sshd in the server's namespace, a veth pair to the attacker's; sshd is
/// stopped on drop (the namespaces go with their [`Netns`]).
struct Sshd {
    pid_file: PathBuf,
    log: PathBuf,
    attacker: String,
    target: String,
}

impl Sshd {
    fn start(dir: &Path, srv: &Netns, atk: &Netns) -> Sshd {
        let id = std::process::id();
        let net = 10 + id % 200;
        let (target, attacker) = (format!("10.77.{net}.1"), format!("10.77.{net}.2"));
        let (v0, v1) = (format!("pcj{id}v0"), format!("pcj{id}v1"));
        run(&[
            "ip", "link", "add", &v0, "netns", &srv.name, "type", "veth", "peer", "name", &v1,
            "netns", &atk.name,
        ]);
        for (ns, dev, addr) in [(srv, &v0, &target), (atk, &v1, &attacker)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])
                .unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
        }
        let s = Sshd {
            pid_file: dir.join("sshd.pid"),
            log: dir.join("sshd.log"),
            attacker,
            target,
        };
        user();
        s.sshd(dir, &srv.name);
        s
    }

    fn sshd(&self, dir: &Path, ns: &str) {
        let key = dir.join("host_ed25519");
        run(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            key.to_str().unwrap(),
        ]);
        std::fs::create_dir_all("/run/sshd").unwrap();
        let pid = format!("PidFile={}", self.pid_file.display());
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "/usr/sbin/sshd",
            "-f",
            "/dev/null",
            "-h",
            key.to_str().unwrap(),
            "-p",
            "2222",
            "-E",
            self.log.to_str().unwrap(),
            "-o",
            "PasswordAuthentication=yes",
            "-o",
            "UsePAM=yes",
            "-o",
            &pid,
            "-o",
            "MaxStartups=100",
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("Server listening")
        {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// The test user with its password (made if missing).
fn user() {
    let known = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    if !known.success() {
        run(&["useradd", "-M", "-s", "/bin/sh", USER]);
    }
    let mut c = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{USER}:{RIGHT}\n").as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

/// Hydra's `ssh` module from namespace `ns` against `target`: its output.
fn hydra(ns: &Netns, target: &str, passwords: &Path, tasks: u32) -> String {
    let out = Command::new("timeout")
        .args([
            "600", "ip", "netns", "exec", &ns.name, "hydra", "-I", "-w", "5", "-l", USER, "-P",
        ])
        .arg(passwords)
        .args(["-t", &tasks.to_string(), &format!("ssh://{target}:2222")])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn jail_config(dir: &Path, log: &Path, firewall: bool) -> PathBuf {
    let cfg = dir.join("portcullis.toml");
    let fw = if firewall {
        "[firewall]\nkind = \"nftables\"\n\n"
    } else {
        ""
    };
    let text = format!(
        "[login]\nmax_failures = {MAX_FAILURES}\nlock_for = \"1h\"\n\n{fw}[[jails]]\nname = \"sshd\"\nfilter = \"sshd\"\npath = {:?}\n",
        log.display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `portcullis serve --config cfg` in namespace `ns` on [`PORTCULLIS`].
fn serve_in(ns: &Netns, db: &Path, cfg: &Path) -> Server {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, BIN, "serve", "--config"])
        .arg(cfg)
        .env_clear()
        .env("PORTCULLIS_SERVER__LISTEN", PORTCULLIS)
        .env("PORTCULLIS_STORE__PATH", db)
        .env("PORTCULLIS_SERVER__ADMIN_TOKEN", TOKEN)
        .env("PORTCULLIS_LOG", "info")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Server::spawn(cmd, format!("http://{PORTCULLIS}"))
}

/// `GET path` on the admin API of the server in `ns`: the body.
fn admin_in(ns: &Netns, path: &str) -> String {
    let to: SocketAddr = PORTCULLIS.parse().unwrap();
    let a = ns.run(|| {
        Raw::get(path)
            .bearer(TOKEN)
            .send("127.0.0.1".parse().unwrap(), to)
            .unwrap()
    });
    assert_eq!(a.status, 200, "{path}: {}", a.text());
    a.text()
}

/// `portcullis_jail_lines_total{jail="sshd",outcome=…}` in `metrics`.
fn count(metrics: &str, outcome: &str) -> u64 {
    let want = format!("portcullis_jail_lines_total{{jail=\"sshd\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&want).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Poll `f` until it holds (60 s at most: a bound, not a timing claim).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn failed_lines(log: &Path, from: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    let n = text
        .lines()
        .filter(|l| l.starts_with("Failed password") && l.contains(&format!(" from {from} ")))
        .count();
    n as u64
}

#[test]
fn hydra_against_a_real_sshd_is_dropped_by_the_kernel() {
    let test = "hydra_against_a_real_sshd_is_dropped_by_the_kernel";
    let Some((srv, atk)) = namespaces(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = jail_config(dir.path(), &dir.path().join("sshd.log"), true);
    // Started before sshd: the log appears later and is read from its start.
    let s = serve_in(&srv, &dir.path().join("p.db"), &cfg);
    let sshd = Sshd::start(dir.path(), &srv, &atk);
    let list = dir.path().join("passwords.txt");
    let mut words: Vec<String> = (1..=24).map(|i| format!("wrong-{i}")).collect();
    words.push(RIGHT.into());
    std::fs::write(&list, words.join("\n") + "\n").unwrap();

    let attack = hydra(&atk, &sshd.target, &list, TASKS);
    let logged = failed_lines(&sshd.log, &sshd.attacker);
    let m = admin_in(&srv, "/metrics");
    eprintln!(
        "hydra -t {TASKS}: sshd logged {logged} failed attempts from the attacker (max_failures {MAX_FAILURES}); hydra: {}",
        attack.lines().filter(|l| l.contains("valid password")).collect::<Vec<_>>().join(" | ")
    );
    assert!(
        !attack.contains(RIGHT) && !attack.contains("1 valid password found"),
        "{attack}"
    );
    assert_eq!(count(&m, "failure"), u64::from(MAX_FAILURES), "{m}");
    // In flight when the lock lands: the other guesses of hydra's round
    // (each waits out PAM's ~2 s delay), and on a loaded machine (a full
    // parallel test run: 12 seen, 8 when idle) at most one more round
    // started before the kernel rule was in. Far below the 25th guess.
    assert!(
        logged >= u64::from(MAX_FAILURES) && logged <= u64::from(MAX_FAILURES + 2 * TASKS),
        "{logged}"
    );
    assert_eq!(
        count(&m, "refused"),
        logged - u64::from(MAX_FAILURES),
        "{m}"
    );
    assert!(
        m.contains("portcullis_jail_locks_total{jail=\"sshd\"} 1"),
        "{m}"
    );
    assert_eq!(
        srv.elements("portcullis", "addr4"),
        [sshd.attacker.as_str()]
    );
    let attacker: IpAddr = sshd.attacker.parse().unwrap();
    let target: SocketAddr = format!("{}:2222", sshd.target).parse().unwrap();
    assert!(
        !atk.run(|| connects(attacker, target, Duration::from_millis(1500))),
        "no SYN-ACK"
    );

    let bans: serde_json::Value = serde_json::from_str(&admin_in(&srv, "/admin/bans")).unwrap();
    let row = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ip"] == sshd.attacker.as_str())
        .unwrap_or_else(|| panic!("attacker not in /admin/bans: {bans}"));
    assert_eq!(
        (&row["jail"], &row["reason"]),
        (&"sshd".into(), &"ip_locked".into()),
        "{row}"
    );
    let ui: serde_json::Value = serde_json::from_str(&admin_in(&srv, "/admin/ui/data")).unwrap();
    assert!(
        ui["bans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ip"] == sshd.attacker.as_str() && r["jail"] == "sshd"),
        "{ui}"
    );

    // The honest client, from another address, with the right password.
    let right = dir.path().join("right.txt");
    std::fs::write(&right, format!("{RIGHT}\n")).unwrap();
    let honest = hydra(&srv, "127.0.0.1", &right, 1);
    assert!(honest.contains("1 valid password found"), "{honest}");
    wait_for("the success line", || {
        count(&admin_in(&srv, "/metrics"), "success") >= 1
    });
    assert!(!admin_in(&srv, "/admin/bans").contains("\"127.0.0.1\""));
    drop(s);
}

/// `portcullis_jail_lines_total{jail="sshd",outcome=…}` of a server on
/// the host's loopback.
async fn lines(s: &Server, outcome: &str) -> u64 {
    count(&metrics_text(s).await, outcome)
}

/// Wait until `cond` holds (the follower polls every 200 ms).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restart_resumes_the_log_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let cfg = jail_config(dir.path(), &log, false);
    let db = dir.path().join("p.db");
    let append = |n: std::ops::Range<u32>| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for i in n {
            writeln!(f, "Failed password for root from 192.0.2.{i} port 22 ssh2").unwrap();
        }
    };
    let s = Server::start_with(&db, &[], Some(&cfg));
    append(1..3);
    until("2 lines", || async { lines(&s, "failure").await == 2 }).await;
    assert!(s.stop().success());
    append(3..6);
    let s = Server::start_with(&db, &[], Some(&cfg));
    until("3 more lines", || async { lines(&s, "failure").await >= 3 }).await;
    append(6..7);
    until("1 more line", || async { lines(&s, "failure").await >= 4 }).await;
    // Neither the two lines read before the restart again, nor any skipped.
    assert_eq!(lines(&s, "failure").await, 4);
}

/// The journal source's plumbing, with a stand-in `journalctl` on `PATH`
/// (no journald runs here): its JSON entries are fed (one stamped in the
/// future is skipped), and after a restart it is asked to resume after the
/// last cursor handled.
#[tokio::test]
async fn the_journal_source_resumes_after_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = d.join("args");
    let entry = |c: &str, us: u64, ip: &str| {
        format!(
            r#"{{"__CURSOR":"{c}","__REALTIME_TIMESTAMP":"{us}","MESSAGE":"Failed password for root from {ip} port 1 ssh2"}}"#
        )
    };
    let past = 1_700_000_000_000_000u64;
    let entries = [
        entry("c1", past, "192.0.2.50"),
        entry("c2", past + 1, "192.0.2.51"),
        entry("c3", 99_999_999_999_000_000, "192.0.2.52"),
    ];
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {args:?}\nif [ \"$(wc -l < {args:?})\" = 1 ]; then\n{}fi\nexec sleep 1000\n",
        entries.iter().map(|e| format!("echo '{e}'\n")).collect::<String>()
    );
    let fake = d.join("journalctl");
    std::fs::write(&fake, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = d.join("portcullis.toml");
    std::fs::write(
        &cfg,
        "[[jails]]\nname = \"sshd\"\nfilter = \"sshd\"\njournal_unit = \"ssh.service\"\n",
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", d.display());
    let env = [("PATH", path.as_str())];
    let s = Server::start_with(&d.join("p.db"), &env, Some(&cfg));
    until("the entries", || async {
        lines(&s, "failure").await == 2 && lines(&s, "future").await == 1
    })
    .await;
    assert!(s.stop().success());
    let s = Server::start_with(&d.join("p.db"), &env, Some(&cfg));
    until("the second journalctl", || async {
        std::fs::read_to_string(&args)
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    })
    .await;
    let called = std::fs::read_to_string(&args).unwrap();
    let called: Vec<&str> = called.lines().collect();
    assert_eq!(called[0], "-f -o json --no-pager -u ssh.service -n 0");
    assert_eq!(
        called[1],
        "-f -o json --no-pager -u ssh.service --after-cursor=c3"
    );
    assert_eq!(lines(&s, "failure").await, 0);
}
