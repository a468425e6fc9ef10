//! Upstream response heads: syntax, framing (RFC 9112 §6.3) and reusability.
//!
//! Ringgate relays a response to the client as it arrives; it parses the head only to
//! learn where the response ends (so the upstream connection can be reused) and to drop
//! hop-by-hop fields. A response whose framing is ambiguous (`Content-Length` together
//! with `Transfer-Encoding`, duplicate or invalid `Content-Length`, `Transfer-Encoding`
//! other than one `chunked`) is refused with 502 and its connection is closed: it must
//! never desynchronise the pool, nor a client.

use std::mem::MaybeUninit;
use std::time::Duration;

use super::field::{
    eq_lower, field_line, is_underscore_framing_name, list_elements, mark_named_fields,
    parse_content_length, trim_ows, HeaderField, Span,
};
use super::parse::MAX_HEADERS_LIMIT;
use crate::error::{ErrorKind, ProxyError};

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (1xx, 204, 304, response to HEAD, or Content-Length: 0).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked until the zero chunk and trailers.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed upstream response head (offsets into the upstream read buffer).
#[derive(Debug, Default)]
pub struct ResponseHead {
    /// Head length including the blank line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Body framing.
    pub framing: Option<ResponseFraming>,
    /// The upstream allows this connection to carry another request.
    pub is_keep_alive: bool,
    /// Header fields in order; hop-by-hop ones are marked, and so are framing fields a
    /// bodiless status rules out (both are dropped on the way to the client).
    pub headers: Vec<HeaderField>,
    /// At least one field is marked (so the head must be rewritten).
    pub has_hop_by_hop: bool,
    /// How long the server keeps an idle connection open, as its `Keep-Alive: timeout=N`
    /// says (RFC 2068 §19.7.1.1; sent by Apache and Node.js, among others).
    pub keep_alive_timeout: Option<Duration>,
}

impl ResponseHead {
    /// Framing (`UntilClose` before a parse).
    pub fn framing(&self) -> ResponseFraming {
        self.framing.unwrap_or(ResponseFraming::UntilClose)
    }

    /// Whether this is an interim (1xx) response.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// Byte range of header line `i` within the head.
    pub fn header_line(&self, i: usize) -> (usize, usize) {
        field_line(&self.headers, self.len, i)
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::upstream(ErrorKind::BadResponse(reason))
}

/// Parse `buf[..len]` (a complete head) as a response to a request whose method was HEAD
/// when `is_head_request`, for an HTTP/1.0 client when `to_http10`.
pub fn parse_response(
    buf: &[u8],
    len: usize,
    is_head_request: bool,
    to_http10: bool,
    head: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let bytes = &buf[..len];
    // httparse reads past empty lines before the status line; a head relayed verbatim
    // would carry them to the client.
    if matches!(bytes.first(), Some(b'\r' | b'\n')) {
        return Err(bad("malformed response head from upstream"));
    }
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_LIMIT] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        bytes,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) | Err(_) => return Err(bad("malformed response head from upstream")),
    }
    head.len = len;
    head.status = res.code.unwrap_or(0);
    head.minor_version = res.version.unwrap_or(1);
    head.headers.clear();
    head.has_hop_by_hop = false;
    if !(100..=599).contains(&head.status) {
        return Err(bad("invalid status from upstream"));
    }

    let is_bodiless = head.status < 200 || head.status == 204 || head.status == 304;
    let mut facts = Facts {
        // RFC 9112 §6.1: never on a 1xx or a 204, and a 304's only says what a GET would
        // have had: a reader that frames by it first reads the bytes that follow as
        // chunks (Python's `http.client`, under `requests`, waits for them after a 204 or
        // a 304). A response to HEAD keeps it, as the client knows its method, except to
        // an HTTP/1.0 client, which is never sent Transfer-Encoding (§6.1).
        drops_te: is_bodiless || (is_head_request && to_http10),
        ..Facts::default()
    };
    for h in res.headers.iter() {
        let is_hop_by_hop = facts.observe(bytes, h.name.as_bytes(), h.value, head.status)?;
        head.has_hop_by_hop |= is_hop_by_hop;
        head.headers.push(HeaderField {
            name: Span::of(bytes, h.name.as_bytes()),
            value: Span::of(bytes, h.value),
            is_hop_by_hop,
            is_forwarding: false,
        });
    }
    if facts.conn_names_other {
        mark_named(bytes, head);
    }
    settle(head, &facts, is_head_request)
}

