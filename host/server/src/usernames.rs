//! Usernames as the application reads them from a login request.
//!
//! The account throttle and the (username, address) lockout count a
//! username; if portcullis reads a different one than the application
//! checks, an attacker guesses under a name portcullis never sees.
//! Applications read more than one place, so [`usernames`] returns every
//! value the application *could* read, and the caller counts them all:
//!
//! - **the body as JSON** whenever it starts with `{` or `[` (after white
//!   space), whatever `Content-Type` claims: many frameworks parse JSON
//!   sent as `text/plain` or with no type. The field is a top-level key or
//!   a JSON pointer (`/user/email`); an array of strings there counts each;
//!   a key repeated in one object counts every value (parsers differ on
//!   which one wins);
//! - **`multipart/form-data`**, split at the boundary its `Content-Type`
//!   names; file parts (with a `filename`) are not usernames;
//! - **form-urlencoded** otherwise (and when a `{` body is not JSON),
//!   every repeated field: PHP and Django read the last, most others the
//!   first;
//! - **the query string**, every occurrence (`request.values`, `$_REQUEST`
//!   and friends merge it with the body).
//!
//! A pointer field also matches the bracket form frameworks use for nested
//! form fields (`/user/email` is `user[email]`).
//!
//! Values are de-duplicated by their account key
//! ([`portcullis::fold_username`]: `ａlicé` and `alice` are one), kept in
//! the order found (body first), blank ones skipped, and at most
//! [`MAX_USERNAMES`] are returned. The work is linear in the body, which
//! the proxy caps (`[[login_routes]] max_body`).
//!
//! The multipart parser is a small one written here rather than `multer`:
//! `multer` is a streaming, async parser (futures, `encoding_rs`, its own
//! limits) for bodies the proxy already holds whole and caps; all this
//! needs is the text fields' names and values. It finds delimiters with
//! `memchr::memmem` (linear time), indexes nothing without a bound check
//! (a proptest feeds it arbitrary bytes and headers), and is lenient as
//! the common servers are: bare `LF` line ends, no closing delimiter.

use std::borrow::Cow;

use http::{header, HeaderMap};
use portcullis::fold_username as fold;

/// The most usernames one request yields.
pub const MAX_USERNAMES: usize = 16;

/// Every non-blank value of `field` the application could read from a
/// request with these `headers`, raw `query` (after `?`) and `body`,
/// de-duplicated by [`fold`], in the order found, at most
/// [`MAX_USERNAMES`]. See the [module docs](self).
pub fn usernames(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    field: &str,
) -> Vec<String> {
    let mut found = Found::default();
    let form_key = form_key(field);
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary);
    match boundary {
        Some(b) => multipart(body, b, &form_key, &mut found),
        None => {
            if !json(body, field, &mut found) {
                form(body, &form_key, &mut found);
            }
        }
    }
    if let Some(q) = query {
        form(q.as_bytes(), &form_key, &mut found);
    }
    found.values
}

/// What has been found so far, and the account keys it folds to.
#[derive(Default)]
struct Found {
    values: Vec<String>,
    keys: Vec<String>,
}

impl Found {
    fn full(&self) -> bool {
        self.values.len() >= MAX_USERNAMES
    }

    /// Keep `value` unless it is blank, a spelling already kept, or one
    /// too many.
    fn push(&mut self, value: Cow<'_, str>) {
        if self.full() || value.trim().is_empty() {
            return;
        }
        let key = fold(&value);
        if key.is_empty() || self.keys.iter().any(|k| *k == *key) {
            return;
        }
        self.keys.push(key.into_owned());
        self.values.push(value.into_owned());
    }
}

/// The form field name for `field`: itself, or a JSON pointer's bracket
/// form (`/user/email` → `user[email]`, `/a~1b` → `a/b`).
fn form_key(field: &str) -> Cow<'_, str> {
    let Some(rest) = field.strip_prefix('/') else {
        return Cow::Borrowed(field);
    };
    let mut segs = rest.split('/').map(unescape_pointer);
    let mut key = segs.next().map(Cow::into_owned).unwrap_or_default();
    for s in segs {
        key.push('[');
        key.push_str(&s);
        key.push(']');
    }
    Cow::Owned(key)
}

