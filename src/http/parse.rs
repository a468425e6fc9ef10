//! Request head parsing and framing rules (RFC 9112 §2–§7).
//!
//! [`parse_request`] runs once per request, on a head whose end [`super::scan::HeadScanner`]
//! already found. It uses `httparse` for the syntax, then records *offsets* (never copies)
//! of the target and of every header field in a [`RequestHead`], and decides the body
//! framing with the strict rules that keep ringgate and every backend reading the same
//! message boundaries:
//!
//! - `Content-Length` must be a plain decimal (no sign, no leading zero, no list); two
//!   `Content-Length` fields are refused even when equal.
//! - `Transfer-Encoding` must end in `chunked`, name `chunked` once, use only known codings,
//!   never appear together with `Content-Length` and never in HTTP/1.0.
//! - obs-fold, NUL and other control bytes, bare CR/LF, spaces before the colon: refused
//!   (by the scanner or `httparse`).
//! - `Connection` may not name a framing header (`Content-Length`, `Transfer-Encoding`,
//!   `Host`): a proxy that honoured that would strip the framing its backend relies on.
//! - `Host` must be empty or `uri-host [ ":" port ]` as [`parse_host_port`] reads it
//!   (RFC 9110 §7.2; RFC 9112 §3.2 requires 400 otherwise). An absolute-form target must
//!   name an authority without userinfo, and the same origin as `Host`: ringgate forwards
//!   the head as received, so a backend reading `Host` and one reading the target (as
//!   RFC 9112 §3.2.2 tells an origin server to) must find the same server name.
//!
//! # Hot path
//! No allocation: header offsets go into a `Vec` that lives as long as the connection.
//!
//! # Errors
//! Every refusal is a [`ProxyError`] with status 400, 417, 431, 501 or 505 and a short
//! reason.

use std::mem::MaybeUninit;

use super::field::{
    eq_lower, field_line, is_forwarding_name, is_host_value, is_underscore_framing_name,
    list_elements, mark_named_fields, parse_content_length, parse_host_port, trim_ows, HeaderField,
    HostPort, Span,
};
use crate::error::{ErrorKind, ProxyError};

/// Hard upper bound on the number of header fields, whatever the config says.
pub const MAX_HEADERS_LIMIT: usize = 256;

/// Request methods ringgate treats specially; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// CONNECT
    Connect,
    /// Any other token.
    Other,
}

impl Method {
    pub(crate) fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// True unless the method is GET, HEAD or OPTIONS. Unknown methods count
    /// as writes: a write is never retried, which is the safe default.
    pub fn is_write(&self) -> bool {
        !matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes (never zero: zero is `None`).
    Length(u64),
    /// Chunked transfer coding until the zero-size chunk and trailers.
    Chunked,
}

/// A parsed request head: offsets into the connection buffer plus framing decisions.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Length of the head including the blank line.
    pub len: usize,
    /// Method.
    pub method: Option<Method>,
    /// The whole request-target.
    pub target: Span,
    /// Path part of the target (origin-form path, or the path of an absolute-form URI).
    pub path: Span,
    /// Query string without the `?`, if any.
    pub query: Option<Span>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Body framing.
    pub framing: Option<BodyFraming>,
    /// Header fields in order.
    pub headers: Vec<HeaderField>,
    /// The client wants the connection kept open after this exchange.
    pub is_keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expects_continue: bool,
    /// A protocol upgrade was requested (`Upgrade` + `Connection: upgrade`, HTTP/1.1).
    pub is_upgrade: bool,
    /// Content type is JSON or absent, so the body may be scanned for a user id.
    pub body_may_be_json: bool,
    /// A `Content-Encoding` other than `identity`, or a transfer coding other than
    /// `chunked` (`gzip, chunked`), was sent: the body's bytes are not the JSON a backend
    /// decodes them to.
    pub body_is_encoded: bool,
}

