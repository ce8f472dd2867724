//! Usernames folded to the account they name, before the core hashes them.
//!
//! The core keys an account by its username trimmed and ASCII-lowercased
//! (`core/src/key.rs`); that is all firmware can afford, and Redis's Lua
//! rules do the same. Applications compare usernames more loosely: a
//! MySQL `utf8mb4_0900_ai_ci` column (accent- and case-insensitive) finds
//! the row `alice` for `ａlicé`, `ALICE` or `Alice `. If the lockout counted
//! those as three accounts, an attacker would get `max_failures` guesses
//! per spelling. [`fold`] maps every spelling such a column treats alike to
//! one string, and the library folds every username it is handed
//! ([`Guard`](crate::Guard)'s login calls, and so every
//! [`Engine`](crate::engine::Engine): the fleet engine folds at its entry
//! too) before the core's ASCII fold sees it.
//!
//! The fold, in order:
//!
//! 1. trim (Unicode white space);
//! 2. Unicode NFKC: width and compatibility forms (`ａ` → `a`, `ﬁ` → `fi`,
//!    `K` Kelvin sign → `K`);
//! 3. lowercase, plus the two full case folds lowercasing misses: `ß` → `ss`
//!    (as `ẞ` → `ß` → `ss`) and final `ς` → `σ`. This is Unicode full case
//!    folding for every character that survives steps 2 and 4; the
//!    `caseless` crate would add a dependency (and an unmaintained one) for
//!    no key that differs. Turkish dotless `ı` stays distinct from `i`, as
//!    in the collations; `İ` becomes `i` (its dot is a combining mark);
//! 4. accents stripped: NFKD, then every combining mark (general category
//!    M) dropped, and the default-ignorable code points (zero-width space
//!    and joiners, soft hyphen, bidi controls, variation selectors) with
//!    them, which collations ignore too;
//! 5. NFC again (so Hangul reads as syllables, not jamo), and trim again
//!    (a lone mark after a space was not white space in step 1).
//!
//! The fold merges more than some applications do (an `*_as_cs` column
//! keeps `é` and `e` apart; scripts written with vowel signs lose them).
//! For a lockout key that is the safe direction: two accounts that share a
//! key share a throttle, while one account split over many keys would
//! multiply an attacker's guesses.
//!
//! ASCII input needs none of the tables: it is trimmed and, if it holds an
//! uppercase letter, lowercased; already-lowercase ASCII is returned
//! borrowed, without allocating.

use std::borrow::Cow;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The account `name` names: trimmed, NFKC, case-folded and without
/// accents (NFKC, then case fold, then accents stripped). Idempotent:
/// `fold(&fold(x)) == fold(x)`.
///
/// ```
/// use portcullis::fold_username;
/// assert_eq!(fold_username("ａlicé"), "alice");
/// assert_eq!(fold_username(" ALICE "), "alice");
/// assert_eq!(fold_username("Straße"), "strasse");
/// ```
pub fn fold(name: &str) -> Cow<'_, str> {
    let name = name.trim();
    if name.is_ascii() {
        return if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
    }
    let mut lower = String::with_capacity(name.len());
    for c in name.nfkc() {
        for l in c.to_lowercase() {
            match l {
                // `ẞ` lowercases to `ß`, so both arrive here.
                'ß' => lower.push_str("ss"),
                'ς' => lower.push('σ'),
                l => lower.push(l),
            }
        }
    }
    let bare: String = lower
        .nfkd()
        .filter(|&c| !is_combining_mark(c) && !is_default_ignorable(c))
        .nfc()
        .collect();
    let trimmed = bare.trim();
    if trimmed.len() == bare.len() {
        Cow::Owned(bare)
    } else {
        Cow::Owned(trimmed.to_string())
    }
}

