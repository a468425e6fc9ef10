//! Writing heads for the next hop: the bytes as received, minus hop-by-hop fields, plus
//! the fields ringgate adds.
//!
//! Field lines are copied by range from the buffer they arrived in; nothing is
//! re-serialised, so whatever the client sent (case, spacing, order) reaches the backend
//! unchanged.

use super::field::{field_line, is_forwarded_proto_name, HeaderField};
use super::parse::RequestHead;
use super::response::ResponseHead;

/// What ringgate says about the connection in a forwarded head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionField {
    /// Add nothing (HTTP/1.1 default: persistent).
    Omit,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (HTTP/1.0 peers).
    KeepAlive,
    /// `Connection: upgrade` (protocol switch).
    Upgrade,
}

impl ConnectionField {
    fn line(self) -> &'static [u8] {
        match self {
            ConnectionField::Omit => b"",
            ConnectionField::Close => b"Connection: close\r\n",
            ConnectionField::KeepAlive => b"Connection: keep-alive\r\n",
            ConnectionField::Upgrade => b"Connection: upgrade\r\n",
        }
    }
}

/// `X-Forwarded-Proto` for a request that came in over TLS.
pub const FORWARDED_PROTO_HTTPS: &[u8] = b"X-Forwarded-Proto: https\r\n";
/// `X-Forwarded-Proto` for a request that came in in cleartext.
pub const FORWARDED_PROTO_HTTP: &[u8] = b"X-Forwarded-Proto: http\r\n";

/// Copy `buf[..head_len - 2]` into `out`, skipping the lines of hop-by-hop fields (and
/// of forwarding fields, unless `keep_forwarding`).
fn copy_without_hop_by_hop(
    buf: &[u8],
    head_len: usize,
    headers: &[HeaderField],
    keep_forwarding: bool,
    out: &mut Vec<u8>,
) {
    let mut pos = 0;
    for (i, f) in headers.iter().enumerate() {
        if f.is_hop_by_hop || (f.is_forwarding && !keep_forwarding) {
            let (start, end) = field_line(headers, head_len, i);
            out.extend_from_slice(&buf[pos..start]);
            pos = end;
        }
    }
    out.extend_from_slice(&buf[pos..head_len - 2]);
}

/// Write the request head to forward upstream into `out` (cleared first).
///
/// `extra` is a pre-built block of complete field lines (e.g. `X-Forwarded-For`), possibly
/// empty. The client's own forwarding fields (see [`super::field::is_forwarding_name`])
/// are kept only when `trusted` (the client is a proxy whose chain counts); `extra` then
/// follows them, extending the chain. `proto` ([`FORWARDED_PROTO_HTTPS`] or
/// [`FORWARDED_PROTO_HTTP`], or empty) follows `extra`, unless a trusted proxy sent an
/// `X-Forwarded-Proto` of its own: that one tells how the original client came, which is
/// what a backend wants to know, and a second value would contradict it.
pub fn write_request_head(
    buf: &[u8],
    head: &RequestHead,
    extra: &[u8],
    proto: &[u8],
    trusted: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    copy_without_hop_by_hop(buf, head.len, &head.headers, trusted, out);
    // Only a trusted peer's fields are looked at again (an untrusted one's were dropped).
    let proto = if trusted
        && head
            .headers
            .iter()
            .any(|f| f.is_forwarding && is_forwarded_proto_name(f.name.get(buf)))
    {
        b""
    } else {
        proto
    };
    let connection = if head.is_upgrade {
        ConnectionField::Upgrade
    } else if head.minor_version == 0 {
        // Ask HTTP/1.0 backends to keep the pooled connection open.
        ConnectionField::KeepAlive
    } else {
        ConnectionField::Omit
    };
    out.extend_from_slice(connection.line());
    out.extend_from_slice(extra);
    out.extend_from_slice(proto);
    out.extend_from_slice(b"\r\n");
}

