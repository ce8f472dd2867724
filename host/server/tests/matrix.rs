//! The test matrix of issue 22 (item 8): every guard × every mode × the
//! path spellings an attacker tries, from one harness (`tests/common`).
//!
//! Guards: manual ban of an address, manual range, denylist (from the
//! config and added by reload), the request quota, a `[[policies]]` quota,
//! login lockout (and, in proxy mode, its login route added by reload),
//! hidden lock (`login.reveal_lock = false`, from the config and by
//! reload). A manual decision refuses every path but leaves the admin API
//! to the token (the operator can lift a ban of their own address); the
//! lists refuse the admin API too. Modes: demo,
//! proxy (and proxy with `[requests] shadow = true` for the manual
//! decisions and lists, which shadow must not switch off), forward-auth
//! through real nginx and through real Caddy (the shipped snippets).
//!
//! One test function per guard; each loops over modes and spellings and
//! collects every failing cell into one assertion message (mode, spelling,
//! expected, got, what the application saw). Each cell asserts what the
//! application saw: whether the request reached it, whether its password
//! was checked, and for a forwarded request that no client-sent
//! forwarding header (`Forwarded`, `X-Real-IP`, `True-Client-IP`,
//! `X-Client-IP`, `X-Cluster-Client-IP`, `CF-Connecting-IP`,
//! `X-Forwarded-For`) reached it and that `X-Forwarded-For` (and in proxy
//! mode `Forwarded`) names the real client. A request the front proxy or
//! portcullis answers `400` without the application seeing it is a
//! refusal, accepted wherever a refusal is (a target that cannot be
//! understood may be refused, never judged by a laxer rule).
//!
//! In forward-auth modes the application is an integrated one: it checks
//! the password, reports the result to `/v1/login-result` (the client
//! being the last `X-Forwarded-For` entry it got, else `X-Real-IP`) and
//! refuses a login portcullis says is locked. The keys the one pipeline
//! adds (`[forward_auth] proxy`, `[server] metrics_token`) are written
//! into the config when the server knows them and left out otherwise;
//! `config_keys_of_the_pipeline` fails until it knows them.
//!
//! Every cell has state of its own: a distinct 127.x.y.z client address
//! (the client socket is bound to it before it connects), and per mode a
//! fresh server. Every cell line is printed (`MATRIX guard | mode |
//! spelling | PASS/FAIL`), so `--no-capture` shows the whole table.

use std::net::IpAddr;

mod common;
use common::raw::{Answer, Raw};
use common::stack::{Mode, Spec, Stack};
use common::upstream::{Seen, RIGHT};

// ------------------------------------------------------------ the table

/// The cells of one guard and the failing ones.
struct Table {
    guard: &'static str,
    cells: usize,
    fails: Vec<String>,
}

impl Table {
    fn new(guard: &'static str) -> Self {
        Table {
            guard,
            cells: 0,
            fails: Vec::new(),
        }
    }

    fn cell(&mut self, mode: Mode, spelling: &str, r: Result<(), String>) {
        self.cells += 1;
        let verdict = match &r {
            Ok(()) => "PASS".to_string(),
            Err(e) => format!("FAIL {e}"),
        };
        eprintln!(
            "MATRIX {} | {} | {spelling} | {verdict}",
            self.guard,
            mode.name()
        );
        if let Err(e) = r {
            self.fails
                .push(format!("[{}] {spelling}: {e}", mode.name()));
        }
    }

    fn finish(self) {
        assert!(
            self.fails.is_empty(),
            "guard {}: {} of {} cells fail:\n  {}",
            self.guard,
            self.fails.len(),
            self.cells,
            self.fails.join("\n  ")
        );
    }
}

// ------------------------------------------------------------ spellings

/// A request as the client writes it.
#[derive(Clone)]
struct Sp {
    method: &'static str,
    target: Vec<u8>,
    /// Sent to portcullis itself (its own routes), not the front proxy.
    direct: bool,
    /// Extra headers (a client-sent `X-Original-URI`, say).
    headers: Vec<(&'static str, &'static str)>,
    /// A login body is sent (`POST` spellings of the login route).
    login: bool,
}