/// What the fields of a response head say about its framing and its connection.
#[derive(Default)]
struct Facts {
    content_length: Option<u64>,
    content_length_count: usize,
    te_seen: bool,
    /// The one Transfer-Encoding field line says `chunked`, and nothing else.
    te_only_chunked: bool,
    /// Transfer-Encoding is dropped on the way to the client.
    drops_te: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_names_other: bool,
    keep_alive_timeout: Option<Duration>,
}

impl Facts {
    /// Note one field (`value` is part of `head`); whether it is dropped on the way to the
    /// client (hop-by-hop, or a framing field its status or client rules out).
    fn observe(
        &mut self,
        head: &[u8],
        name: &[u8],
        value: &[u8],
        status: u16,
    ) -> Result<bool, ProxyError> {
        let eq = |lit: &[u8]| eq_lower(name, lit);
        Ok(match name.len() {
            2 if eq(b"te") => true,
            7 if eq(b"upgrade") => status != 101,
            10 if eq(b"connection") => {
                for token in list_elements(value).flatten() {
                    if eq_lower(token, b"close") {
                        self.conn_close = true;
                    } else if eq_lower(token, b"keep-alive") {
                        self.conn_keep_alive = true;
                    } else if !eq_lower(token, b"upgrade") {
                        self.conn_names_other = true;
                    }
                }
                true
            }
            10 if eq(b"keep-alive") => {
                self.keep_alive_timeout = keep_alive_timeout(value).or(self.keep_alive_timeout);
                true
            }
            14 if eq(b"content-length") => {
                self.content_length_count += 1;
                self.content_length = Some(
                    parse_content_length(value)
                        .map_err(|_| bad("invalid Content-Length from upstream"))?,
                );
                // RFC 9110 §8.6: none on a 1xx or a 204, which have no body (a 304's is
                // the representation's length, and stays).
                status < 200 || status == 204
            }
            16 if eq(b"proxy-connection") => true,
            17 if eq(b"transfer-encoding") => {
                // httparse trims the OWS around a value; Python's `http.client` compares
                // it with trailing whitespace: only the line's own end says `chunked`.
                let line_ends = head.get(Span::of(head, value).end as usize) == Some(&b'\r');
                self.te_only_chunked = !self.te_seen && line_ends && eq_lower(value, b"chunked");
                self.te_seen = true;
                self.drops_te
            }
            // A client that reads `_` as `-` would frame the body by it.
            14 | 17 if is_underscore_framing_name(name) => {
                return Err(bad(
                    "underscore variant of a framing header name from upstream",
                ))
            }
            _ => false,
        })
    }
}

/// The `timeout` parameter of a `Keep-Alive` value (`timeout=5, max=100`), in whole
/// seconds; `None` when there is none or it is not a number.
fn keep_alive_timeout(value: &[u8]) -> Option<Duration> {
    list_elements(value).flatten().find_map(|param| {
        let (name, secs) = param.split_at(param.iter().position(|&b| b == b'=')?);
        let secs = trim_ows(&secs[1..]);
        if !eq_lower(trim_ows(name), b"timeout")
            || secs.is_empty()
            || secs.len() > 9
            || !secs.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let n = secs.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        Some(Duration::from_secs(n))
    })
}

