//! The canonical target: one form of a request's method and path that every
//! decision (admin prefix, login route, policy) is made on, so that the
//! spellings an application routes to the same handler (`//api/items`,
//! `/API/items`, `/%61pi/items`, `/./api/items`, `/x/../api/items`,
//! `/login;a=b`) cannot choose a different rule.
//!
//! The path is percent-decoded once, split on `/` and `\`, each segment cut
//! at its first `;` (matrix parameters), empty and `.` segments dropped,
//! `..` applied, and the segments re-encoded (bytes outside the unreserved
//! and sub-delim characters as `%XX`, so a raw `<`, `"` or 0xFF becomes
//! `%3C`, `%22`, `%FF`). That never fails: any byte string has a target.
//! The matching key is the path in ASCII lower case. The method is upper
//! case. See `docs/pipeline.md`.

use http::Method;

/// A request's method and path in the one form decisions are made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The method, upper case (`post` is `POST`).
    pub method: Method,
    /// The normalised path (always starts with `/`, no trailing `/`
    /// except the root), percent-encoded where needed, case kept.
    pub path: String,
    /// The path in ASCII lower case when it has a capital; `None` when
    /// the path is its own key (most requests: no second allocation).
    lower: Option<String>,
}

/// The method in upper case (a standard method as is, no allocation).
pub fn method(m: &Method) -> Method {
    let s = m.as_str();
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return m.clone();
    }
    Method::from_bytes(s.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| m.clone())
}

/// The method named by a header value (`None`: not a method token).
pub fn method_from(raw: &[u8]) -> Option<Method> {
    let raw = raw.trim_ascii();
    if raw.is_empty() {
        return None;
    }
    Method::from_bytes(raw.to_ascii_uppercase().as_slice()).ok()
}

impl Target {
    /// The target of `method` and a request target `raw` (origin form
    /// `/a/b?q`, or absolute form `http://host/a/b?q`; any bytes).
    pub fn new(method: &Method, raw: &[u8]) -> Target {
        let path = normalize(path_of(raw));
        let lower = path
            .bytes()
            .any(|b| b.is_ascii_uppercase())
            .then(|| path.to_ascii_lowercase());
        Target {
            method: self::method(method),
            path,
            lower,
        }
    }

    /// [`path`](Self::path) in ASCII lower case: what prefixes and routes
    /// are compared with.
    pub fn key(&self) -> &str {
        self.lower.as_deref().unwrap_or(&self.path)
    }

    /// The key, owned.
    pub fn into_key(self) -> String {
        self.lower.unwrap_or(self.path)
    }

    /// Whether the key is `prefix` (a canonical key) or under it as a
    /// path (`/a` is under `/a`, `/a/b` is; `/ab` is not).
    pub fn under(&self, prefix: &str) -> bool {
        under(self.key(), prefix)
    }
}