impl Sp {
    fn get(target: &str) -> Sp {
        Sp {
            method: "GET",
            target: target.as_bytes().to_vec(),
            direct: false,
            headers: Vec::new(),
            login: false,
        }
    }

    fn login(method: &'static str, target: &str) -> Sp {
        Sp {
            method,
            login: true,
            ..Sp::get(target)
        }
    }

    fn label(&self) -> String {
        let t: String = self
            .target
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02X}")
                }
            })
            .collect();
        let mut l = format!("{} {t}", self.method);
        for (k, v) in &self.headers {
            l.push_str(&format!(" +{k}: {v}"));
        }
        if self.direct {
            l.push_str(" (to portcullis)");
        }
        l
    }
}

/// The spellings of the `[[policies]]` prefix `/api`.
fn api_spellings() -> Vec<Sp> {
    let mut v: Vec<Sp> = [
        "/api/items",
        "//api/items",
        "/API/items",
        "/%61pi/items",
        "/./api/items",
        "/x/../api/items",
        "/api/items;a=b",
    ]
    .into_iter()
    .map(Sp::get)
    .collect();
    // Raw `<`, `"` and 0xFF in the query, unescaped.
    v.push(Sp {
        target: b"/api/items?x=<\"\xFF".to_vec(),
        ..Sp::get("")
    });
    v
}

/// The spellings of the login route `POST /login`.
fn login_spellings() -> Vec<Sp> {
    vec![
        Sp::login("POST", "/login"),
        Sp::login("post", "/login"),
        Sp::login("POST", "/login/"),
        Sp::login("POST", "/login.json"),
        Sp::login("POST", "//Login"),
    ]
}

/// The admin-prefix escape: under portcullis's prefix, normalising to
/// the application's `/secret`.
fn escape(st: &Stack) -> Sp {
    let p = if st.prefix().is_empty() {
        "/admin/../secret".to_string()
    } else {
        format!("{}/admin/../../secret", st.prefix())
    };
    Sp::get(&p)
}

/// portcullis's own `/metrics`, asked directly.
fn metrics_route(st: &Stack) -> Sp {
    Sp {
        direct: true,
        ..Sp::get(&format!("{}/metrics", st.prefix()))
    }
}

/// The admin token of the harness as a header value.
const BEARER: &str = "Bearer test-admin-token";

/// portcullis's own `/admin/status`, asked directly (with the admin
/// token when `token`).
fn admin_route(st: &Stack, token: bool) -> Sp {
    let mut sp = Sp {
        direct: true,
        ..Sp::get(&format!("{}/admin/status", st.prefix()))
    };
    debug_assert_eq!(BEARER, format!("Bearer {}", common::TOKEN));
    if token {
        sp.headers.push(("authorization", BEARER));
    }
    sp
}

// ------------------------------------------------------------- requests

/// Client-sent forwarding headers, each carrying the client's spoof address.
const SPOOF_HEADERS: [&str; 7] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "x-forwarded-for",
];

/// A client: its real (bound) address and the address it claims.
#[derive(Clone)]
struct Client {
    ip: IpAddr,
    spoof: String,
}

impl Client {
    fn new(a: u8, b: u8, c: u8) -> Client {
        Client {
            ip: IpAddr::from([127, a, b, c]),
            spoof: format!("198.18.{b}.{c}"),
        }
    }
}

/// What one request got and what the application saw of it.
struct Sent {
    answer: Result<Answer, String>,
    seen: Vec<Seen>,
    app: bool,
}

impl Sent {
    fn status(&self) -> u16 {
        self.answer.as_ref().map(|a| a.status).unwrap_or(0)
    }

    /// Whether the application got it (demo: whether the demo service
    /// answered rather than a guard).
    fn reached(&self) -> bool {
        if self.app {
            !self.seen.is_empty()
        } else {
            self.answer.is_ok() && !matches!(self.status(), 403 | 429 | 503)
        }
    }

