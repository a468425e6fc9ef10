//! Routing over real sockets: every user_id source, CQRS, round-robin, hashing, defaults.

mod common;

use common::client::{get, post_json, request, Client};
use common::router::{demo_backend, expected_partition, fnv_hex, served, Router};

struct Fleet {
    router: Router,
    z1: [std::net::SocketAddr; 2],
    z2_write: std::net::SocketAddr,
    z2_read: [std::net::SocketAddr; 2],
    default: std::net::SocketAddr,
}

fn fleet() -> Fleet {
    let z1 = [demo_backend("zone_1"), demo_backend("zone_1")];
    let z2_write = demo_backend("zone_2w");
    let z2_read = [demo_backend("zone_2r"), demo_backend("zone_2r")];
    let default = demo_backend("default");
    let router = Router::start(&format!(
        r#"
default_backend = "{default}"
[partitions.zone_1]
servers = ["{}", "{}"]
[partitions.zone_2]
write = ["{z2_write}"]
read = ["{}", "{}"]
[users]
alice = "zone_1"
bob = "zone_2"
"42" = "zone_2"
"a b" = "zone_2"
"#,
        z1[0], z1[1], z2_read[0], z2_read[1]
    ));
    Fleet {
        router,
        z1,
        z2_write,
        z2_read,
        default,
    }
}

#[test]
fn every_header_and_query_source() {
    let f = fleet();
    let a = f.router.addr;
    assert_eq!(
        get(a, "/api/spot/user/data", "X-User-Id: bob\r\n").zone(),
        "zone_2r"
    );
    assert_eq!(
        get(a, "/api/spot/user/data", "x-trader-id: bob\r\n").zone(),
        "zone_2r"
    );
    assert_eq!(
        get(a, "/api/spot/user/data?user_id=bob", "").zone(),
        "zone_2r"
    );
    assert_eq!(
        get(a, "/api/spot/user/data?x=1&userId=bob", "").zone(),
        "zone_2r"
    );
    assert_eq!(
        get(a, "/api/spot/user/data?user_id=a%20b", "").zone(),
        "zone_2r"
    );
    assert_eq!(
        get(a, "/api/spot/user/data?user_id=a+b", "").zone(),
        "zone_2r"
    );
    // Header wins over query.
    assert_eq!(
        get(a, "/api/spot/user/data?user_id=alice", "X-User-Id: bob\r\n").zone(),
        "zone_2r"
    );
    // No user id at all: the default backend.
    assert_eq!(get(a, "/api/spot/user/data", "").zone(), "default");
}

