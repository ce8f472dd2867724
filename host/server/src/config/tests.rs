//! The configuration's unit tests.

mod general {
    use crate::config::*;
    use portcullis::Duration;
    use portcullis::Growth;

    pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(
            text,
            "test.toml",
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn block_jitter_and_reveal_lock() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.rules.blocks.block_jitter, Duration::from_secs(0));
        assert!(c.reveal_lock, "the default reveals a lock (429)");
        let c = load(
            "[requests]\nblock_jitter = \"5m\"\n[login]\nreveal_lock = false\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.blocks.block_jitter, Duration::from_secs(300));
        assert!(!c.reveal_lock);
        let e = load("[login]\nreveal_lock = \"no\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("login.reveal_lock"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(StdDuration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(StdDuration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(StdDuration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(StdDuration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(StdDuration::from_secs(172_800)));
        assert_eq!(parse_duration(" 90s "), Ok(StdDuration::from_secs(90)));
        // humantime's longer forms.
        assert_eq!(parse_duration("1h 30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("2days"), Ok(StdDuration::from_secs(172_800)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn defaults_env_and_errors_name_the_key() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, PathBuf::from("./portcullis.db"));
        assert_eq!(c.rules, Config::default());
        let c = load(
            "[requests]\nmax_requests = 7\n",
            &[("PORTCULLIS_REQUESTS__WINDOW", "30s")],
        )
        .unwrap();
        assert_eq!(c.rules.requests.max_requests, 7);
        assert_eq!(c.rules.requests.window, Duration::from_secs(30));
        let c = load("", &[("PORTCULLIS_REQUESTS__MAX_REQUESTS", "5")]).unwrap();
        assert_eq!(c.rules.requests.max_requests, 5);
        let e = |t: &str, env: &[(&str, &str)]| load(t, env).unwrap_err().to_string();
        assert_eq!(
            e("[requests]\nwindow = \"0s\"\n", &[]),
            "config error: requests.window: must be greater than zero"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 0\n", &[]),
            "config error: penalty.multiplier: must be at least 1"
        );
        assert!(e("[requests]\nwindoww = \"1s\"\n", &[])
            .starts_with("config error: requests.windoww: unknown key"));
        assert!(e("[requests]\nmax_requests = \"many\"\n", &[])
            .starts_with("config error: requests.max_requests: expected an integer"));
        assert!(e("", &[("PORTCULLIS_LOGIN__LOCK_FOR", "forever")])
            .starts_with("config error: login.lock_for:"));
        assert!(e("[store]\nkind = \"mongo\"\n", &[]).starts_with("config error: store.kind:"));
        assert!(
            e("[store]\nkind = \"redis\"\nredis_url = \"http://x\"\n", &[])
                .starts_with("config error: store.redis_url:")
        );
        assert!(
            e("[store]\nkind = \"redis\"\nredis_url = \"redis://a/\"\nredis_cluster = [\"redis://b/\"]\n", &[])
                .starts_with("config error: store.redis_cluster: set either")
        );
        assert!(e("[store]\nkind = \"redis\"\nredis_cluster = []\n", &[])
            .starts_with("config error: store.redis_cluster:"));
        assert!(e(
            "[store]\nkind = \"redis\"\nredis_cluster = [\"redis://a:1/\", \"nope://\"]\n",
            &[]
        )
        .starts_with("config error: store.redis_cluster[1]:"));
        assert!(e("[slots]\nper_key = 9\n", &[])
            .starts_with("config error: slots.per_key: must be at most 4"));
        assert!(e("[lists]\nallow = [\"10.0.0.0/33\"]\n", &[])
            .starts_with("config error: lists.allow[0]: \"10.0.0.0/33\": prefix length"));
        assert!(e("[bogus]\n", &[]).starts_with("config error: bogus: unknown section"));
    }

    #[test]
    fn fractional_growth_factors() {
        let c = load(
            "[penalty]\nmultiplier = 1.5\n[requests]\nblock_growth = 1.125\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::from_thousandths(1500));
        assert_eq!(c.rules.blocks.block_growth, Growth::from_thousandths(1125));
        // Integral ones as before; 1 is no growth; from the environment too.
        let c = load(
            "[penalty]\nmultiplier = 3\n[requests]\nblock_growth = 1\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::times(3));
        assert_eq!(c.rules.blocks.block_growth, Growth::ONE);
        let c = load(
            "",
            &[
                ("PORTCULLIS_PENALTY__MULTIPLIER", "1.5"),
                ("PORTCULLIS_REQUESTS__BLOCK_GROWTH", "2.25"),
            ],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::from_thousandths(1500));
        assert_eq!(c.rules.blocks.block_growth, Growth::from_thousandths(2250));
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[penalty]\nmultiplier = 0.5\n"),
            "config error: penalty.multiplier: must be at least 1"
        );
        assert_eq!(
            e("[requests]\nblock_growth = 0\n"),
            "config error: requests.block_growth: must be at least 1"
        );
        assert_eq!(
            e("[requests]\nblock_growth = -2\n"),
            "config error: requests.block_growth: must be at least 1"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 1.0005\n"),
            "config error: penalty.multiplier: 1.0005 has more than three decimals (factors are kept in thousandths)"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 5000000\n"),
            "config error: penalty.multiplier: must be at most 4294967.295"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = nan\n"),
            "config error: penalty.multiplier: expected a number like 2 or 1.5, got floating point `NaN`"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = \"2x\"\n"),
            "config error: penalty.multiplier: expected a number like 2 or 1.5, got string \"2x\""
        );
    }

    #[test]
    fn serde_errors_name_the_key_in_one_line() {
        let e = |t: &str, env: &[(&str, &str)]| load(t, env).unwrap_err().to_string();
        assert_eq!(
            e("[requests]\nmax_requests = \"many\"\n", &[]),
            "config error: requests.max_requests: expected an integer, got string \"many\""
        );
        assert_eq!(
            e("[store]\nmax_entries = -1\n", &[]),
            "config error: store.max_entries: -1 is out of range (0 to 4294967295)"
        );
        assert_eq!(
            e("[login]\nlock_for = 5\n", &[]),
            "config error: login.lock_for: expected a duration string like \"60s\", got integer `5`"
        );
        assert!(
            e("", &[("PORTCULLIS_LOGIN__LOCK_FOR", "forever")]).starts_with(
                "config error: login.lock_for: \"forever\" is not a duration like \"60s\""
            )
        );
        assert_eq!(
            e("[penalty]\nmax = \"5y\"\nbase = \"1s\"\nbogus = 1\n", &[]),
            "config error: penalty.bogus: unknown key (known: base, multiplier, max)"
        );
        assert!(e("[bogus]\n", &[]).starts_with(
            "config error: bogus: unknown section (known: server, store, requests, login, penalty, slots, lists, users, forward_auth, policies, upstream, login_routes, jails, firewall)"
        ));
        assert!(e("", &[("PORTCULLIS_NOPE__X", "1")])
            .starts_with("config error: nope: unknown section"));
        assert_eq!(
            e("requests = 5\n", &[]),
            "config error: requests: expected a table, got integer `5`"
        );
        assert_eq!(
            e("[store]\nkind = \"mongo\"\n", &[]),
            "config error: store.kind: unknown variant `mongo`, expected one of `sqlite`, `memory`, `redis`"
        );
        assert_eq!(
            e("[store]\nfail_closed = \"yes\"\n", &[]),
            "config error: store.fail_closed: expected a boolean, got string \"yes\""
        );
        assert_eq!(
            e("[server]\nlisten = \"nowhere\"\n", &[]),
            "config error: server.listen: \"nowhere\": invalid socket address syntax"
        );
        assert_eq!(
            e("[lists]\ndeny = [\"10.0.0.0/8\", 7]\n", &[]),
            "config error: lists.deny[1]: expected a string, got integer `7`"
        );
        assert_eq!(
            e("", &[("PORTCULLIS_LISTS__ALLOW", "10.0.0.0/8, nope")]),
            "config error: lists.allow: \"nope\": not an IP address"
        );
        assert_eq!(
            e("[[users]]\nname = \"a\"\npassword = \"x\"\n", &[]),
            "config error: users[0].password: unknown key (known: name, password_hash)"
        );
        assert_eq!(
            e("[[users]]\nname = \"a\"\n", &[]),
            "config error: users[0].password_hash: missing"
        );
        assert_eq!(
            e("[[users]]\nname = \" \"\npassword_hash = \"x\"\n", &[]),
            "config error: users[0].name: expected a non-empty string"
        );
        assert!(e("x = [", &[]).starts_with("config error: test.toml: "));
        // Lists from the environment: TOML lists or comma-separated.
        let c = load(
            "",
            &[
                ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
                ("PORTCULLIS_LISTS__DENY", "10.0.0.0/8,192.0.2.0/24"),
            ],
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(c.rules.lists.deny.len(), 2);
    }

    #[test]
    fn ip_max_failures_follows_max_failures_unless_set_and_0_is_off() {
        let ip_max = |t: &str| load(t, &[]).unwrap().rules.login.ip_max_failures;
        assert_eq!(ip_max(""), Some(10));
        assert_eq!(ip_max("[login]\nmax_failures = 4\n"), Some(4));
        assert_eq!(
            ip_max("[login]\nmax_failures = 4\nip_max_failures = 20\n"),
            Some(20)
        );
        // Pair-only: the address's own count never locks it.
        let c = load(
            "[login]\nip_max_failures = 0\nlock_ip_on_account_lock = false\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.login.ip_max_failures, None);
        assert!(!c.rules.login.lock_ip_on_account_lock);
    }

    #[test]
    fn denial_cache_size() {
        assert_eq!(load("", &[]).unwrap().denial_cache, 10_000);
        let c = load("[store]\ndenial_cache = 0\n", &[]).unwrap();
        assert_eq!(c.denial_cache, 0, "0 turns the cache off");
        let c = load("", &[("PORTCULLIS_STORE__DENIAL_CACHE", "250")]).unwrap();
        assert_eq!(c.denial_cache, 250);
        assert_eq!(
            load("[store]\ndenial_cache = 10000001\n", &[])
                .unwrap_err()
                .to_string(),
            "config error: store.denial_cache: must be at most 10000000"
        );
        assert!(load("[store]\ndenial_cache = -1\n", &[])
            .unwrap_err()
            .to_string()
            .starts_with("config error: store.denial_cache"));
    }

    #[test]
    fn table_sizes_and_client_ip_header() {
        let c = load("", &[]).unwrap();
        assert_eq!((c.max_entries, c.admin_max_entries), (1_000_000, 10_000));
        assert_eq!(c.client_ip_header, ForwardingHeader::XForwardedFor);
        let c = load(
            "[store]\nmax_entries = 500\n[server]\nadmin_max_entries = 7\nclient_ip_header = \"Forwarded\"\n",
            &[],
        )
        .unwrap();
        assert_eq!((c.max_entries, c.admin_max_entries), (500, 7));
        assert_eq!(c.client_ip_header, ForwardingHeader::Forwarded);
        let c = load("", &[("PORTCULLIS_SERVER__CLIENT_IP_HEADER", "X-Real-IP")]).unwrap();
        assert_eq!(c.client_ip_header.to_string(), "x-real-ip");
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[store]\nmax_entries = 0\n"),
            "config error: store.max_entries: must be greater than zero"
        );
        assert_eq!(
            e("[server]\nadmin_max_entries = 0\n"),
            "config error: server.admin_max_entries: must be greater than zero"
        );
        assert_eq!(
            e("[store]\nmax_entries = 960000001\n"),
            "config error: store.max_entries: must be at most 960000000"
        );
        assert!(e("[store]\nmax_entries = -1\n").starts_with("config error: store.max_entries:"));
        assert!(e("[server]\nclient_ip_header = \"X Real\"\n")
            .starts_with("config error: server.client_ip_header: "));
    }

    #[test]
    fn the_largest_table_fits_the_limiter() {
        let opts = portcullis::LimiterOptions {
            max_entries: MAX_TABLE_ENTRIES as usize,
            ..Default::default()
        };
        let l = portcullis::Limiter::new(Config::default(), opts).unwrap();
        assert!(
            l.capacity() >= MAX_TABLE_ENTRIES as usize,
            "{}",
            l.capacity()
        );
        let opts = portcullis::LimiterOptions {
            max_entries: MAX_ADMIN_ENTRIES as usize,
            shards: crate::config::ADMIN_SHARDS,
            seed: None,
        };
        let l = portcullis::Limiter::new(Config::default(), opts).unwrap();
        assert!(
            l.capacity() >= MAX_ADMIN_ENTRIES as usize,
            "{}",
            l.capacity()
        );
    }
}

mod forward_auth_tests {
    use super::general::load;

    #[test]
    fn forward_auth_keys() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.forward_auth.path, "/check");
        assert!(c.forward_auth.enabled);
        assert_eq!(c.forward_auth.report_token, None);
        let c = load("", &[("PORTCULLIS_FORWARD_AUTH__ENABLED", "false")]).unwrap();
        assert!(!c.forward_auth.enabled);
        let c = load(
            "[forward_auth]\npath = \"/_auth/v1.check\"\nreport_token = \"t0k\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.forward_auth.path, "/_auth/v1.check");
        assert_eq!(c.forward_auth.report_token.as_deref(), Some("t0k"));
        let c = load("", &[("PORTCULLIS_FORWARD_AUTH__REPORT_TOKEN", "")]).unwrap();
        assert_eq!(c.forward_auth.report_token, None);
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[forward_auth]\npath = \"check\"\n"),
            "config error: forward_auth.path: \"check\" is not an absolute path like \"/check\""
        );
        for p in ["/", "/a?b", "/a b", "//x", "/é"] {
            assert!(
                e(&format!("[forward_auth]\npath = {p:?}\n"))
                    .starts_with("config error: forward_auth.path: "),
                "{p}"
            );
        }
        assert_eq!(
            e("[forward_auth]\npath = \"/admin/check\"\n"),
            "config error: forward_auth.path: \"/admin/check\" is taken by portcullis (/admin)"
        );
        assert_eq!(
            e("[forward_auth]\npath = \"/v1/login-result\"\n"),
            "config error: forward_auth.path: \"/v1/login-result\" is taken by portcullis (/v1)"
        );
        assert!(load("[forward_auth]\npath = \"/adminx\"\n", &[]).is_ok());
        assert_eq!(
            e("[forward_auth]\ntoken = \"x\"\n"),
            "config error: forward_auth.token: unknown key (known: enabled, path, report_token, proxy, method_header, uri_header)"
        );
        // What sits in front: nginx unless said.
        assert_eq!(c.forward_auth.proxy, crate::config::FrontProxy::Nginx);
        let c = load("[forward_auth]\nproxy = \"Caddy\"\n", &[]).unwrap();
        assert_eq!(c.forward_auth.proxy, crate::config::FrontProxy::Caddy);
        assert!(c.forward_auth.proxy_given);
        let c = load(
            "[forward_auth]\nproxy = \"headers\"\nmethod_header = \"X-M\"\nuri_header = \"X-U\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.forward_auth.proxy.headers().1, "x-u");
        assert!(e("[forward_auth]\nproxy = \"haproxy\"\n")
            .starts_with("config error: forward_auth.proxy: "));
        assert!(e("[forward_auth]\nproxy = \"headers\"\n")
            .starts_with("config error: forward_auth.method_header: "));
        assert!(e("[forward_auth]\nuri_header = \"x-u\"\n")
            .starts_with("config error: forward_auth.method_header: "));
        // The metrics token.
        assert_eq!(load("", &[]).unwrap().metrics_token, None);
        let c = load("[server]\nmetrics_token = \"m\"\n", &[]).unwrap();
        assert_eq!(c.metrics_token.as_deref(), Some("m"));
        assert_eq!(
            e("[forward_auth]\npath = 5\n"),
            "config error: forward_auth.path: expected a string, got integer `5`"
        );
    }
}

mod limits_tests {
    use crate::config::*;

    fn load(env: &[(&str, &str)]) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(
            "",
            "test.toml",
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn connection_and_hashing_keys() {
        let c = load(&[]).unwrap();
        assert_eq!(c.conn, ConnLimits::default());
        assert_eq!(c.conn.header_read_timeout, StdDuration::from_secs(10));
        assert_eq!(c.hashing.memory_kib, 19456);
        assert!(c.hashing.max_concurrent >= 1);
        let c = load(&[
            ("PORTCULLIS_SERVER__IDLE_TIMEOUT", "5s"),
            ("PORTCULLIS_SERVER__SHUTDOWN_GRACE", "0s"),
            ("PORTCULLIS_LOGIN__HASH_QUEUE", "0"),
        ])
        .unwrap();
        assert_eq!(c.conn.idle_timeout, StdDuration::from_secs(5));
        assert_eq!(c.conn.shutdown_grace, StdDuration::ZERO);
        assert_eq!(c.hashing.queue, 0);
        let e = |env: &[(&str, &str)]| load(env).unwrap_err().to_string();
        assert_eq!(
            e(&[("PORTCULLIS_SERVER__HEADER_READ_TIMEOUT", "0s")]),
            "config error: server.header_read_timeout: must be greater than zero"
        );
        assert_eq!(
            e(&[("PORTCULLIS_SERVER__MAX_CONNECTIONS_PER_IP", "0")]),
            "config error: server.max_connections_per_ip: must be greater than zero"
        );
        assert_eq!(
            e(&[("PORTCULLIS_LOGIN__MAX_CONCURRENT_HASHES", "0")]),
            "config error: login.max_concurrent_hashes: must be greater than zero"
        );
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_ITERATIONS", "0")])
            .starts_with("config error: login.argon2_iterations:"));
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "4")])
            .starts_with("config error: login.argon2_memory_kib:"));
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "300000")])
            .starts_with("config error: login.argon2_memory_kib: must be at most 262144"));
    }
}

mod firewall {
    use super::general::load;
    use crate::config::FirewallKind;

    #[test]
    fn keys_are_checked_and_named() {
        let c = load("[firewall]\nkind = \"nftables\"\ntable = \"pc1\"\n", &[]).unwrap();
        assert_eq!(c.firewall.kind, FirewallKind::Nftables);
        assert_eq!(c.firewall.table, "pc1");
        assert_eq!(load("", &[]).unwrap().firewall.kind, FirewallKind::Off);
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[firewall]\nkind = \"iptables\"\n"),
            "config error: firewall.kind: \"iptables\": \"off\" or \"nftables\""
        );
        assert!(
            e("[firewall]\ntable = \"my table\"\n").starts_with("config error: firewall.table: ")
        );
        assert_eq!(
            e("[firewall]\nset_v4 = \"x\"\nranges_v6 = \"x\"\n"),
            "config error: firewall.set_v4: \"x\": the four set names must differ"
        );
        assert_eq!(
            e("[firewall]\nreconcile_interval = \"100ms\"\n"),
            "config error: firewall.reconcile_interval: must be at least 1s"
        );
    }
}
