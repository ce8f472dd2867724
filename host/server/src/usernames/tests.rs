//! [`usernames`](super::usernames) on each encoding, the spellings that
//! must not split an account, and arbitrary input.

use super::*;
use http::HeaderValue;
use proptest::prelude::*;

fn ct(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
    h
}

fn form_ct() -> HeaderMap {
    ct("application/x-www-form-urlencoded")
}

fn get(h: &HeaderMap, q: Option<&str>, body: &str, field: &str) -> Vec<String> {
    usernames(h, q, body.as_bytes(), field)
}

#[test]
fn form_every_repeated_field_in_order() {
    let h = form_ct();
    assert_eq!(
        get(&h, None, "username=Al%20ice&password=x", "username"),
        ["Al ice"]
    );
    assert_eq!(
        get(
            &h,
            None,
            "username=alice&password=x&username=bob",
            "username"
        ),
        ["alice", "bob"]
    );
    assert!(get(&h, None, "password=x", "username").is_empty());
    assert!(get(&h, None, "username=+&username=", "username").is_empty());
    // Names are exact: no prefix, no case folding of the field.
    assert!(get(&h, None, "usernames=a&Username=b", "username").is_empty());
}

#[test]
fn form_whatever_the_content_type_says() {
    for h in [
        ct("text/plain"),
        ct("application/json"),
        ct("APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8"),
        HeaderMap::new(),
    ] {
        assert_eq!(
            get(&h, None, "username=carol", "username"),
            ["carol"],
            "{h:?}"
        );
    }
}

#[test]
fn json_whatever_the_content_type_says() {
    let body = r#"  {"username":"bob","password":"x"}"#;
    for h in [
        ct("application/json"),
        ct("application/vnd.api+json"),
        ct("text/plain;charset=UTF-8"),
        form_ct(),
        HeaderMap::new(),
    ] {
        assert_eq!(get(&h, None, body, "username"), ["bob"], "{h:?}");
    }
}

