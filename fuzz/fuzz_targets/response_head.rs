//! Fuzz target: upstream response head parser and response framing (RFC 9112 §6.3).
//!
//! # Guarantee
//! For any bytes:
//! - [`HeadScanner::scan`], [`parse_response`], [`write_response_head`] and the chunked
//!   decoder on the body never panic;
//! - an accepted head has a **consistent framing**: no body for HEAD, 1xx, 204 and 304;
//!   otherwise chunked when there is `Transfer-Encoding`, the one `Content-Length` when
//!   there is not, until-close when neither is present; a head carrying both, or two
//!   `Content-Length` fields, or `_` in place of `-` in either name, is refused, and so is
//!   one whose status allows a body (HEAD included) with a `Transfer-Encoding` other than
//!   one field line `chunked`;
//! - a connection is only reusable (`is_keep_alive`) when the response is delimited
//!   (not until-close), is not a 101, and was not HTTP/1.0 with `Transfer-Encoding`
//!   (RFC 9112 §6.1: such framing is faulty, close after it);
//! - the head ringgate sends to the client re-parses with the same status and framing,
//!   and carries ringgate's own version (`HTTP/1.1`), whatever the upstream's; one whose
//!   status rules out a body carries no `Transfer-Encoding` (1xx, 204, 304) and no
//!   `Content-Length` (1xx, 204), nor does the answer to HEAD for an HTTP/1.0 client
//!   carry `Transfer-Encoding`.
//!
//! Input layout: byte 0 bit 0 says the request was HEAD, bits 1–2 pick the `Connection`
//! field ringgate adds, bit 3 says the client speaks HTTP/1.0; the rest is the response
//! (head, then body bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringgate::http::chunked::ChunkedDecoder;
use ringgate::http::head::{write_response_head, ConnectionField};
use ringgate::http::response::{parse_response, ResponseFraming, ResponseHead};
use ringgate::http::scan::HeadScanner;

/// What conn.rs allows for a response head.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, raw)) = data.split_first() else {
        return;
    };
    let is_head_request = ctl & 1 == 1;
    let to_http10 = ctl & 8 == 8;
    let connection = match (ctl >> 1) & 3 {
        0 => ConnectionField::Omit,
        1 => ConnectionField::Close,
        2 => ConnectionField::KeepAlive,
        _ => ConnectionField::Upgrade,
    };
    let Ok(Some(len)) = HeadScanner::new().scan(raw, MAX_RESPONSE_HEAD_BYTES) else {
        return;
    };
    let mut head = ResponseHead::default();
    let parsed = parse_response(raw, len, is_head_request, to_http10, &mut head);
    let fields = fields(&raw[..len]);
    let Ok(()) = parsed else {
        return;
    };
    let Some(fields) = fields else {
        panic!("ringgate accepted a head httparse refuses");
    };
    check_framing(&head, &fields, is_head_request);

    // The head sent to the client reads the same.
    let mut out = Vec::new();
    write_response_head(raw, &head, connection, &mut out);
    assert_eq!(
        HeadScanner::new().scan(&out, usize::MAX),
        Ok(Some(out.len()))
    );
    let mut again = ResponseHead::default();
    if let Err(e) = parse_response(&out, out.len(), is_head_request, to_http10, &mut again) {
        panic!("rewritten head refused: {}", e.reason());
    }
    assert_eq!(again.status, head.status);
    assert!(out.starts_with(b"HTTP/1.1 "), "relayed without ringgate's version");
    assert_eq!(
        again.framing(),
        head.framing(),
        "framing changed on rewrite"
    );
    let sent = |name: &[u8]| {
        again
            .headers
            .iter()
            .any(|f| f.name.get(&out).eq_ignore_ascii_case(name))
    };
    let (status, bodiless) = (head.status, head.status < 200 || head.status == 204);
    if bodiless || status == 304 || (is_head_request && to_http10) {
        assert!(!sent(b"transfer-encoding"), "{status} relayed with Transfer-Encoding");
    }
    if bodiless {
        assert!(!sent(b"content-length"), "{status} relayed with Content-Length");
    }
    if head.status == 101 && fields.2.iter().any(|(n, _)| n == "upgrade") {
        let kept = again
            .headers
            .iter()
            .any(|f| f.name.get(&out).eq_ignore_ascii_case(b"upgrade"));
        assert!(kept, "101 relayed without its Upgrade field");
    }

    // The body decoder copes with whatever follows.
    if head.framing() == ResponseFraming::Chunked {
        let mut d = ChunkedDecoder::new();
        if let Ok(n) = d.feed(&raw[len..], &mut |_| {}) {
            assert!(n <= raw.len() - len);
        }
    }
});

/// (status, minor version, fields) as httparse reads them.
type Fields = (u16, u8, Vec<(String, Vec<u8>)>);

fn fields(head: &[u8]) -> Option<Fields> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => Some((
            r.code?,
            r.version?,
            r.headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
        )),
        _ => None,
    }
}

fn check_framing(head: &ResponseHead, (status, version, fields): &Fields, is_head: bool) {
    assert_eq!(head.status, *status);
    assert_eq!(head.minor_version, *version);
    let cl: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| &v[..])
        .collect();
    let te: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| &v[..])
        .collect();
    assert!(
        cl.is_empty() || te.is_empty(),
        "accepted both Content-Length and Transfer-Encoding"
    );
    assert!(cl.len() <= 1, "accepted duplicate Content-Length");
    assert!(
        !fields.iter().any(|(n, _)| n.contains('_')
            && matches!(n.replace('_', "-").as_str(), "content-length" | "transfer-encoding")),
        "accepted an underscore variant of a framing field name"
    );
    let bodiless_status = (100..200).contains(status) || *status == 204 || *status == 304;
    if !bodiless_status && !te.is_empty() {
        assert!(
            te.len() == 1 && te[0].eq_ignore_ascii_case(b"chunked"),
            "accepted a Transfer-Encoding other than one `chunked`"
        );
    }
    let expected = if is_head || bodiless_status {
        ResponseFraming::None
    } else if !te.is_empty() {
        ResponseFraming::Chunked
    } else if let Some(v) = cl.first() {
        let n: u64 = std::str::from_utf8(v).unwrap().parse().unwrap();
        if n == 0 {
            ResponseFraming::None
        } else {
            ResponseFraming::Length(n)
        }
    } else {
        ResponseFraming::UntilClose
    };
    assert_eq!(head.framing(), expected);
    if head.is_keep_alive {
        assert_ne!(head.framing(), ResponseFraming::UntilClose);
        assert_ne!(head.status, 101);
        assert!(
            *version != 0 || te.is_empty(),
            "HTTP/1.0 response with Transfer-Encoding kept alive"
        );
    }
}