impl RequestHead {
    /// Method (`Other` before a parse).
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }

    /// Body framing (`None` before a parse).
    pub fn framing(&self) -> BodyFraming {
        self.framing.unwrap_or(BodyFraming::None)
    }

    /// Byte range of header line `i` (name through CRLF) within the head.
    pub fn header_line(&self, i: usize) -> (usize, usize) {
        field_line(&self.headers, self.len, i)
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::bad_request(reason)
}

/// Parse `buf[..len]`, a complete head (as delimited by the scanner), into `head`.
pub fn parse_request(
    buf: &[u8],
    len: usize,
    max_headers: usize,
    head: &mut RequestHead,
) -> Result<(), ProxyError> {
    let bytes = &buf[..len];
    // httparse reads past empty lines before the request line, but the head is forwarded
    // from its first byte: any left after the few the connection skips would travel with
    // it, in front of the request line.
    if matches!(bytes.first(), Some(b'\r' | b'\n')) {
        return Err(bad("empty line before the request line"));
    }
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_LIMIT] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_LIMIT];
    let slots = &mut storage[..max_headers.clamp(1, MAX_HEADERS_LIMIT)];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(bytes, slots) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(bad("malformed request head")),
        Err(httparse::Error::Version) if is_other_major_version(bytes) => {
            return Err(ProxyError::downstream(ErrorKind::VersionNotSupported))
        }
        Err(e) => return Err(map_httparse_error(e)),
    }

    head.len = len;
    head.headers.clear();
    let method = Method::from_token(req.method.unwrap_or(""));
    if method == Method::Connect {
        return Err(ProxyError::downstream(ErrorKind::NotImplemented(
            "CONNECT is not supported",
        )));
    }
    head.method = Some(method);
    head.minor_version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("").as_bytes();
    head.target = Span::of(bytes, target);
    let parts = split_target(bytes, target, method)?;
    head.path = parts.path;
    head.query = parts.query;

    let mut state = FieldState::default();
    for h in req.headers.iter() {
        let name = Span::of(bytes, h.name.as_bytes());
        let value = Span::of(bytes, h.value);
        let is_hop_by_hop = state.observe(h.name.as_bytes(), h.value)?;
        head.headers.push(HeaderField {
            name,
            value,
            is_hop_by_hop,
            is_forwarding: is_forwarding_name(h.name.as_bytes()),
        });
    }
    state.finish(bytes, head, parts.authority)
}

fn map_httparse_error(e: httparse::Error) -> ProxyError {
    match e {
        httparse::Error::TooManyHeaders => ProxyError::downstream(ErrorKind::HeadTooLarge),
        httparse::Error::HeaderName => bad("invalid header name (obs-fold or space before colon?)"),
        httparse::Error::HeaderValue => bad("invalid byte in header value"),
        httparse::Error::NewLine => bad("invalid line ending"),
        httparse::Error::Token => bad("invalid request line"),
        httparse::Error::Version => bad("invalid HTTP version"),
        httparse::Error::Status => bad("invalid request line"),
    }
}

/// The major and minor digits of a request line `method SP request-target SP
/// HTTP-version` whose version is well-formed (RFC 9112 §2.3: `HTTP/` DIGIT `.` DIGIT),
/// and the minor digit's offset. For a head httparse refused: it knows 1.0 and 1.1 only.
fn http_version_digits(head: &[u8]) -> Option<(u8, u8, usize)> {
    let line_end = memchr::memchr(b'\r', head).unwrap_or(head.len());
    let mut parts = head[..line_end].split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if !method.is_empty()
                && !target.is_empty()
                && major.is_ascii_digit()
                && minor.is_ascii_digit() =>
        {
            Some((*major, *minor, line_end - 1))
        }
        _ => None,
    }
}

/// Whether the version httparse refused is a well-formed one of another major version
/// than 1: `HTTP/2.0` (as in the HTTP/2 preface, `PRI * HTTP/2.0`), `HTTP/0.9`.
fn is_other_major_version(head: &[u8]) -> bool {
    matches!(http_version_digits(head), Some((major, _, _)) if major != b'1')
}