#[test]
fn every_seed_json_field_and_numeric_ids() {
    let f = fleet();
    let a = f.router.addr;
    for key in [
        "user_id",
        "userId",
        "trader_id",
        "traderId",
        "uid",
        "accountId",
        "account_id",
    ] {
        let body = format!(r#"{{"symbol":"BTCUSDT","{key}":"bob","price":50000}}"#);
        let r = post_json(a, "/api/spot/v2/order", &body);
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.zone(), "zone_2w", "{key}");
        assert_eq!(
            r.json_field("body_fnv64").unwrap(),
            fnv_hex(body.as_bytes())
        );
    }
    assert_eq!(
        post_json(a, "/api/spot/v2/order", r#"{"uid":42}"#).zone(),
        "zone_2w"
    );
    assert_eq!(
        post_json(a, "/api/spot/v2/order", r#"{"accountId":"42"}"#).zone(),
        "zone_2w"
    );
}

#[test]
fn nested_and_in_string_keys_do_not_match() {
    let f = fleet();
    let a = f.router.addr;
    for body in [
        r#"{"order":{"user_id":"bob"}}"#,
        r#"{"note":"\"user_id\":\"bob\""}"#,
        r#"{"list":[{"uid":"bob"}]}"#,
        r#"[{"user_id":"bob"}]"#,
    ] {
        assert_eq!(
            post_json(a, "/api/spot/v2/order", body).zone(),
            "default",
            "{body}"
        );
    }
    // A top-level key after a nested one still counts.
    assert_eq!(
        post_json(
            a,
            "/api/spot/v2/order",
            r#"{"order":{"user_id":"alice"},"user_id":"bob"}"#
        )
        .zone(),
        "zone_2w"
    );
}

#[test]
fn conflicting_user_ids_are_refused() {
    let f = fleet();
    let a = f.router.addr;
    let before: u64 =
        f.z1.iter()
            .chain(f.z2_read.iter())
            .chain([&f.z2_write, &f.default])
            .map(|b| served(*b))
            .sum();
    for body in [
        r#"{"user_id":"alice","user_id":"bob"}"#,
        r#"{"user_id":"alice","uid":"bob"}"#,
        r#"{"user_id":1.5}"#,
    ] {
        let r = post_json(a, "/api/spot/v2/order", body);
        assert_eq!(r.status, 400, "{body}");
    }
    assert_eq!(get(a, "/q?user_id=alice&userId=bob", "").status, 400);
    assert_eq!(
        get(a, "/q", "X-User-Id: alice\r\nX-Trader-Id: bob\r\n").status,
        400
    );
    let after: u64 =
        f.z1.iter()
            .chain(f.z2_read.iter())
            .chain([&f.z2_write, &f.default])
            .map(|b| served(*b))
            .sum();
    assert_eq!(before, after, "nothing reached a backend");
}

#[test]
fn cqrs_write_and_read_servers_with_round_robin() {
    let f = fleet();
    let mut c = Client::connect(f.router.addr);
    // Commands for bob: always the single write server.
    for _ in 0..4 {
        let body = r#"{"user_id":"bob","side":"buy"}"#;
        let r = c.roundtrip(
            format!(
                "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.port(), f.z2_write.port());
    }
    // Queries for bob: alternate over the two read servers.
    let ports: Vec<u16> = (0..4)
        .map(|_| {
            c.roundtrip(b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n")
                .port()
        })
        .collect();
    assert_eq!(ports[0], ports[2]);
    assert_eq!(ports[1], ports[3]);
    assert_ne!(ports[0], ports[1]);
    assert!(f.z2_read.iter().all(|r| ports.contains(&r.port())));
    // zone_1 lists `servers`: Queries and Commands both round-robin over them.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            c.roundtrip(b"GET /api/spot/user/data?user_id=alice HTTP/1.1\r\nHost: t\r\n\r\n")
                .port()
        })
        .collect();
    assert_ne!(ports[0], ports[1]);
    assert!(f.z1.iter().all(|r| ports.contains(&r.port())));
}

#[test]
fn method_rule_classifies_other_paths() {
    let f = fleet();
    let a = f.router.addr;
    assert_eq!(get(a, "/elsewhere", "X-User-Id: bob\r\n").zone(), "zone_2r");
    let r = request(
        a,
        b"DELETE /elsewhere HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n",
    );
    assert_eq!(r.zone(), "zone_2w");
    // Prefixes win over methods.
    let r = request(
        a,
        b"GET /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\n\r\n",
    );
    assert_eq!(r.zone(), "zone_2w");
    let r = request(a, b"POST /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: bob\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.zone(), "zone_2r");
}

#[test]
fn unknown_users_follow_the_consistent_hash() {
    let f = fleet();
    let mut seen = [0usize; 2];
    for i in 0..40 {
        let user = format!("trader-{i}");
        let want = expected_partition(&user, &["zone_1", "zone_2"]);
        seen[usize::from(want == "zone_2")] += 1;
        let zone = get(
            f.router.addr,
            "/api/spot/user/data",
            &format!("X-User-Id: {user}\r\n"),
        )
        .zone();
        let expected = if want == "zone_1" {
            "zone_1"
        } else {
            "zone_2r"
        };
        assert_eq!(zone, expected, "{user}");
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both partitions get hashed users: {seen:?}"
    );
}

#[test]
fn requests_without_user_can_be_rejected() {
    let b = demo_backend("z");
    let r = Router::start(&format!("reject_without_user = true\ndefault_backend = \"{b}\"\n[partitions.z]\nservers = [\"{b}\"]\n"));
    let resp = get(r.addr, "/x", "");
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("no user id"));
    assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").status, 200);
}

/// `POST /api/spot/user/../v2/order` is an order for every backend that resolves dot
/// segments (or decodes `%2e%2e` first, or reads `\` as `/` as the WHATWG URL parser
/// does): it must reach the write server, as a Command.
#[test]
fn dot_segments_do_not_turn_a_command_into_a_query() {
    let f = fleet();
    let a = f.router.addr;
    for path in [
        "/api/spot/user/../v2/order",
        "/api/spot/user/%2e%2e/v2/order",
        "/api/spot/user/..;/v2/order",
        "/api/spot/user/..\\v2/order",
    ] {
        let body = r#"{"user_id":"bob","side":"buy"}"#;
        let r = request(
            a,
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.zone(), "zone_2w", "{path}");
    }
}

/// Two `Content-Type` fields, JSON first: Node.js (and Go's `Header.Get`) keep the first
/// and read the JSON body, so ringgate must read it too.
#[test]
fn a_second_content_type_does_not_hide_a_json_body() {
    let f = fleet();
    let a = f.router.addr;
    let body = r#"{"user_id":"bob","side":"buy"}"#;
    let r = request(
        a,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.zone(), "zone_2w", "bob's order went to {}", r.zone());
}

/// A body whose user id would be read must not be content-encoded: a backend decodes it
/// and finds a user the scan of the raw bytes cannot, so the two would disagree about whose
/// request it is. With the user id in a header the body is not read, and passes.
#[test]
fn an_encoded_body_is_not_read_for_a_user_id() {
    let f = fleet();
    let a = f.router.addr;
    let body = r#"{"user_id":"bob"}"#;
    let post = |extra: &str| {
        request(
            a,
            format!(
                "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let refused = post("Content-Encoding: gzip\r\n");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("content-encoded"),
        "{}",
        refused.text()
    );
    assert_eq!(post("Content-Encoding: identity\r\n").zone(), "zone_2w");
    assert_eq!(
        post("Content-Encoding: gzip\r\nX-User-Id: alice\r\n").zone(),
        "zone_1"
    );
}

/// `bytes` as a gzip member (RFC 1952) holding one stored deflate block: what a client
/// sends for `Transfer-Encoding: gzip` without compressing.
fn gzip_stored(bytes: &[u8]) -> Vec<u8> {
    let crc = !bytes.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
        crc
    });
    let len = bytes.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

/// The same for a transfer coding: `Transfer-Encoding: gzip, chunked` puts gzip bytes in
/// the chunks, which a backend decoding the coding reads as bob's order while the scan of
/// the de-chunked bytes found nobody (and sent it to the default backend). Refused, as a
/// content-encoded body is; with the user id in a header the body is not read, and passes.
#[test]
fn a_transfer_coded_body_is_not_read_for_a_user_id() {
    let f = fleet();
    let a = f.router.addr;
    let gz = gzip_stored(br#"{"user_id":"bob"}"#);
    let post = |coding: &str, extra: &str| {
        let mut raw = format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}Transfer-Encoding: {coding}\r\n\r\n{:x}\r\n",
            gz.len()
        )
        .into_bytes();
        raw.extend_from_slice(&gz);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        request(a, &raw)
    };
    for coding in ["gzip, chunked", "deflate, chunked", "x-gzip, chunked"] {
        let refused = post(coding, "");
        assert_eq!(refused.status, 400, "{coding}: {}", refused.text());
        assert!(refused.text().contains("encoded"), "{}", refused.text());
    }
    assert_eq!(
        post("gzip, chunked", "X-User-Id: alice\r\n").zone(),
        "zone_1"
    );
}

/// Every backend's request count, summed.
fn served_by_all(f: &Fleet) -> u64 {
    f.z1.iter()
        .chain(f.z2_read.iter())
        .chain([&f.z2_write, &f.default])
        .map(|b| served(*b))
        .sum()
}

/// A POST of raw body bytes, sent with `Content-Length` or in chunks of one byte.
fn post_body(a: std::net::SocketAddr, body: &[u8], is_chunked: bool) -> common::client::Response {
    let mut raw =
        b"POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            .to_vec();
    if is_chunked {
        raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for b in body {
            raw.extend_from_slice(b"1\r\n");
            raw.push(*b);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
    } else {
        raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body);
    }
    request(a, &raw)
}

/// Go's `encoding/json` matches a key to a field in any case (and `ſ` as `s`), the last
/// match winning: `{"user_id":"alice","USER_ID":"bob"}` is an order of bob's to a Go
/// backend, and was routed to alice's partition.
#[test]
fn json_keys_in_any_case_name_the_user() {
    let f = fleet();
    let a = f.router.addr;
    let before = served_by_all(&f);
    for body in [
        r#"{"user_id":"alice","USER_ID":"bob"}"#,
        "{\"user_id\":\"alice\",\"u\u{17f}er_id\":\"bob\"}",
        r#"{"uid":"alice","Uid":"bob"}"#,
    ] {
        for is_chunked in [false, true] {
            let r = post_body(a, body.as_bytes(), is_chunked);
            assert_eq!(r.status, 400, "{body} (chunked: {is_chunked})");
        }
    }
    assert_eq!(before, served_by_all(&f), "nothing reached a backend");
    for is_chunked in [false, true] {
        let r = post_body(a, br#"{"User_Id":"bob","side":"buy"}"#, is_chunked);
        assert_eq!(r.zone(), "zone_2w", "chunked: {is_chunked}");
    }
}

/// JavaScript (and Go decoding into `any`) holds JSON numbers as `f64`: past 2^53 an
/// integer reads as another one, `9007199254740993` as `9007199254740992`.
#[test]
fn integer_ids_beyond_2_pow_53_are_refused() {
    let f = fleet();
    let a = f.router.addr;
    let before = served_by_all(&f);
    for body in [
        r#"{"uid":9007199254740993}"#,
        r#"{"uid":18446744073709551615}"#,
    ] {
        assert_eq!(
            post_json(a, "/api/spot/v2/order", body).status,
            400,
            "{body}"
        );
    }
    assert_eq!(before, served_by_all(&f), "nothing reached a backend");
    let r = post_json(a, "/api/spot/v2/order", r#"{"uid":9007199254740991}"#);
    assert_eq!(r.status, 200);
}

/// Backends read a user from objects `serde_json` refuses: Go takes invalid UTF-8, lone
/// surrogates and `1e309` in fields it ignores, and its `Decoder` stops after the first
/// value; Node and Python take lone surrogates and `1e309`, Python `NaN` and a byte order
/// mark. Each reads alice's order from these, which went to the default partition as
/// nobody's (and past her rate limit).
#[test]
fn an_object_that_is_not_valid_json_is_refused() {
    let f = fleet();
    let a = f.router.addr;
    let before = served_by_all(&f);
    let bodies: &[&[u8]] = &[
        br#"{"user_id":"alice","x":"\ud800"}"#,
        br#"{"x":"\udc00","user_id":"alice"}"#,
        b"{\"user_id\":\"alice\",\"x\":\"\xff\"}",
        br#"{"user_id":"alice","x":1e309}"#,
        br#"{"user_id":"alice","x":NaN}"#,
        br#"{"user_id":"alice"}{"user_id":"bob"}"#,
        b"\xef\xbb\xbf{\"user_id\":\"alice\"}",
    ];
    for body in bodies {
        for is_chunked in [false, true] {
            let r = post_body(a, body, is_chunked);
            let shown = String::from_utf8_lossy(body);
            assert_eq!(r.status, 400, "{shown} (chunked: {is_chunked})");
        }
    }
    assert_eq!(before, served_by_all(&f), "nothing reached a backend");
    // What is not an object at all names nobody.
    for body in [&br#"[{"user_id":"bob"}]"#[..], b"user_id=bob"] {
        assert_eq!(post_body(a, body, false).zone(), "default");
    }
}

/// Servers read other spellings of a query name as the user id: PHP turns `.` and ` `
/// into `_` (`user.id` is its `user_id`, the last one winning), ASP.NET matches names in
/// any case, PHP and Express read `user_id[]` as an array. Each of these went to alice's
/// partition (or to the default one) while such a backend read bob.
#[test]
fn query_names_other_servers_read_as_the_user_id_are_counted() {
    let f = fleet();
    let a = f.router.addr;
    let before = served_by_all(&f);
    for query in [
        "user_id=alice&user.id=bob",
        "user_id=alice&user+id=bob",
        "USER_ID=bob&user_id=alice",
        "user_id[]=bob",
        "user_id=alice&user_id[0]=bob",
    ] {
        let r = get(a, &format!("/api/spot/user/data?{query}"), "");
        assert_eq!(r.status, 400, "{query}");
    }
    assert_eq!(before, served_by_all(&f), "nothing reached a backend");
    assert_eq!(
        get(a, "/api/spot/user/data?user.id=bob", "").zone(),
        "zone_2r"
    );
}

/// Node and Python decode a query's percent-escapes as UTF-8, reading bytes that are not
/// UTF-8 as U+FFFD: `?user_id=%FF` and `?user_id=%FE` are one user to them, and were two
/// to ringgate (routed and rate-limited apart). Header values are read as Latin-1 by
/// some (Node, Java, WSGI) and as UTF-8 by others, so a non-ASCII header id has no one
/// reading either.
#[test]
fn user_ids_servers_read_differently_are_refused() {
    let f = fleet();
    let a = f.router.addr;
    let before = served_by_all(&f);
    for query in [
        "user_id=%FF",
        "user_id=a%FE",
        "userId=%C3",
        "user_id=%ED%A0%80",
    ] {
        let r = get(a, &format!("/api/spot/user/data?{query}"), "");
        assert_eq!(r.status, 400, "{query}");
    }
    for value in [&b"\xff"[..], b"a\xfe", "caf\u{e9}".as_bytes()] {
        let mut raw = b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: ".to_vec();
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n\r\n");
        let r = request(a, &raw);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(value));
    }
    // An escaped id far beyond `limits.max_user_id_bytes` is refused as a plain one is.
    let long = format!(r#"{{"user_id":"{}"}}"#, r"\u0061".repeat(10_000));
    assert_eq!(post_json(a, "/api/spot/v2/order", &long).status, 400);
    assert_eq!(before, served_by_all(&f), "nothing reached a backend");
    let r = get(a, "/api/spot/user/data?user_id=caf%C3%A9", "");
    assert_eq!(r.status, 200);
}