/// Unicode's `Default_Ignorable_Code_Point` (DerivedCoreProperties.txt),
/// less the combining marks step 4 drops anyway: characters that render
/// as nothing and that collations ignore.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_alice_are_one_key() {
        for s in [
            "alice",
            "ALICE",
            "Alice ",
            " alice\t",
            "ａlicé",
            "Ａｌｉｃｅ",
            "ＡＬＩＣＥ",
            "alicé",
            "alice\u{301}",
            "ali\u{200B}ce",
            "al\u{AD}ice",
            "ALİCE",
            "Ālīcē",
            "\u{3000}alice\u{3000}",
        ] {
            assert_eq!(fold(s), "alice", "{s:?}");
        }
    }

    #[test]
    fn precomposed_and_combining_accents_agree() {
        assert_eq!(fold("alicé"), fold("alice\u{301}"));
        assert_eq!(fold("José"), "jose");
        assert_eq!(fold("Zoë"), "zoe");
    }

    #[test]
    fn sharp_s_and_final_sigma_fold_fully() {
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("STRASSE"), "strasse");
        assert_eq!(fold("STRAẞE"), "strasse");
        assert_eq!(fold("ΟΔΥΣΣΕΥΣ"), fold("οδυσσευς"));
        assert_eq!(fold("ﬁle"), "file");
        assert_eq!(fold("\u{212A}elvin"), "kelvin");
    }

    #[test]
    fn what_stays_apart() {
        // Turkish dotless ı is its own letter in the collations too.
        assert_ne!(fold("alıce"), fold("alice"));
        assert_ne!(fold("alice"), fold("alicf"));
        assert_eq!(fold("日本"), "日本");
        assert_eq!(fold("한국"), "한국");
        // Blank is blank.
        assert_eq!(fold(" \u{301} "), "");
        assert_eq!(fold(""), "");
    }

    #[test]
    fn ascii_lowercase_is_borrowed() {
        assert!(matches!(fold("alice"), Cow::Borrowed("alice")));
        assert!(matches!(
            fold("  bob@example.com "),
            Cow::Borrowed("bob@example.com")
        ));
        assert!(matches!(fold("Bob"), Cow::Owned(_)));
    }

    #[test]
    fn fold_is_idempotent_on_many_scripts() {
        for s in [
            "ＡＬＩＣＥ",
            "Straße",
            "ΣΊΣΥΦΟΣ",
            "İstanbul",
            "Ǆemal",
            "ﬃ",
            "한국어",
            "कि",
            "\u{1E9E}\u{301}",
            "a\u{200D}b",
            "ǅ",
            "ŉ",
            "ΐ",
        ] {
            let once = fold(s).into_owned();
            assert_eq!(fold(&once), once, "{s:?}");
        }
    }

    /// Ten failures split between `ａlicé` and `alice` from one address
    /// lock that user from that address under every spelling: the pair lock
    /// (`pair_locked`), not only the address's (`ip_locked`, which a
    /// different name from that address gets).
    #[tokio::test]
    async fn guard_spellings_share_one_lockout() {
        use crate::{Guard, Limiter, LimiterOptions};
        use portcullis_core::{Config, Reason};
        use std::sync::Arc;

        let limiter = Limiter::new(Config::default(), LimiterOptions::default()).unwrap();
        let guard = Guard::new(Arc::new(limiter), None);
        let ip = "198.51.100.7".parse().unwrap();
        for i in 0..10 {
            let name = if i % 2 == 0 { "ａlicé" } else { "alice" };
            assert!(
                guard.check_login(name, ip).await.is_allowed(),
                "attempt {i}"
            );
            drop(guard.login_failed(name, ip).await);
        }
        for name in ["alice", "ａlicé", "ALICE", "Ａｌｉｃｅ", "alice\u{301}"] {
            assert_eq!(
                guard.check_login(name, ip).await.reason(),
                Some(Reason::PairLocked),
                "{name:?}"
            );
        }
        assert_eq!(
            guard.check_login("bob", ip).await.reason(),
            Some(Reason::IpLocked)
        );
        // The split is what is tested: distinct names lock only the address.
        let other = "198.51.100.8".parse().unwrap();
        for i in 0..10 {
            let name = if i % 2 == 0 { "carol" } else { "carla" };
            drop(guard.login_failed(name, other).await);
        }
        assert_eq!(
            guard.check_login("carol", other).await.reason(),
            Some(Reason::IpLocked)
        );
    }

    /// `begin_login` and `finish_login` fold too: a reservation under one
    /// spelling is settled under another.
    #[tokio::test]
    async fn begin_and_finish_fold_alike() {
        use crate::{Guard, Limiter, LimiterOptions};
        use portcullis_core::{Config, Reason};
        use std::sync::Arc;

        let limiter = Limiter::new(Config::default(), LimiterOptions::default()).unwrap();
        let guard = Guard::new(Arc::new(limiter), None);
        let ip = "198.51.100.9".parse().unwrap();
        for i in 0..10 {
            let name = if i % 2 == 0 { "Zoë" } else { "ZOE" };
            let a = guard.begin_login(name, ip).await.expect("allowed");
            drop(a.penalty);
            guard.finish_login("zoe", ip, a.id, false).await;
        }
        assert_eq!(
            guard.check_login("ｚｏｅ", ip).await.reason(),
            Some(Reason::PairLocked)
        );
    }
}