/// RFC 9110 §2.5: a request of a later minor version of HTTP/1 (`HTTP/1.2` to `HTTP/1.9`)
/// is processed as HTTP/1.1, the highest ringgate implements, and forwarded as such
/// (§6.2: an intermediary sends its own version; a backend may not know the later one).
/// Rewrites such a request line's version in `head` to `HTTP/1.1`, for a head
/// [`parse_request`] refused (httparse knows 1.0 and 1.1 only); whether it did.
pub fn downgrade_later_http1_minor(head: &mut [u8]) -> bool {
    match http_version_digits(head) {
        Some((b'1', b'2'..=b'9', at)) => {
            head[at] = b'1';
            true
        }
        _ => false,
    }
}

/// The parts of a request-target ringgate uses.
struct TargetParts<'a> {
    path: Span,
    query: Option<Span>,
    /// Absolute-form only: the authority and the scheme's default port.
    authority: Option<(HostPort<'a>, u16)>,
}

/// Split the request-target into path and query; accept origin-form, absolute-form and
/// (for OPTIONS) asterisk-form. An absolute-form authority must be a valid, non-empty
/// `host [ ":" port ]` without userinfo (RFC 9110 §4.2.1, §4.2.4).
fn split_target<'a>(
    base: &[u8],
    target: &'a [u8],
    method: Method,
) -> Result<TargetParts<'a>, ProxyError> {
    let mut authority = None;
    let path_and_query: &[u8] = match target.first() {
        Some(b'/') => target,
        Some(b'*') if target.len() == 1 && method == Method::Options => target,
        _ => {
            let (rest, default_port) =
                strip_scheme(target).ok_or_else(|| bad("invalid request target"))?;
            let end = memchr::memchr2(b'/', b'?', rest).unwrap_or(rest.len());
            // Authority only (or authority + query): the path is empty ("/").
            let (host_port, path_and_query) = rest.split_at(end);
            if host_port.contains(&b'@') {
                return Err(bad("userinfo in request target"));
            }
            let host_port = parse_host_port(host_port)
                .ok_or_else(|| bad("invalid authority in request target"))?;
            authority = Some((host_port, default_port));
            path_and_query
        }
    };
    let fragment = || bad("fragment in request target");
    let (path, query) = match memchr::memchr2(b'?', b'#', path_and_query) {
        Some(q) if path_and_query[q] == b'?' => {
            let query = &path_and_query[q + 1..];
            if memchr::memchr(b'#', query).is_some() {
                return Err(fragment());
            }
            (
                Span::of(base, &path_and_query[..q]),
                Some(Span::of(base, query)),
            )
        }
        Some(_) => return Err(fragment()),
        None => (Span::of(base, path_and_query), None),
    };
    Ok(TargetParts {
        path,
        query,
        authority,
    })
}

/// The target without its `http://` or `https://` (any case), and the scheme's default
/// port.
fn strip_scheme(target: &[u8]) -> Option<(&[u8], u16)> {
    for (scheme, port) in [(&b"http://"[..], 80), (&b"https://"[..], 443)] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some((&target[scheme.len()..], port));
        }
    }
    None
}

/// What the header walk learned, before the framing decision.
#[derive(Default)]
struct FieldState<'a> {
    content_length: Option<u64>,
    content_length_count: u32,
    transfer_encoding: TransferCoding,
    host_count: u32,
    host: Option<&'a [u8]>,
    connection_close: bool,
    connection_keep_alive: bool,
    connection_upgrade: bool,
    connection_names_other: bool,
    has_upgrade: bool,
    expects_continue: bool,
    content_type_seen: bool,
    content_type_json: bool,
    content_encoded: bool,
}