/// Whether a response head can be forwarded byte-for-byte (nothing to drop or add).
pub fn response_is_verbatim(head: &ResponseHead, connection: ConnectionField) -> bool {
    !head.has_hop_by_hop && connection == ConnectionField::Omit && head.minor_version == 1
}

/// Write the response head to send to the client into `out` (cleared first). The status
/// line carries ringgate's own version, `HTTP/1.1` (RFC 9110 §6.2): an HTTP/1.0 server's
/// would tell the client the connection closes after this answer while ringgate, which
/// decides the client connection's persistence itself, keeps it.
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    connection: ConnectionField,
    out: &mut Vec<u8>,
) {
    out.clear();
    copy_without_hop_by_hop(buf, head.len, &head.headers, false, out);
    if head.minor_version == 0 {
        // The parser accepted `HTTP/1.0 ` at offset 0.
        out[7] = b'1';
    }
    out.extend_from_slice(connection.line());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::parse_request;
    use crate::http::response::parse_response;

    #[test]
    fn request_head_drops_hop_by_hop_and_adds_fields() {
        let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nx-KEEP:  as-is \r\nKeep-Alive: 9\r\nContent-Length: 2\r\n\r\nhi";
        let mut head = RequestHead::default();
        parse_request(raw, raw.len() - 2, 100, &mut head).unwrap();
        let mut out = Vec::new();
        write_request_head(
            raw,
            &head,
            b"X-Forwarded-For: 10.0.0.1\r\n",
            FORWARDED_PROTO_HTTPS,
            false,
            &mut out,
        );
        assert_eq!(
            out,
            b"POST /x HTTP/1.1\r\nHost: a\r\nx-KEEP:  as-is \r\nContent-Length: 2\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn a_trusted_proxys_x_forwarded_proto_is_kept_and_not_contradicted() {
        let xff = b"X-Forwarded-For: 10.0.0.1\r\n";
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nTrue-Client-IP: 10.9.9.9\r\n\r\n";
        let mut head = RequestHead::default();
        parse_request(raw, raw.len(), 100, &mut head).unwrap();
        let mut out = Vec::new();
        write_request_head(raw, &head, xff, FORWARDED_PROTO_HTTP, true, &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nTrue-Client-IP: 10.9.9.9\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        );
        // From anyone else both are dropped and ringgate's says how the client came.
        write_request_head(raw, &head, xff, FORWARDED_PROTO_HTTP, false, &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        // A trusted proxy that sent none gets ringgate's.
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 10.9.9.9\r\n\r\n";
        parse_request(raw, raw.len(), 100, &mut head).unwrap();
        write_request_head(raw, &head, xff, FORWARDED_PROTO_HTTP, true, &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 10.9.9.9\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn http10_and_upgrade_connection_fields() {
        let raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let mut head = RequestHead::default();
        parse_request(raw, raw.len(), 100, &mut head).unwrap();
        let mut out = Vec::new();
        write_request_head(raw, &head, b"", b"", false, &mut out);
        assert_eq!(out, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");

        let raw =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        parse_request(raw, raw.len(), 100, &mut head).unwrap();
        write_request_head(raw, &head, b"", b"", false, &mut out);
        assert_eq!(
            out,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn response_head_rewrite() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n";
        let mut head = ResponseHead::default();
        parse_response(raw, raw.len(), false, false, &mut head).unwrap();
        assert!(!response_is_verbatim(&head, ConnectionField::Omit));
        let mut out = Vec::new();
        write_response_head(raw, &head, ConnectionField::Close, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        parse_response(plain, plain.len(), false, false, &mut head).unwrap();
        assert!(response_is_verbatim(&head, ConnectionField::Omit));
        // An HTTP/1.0 server's answer goes out with ringgate's version.
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n";
        parse_response(old, old.len(), false, false, &mut head).unwrap();
        assert!(!response_is_verbatim(&head, ConnectionField::Omit));
        write_response_head(old, &head, ConnectionField::Omit, &mut out);
        assert_eq!(out, plain);
    }
}
