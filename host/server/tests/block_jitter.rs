//! Issue 17, item 6: `requests.block_jitter` gives each block a random
//! extra of up to that much, so blocks of addresses that misbehave alike
//! end at different times; without it every block is exactly `block_for`.
//! Real binary over loopback, clients named by X-Forwarded-For.

mod common;

use common::{admin_json, Server};

const RULES: [(&str, &str); 5] = [
    ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
    ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "1"),
    ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
    ("PORTCULLIS_REQUESTS__BLOCK_FOR", "10m"),
    ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
];

/// Block 16 addresses the same way; the seconds left on each block.
async fn block_lengths(s: &Server) -> Vec<u64> {
    let c = reqwest::Client::new();
    for i in 0..16 {
        let who = format!("203.0.113.{i}");
        for want in [200, 429] {
            let r = c
                .get(s.url("/"))
                .header("x-forwarded-for", &who)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want, "{who}");
        }
    }
    let bans = admin_json(s, "/admin/bans").await;
    let mut left: Vec<u64> = bans
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["reason"] == "blocked")
        .map(|b| b["seconds_left"].as_u64().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), 16, "{bans}");
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_get_a_random_extra_up_to_the_jitter() {
    let d = tempfile::tempdir().unwrap();
    let mut env = RULES.to_vec();
    env.push(("PORTCULLIS_REQUESTS__BLOCK_JITTER", "1h"));
    let s = Server::start(&d.path().join("j.db"), &env);
    let left = block_lengths(&s).await;
    // 10 min plus up to 1 h (a second of slack for the test's own time).
    assert!(left.iter().all(|&l| (598..=4200).contains(&l)), "{left:?}");
    // 16 draws of an hour's jitter, to the second: all within a few
    // seconds of each other with probability below 10^-40.
    assert!(left[15] - left[0] > 5, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jitter_every_block_is_block_for() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("n.db"), &RULES);
    let left = block_lengths(&s).await;
    assert!(left.iter().all(|&l| (598..=600).contains(&l)), "{left:?}");
}