/// A JSON pointer segment unescaped (RFC 6901: `~1` is `/`, `~0` is `~`).
fn unescape_pointer(seg: &str) -> Cow<'_, str> {
    if seg.contains('~') {
        Cow::Owned(seg.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(seg)
    }
}

/// Every value of `key` in a form-urlencoded `text`.
fn form(text: &[u8], key: &str, found: &mut Found) {
    for (k, v) in form_urlencoded::parse(text) {
        if found.full() {
            return;
        }
        if k == key {
            found.push(v);
        }
    }
}

/// The values at `field` if `body` is JSON; false if it is not (then the
/// caller reads it as a form).
fn json(body: &[u8], field: &str, found: &mut Found) -> bool {
    let start = body.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(start, Some(b'{' | b'[')) {
        return false;
    }
    let Ok(doc) = serde_json::from_slice::<json::Json>(body) else {
        return false;
    };
    let mut at = Vec::new();
    match field.strip_prefix('/') {
        Some(rest) => {
            let segs: Vec<Cow<'_, str>> = rest.split('/').map(unescape_pointer).collect();
            doc.select(&segs, &mut at);
        }
        // A whole-document pointer ("") or a top-level key.
        None if field.is_empty() => at.push(&doc),
        None => doc.select(&[Cow::Borrowed(field)], &mut at),
    }
    for v in at {
        v.strings(&mut |s| found.push(Cow::Borrowed(s)));
    }
    true
}

mod json {
    //! A JSON document that keeps every entry of an object, repeated keys
    //! included (`serde_json::Value` keeps the last).

    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Strings, arrays and objects; the rest cannot be a username.
    pub(super) enum Json {
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
        Other,
    }

    impl Json {
        /// Every node at the pointer `segs` (all of a repeated key's).
        pub(super) fn select<'a>(&'a self, segs: &[Cow<'_, str>], out: &mut Vec<&'a Json>) {
            let Some((seg, rest)) = segs.split_first() else {
                out.push(self);
                return;
            };
            match self {
                Json::Obj(entries) => {
                    for (_, v) in entries.iter().filter(|(k, _)| *k == **seg) {
                        v.select(rest, out);
                    }
                }
                Json::Arr(items) => {
                    let item = seg.parse::<usize>().ok().and_then(|i| items.get(i));
                    if let Some(v) = item {
                        v.select(rest, out);
                    }
                }
                Json::Str(_) | Json::Other => {}
            }
        }

        /// A string, or each string of an array of them.
        pub(super) fn strings(&self, f: &mut impl FnMut(&str)) {
            match self {
                Json::Str(s) => f(s),
                Json::Arr(items) => {
                    for i in items {
                        if let Json::Str(s) = i {
                            f(s);
                        }
                    }
                }
                Json::Obj(_) | Json::Other => {}
            }
        }
    }

    impl<'de> Deserialize<'de> for Json {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(JsonVisitor)
        }
    }

    struct JsonVisitor;

    impl<'de> Visitor<'de> for JsonVisitor {
        type Value = Json;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
            Ok(Json::Other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
            Ok(Json::Other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
            Ok(Json::Other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
            Ok(Json::Other)
        }
        fn visit_unit<E>(self) -> Result<Json, E> {
            Ok(Json::Other)
        }
        fn visit_str<E>(self, s: &str) -> Result<Json, E> {
            Ok(Json::Str(s.to_string()))
        }
        fn visit_string<E>(self, s: String) -> Result<Json, E> {
            Ok(Json::Str(s))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
            let mut items = Vec::new();
            while let Some(v) = seq.next_element()? {
                items.push(v);
            }
            Ok(Json::Arr(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
            let mut entries = Vec::new();
            while let Some(e) = map.next_entry::<String, Json>()? {
                entries.push(e);
            }
            Ok(Json::Obj(entries))
        }
    }
}

/// The boundary of a `multipart/form-data` content type (RFC 7578), if
/// that is what `content_type` is and it names one (1 to 200 bytes; RFC
/// 2046 allows 70, servers accept more).
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let b = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then_some(v.trim())
    })?;
    let b = b
        .strip_prefix('"')
        .and_then(|b| b.strip_suffix('"'))
        .unwrap_or(b);
    (1..=200).contains(&b.len()).then_some(b)
}