/// Accumulated `Transfer-Encoding` list (all fields, in order).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    #[default]
    Absent,
    /// Valid so far and the last coding seen is `chunked`.
    EndsChunked,
    /// Valid so far, last coding is a known non-chunked coding.
    EndsOther,
}

impl<'a> FieldState<'a> {
    /// Observe one field; returns whether it is hop-by-hop.
    fn observe(&mut self, name: &[u8], value: &'a [u8]) -> Result<bool, ProxyError> {
        let eq = |lit: &[u8]| eq_lower(name, lit);
        match name.len() {
            2 if eq(b"te") => return Ok(true),
            4 if eq(b"host") => {
                self.host_count += 1;
                if !is_host_value(value) {
                    return Err(bad("invalid Host value"));
                }
                self.host = Some(value);
            }
            6 if eq(b"expect") => {
                if eq_lower(value, b"100-continue") {
                    self.expects_continue = true;
                } else {
                    return Err(ProxyError::downstream(ErrorKind::ExpectationFailed));
                }
                // Ringgate answers 100 itself (or needs no 100), so the backend must not.
                return Ok(true);
            }
            7 if eq(b"upgrade") => {
                self.has_upgrade = true;
                return Ok(true);
            }
            10 if eq(b"connection") => {
                self.observe_connection(value)?;
                return Ok(true);
            }
            10 if eq(b"keep-alive") => return Ok(true),
            12 if eq(b"content-type") => {
                // With several fields, a backend may read any one of them (Node.js and
                // Go keep the first): the body may be JSON if any of them says so.
                self.content_type_seen = true;
                self.content_type_json |= is_json_media_type(value);
            }
            16 if eq(b"content-encoding") => {
                self.content_encoded |= !value.trim_ascii().eq_ignore_ascii_case(b"identity");
            }
            14 if eq(b"content-length") => {
                self.content_length_count += 1;
                self.content_length =
                    Some(parse_content_length(value).map_err(|e| bad(e.reason()))?);
            }
            16 if eq(b"proxy-connection") => return Ok(true),
            17 if eq(b"transfer-encoding") => self.observe_transfer_encoding(value)?,
            14 | 17 if is_underscore_framing_name(name) => {
                return Err(bad("underscore variant of a framing header name"))
            }
            _ => {}
        }
        Ok(false)
    }

    fn observe_connection(&mut self, value: &[u8]) -> Result<(), ProxyError> {
        for token in list_elements(value) {
            let token = token.ok_or_else(|| bad("empty element in Connection"))?;
            if eq_lower(token, b"close") {
                self.connection_close = true;
            } else if eq_lower(token, b"keep-alive") {
                self.connection_keep_alive = true;
            } else if eq_lower(token, b"upgrade") {
                self.connection_upgrade = true;
            } else if eq_lower(token, b"content-length")
                || eq_lower(token, b"transfer-encoding")
                || eq_lower(token, b"host")
                // The body scan is decided by it: the backend must see what ringgate read.
                || eq_lower(token, b"content-type")
            {
                return Err(bad("Connection names a framing header"));
            } else {
                self.connection_names_other = true;
            }
        }
        Ok(())
    }

    fn observe_transfer_encoding(&mut self, value: &[u8]) -> Result<(), ProxyError> {
        for coding in list_elements(value) {
            let coding = coding.ok_or_else(|| bad("empty element in Transfer-Encoding"))?;
            if self.transfer_encoding == TransferCoding::EndsChunked {
                // Anything after chunked (even another chunked) is invalid (RFC 9112 §6.1).
                return Err(bad("Transfer-Encoding continues after chunked"));
            }
            self.transfer_encoding = if eq_lower(coding, b"chunked") {
                TransferCoding::EndsChunked
            } else if is_known_coding(coding) {
                // The chunks carry the coded bytes: a scan of them is not what a backend
                // that decodes the coding reads.
                self.content_encoded = true;
                TransferCoding::EndsOther
            } else {
                return Err(bad("unknown transfer coding"));
            };
        }
        if self.transfer_encoding == TransferCoding::Absent {
            return Err(bad("empty Transfer-Encoding"));
        }
        Ok(())
    }