    /// Whether the application checked a password (demo: whether the
    /// demo login answered as a check does, 200 or 401).
    fn checked(&self) -> bool {
        if self.app {
            self.seen.iter().any(|s| s.login.is_some())
        } else {
            matches!(self.status(), 200 | 401)
        }
    }

    fn got(&self) -> String {
        let mut g = match &self.answer {
            Ok(a) => {
                let body: String = a.text().chars().take(60).collect();
                let retry = a
                    .header("retry-after")
                    .map(|r| format!(" retry-after={r}"))
                    .unwrap_or_default();
                format!("{}{retry} {:?}", a.status, body.trim())
            }
            Err(e) => format!("no answer ({e})"),
        };
        if self.app {
            let seen: Vec<String> = self.seen.iter().map(Seen::short).collect();
            g.push_str(&format!("; app saw {seen:?}"));
        }
        g
    }
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Send `sp` as `c` (with every spoof header and a tag the upstream
/// records) and collect what the application saw of it.
fn send(st: &Stack, c: &Client, sp: &Sp, body: Option<serde_json::Value>) -> Sent {
    let tag = format!("m{}", SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let mut r = Raw::new(sp.method, &sp.target).header("x-matrix-cell", &tag);
    for h in SPOOF_HEADERS {
        let v = if h == "forwarded" {
            format!("for={}", c.spoof)
        } else {
            c.spoof.clone()
        };
        r = r.header(h, &v);
    }
    for (k, v) in &sp.headers {
        r = r.header(k, v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let to = if sp.direct {
        st.pc_addr()
    } else {
        st.app_addr()
    };
    let answer = r.send(c.ip, to);
    Sent {
        answer,
        seen: st.up.seen_cell(&tag),
        app: st.mode.has_app(),
    }
}

/// The login body for `user` with `password`.
fn creds(user: &str, password: &str) -> serde_json::Value {
    serde_json::json!({"username": user, "password": password})
}

/// A wrong login for spellings that carry one, else no body.
fn body_for(sp: &Sp) -> Option<serde_json::Value> {
    sp.login.then(|| creds("bob", "wrong"))
}

// ----------------------------------------------------------- expectations

/// Refused with `code` (or 400), and the application saw nothing.
fn refused(s: &Sent, code: u16) -> Result<(), String> {
    let st = s.status();
    if s.seen.is_empty() && (st == code || st == 400) {
        return Ok(());
    }
    Err(format!(
        "expected {code}, unseen by the app; got {}",
        s.got()
    ))
}

/// Reached the application with honest forwarding headers (or refused
/// as `400` unseen: a target that cannot be understood).
fn reached(mode: Mode, s: &Sent, c: &Client) -> Result<(), String> {
    if !s.reached() {
        if s.status() == 400 && s.seen.is_empty() {
            return Ok(());
        }
        return Err(format!("expected to reach the app; got {}", s.got()));
    }
    match s.seen.first() {
        Some(seen) => forwarded_ok(mode, seen, c),
        None => Ok(()),
    }
}

/// Whether the forwarding headers the application sees are checked in
/// forward-auth modes too. There the front proxy (the shipped snippet in
/// `docs/forward-auth/`) decides what reaches the application, so a
/// failure names the snippet, not portcullis's proxy: today nginx's
/// `proxy_pass` passes every client header on and sets no
/// `X-Forwarded-For`, Caddy sets `X-Forwarded-For` but passes the rest on.
const CHECK_FRONT_PROXY_HEADERS: bool = true;

/// No client-sent forwarding header reached the app; `X-Forwarded-For`
/// ends in the client, and `Forwarded` names it (required in proxy mode).
fn forwarded_ok(mode: Mode, seen: &Seen, c: &Client) -> Result<(), String> {
    if mode.forward_auth() && !CHECK_FRONT_PROXY_HEADERS {
        return Ok(());
    }
    let mut errs = Vec::new();
    let passed: Vec<&str> = SPOOF_HEADERS
        .into_iter()
        .filter(|h| seen.all(h).iter().any(|v| v.contains(&c.spoof)))
        .collect();
    if !passed.is_empty() {
        errs.push(format!("client-sent {} reached the app", passed.join(", ")));
    }
    let xff = seen.all("x-forwarded-for");
    let last = xff.last().and_then(|v| v.rsplit(',').next()).map(str::trim);
    if last != Some(c.ip.to_string().as_str()) {
        errs.push(format!(
            "X-Forwarded-For {xff:?} does not end in the client"
        ));
    }
    let fwd = seen.all("forwarded");
    let names =
        |v: &&str| v.contains(&format!("for={}", c.ip)) || v.contains(&format!("for=\"{}\"", c.ip));
    if (mode.is_proxy() || !fwd.is_empty()) && !fwd.iter().any(names) {
        errs.push("no Forwarded naming the client".to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("headers: {}", errs.join("; ")))
    }
}

/// The errors of a cell's checks, each once, with the steps it failed at
/// (`checks[i]` is step `i + 1`).
fn all(checks: Vec<Result<(), String>>) -> Result<(), String> {
    let mut errs: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in checks.into_iter().enumerate() {
        let Err(e) = r else { continue };
        match errs.iter_mut().find(|(m, _)| *m == e) {
            Some((_, steps)) => steps.push(i + 1),
            None => errs.push((e, vec![i + 1])),
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = errs
        .into_iter()
        .map(|(e, steps)| {
            let steps: Vec<String> = steps.iter().map(usize::to_string).collect();
            format!("step {}: {e}", steps.join(","))
        })
        .collect();
    Err(parts.join(" | "))
}

// ---------------------------------------------- manual decisions & lists

/// How the admin API treats a refused address.
#[derive(Clone, Copy, PartialEq)]
enum Admin {
    /// Refused like every other path (the lists: global, every table).
    Refused,
    /// Still served to the token (a manual decision: the operator whose
    /// own address it covers can still lift it, as the issue keeps).
    Served,
}

/// Every spelling from `c` is refused with 403 and unseen (the admin API
/// as `admin` says).
fn refused_everywhere(t: &mut Table, st: &Stack, row: &str, c: &Client, admin: Admin) {
    let mut sps = vec![Sp::get("/"), Sp::get("/secret")];
    sps.extend(api_spellings());
    sps.push(escape(st));
    sps.extend(login_spellings());
    sps.push(metrics_route(st));
    if admin == Admin::Refused {
        sps.push(admin_route(st, false));
    }
    for sp in sps {
        let s = send(st, c, &sp, body_for(&sp));
        t.cell(st.mode, &format!("{row}{}", sp.label()), refused(&s, 403));
    }
    if admin == Admin::Served {
        let sp = admin_route(st, true);
        let s = send(st, c, &sp, None);
        let ok = (s.status() == 200)
            .then_some(())
            .ok_or_else(|| format!("expected 200 (the operator can lift it); got {}", s.got()));
        t.cell(st.mode, &format!("{row}{}", sp.label()), ok);
    }
}

/// Control: another client is served (the stack works; a failure here
/// is the harness's, not a guard's).
fn control(t: &mut Table, st: &Stack, c: &Client) {
    let s = send(st, c, &Sp::get("/"), None);
    let ok = (s.reached() && s.status() == 200)
        .then_some(())
        .ok_or_else(|| format!("expected 200 from the app; got {}", s.got()));
    t.cell(st.mode, "control: another client GET /", ok);
}

/// The address guards' stacks have `[[policies]]` on `/api` and
/// `POST /login` (lax: the manual decisions and lists must hold on
/// policy routes too).
const ADDRESS_POLICIES: &str = "[[policies]]\nname = \"api\"\nprefix = \"/api\"\n[policies.requests]\nmax_requests = 50\n\n\
[[policies]]\nname = \"login-posts\"\nprefix = \"/login\"\nmethods = [\"POST\"]\n[policies.requests]\nmax_requests = 50\n";

fn address_spec(lists: &str) -> Spec {
    Spec {
        tables: format!("{lists}\n{ADDRESS_POLICIES}"),
        ..Spec::default()
    }
}

fn address_modes() -> Vec<Mode> {
    let mut m = Mode::ALL.to_vec();
    m.insert(2, Mode::ProxyShadow);
    m
}

#[test]
fn guard_manual_ban() {
    let mut t = Table::new("manual_ban");
    for (i, mode) in address_modes().into_iter().enumerate() {
        let Some(st) = Stack::start(mode, address_spec("")) else {
            continue;
        };
        let c = Client::new(10, i as u8, 9);
        st.ban(&c.ip.to_string());
        refused_everywhere(&mut t, &st, "", &c, Admin::Served);
        control(&mut t, &st, &Client::new(10, i as u8, 10));
    }
    t.finish();
}

#[test]
fn guard_manual_range() {
    let mut t = Table::new("manual_range");
    for mode in address_modes() {
        let Some(st) = Stack::start(mode, address_spec("")) else {
            continue;
        };
        st.ban("127.11.0.0/16");
        refused_everywhere(&mut t, &st, "", &Client::new(11, 0, 9), Admin::Served);
        control(&mut t, &st, &Client::new(12, 0, 10));
    }
    t.finish();
}

const DENY: &str = "[lists]\ndeny = [\"127.12.0.0/24\"]\n";
const DENY_RELOADED: &str = "[lists]\ndeny = [\"127.12.0.0/24\", \"127.12.1.0/24\"]\n";

#[test]
fn guard_denylist() {
    let mut t = Table::new("denylist");
    for mode in address_modes() {
        let Some(mut st) = Stack::start(mode, address_spec(DENY)) else {
            continue;
        };
        refused_everywhere(
            &mut t,
            &st,
            "config: ",
            &Client::new(12, 0, 9),
            Admin::Refused,
        );
        let a = st.reload_with(&address_spec(DENY_RELOADED).tables);
        let ok = (a.status == 200)
            .then_some(())
            .ok_or_else(|| format!("reload answered {} {}", a.status, a.text()));
        t.cell(mode, "reload accepted", ok);
        refused_everywhere(
            &mut t,
            &st,
            "reload: ",
            &Client::new(12, 1, 9),
            Admin::Refused,
        );
        control(&mut t, &st, &Client::new(12, 2, 10));
    }
    t.finish();
}

// ----------------------------------------------------------------- quotas

/// `n` requests of `sp` reach the app, the next is refused with 429.
fn quota_cell(st: &Stack, c: &Client, sp: &Sp, n: usize) -> Result<(), String> {
    let mut checks = Vec::new();
    for _ in 0..n {
        let s = send(st, c, sp, body_for(sp));
        checks.push(reached(st.mode, &s, c));
    }
    let s = send(st, c, sp, body_for(sp));
    checks.push(refused(&s, 429));
    all(checks)
}

const REQUESTS: &str = "[requests]\nmax_requests = 3\nwindow = \"60s\"\nban_after = 0\n";

#[test]
fn guard_request_quota() {
    let mut t = Table::new("request_quota");
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let spec = Spec {
            tables: REQUESTS.into(),
            ..Spec::default()
        };
        let Some(st) = Stack::start(mode, spec) else {
            continue;
        };
        let mut sps = vec![Sp::get("/"), Sp::get("/secret")];
        sps.extend(api_spellings());
        sps.push(escape(&st));
        sps.extend(login_spellings());
        for (k, sp) in sps.iter().enumerate() {
            let c = Client::new(13, i as u8, k as u8 + 1);
            t.cell(mode, &sp.label(), quota_cell(&st, &c, sp, 3));
        }
    }
    t.finish();
}

const POLICIES: &str = "[requests]\nmax_requests = 50\nwindow = \"60s\"\nban_after = 0\n\n\
[[policies]]\nname = \"api\"\nprefix = \"/api\"\n[policies.requests]\nmax_requests = 2\nwindow = \"60s\"\n\n\
[[policies]]\nname = \"login-posts\"\nprefix = \"/login\"\nmethods = [\"POST\"]\n[policies.requests]\nmax_requests = 2\nwindow = \"60s\"\n";

#[test]
fn guard_policy_quota() {
    let mut t = Table::new("policy_quota");
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let spec = Spec {
            tables: POLICIES.into(),
            ..Spec::default()
        };
        let Some(st) = Stack::start(mode, spec) else {
            continue;
        };
        let mut sps = api_spellings();
        sps.extend(login_spellings());
        // A client naming a laxer original request (Caddy passes client
        // headers on to forward_auth).
        sps.push(Sp {
            headers: vec![
                ("x-original-uri", "/"),
                ("x-original-method", "GET"),
                ("x-forwarded-uri", "/"),
                ("x-forwarded-method", "GET"),
            ],
            ..Sp::login("POST", "/login")
        });
        for (k, sp) in sps.iter().enumerate() {
            let c = Client::new(14, i as u8, k as u8 + 1);
            t.cell(mode, &sp.label(), quota_cell(&st, &c, sp, 2));
        }
        if mode == Mode::Caddy {
            let c = Client::new(14, i as u8, 200);
            t.cell(
                mode,
                "/check asked as Caddy asks it, with a client-sent X-Original-URI: / and X-Original-Method: GET",
                caddy_check_cell(&st, &c),
            );
        }
    }
    t.finish();
}

/// `/check` asked directly as Caddy's `forward_auth` asks it for
/// `POST /login` (`X-Forwarded-Method`/`-Uri`/`-For`), with the laxer
/// `X-Original-*` a client sent passed on: the `login-posts` quota (2)
/// applies, `204 204 429`.
fn caddy_check_cell(st: &Stack, c: &Client) -> Result<(), String> {
    let mut got = Vec::new();
    for _ in 0..3 {
        let a = Raw::get("/check")
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-uri", "/login")
            .header("x-forwarded-for", &c.ip.to_string())
            .header("x-original-method", "GET")
            .header("x-original-uri", "/")
            .send(IpAddr::from([127, 0, 0, 1]), st.pc_addr());
        got.push(a.map(|a| a.status).unwrap_or(0));
    }
    (got == [204, 204, 429])
        .then_some(())
        .ok_or_else(|| format!("expected [204, 204, 429]; got {got:?}"))
}

// ------------------------------------------------------------------ login

const MAX_FAILURES: usize = 3;

/// The login configuration; `reveal` is `login.reveal_lock`.
fn login_spec(mode: Mode, reveal: bool) -> Spec {
    let mut tables = format!(
        "[login]\nmax_failures = {MAX_FAILURES}\nfailure_window = \"10m\"\nlock_for = \"10m\"\n\
         account_max_failures = 0\nargon2_memory_kib = 1024\nargon2_iterations = 1\nreveal_lock = {reveal}\n\n\
         [penalty]\nbase = \"1ms\"\nmultiplier = 1\nmax = \"1ms\"\n\n"
    );
    if mode == Mode::Demo {
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let hash = portcullis_server::passwords::hash_password_with(RIGHT, &params).unwrap();
        tables.push_str(&format!(
            "[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n"
        ));
    }
    if mode != Mode::Demo {
        // Proxy mode settles logins on it; forward-auth's endpoint refuses
        // a locked address on it before the application checks anything.
        tables.push_str(
            "[[login_routes]]\nmethod = \"POST\"\npath = \"/login\"\nusername = \"username\"\n",
        );
    }
    Spec {
        tables,
        metrics_token: !reveal,
        ..Spec::default()
    }
}

/// `MAX_FAILURES` wrong passwords (spelling `wrong[i]`), then the right
/// one (spelling `right`), as `c`: the answers.
fn attack(st: &Stack, c: &Client, wrong: &[Sp], right: &Sp) -> (Vec<Sent>, Sent) {
    let fails = (0..MAX_FAILURES)
        .map(|i| {
            let sp = &wrong[i % wrong.len()];
            send(st, c, sp, Some(creds("alice", &format!("guess-{i}"))))
        })
        .collect();
    let last = send(st, c, right, Some(creds("alice", RIGHT)));
    (fails, last)
}

/// The wrong guesses did not get in, and what reached the app carried
/// honest forwarding headers.
fn guesses_ok(st: &Stack, c: &Client, fails: &[Sent]) -> Vec<Result<(), String>> {
    fails
        .iter()
        .map(|s| {
            if s.status() == 200 || s.answer.is_err() {
                Err(format!("expected a refusal; got {}", s.got()))
            } else if s.reached() && st.mode.has_app() {
                reached(st.mode, s, c)
            } else {
                Ok(())
            }
        })
        .collect()
}

/// Whether the guesses were all checked (the lock is then due): a
/// spelling the application does not route to its login (the demo's
/// exact routes) checks nothing and locks nothing.
fn lock_due(fails: &[Sent]) -> bool {
    fails.iter().all(Sent::checked)
}

/// The login cells of one stack: each spelling alone, and one mixed run.
fn login_cells(a: u8, i: u8) -> Vec<(String, Client, Vec<Sp>, Sp)> {
    let sps = login_spellings();
    let mut cells: Vec<(String, Client, Vec<Sp>, Sp)> = sps
        .iter()
        .enumerate()
        .map(|(k, sp)| {
            (
                sp.label(),
                Client::new(a, i, k as u8 + 1),
                vec![sp.clone()],
                sp.clone(),
            )
        })
        .collect();
    cells.push((
        "mixed: POST /login/, /login.json, //Login, then the right one to /login".into(),
        Client::new(a, i, 100),
        vec![sps[2].clone(), sps[3].clone(), sps[4].clone()],
        sps[0].clone(),
    ));
    cells
}

/// The lockout cells of one stack, labelled `row`, clients 127.`a`.`i`.*.
fn lockout_cells(t: &mut Table, st: &Stack, row: &str, a: u8, i: u8) {
    for (label, c, wrong, right) in login_cells(a, i) {
        let before = st.up.logins();
        let (fails, last) = attack(st, &c, &wrong, &right);
        let checks = st.up.logins() - before;
        let mut r = guesses_ok(st, &c, &fails);
        let locked = last.answer.is_ok() && last.status() != 200 && !last.checked();
        r.push((locked || !lock_due(&fails)).then_some(()).ok_or_else(|| {
            format!(
                "right password: expected a refusal (429) without a password check; got {}",
                last.got()
            )
        }));
        r.push(
            (checks <= MAX_FAILURES).then_some(()).ok_or_else(|| {
                format!("the app checked {checks} passwords (at most {MAX_FAILURES})")
            }),
        );
        t.cell(st.mode, &format!("{row}{label}"), all(r));
    }
}

/// Rewrite the config to `tables` and reload: a cell of its own.
fn reload_cell(t: &mut Table, st: &mut Stack, tables: &str) {
    let a = st.reload_with(tables);
    let ok = (a.status == 200)
        .then_some(())
        .ok_or_else(|| format!("reload answered {} {}", a.status, a.text()));
    t.cell(st.mode, "reload accepted", ok);
}

#[test]
fn guard_login_lockout() {
    let mut t = Table::new("login_lockout");
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let Some(st) = Stack::start(mode, login_spec(mode, true)) else {
            continue;
        };
        lockout_cells(&mut t, &st, "", 15, i as u8);
        if !mode.is_proxy() {
            continue;
        }
        // The login route added by reload.
        let full = login_spec(mode, true);
        let (without, _) = full
            .tables
            .split_at(full.tables.find("[[login_routes]]").unwrap());
        let spec = Spec {
            tables: without.to_string(),
            ..full.clone()
        };
        let Some(mut st) = Stack::start(mode, spec) else {
            continue;
        };
        reload_cell(&mut t, &mut st, &full.tables);
        lockout_cells(&mut t, &st, "reload: ", 15, i as u8 + 10);
    }
    t.finish();
}

/// The sum of every sample naming `pair_locked` or `ip_locked` on an
/// anonymous `/metrics` (0 when it is not served to anonymous scrapers).
fn lock_samples(st: &Stack) -> (f64, String) {
    let a = st.metrics_anonymous();
    if a.status != 200 {
        return (0.0, format!("anonymous /metrics: {}", a.status));
    }
    let text = a.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains("pair_locked") || l.contains("ip_locked"))
        .collect();
    let sum = lines
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (sum, lines.join("; "))
}

/// The locked attempt looks like the last checked wrong one.
fn looks_like_a_miss(fails: &[Sent], last: &Sent) -> Result<(), String> {
    let Some(miss) = fails.iter().rev().find(|s| s.checked()) else {
        return Ok(());
    };
    let (Ok(m), Ok(l)) = (&miss.answer, &last.answer) else {
        return Err(format!(
            "no answer: miss {} / locked {}",
            miss.got(),
            last.got()
        ));
    };
    if m.status == 400 && l.status == 400 {
        return Ok(());
    }
    let mut errs = Vec::new();
    if l.status != m.status || l.body != m.body {
        errs.push(format!(
            "locked answered {} where a miss answered {}",
            last.got(),
            miss.got()
        ));
    }
    if l.header("retry-after").is_some() {
        errs.push(format!("locked answer has Retry-After: {}", last.got()));
    }
    if l.status == 200 {
        errs.push("the right password got in".to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join(", "))
    }
}

/// The hidden-lock cells of one stack, labelled `row`, clients
/// 127.`a`.`i`.*, and the anonymous `/metrics` over them.
fn hidden_cells(t: &mut Table, st: &Stack, row: &str, a: u8, i: u8) {
    let (before, _) = lock_samples(st);
    for (label, c, wrong, right) in login_cells(a, i) {
        let (fails, last) = attack(st, &c, &wrong, &right);
        let mut r = guesses_ok(st, &c, &fails);
        if lock_due(&fails) {
            r.push(looks_like_a_miss(&fails, &last));
        }
        t.cell(st.mode, &format!("{row}{label}"), all(r));
    }
    let (after, lines) = lock_samples(st);
    let shown = (after <= before)
        .then_some(())
        .ok_or_else(|| format!("lock counts rose {before} -> {after}: {lines}"));
    t.cell(
        st.mode,
        &format!("{row}anonymous /metrics shows no lock"),
        shown,
    );
}

#[test]
fn guard_hidden_lock() {
    let mut t = Table::new("hidden_lock");
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let hidden = login_spec(mode, false);
        let Some(st) = Stack::start(mode, hidden.clone()) else {
            continue;
        };
        hidden_cells(&mut t, &st, "", 16, i as u8);
        // `reveal_lock = false` by reload (the rest unchanged).
        let shown = hidden
            .tables
            .replace("reveal_lock = false", "reveal_lock = true");
        let spec = Spec {
            tables: shown,
            ..hidden.clone()
        };
        let Some(mut st) = Stack::start(mode, spec) else {
            continue;
        };
        reload_cell(&mut t, &mut st, &hidden.tables);
        hidden_cells(&mut t, &st, "reload: ", 16, i as u8 + 10);
    }
    t.finish();
}

// ------------------------------------------------------------ config keys

/// The keys the one-pipeline server adds (issue 22): the front proxy of
/// forward-auth mode and the `/metrics` token.
#[test]
fn config_keys_of_the_pipeline() {
    let mut t = Table::new("config_keys");
    for (table, key, value) in [
        ("forward_auth", "proxy", "\"nginx\""),
        ("forward_auth", "proxy", "\"caddy\""),
        (
            "server",
            "metrics_token",
            "\"metrics-token-0123456789abcdef\"",
        ),
    ] {
        let ok = common::stack::key_known(table, key, value)
            .then_some(())
            .ok_or_else(|| "refused at start-up".to_string());
        t.cell(Mode::Demo, &format!("[{table}] {key} = {value}"), ok);
    }
    t.finish();
}