/// Whether `key` is `prefix` or below it, segment-wise.
pub fn under(key: &str, prefix: &str) -> bool {
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path part of a request target: the scheme and authority of an
/// absolute form cut off, the query and fragment too.
fn path_of(raw: &[u8]) -> &[u8] {
    let raw = raw.trim_ascii();
    let end = raw
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(raw.len());
    let raw = raw.get(..end).unwrap_or(raw);
    if raw.starts_with(b"/") || raw.starts_with(b"\\") {
        return raw;
    }
    // `scheme://authority/path`: the path starts at the first `/` after
    // the authority; none: the root.
    if let Some(i) = find(raw, b"://") {
        let rest = raw.get(i + 3..).unwrap_or_default();
        return match rest.iter().position(|b| *b == b'/') {
            Some(j) => rest.get(j..).unwrap_or_default(),
            None => b"/",
        };
    }
    raw
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode once; a `%` not followed by two hex digits stays.
fn decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        let pair = (
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        );
        match (c, pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push(h * 16 + l);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Bytes kept as they are in a segment (RFC 3986 unreserved, and the
/// sub-delims but `;`, plus `:` and `@`).
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `raw` is already in normal form (the common case: `/`, `/a/b`):
/// only plain bytes, no `%`, no empty, `.` or `..` segment, no trailing
/// `/` but the root's.
fn is_normal(raw: &[u8]) -> bool {
    if raw == b"/" {
        return true;
    }
    raw.first() == Some(&b'/')
        && raw.last() != Some(&b'/')
        && raw
            .split(|b| *b == b'/')
            .skip(1)
            .all(|seg| !matches!(seg, b"" | b"." | b"..") && seg.iter().all(|b| plain(*b)))
}

/// The normalised path of the path bytes `raw` (see the module doc).
pub fn normalize(raw: &[u8]) -> String {
    if is_normal(raw) {
        // Plain bytes are ASCII.
        return String::from_utf8_lossy(raw).into_owned();
    }
    let decoded = decode(raw);
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let seg = seg.split(|b| *b == b';').next().unwrap_or_default();
        match seg {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    if segs.is_empty() {
        out.push('/');
    }
    for seg in segs {
        out.push('/');
        for &b in seg {
            if plain(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// The canonical key of a configured path or prefix (what [`Target::key`]
/// would be for it).
pub fn key_of(path: &str) -> String {
    normalize(path.as_bytes()).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &[u8]) -> String {
        Target::new(&Method::GET, raw).into_key()
    }

    #[test]
    fn spellings_of_one_path_are_one_target() {
        for p in [
            "/api/items",
            "//api/items",
            "/API/items",
            "/%61pi/items",
            "/./api/items",
            "/x/../api/items",
            "/api/items/",
            "/api;v=1/items",
            "\\api\\items",
            "/%2e/api/items",
            "/x/%2e%2e/api/items",
            "/x/%2E%2E/api//items",
            "/api%2fitems",
            "http://example.com/api/items?x=1",
            "/api/items#frag",
        ] {
            assert_eq!(key(p.as_bytes()), "/api/items", "{p}");
        }
        for p in ["/login;a=b", "/login/", "/LOGIN", "/%6cogin", "/x/../login"] {
            assert_eq!(key(p.as_bytes()), "/login", "{p}");
        }
        assert_eq!(key(b"/login.json"), "/login.json");
        assert_eq!(key(b"/"), "/");
        assert_eq!(key(b""), "/");
        assert_eq!(key(b"/.."), "/");
        assert_eq!(key(b"/../../etc"), "/etc");
        assert_eq!(key(b"http://h"), "/");
        assert_eq!(
            key(b"/.portcullis/admin/../../secret"),
            "/secret",
            "leaves the admin prefix"
        );
    }

    #[test]
    fn raw_bytes_never_fail_and_are_encoded() {
        // What nginx passes in `$request_uri`: the query is cut, the path
        // keeps its bytes, encoded.
        assert_eq!(key(b"/login?q=<script>\"\xff"), "/login");
        assert_eq!(
            Target::new(&Method::GET, b"/a<b\"c\xff d").path,
            "/a%3Cb%22c%FF%20d"
        );
        assert_eq!(Target::new(&Method::GET, b"/%zz").path, "/%25zz");
        assert_eq!(Target::new(&Method::GET, b"/%").path, "/%25");
        assert_eq!(
            Target::new(&Method::GET, b"/%252e%252e").path,
            "/%252e%252e"
        );
        assert_eq!(Target::new(&Method::GET, b"/caf%C3%A9").path, "/caf%C3%A9");
        assert_eq!(Target::new(&Method::GET, b"/Caf%c3%a9").key(), "/caf%c3%a9");
    }

    #[test]
    fn methods_are_upper_case() {
        let post = Method::from_bytes(b"post").unwrap();
        assert_eq!(Target::new(&post, b"/").method, Method::POST);
        assert_eq!(method(&Method::GET), Method::GET);
        assert_eq!(method_from(b" delete "), Some(Method::DELETE));
        assert_eq!(method_from(b""), None);
        assert_eq!(method_from(b"GE T"), None);
    }

    #[test]
    fn under_is_segment_wise() {
        assert!(under("/api", "/api"));
        assert!(under("/api/x", "/api"));
        assert!(!under("/apix", "/api"));
        assert!(under("/anything", "/"));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn any_bytes_have_an_idempotent_target(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
                let t = Target::new(&Method::GET, &raw);
                prop_assert!(t.path.starts_with('/'));
                prop_assert!(t.path.is_ascii());
                let again = Target::new(&Method::GET, t.path.as_bytes());
                prop_assert_eq!(&again.path, &t.path);
                prop_assert_eq!(key_of(t.key()), t.key().to_string());
            }

            #[test]
            fn the_fast_path_agrees_with_the_full_one(raw in "[/a-zA-Z0-9._~%;-]{0,24}") {
                let fast = normalize(raw.as_bytes());
                // The full route: force it by a leading `/./`.
                let full = normalize(format!("/.{}", if raw.starts_with('/') { raw.clone() } else { format!("/{raw}") }).as_bytes());
                prop_assert_eq!(fast, full);
            }

            #[test]
            fn path_like_strings_are_idempotent(raw in "[/\\\\.%a-fA-F0-9;?#<\"]{0,40}") {
                let t = Target::new(&Method::GET, raw.as_bytes());
                let again = Target::new(&Method::GET, t.path.as_bytes());
                prop_assert_eq!(again.path, t.path);
            }
        }
    }
}