/// Framing (RFC 9112 §6.3) and keep-alive, from the fields' facts.
fn settle(head: &mut ResponseHead, f: &Facts, is_head_request: bool) -> Result<(), ProxyError> {
    head.keep_alive_timeout = f.keep_alive_timeout;
    if f.te_seen && f.content_length_count > 0 {
        return Err(bad(
            "upstream sent both Content-Length and Transfer-Encoding",
        ));
    }
    if f.content_length_count > 1 {
        return Err(bad("upstream sent duplicate Content-Length"));
    }
    let is_bodiless = head.status < 200 || head.status == 204 || head.status == 304;
    // Any other Transfer-Encoding is read differently by clients: Python's `http.client`
    // (under `requests`) takes only a first field line equal to `chunked` for chunked, and
    // reads anything else (`gzip, chunked`, `chunked` split from `gzip` over two lines)
    // until the close, and so hangs on a kept connection, or decodes chunks that are not
    // there (`chunked` then `gzip`); Go's client and nginx refuse such responses. So does
    // ringgate (a response to HEAD too, as the GET's would be refused), rather than
    // relay a body its client may read as something else. A bodiless status drops it.
    if f.te_seen && !f.te_only_chunked && !is_bodiless {
        return Err(bad("Transfer-Encoding other than chunked from upstream"));
    }
    let framing = if is_head_request || is_bodiless {
        ResponseFraming::None
    } else if f.te_seen {
        ResponseFraming::Chunked
    } else {
        match f.content_length {
            Some(0) => ResponseFraming::None,
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::UntilClose,
        }
    };
    head.framing = Some(framing);
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; it is
    // relayed as framed, but its connection is closed after it, never reused.
    let is_faulty_http10 = head.minor_version == 0 && f.te_seen;
    head.is_keep_alive = framing != ResponseFraming::UntilClose
        && head.status != 101
        && !is_faulty_http10
        && if head.minor_version == 1 {
            !f.conn_close
        } else {
            f.conn_keep_alive && !f.conn_close
        };
    Ok(())
}