    fn finish(
        self,
        bytes: &[u8],
        head: &mut RequestHead,
        authority: Option<(HostPort<'_>, u16)>,
    ) -> Result<(), ProxyError> {
        let is_http11 = head.minor_version == 1;
        if is_http11 && self.host_count != 1 || self.host_count > 1 {
            return Err(bad("exactly one Host header is required"));
        }
        if let (Some((target, default_port)), Some(host)) = (authority, self.host) {
            // An HTTP/1.0 request may omit Host; then the target alone names the origin.
            let agrees =
                parse_host_port(host).is_some_and(|h| h.is_same_origin(&target, default_port));
            if !agrees {
                return Err(bad("Host does not match the request target"));
            }
        }
        let framing = match (self.transfer_encoding, self.content_length_count) {
            (TransferCoding::Absent, 0) => BodyFraming::None,
            (TransferCoding::Absent, 1) => match self.content_length {
                Some(0) | None => BodyFraming::None,
                Some(n) => BodyFraming::Length(n),
            },
            (TransferCoding::Absent, _) => return Err(bad("duplicate Content-Length")),
            (_, n) if n > 0 => return Err(bad("both Content-Length and Transfer-Encoding")),
            _ if !is_http11 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
            (TransferCoding::EndsChunked, _) => BodyFraming::Chunked,
            (TransferCoding::EndsOther, _) => {
                return Err(bad("Transfer-Encoding does not end in chunked"))
            }
        };
        head.framing = Some(framing);
        head.is_keep_alive = if is_http11 {
            !self.connection_close
        } else {
            self.connection_keep_alive && !self.connection_close
        };
        head.expects_continue = self.expects_continue && is_http11;
        head.is_upgrade = is_http11 && self.has_upgrade && self.connection_upgrade;
        head.body_may_be_json = !self.content_type_seen || self.content_type_json;
        head.body_is_encoded = self.content_encoded;
        if self.connection_names_other {
            mark_connection_named(bytes, head);
        }
        if head.is_upgrade {
            // The Upgrade field travels to the backend; ringgate adds `Connection: upgrade`.
            // This runs after the marking above, which would otherwise drop `Upgrade`
            // (named by the `upgrade` token) whenever `Connection` also names another field.
            for f in head.headers.iter_mut() {
                if f.name.len() == 7 && eq_lower(f.name.get(bytes), b"upgrade") {
                    f.is_hop_by_hop = false;
                }
            }
        }
        Ok(())
    }
}

/// Keep a protocol upgrade only if every protocol the `Upgrade` fields offer (compared
/// without version, case-insensitively) is in `allowed`. Otherwise the request goes on
/// as plain HTTP without its `Upgrade` field, so a backend cannot switch the connection
/// to a protocol (say `h2c`) that would carry requests past per-request routing.
pub fn restrict_upgrade(buf: &[u8], head: &mut RequestHead, allowed: &[Box<[u8]>]) {
    if !head.is_upgrade {
        return;
    }
    let is_upgrade_field =
        |f: &HeaderField| f.name.len() == 7 && f.name.get(buf).eq_ignore_ascii_case(b"upgrade");
    let all_allowed = head
        .headers
        .iter()
        .filter(|f| is_upgrade_field(f))
        .all(|f| {
            list_elements(f.value.get(buf)).all(|p| match p {
                Some(p) => {
                    let name = p.split(|&b| b == b'/').next().unwrap_or(p);
                    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
                }
                None => false,
            })
        });
    if !all_allowed {
        head.is_upgrade = false;
        for f in head.headers.iter_mut() {
            if is_upgrade_field(f) {
                f.is_hop_by_hop = true;
            }
        }
    }
}

/// Mark as hop-by-hop every field named in a `Connection` header (RFC 9110 §7.6.1), in
/// every `Connection` field (not only the first few: a name listed in the ninth one is
/// just as hop-by-hop).
fn mark_connection_named(bytes: &[u8], head: &mut RequestHead) {
    mark_named_fields(bytes, &mut head.headers, |_| true);
}

fn is_known_coding(coding: &[u8]) -> bool {
    [
        &b"gzip"[..],
        b"x-gzip",
        b"deflate",
        b"compress",
        b"x-compress",
    ]
    .iter()
    .any(|k| coding.eq_ignore_ascii_case(k))
}

/// `application/json`, `text/json` or any `+json` structured syntax suffix.
fn is_json_media_type(value: &[u8]) -> bool {
    let media = match memchr::memchr(b';', value) {
        Some(i) => trim_ows(&value[..i]),
        None => value,
    };
    eq_lower(media, b"application/json")
        || eq_lower(media, b"text/json")
        || (media.len() > 5 && eq_lower(&media[media.len() - 5..], b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::scan::HeadScanner;

    fn parse(raw: &[u8]) -> Result<RequestHead, ProxyError> {
        let len = HeadScanner::new()
            .scan(raw, 64 * 1024)
            .map_err(|_| bad("scan"))?
            .expect("complete head");
        let mut head = RequestHead::default();
        parse_request(raw, len, 100, &mut head).map(|_| head)
    }

    fn reason(raw: &[u8]) -> String {
        match parse(raw) {
            Ok(_) => "ok".into(),
            Err(e) => format!("{} {}", e.status().unwrap(), e.reason()),
        }
    }

    #[test]
    fn simple_get() {
        let raw =
            b"GET /api/spot/user/data?user_id=alice HTTP/1.1\r\nHost: x\r\nX-User-Id: a\r\n\r\n";
        let h = parse(raw).unwrap();
        assert_eq!(h.method(), Method::Get);
        assert_eq!(h.path.get(raw), b"/api/spot/user/data");
        assert_eq!(h.query.unwrap().get(raw), b"user_id=alice");
        assert_eq!(h.framing(), BodyFraming::None);
        assert!(h.is_keep_alive);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].value.get(raw), b"a");
        assert_eq!(h.header_line(1), (48 + 9, raw.len() - 2));
    }

    #[test]
    fn framing_rules() {
        let ok_cl = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(ok_cl.framing(), BodyFraming::Length(12));
        let zero = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(zero.framing(), BodyFraming::None);
        let chunked =
            parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n")
                .unwrap();
        assert_eq!(chunked.framing(), BodyFraming::Chunked);
        assert!(chunked.body_is_encoded, "gzip-coded chunks");
        let plain =
            parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(!plain.body_is_encoded);
        let split_te = parse(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(split_te.framing(), BodyFraming::Chunked);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 05\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\n Transfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/2\r\nHost: a\r\n\r\n",
            b"GET /a b HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a?b?#c HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /#?b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a/p?q#f HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a#f HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for raw in cases {
            let r = reason(raw);
            assert!(
                r.starts_with("400"),
                "{:?} -> {r}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn other_refusals() {
        assert!(reason(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n").starts_with("417"));
        assert!(reason(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").starts_with("501"));
        assert!(reason(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").starts_with("505"));
        assert!(reason(b"PRI * HTTP/2.0\r\n\r\n").starts_with("505"));
        for (line, downgraded) in [
            (&b"GET / HTTP/1.2"[..], Some(&b"GET / HTTP/1.1"[..])),
            (b"GET /x?y HTTP/1.9", Some(b"GET /x?y HTTP/1.1")),
            (b"GET / HTTP/1.1", None),
            (b"GET / HTTP/1.0", None),
            (b"GET / HTTP/2.0", None),
            (b"GET / HTTP/1.12", None),
            (b"GET /a b HTTP/1.2", None),
            (b"GET  HTTP/1.2", None),
        ] {
            let mut head = line.to_vec();
            head.extend_from_slice(b"\r\nHost: a\r\n\r\n");
            let done = downgrade_later_http1_minor(&mut head);
            assert_eq!(
                done,
                downgraded.is_some(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(&head[..line.len()], downgraded.unwrap_or(line));
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(reason(&many).starts_with("431"));
    }

    #[test]
    fn hop_by_hop_marking() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nX-Secret: s\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nX-Keep: k\r\n\r\n";
        let h = parse(raw).unwrap();
        let dropped: Vec<&[u8]> = h
            .headers
            .iter()
            .filter(|f| f.is_hop_by_hop)
            .map(|f| f.name.get(raw))
            .collect();
        assert_eq!(
            dropped,
            vec![
                &b"Connection"[..],
                b"Keep-Alive",
                b"X-Secret",
                b"TE",
                b"Upgrade",
                b"Proxy-Connection"
            ]
        );
        assert!(!h.is_upgrade);
    }

    #[test]
    fn upgrade_and_versions() {
        let raw =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let h = parse(raw).unwrap();
        assert!(h.is_upgrade);
        assert!(!h.headers[2].is_hop_by_hop);
        let h10 = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h10.is_keep_alive);
        let h10ka = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(h10ka.is_keep_alive);
        let close = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!close.is_keep_alive);
    }

    #[test]
    fn upgrade_survives_connection_naming_other_fields() {
        // Regression (fuzz target request_head): with `Connection: Upgrade, X-A` the
        // marking of Connection-named fields dropped `Upgrade` again after it had been
        // kept, so the backend got `Connection: upgrade` without an `Upgrade` field.
        let raw = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-A\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n";
        let h = parse(raw).unwrap();
        assert!(h.is_upgrade);
        let flags: Vec<bool> = h.headers.iter().map(|f| f.is_hop_by_hop).collect();
        assert_eq!(flags, vec![false, true, false, true]);
    }

    #[test]
    fn every_connection_field_names_hop_by_hop_fields() {
        // Regression: only the first eight `Connection` fields were honoured.
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..9 {
            raw.extend_from_slice(format!("Connection: X-{i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"X-8: late\r\nX-Kept: k\r\n\r\n");
        let h = parse(&raw).unwrap();
        let named = |n: &[u8]| {
            h.headers
                .iter()
                .find(|f| f.name.get(&raw) == n)
                .unwrap()
                .is_hop_by_hop
        };
        assert!(named(b"X-8"));
        assert!(!named(b"X-Kept"));
    }

    #[test]
    fn underscore_framing_names_and_bad_hosts_are_refused() {
        // Hardening: a backend that maps `_` to `-` would frame the body by these fields
        // while ringgate forwards them as unknown ones (cross-request desync on a pooled
        // connection); RFC 9112 §3.2 requires 400 for an invalid Host value.
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent_length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTRANSFER_encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\xc3\xa9\r\n\r\n",
        ] {
            let r = reason(raw);
            assert!(
                r.starts_with("400"),
                "{:?} -> {r}",
                String::from_utf8_lossy(raw)
            );
        }
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a.example:8080\r\nX_Other: 1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: my_host%41\r\n\r\n",
        ] {
            assert_eq!(reason(raw), "ok", "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn upgrades_are_limited_to_allowed_protocols() {
        let allowed: Vec<Box<[u8]>> = vec![b"websocket".to_vec().into_boxed_slice()];
        let ws =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        let mut h = parse(ws).unwrap();
        restrict_upgrade(ws, &mut h, &allowed);
        assert!(h.is_upgrade);
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
        ] {
            let mut h = parse(raw).unwrap();
            restrict_upgrade(raw, &mut h, &allowed);
            assert!(!h.is_upgrade, "{:?}", String::from_utf8_lossy(raw));
            assert!(h.headers.iter().filter(|f| f.name.get(raw).eq_ignore_ascii_case(b"upgrade")).all(|f| f.is_hop_by_hop));
        }
    }

    #[test]
    fn absolute_and_asterisk_targets() {
        let raw = b"GET http://example.com/api/x?user_id=7 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let h = parse(raw).unwrap();
        assert_eq!(h.path.get(raw), b"/api/x");
        assert_eq!(h.query.unwrap().get(raw), b"user_id=7");
        let raw = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(parse(raw).unwrap().path.get(raw), b"*");
        assert!(reason(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n").starts_with("400"));
    }

    #[test]
    fn host_values_per_rfc9110_7_2() {
        for host in [
            "ex:abc",
            "ex:",
            "ex:80:80",
            "ex:65536",
            "ex:123456",
            "a,b",
            "a, b",
            "127.1",
            "0x7f.0.0.1",
            "::1",
            "[::1",
            "[v1.x]",
            "[fe80::1%25eth0]",
            ":80",
            "ex%zz",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(reason(raw.as_bytes()), "400 invalid Host value", "{host:?}");
        }
        for host in [
            "ex:8080",
            "ex:0",
            "ex:65535",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "Example.COM",
            "",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(reason(raw.as_bytes()), "ok", "{host:?}");
        }
    }

    #[test]
    fn absolute_form_authority_agrees_with_host() {
        for (target, host) in [
            ("http://example.com/x", "example.com"),
            ("http://Example.COM/x", "example.com"),
            ("http://example.com/x", "EXAMPLE.com:80"),
            ("http://example.com:80/x", "example.com"),
            ("HTTPS://example.com/x", "example.com:443"),
            ("https://example.com:8443/x", "example.com:8443"),
            ("http://example.com", "example.com"),
            ("http://example.com?user_id=7", "example.com"),
            ("http://[::1]:8080/x", "[::1]:8080"),
            ("http://127.0.0.1/x", "127.0.0.1:80"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(reason(raw.as_bytes()), "ok", "{target} / {host}");
        }
        for (target, host) in [
            ("http://other.example/x", "example.com"),
            ("http://example.com:8080/x", "example.com"),
            ("http://example.com/x", "example.com:8080"),
            ("https://example.com/x", "example.com:80"),
            ("http://example.com/x", ""),
            ("http://[::1]/x", "[0:0::1]"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(
                reason(raw.as_bytes()),
                "400 Host does not match the request target",
                "{target} / {host}"
            );
        }
        for (target, why) in [
            (
                "http://user@example.com/x",
                "400 userinfo in request target",
            ),
            (
                "http://user:pw@example.com/x",
                "400 userinfo in request target",
            ),
            ("http://ex:abc/x", "400 invalid authority in request target"),
            ("http://ex:/x", "400 invalid authority in request target"),
            ("http:///x", "400 invalid authority in request target"),
            ("http://?x", "400 invalid authority in request target"),
            ("http://a,b/x", "400 invalid authority in request target"),
            ("http://", "400 invalid authority in request target"),
            ("ftp://example.com/x", "400 invalid request target"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n");
            assert_eq!(reason(raw.as_bytes()), why, "{target}");
        }
        // HTTP/1.0 may omit Host: the target alone names the origin.
        assert_eq!(reason(b"GET http://example.com/x HTTP/1.0\r\n\r\n"), "ok");
        assert_eq!(
            reason(b"GET http://example.com/x HTTP/1.0\r\nHost: other\r\n\r\n"),
            "400 Host does not match the request target"
        );
    }

    #[test]
    fn json_content_types() {
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/vnd.order+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: {ct}\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes()).unwrap().body_may_be_json,
                json,
                "{ct}"
            );
        }
        assert!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .body_may_be_json
        );
        for (first, second) in [
            ("application/json", "text/plain"),
            ("text/plain", "application/json"),
        ] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: {first}\r\nContent-Type: {second}\r\n\r\n"
            );
            assert!(
                parse(raw.as_bytes()).unwrap().body_may_be_json,
                "{first}, {second}"
            );
        }
    }
}