#[test]
fn json_pointer_arrays_repeats_and_non_strings() {
    let h = ct("application/json");
    let body = r#"{"user":{"email":"a@b"}}"#;
    assert_eq!(get(&h, None, body, "/user/email"), ["a@b"]);
    // A top-level key is not found by a pointer's last segment alone.
    assert!(get(&h, None, body, "email").is_empty());
    assert_eq!(
        get(&h, None, r#"{"username":["a","b",3,"a"]}"#, "username"),
        ["a", "b"]
    );
    // A repeated key: serde_json keeps the last, other parsers the first.
    assert_eq!(
        get(
            &h,
            None,
            r#"{"username":"first","username":"last"}"#,
            "username"
        ),
        ["first", "last"]
    );
    assert_eq!(
        get(&h, None, r#"{"users":[{"n":"x"},{"n":"y"}]}"#, "/users/1/n"),
        ["y"]
    );
    assert_eq!(get(&h, None, r#"{"a/b":{"~":"z"}}"#, "/a~1b/~0"), ["z"]);
    for body in [
        r#"{"user":{"email":5}}"#,
        r#"{"user":{"email":null}}"#,
        r#"{"user":{"email":{"x":"y"}}}"#,
        r#"{"user":"flat"}"#,
    ] {
        assert!(get(&h, None, body, "/user/email").is_empty(), "{body}");
    }
}

#[test]
fn broken_json_is_read_as_a_form() {
    let h = ct("application/json");
    assert!(get(&h, None, "not json", "username").is_empty());
    assert!(get(&h, None, r#"{"username":"bob""#, "username").is_empty());
    // `{` that is not JSON: a form (which is what a PHP app reads).
    assert_eq!(get(&h, None, "{x&username=eve", "username"), ["eve"]);
}

#[test]
fn pointer_fields_match_nested_form_fields() {
    let h = form_ct();
    assert_eq!(
        get(
            &h,
            None,
            "user%5Bemail%5D=a%40b&user[email]=c",
            "/user/email"
        ),
        ["a@b", "c"]
    );
    assert_eq!(get(&h, None, "user=a", "/user"), ["a"]);
}

fn multipart_body(boundary: &str, eol: &str, parts: &[(&str, &str)]) -> String {
    let mut b = String::new();
    for (head, value) in parts {
        b.push_str(&format!("--{boundary}{eol}{head}{eol}{eol}{value}{eol}"));
    }
    b.push_str(&format!("--{boundary}--{eol}"));
    b
}

#[test]
fn multipart_text_parts_only() {
    let h = ct("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW");
    let body = multipart_body(
        "----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "\r\n",
        &[
            (r#"Content-Disposition: form-data; name="username""#, "alice"),
            (r#"Content-Disposition: form-data; name="password""#, "pw\r\nusername=x"),
            (
                "Content-Disposition: form-data; name=\"username\"; filename=\"u.txt\"\r\nContent-Type: text/plain",
                "mallory",
            ),
            (r#"content-disposition: FORM-DATA; NAME="username""#, "bob"),
        ],
    );
    assert_eq!(get(&h, None, &body, "username"), ["alice", "bob"]);
    assert!(get(&h, None, &body, "missing").is_empty());
}

#[test]
fn multipart_lenient_forms() {
    // Quoted boundary, bare LF, a preamble, no closing delimiter, an
    // escaped quote in a name, an unquoted name.
    let h = ct(r#"Multipart/Form-Data; charset=utf-8; boundary="b:1 x""#);
    let body = "preamble\n--b:1 x\nContent-Disposition: form-data; name=\"username\"\n\n carol \n--b:1 x\nContent-Disposition: form-data; name=username\n\ndave";
    assert_eq!(get(&h, None, body, "username"), [" carol ", "dave"]);
    let body =
        "--b:1 x\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\n\r\nerin\r\n--b:1 x--";
    assert_eq!(get(&h, None, body, "a\"b"), ["erin"]);
    // The value is everything up to the delimiter's line end.
    let body = "--b:1 x\r\nContent-Disposition: form-data; name=\"u\"\r\n\r\nline1\r\nline2\r\n--b:1 x--\r\n";
    assert_eq!(get(&h, None, body, "u"), ["line1\r\nline2"]);
}

#[test]
fn multipart_without_a_boundary_is_read_as_json_or_form() {
    let h = ct("multipart/form-data");
    assert_eq!(get(&h, None, "username=frank", "username"), ["frank"]);
    assert_eq!(
        get(&h, None, r#"{"username":"gina"}"#, "username"),
        ["gina"]
    );
    // A boundary the body does not use: nothing from the body.
    let h = ct("multipart/form-data; boundary=zzz");
    assert!(get(&h, None, "username=frank", "username").is_empty());
}

#[test]
fn multipart_pointer_field_is_the_bracket_name() {
    let h = ct("multipart/form-data; boundary=X");
    let body = multipart_body(
        "X",
        "\r\n",
        &[(
            r#"Content-Disposition: form-data; name="user[email]""#,
            "h@i",
        )],
    );
    assert_eq!(get(&h, None, &body, "/user/email"), ["h@i"]);
}

#[test]
fn query_every_occurrence_after_the_body() {
    let h = form_ct();
    assert_eq!(
        get(
            &h,
            Some("username=q1&x=1&username=q2"),
            "username=b",
            "username"
        ),
        ["b", "q1", "q2"]
    );
    assert_eq!(
        get(&HeaderMap::new(), Some("username=ivy"), "", "username"),
        ["ivy"]
    );
    assert_eq!(
        get(
            &ct("application/json"),
            Some("username=Bob"),
            r#"{"username":"bob"}"#,
            "username"
        ),
        ["bob"]
    );
}

#[test]
fn spellings_of_one_account_are_one_value() {
    let h = form_ct();
    let body = "username=%EF%BD%81lic%C3%A9&username=alice&username=ALICE&username=Alice%20\
                &username=alice%CC%81&username=%EF%BC%A1%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85\
                &username=AL%C4%B0CE";
    // `ａlicé` (fullwidth a, precomposed é) is kept as first found.
    assert_eq!(get(&h, None, body, "username"), ["ａlicé"]);
    // ß folds to ss, as in the accent-insensitive collations.
    assert_eq!(
        get(
            &h,
            None,
            "username=stra%C3%9Fe&username=STRASSE",
            "username"
        ),
        ["straße"]
    );
    // Dotless ı is a letter of its own.
    assert_eq!(
        get(&h, None, "username=al%C4%B1ce&username=alice", "username"),
        ["alıce", "alice"]
    );
}

#[test]
fn at_most_sixteen() {
    let body: String = (0..100).map(|i| format!("u=n{i}&")).collect();
    let got = get(&form_ct(), Some("u=extra"), &body, "u");
    assert_eq!(got.len(), MAX_USERNAMES);
    assert_eq!(got.first().map(String::as_str), Some("n0"));
    assert_eq!(got.last().map(String::as_str), Some("n15"));
}

#[test]
fn boundaries() {
    assert_eq!(
        multipart_boundary("multipart/form-data; boundary=abc"),
        Some("abc")
    );
    assert_eq!(
        multipart_boundary("multipart/form-data;boundary=\"a b\""),
        Some("a b")
    );
    assert_eq!(multipart_boundary("multipart/mixed; boundary=abc"), None);
    assert_eq!(multipart_boundary("multipart/form-data; boundary="), None);
    assert_eq!(
        multipart_boundary("multipart/form-data; boundary=\"\""),
        None
    );
    let long = format!("multipart/form-data; boundary={}", "x".repeat(201));
    assert_eq!(multipart_boundary(&long), None);
}

fn content_types() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/x-www-form-urlencoded".to_string()),
        Just("application/json".to_string()),
        Just("text/plain".to_string()),
        "multipart/form-data; boundary=[-a-zA-Z0-9'()+_,./:=? ]{0,12}",
        "[ -~]{0,40}",
    ]
}

/// Bodies that reach every parser: arbitrary bytes, and arbitrary bytes
/// around the pieces the parsers look for.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        Just(b"--a".to_vec()),
        Just(b"\r\n--a\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"--".to_vec()),
        Just(b"Content-Disposition: form-data; name=\"u\"".to_vec()),
        Just(b"; filename=\"".to_vec()),
        Just(b"\"\\".to_vec()),
        Just(b"{\"u\":[\"".to_vec()),
        Just(b"u=".to_vec()),
        Just(b"&".to_vec()),
        Just("ａé\u{301}".as_bytes().to_vec()),
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_stays_bounded(
        ctype in content_types(),
        body in bodies(),
        query in proptest::option::of("[ -~]{0,40}"),
        field in prop_oneof![Just("u"), Just("/u"), Just("/u/0"), Just(""), Just("a\"b")],
    ) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&ctype) {
            h.insert(header::CONTENT_TYPE, v);
        }
        let got = usernames(&h, query.as_deref(), &body, field);
        prop_assert!(got.len() <= MAX_USERNAMES);
        let mut keys: Vec<String> = got.iter().map(|u| fold(u).into_owned()).collect();
        prop_assert!(keys.iter().all(|k| !k.is_empty()));
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), got.len());
    }

    #[test]
    fn any_header_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..60), body in bodies()) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            h.insert(header::CONTENT_TYPE, v);
        }
        let got = usernames(&h, None, &body, "u");
        prop_assert!(got.len() <= MAX_USERNAMES);
    }

    #[test]
    fn a_multipart_value_is_found(
        boundary in "[-a-zA-Z0-9_]{1,40}",
        value in "[a-zA-Z0-9 ._@-]{0,20}[a-zA-Z0-9]",
        crlf in any::<bool>(),
    ) {
        let h = ct(&format!("multipart/form-data; boundary={boundary}"));
        let eol = if crlf { "\r\n" } else { "\n" };
        let body = multipart_body(
            &boundary,
            eol,
            &[
                ("Content-Disposition: form-data; name=\"password\"", "secret"),
                ("Content-Disposition: form-data; name=\"u\"", &value),
            ],
        );
        prop_assert_eq!(get(&h, None, &body, "u"), vec![value]);
    }
}