/// Mark the fields named in `Connection` (every one of them) as hop-by-hop, except the
/// framing the client needs and, on a 101, the `Upgrade` field the client must see.
fn mark_named(bytes: &[u8], head: &mut ResponseHead) {
    let is_switch = head.status == 101;
    mark_named_fields(bytes, &mut head.headers, |token| {
        let framing = eq_lower(token, b"content-length") || eq_lower(token, b"transfer-encoding");
        let switch_upgrade = is_switch && eq_lower(token, b"upgrade");
        !(framing || switch_upgrade)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], is_head: bool) -> Result<ResponseHead, ProxyError> {
        let len = memchr::memmem::find(raw, b"\r\n\r\n").unwrap() + 4;
        let mut h = ResponseHead::default();
        parse_response(raw, len, is_head, false, &mut h).map(|_| h)
    }

    #[test]
    fn the_servers_keep_alive_timeout_is_read() {
        let timeout = |value: &str| {
            let raw =
                format!("HTTP/1.1 200 OK\r\nKeep-Alive: {value}\r\nContent-Length: 0\r\n\r\n");
            let head = parse(raw.as_bytes(), false).unwrap();
            assert!(head.has_hop_by_hop, "Keep-Alive is hop-by-hop");
            head.keep_alive_timeout.map(|d| d.as_secs())
        };
        assert_eq!(timeout("timeout=5, max=100"), Some(5));
        assert_eq!(timeout("max=3 , Timeout = 7"), Some(7));
        assert_eq!(timeout("timeout=0"), Some(0));
        for ignored in [
            "max=5",
            "timeout=",
            "timeout=abc",
            "timeout=-1",
            "timeout=1234567890",
            "timeout",
        ] {
            assert_eq!(timeout(ignored), None, "{ignored}");
        }
        let none = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert_eq!(none.keep_alive_timeout, None);
    }

    #[test]
    fn framing_per_rfc9112_6_3() {
        let cl = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
        assert_eq!(cl.framing(), ResponseFraming::Length(5));
        assert!(cl.is_keep_alive);
        let head = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(head.framing(), ResponseFraming::None);
        let ch = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(ch.framing(), ResponseFraming::Chunked);
        let close = parse(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n", false).unwrap();
        assert_eq!(close.framing(), ResponseFraming::UntilClose);
        assert!(!close.is_keep_alive);
        for status in [204, 304, 100] {
            let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 9\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes(), false).unwrap().framing(),
                ResponseFraming::None
            );
        }
        let c = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!c.is_keep_alive);
        assert!(c.has_hop_by_hop);
        let old = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
        assert!(!old.is_keep_alive);
        let old_ka = parse(
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(old_ka.is_keep_alive);
    }

    #[test]
    fn framing_fields_a_bodiless_status_rules_out_are_dropped() {
        let dropped = |raw: &[u8], is_head: bool| -> Vec<bool> {
            let h = parse(raw, is_head).unwrap();
            assert_eq!(h.framing(), ResponseFraming::None);
            h.headers.iter().map(|f| f.is_hop_by_hop).collect()
        };
        for status in [103, 204, 304] {
            let raw =
                format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n");
            assert_eq!(dropped(raw.as_bytes(), false), [true, false], "{status}");
        }
        for (status, drop) in [(103, true), (204, true), (304, false)] {
            let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n");
            assert_eq!(dropped(raw.as_bytes(), false), [drop, false], "{status}");
        }
        // A response to HEAD says what a GET would have had.
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n";
        assert!(
            parse(head, true).is_err(),
            "both framings are still refused"
        );
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(dropped(head, true), [false]);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(dropped(head, true), [false]);
    }

    #[test]
    fn ambiguous_responses_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
            b"HTTP/1.1 99 Weird\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent_Length: 5\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTRANSFER_encoding: chunked\r\n\r\n",
        ] {
            assert!(
                parse(raw, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn transfer_encoding_other_than_one_chunked_is_refused() {
        for te in [
            "gzip, chunked",
            "chunked, gzip",
            "gzip",
            "identity",
            "chunked, chunked",
            "chunked \r\nX-A: 1",
            "chunked\t",
            "chunked\r\nTransfer-Encoding: chunked",
            "gzip\r\nTransfer-Encoding: chunked",
            "chunked\r\nTransfer-Encoding: gzip",
            ",chunked",
            "",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            for is_head in [false, true] {
                let e = parse(raw.as_bytes(), is_head).unwrap_err();
                assert_eq!(
                    e.kind,
                    ErrorKind::BadResponse("Transfer-Encoding other than chunked from upstream"),
                    "{te:?}"
                );
            }
            // A status without a body drops it, whatever it says.
            let raw = format!("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: {te}\r\n\r\n");
            let h = parse(raw.as_bytes(), false).unwrap();
            let te = |f: &&HeaderField| f.name.get(raw.as_bytes()) == b"Transfer-Encoding";
            assert!(
                h.headers.iter().filter(te).all(|f| f.is_hop_by_hop),
                "{raw:?}"
            );
        }
        for te in ["chunked", "Chunked", "CHUNKED"] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding:  {te}\r\n\r\n");
            let h = parse(raw.as_bytes(), false).unwrap();
            assert_eq!(h.framing(), ResponseFraming::Chunked, "{te:?}");
        }
    }

    #[test]
    fn an_http10_client_is_never_sent_transfer_encoding() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
        let mut h = ResponseHead::default();
        for (is_head, to_http10, dropped) in [
            (true, true, true),
            (true, false, false),
            (false, false, false),
        ] {
            parse_response(raw, raw.len(), is_head, to_http10, &mut h).unwrap();
            let flags: Vec<bool> = h.headers.iter().map(|f| f.is_hop_by_hop).collect();
            assert_eq!(
                flags,
                [dropped, false],
                "HEAD {is_head}, to 1.0 {to_http10}"
            );
        }
    }

    #[test]
    fn http10_with_transfer_encoding_is_never_reused() {
        // Regression (fuzz target response_head): RFC 9112 §6.1 says such framing is
        // faulty and the connection must close after the message; it was pooled.
        let h = parse(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing(), ResponseFraming::Chunked);
        assert!(!h.is_keep_alive);
    }

    #[test]
    fn switching_protocols_keeps_upgrade_when_connection_names_others() {
        // Regression: `Connection: upgrade, X-A` on a 101 dropped the `Upgrade` field the
        // client needs to complete the switch.
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade, X-A\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n";
        let h = parse(raw, false).unwrap();
        let flags: Vec<bool> = h.headers.iter().map(|f| f.is_hop_by_hop).collect();
        assert_eq!(flags, vec![true, false, true]);
    }

    #[test]
    fn connection_named_fields_are_dropped_but_not_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: X-A, Content-Length\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n";
        let h = parse(raw, false).unwrap();
        let flags: Vec<bool> = h.headers.iter().map(|f| f.is_hop_by_hop).collect();
        assert_eq!(flags, vec![true, true, false]);
        assert_eq!(h.framing(), ResponseFraming::Length(2));
    }
}