/// Every text part named `key` in a multipart `body`.
fn multipart(body: &[u8], boundary: &str, key: &str, found: &mut Found) {
    for part in parts(body, boundary) {
        if found.full() {
            return;
        }
        let Some((head, value)) = split_head(part) else {
            continue;
        };
        if part_name(head).is_some_and(|n| n == key) {
            found.push(String::from_utf8_lossy(value));
        }
    }
}

/// The parts of a multipart `body` (headers and content, the line end
/// before the next delimiter removed), preamble and epilogue skipped.
fn parts<'a>(body: &'a [u8], boundary: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let sep = format!("\n--{boundary}").into_bytes();
    let finder = memchr::memmem::Finder::new(&sep).into_owned();
    // After the first delimiter: at the very start, or after a line end.
    let open = sep.get(1..).unwrap_or_default();
    let mut pos = if body.starts_with(open) {
        Some(open.len())
    } else {
        finder.find(body).and_then(|i| i.checked_add(sep.len()))
    };
    std::iter::from_fn(move || {
        let at = pos.take()?;
        let rest = body.get(at..)?;
        if rest.starts_with(b"--") {
            return None; // the closing delimiter
        }
        // The rest of the delimiter line (transport padding) is skipped.
        let start = at
            .checked_add(memchr::memchr(b'\n', rest)?)?
            .checked_add(1)?;
        let tail = body.get(start..)?;
        let (part, next) = match finder.find(tail) {
            Some(i) => (tail.get(..i)?, start.checked_add(i)?.checked_add(sep.len())),
            None => (tail, None), // no closing delimiter: the rest is the part
        };
        pos = next;
        Some(part.strip_suffix(b"\r").unwrap_or(part))
    })
}

/// A part's header block and its content, split at the first empty line.
fn split_head(part: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = 0usize;
    loop {
        let rest = part.get(at..)?;
        let nl = memchr::memchr(b'\n', rest)?;
        let line = rest.get(..nl)?;
        let next = at.checked_add(nl)?.checked_add(1)?;
        if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
            return Some((part.get(..at)?, part.get(next..)?));
        }
        at = next;
    }
}

/// The `name` of a part's `Content-Disposition`, unless it is a file.
fn part_name(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    let value = head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let params = disposition_params(value);
    if params
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("filename") || k.eq_ignore_ascii_case("filename*"))
    {
        return None;
    }
    params
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("name"))
        .map(|(_, v)| v)
}

/// The parameters of a `Content-Disposition` value (after its type):
/// `name=token` or `name="quoted \"string\""`.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // The disposition type (`form-data`) comes first.
    let mut rest = value.split_once(';').map_or("", |(_, r)| r);
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if rest.is_empty() {
            return out;
        }
        let end = rest.find(['=', ';']).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        let name = name.trim().to_string();
        let Some(after) = after.strip_prefix('=') else {
            rest = after;
            continue;
        };
        let after = after.trim_start();
        let (v, next) = match after.strip_prefix('"') {
            Some(q) => quoted(q),
            None => {
                let end = after.find(';').unwrap_or(after.len());
                let (v, next) = after.split_at(end);
                (v.trim().to_string(), next)
            }
        };
        out.push((name, v));
        rest = next;
    }
}

/// A quoted string's value (backslash escapes undone) and what follows
/// its closing quote; an unclosed one runs to the end.
fn quoted(s: &str) -> (String, &str) {
    let mut v = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (v, s.get(i + 1..).unwrap_or_default()),
            '\\' => {
                if let Some((_, e)) = chars.next() {
                    v.push(e);
                }
            }
            c => v.push(c),
        }
    }
    (v, "")
}

#[cfg(test)]
mod tests;
