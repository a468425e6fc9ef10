//! Field and token grammar shared by every parser (RFC 9110 §5, §5.6, §6.5.1, §7.2).
//!
//! What a field name, a list element, a `Content-Length`, a `Host` or a quoted-string may
//! be, decided once, here: request heads ([`super::parse`]), response heads
//! ([`super::response`]), chunk extensions and trailer sections ([`super::chunked`]), the
//! head rewrite ([`super::head`]), the config (header names) and the demo backend all ask
//! this module, so two of them can never disagree about the same bytes.
//!
//! Also here: [`Span`] and [`HeaderField`], the offsets a parsed head records for each
//! field, and [`field_line`], the byte range of one field line.
//!
//! # Hot path
//! Byte predicates and slice walks; no allocation, no copies.
//!
//! # Invariants
//! Stricter than the RFC grammar in a few documented places (a `,` in `Host`, an empty
//! port, a host that ends in a number but is not a dotted quad, before or after its
//! pct-encodings are decoded, IPvFuture literals): each
//! is a value different recipients read differently, so it is refused rather than passed
//! on.

/// Longest `Content-Length` value accepted (digits); longer cannot fit in a u64 anyway.
const MAX_CONTENT_LENGTH_DIGITS: usize = 18;

/// A byte range inside the buffer that holds the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// Span of `part`, a sub-slice of `base`.
    #[inline]
    pub fn of(base: &[u8], part: &[u8]) -> Self {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes this span covers in `buf`.
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One header field: offsets of name and value, and whether it is dropped on forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// Field name (as received, any case).
    pub name: Span,
    /// Field value without leading/trailing whitespace.
    pub value: Span,
    /// Hop-by-hop: not forwarded (RFC 9110 §7.6.1).
    pub is_hop_by_hop: bool,
    /// A field that says who the client is or how it came (see [`is_forwarding_name`]):
    /// a client can forge it, so it is forwarded only from a trusted proxy.
    pub is_forwarding: bool,
}

/// Whether `name` is one of the fields that carry the client's address (or scheme and
/// host) through proxies, any case, `_` read as `-` as CGI-style header maps do:
/// `Forwarded`, `X-Forwarded-For/-Host/-Proto/-Port`, `X-Real-IP`, and the ones CDNs and load
/// balancers set and frameworks read the client's address from (`True-Client-IP`,
/// `X-Client-IP`, `CF-Connecting-IP`, `X-Cluster-Client-IP`, `Fastly-Client-IP`,
/// `X-Original-Forwarded-For`).
pub fn is_forwarding_name(name: &[u8]) -> bool {
    // By length first: every field of every request comes through here, and most names
    // are of a length no forwarding field has.
    match name.len() {
        9 => eq_dash_underscore(name, b"forwarded") || eq_dash_underscore(name, b"x-real-ip"),
        11 => eq_dash_underscore(name, b"x-client-ip"),
        14 => eq_dash_underscore(name, b"true-client-ip"),
        15 => eq_dash_underscore(name, b"x-forwarded-for"),
        16 => {
            eq_dash_underscore(name, b"x-forwarded-host")
                || eq_dash_underscore(name, b"x-forwarded-port")
                || eq_dash_underscore(name, b"cf-connecting-ip")
                || eq_dash_underscore(name, b"fastly-client-ip")
        }
        17 => is_forwarded_proto_name(name),
        19 => eq_dash_underscore(name, b"x-cluster-client-ip"),
        24 => eq_dash_underscore(name, b"x-original-forwarded-for"),
        _ => false,
    }
}

/// Whether `name` is `X-Forwarded-Proto` (any case, `_` read as `-`).
pub fn is_forwarded_proto_name(name: &[u8]) -> bool {
    eq_dash_underscore(name, b"x-forwarded-proto")
}

/// Byte range of field line `i` (name through CRLF) in a head of `head_len` bytes whose
/// fields are `headers`: a line ends where the next one starts, the last one before the
/// final blank line.
pub fn field_line(headers: &[HeaderField], head_len: usize, i: usize) -> (usize, usize) {
    let start = headers[i].name.start as usize;
    let end = match headers.get(i + 1) {
        Some(next) => next.name.start as usize,
        None => head_len - 2,
    };
    (start, end)
}

/// Why a field value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// `Content-Length` is not 1–18 ASCII digits.
    ContentLength,
    /// `Content-Length` with a leading zero (octal to some readers).
    ContentLengthLeadingZero,
}

impl FieldError {
    /// Short reason for a 400/502 body.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldError::ContentLength => "invalid Content-Length",
            FieldError::ContentLengthLeadingZero => "invalid Content-Length (leading zero)",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tokens, whitespace, lists (RFC 9110 §5.6)
// ---------------------------------------------------------------------------------------

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// A byte of a field value (RFC 9110 §5.5 `field-content`): `field-vchar` (VCHAR or
/// obs-text), SP or HTAB. Everything else — NUL, CR, LF, other controls, DEL — is refused.
pub fn is_field_value_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

/// RFC 9110 §5.6.4 `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`: a byte
/// that stands for itself inside a quoted-string (not `"`, not `\`, no control byte).
pub fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// The byte after `\` in a quoted-pair (RFC 9110 §5.6.4): HTAB, SP, VCHAR or obs-text.
pub fn is_quoted_pair_byte(b: u8) -> bool {
    is_field_value_byte(b)
}

/// Trim spaces and tabs on both sides.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Iterate the elements of a comma-separated list, trimming optional whitespace.
/// Empty elements are yielded as `None` so callers can refuse them.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    value.split(|&b| b == b',').map(|e| {
        let e = trim_ows(e);
        if e.is_empty() {
            None
        } else {
            Some(e)
        }
    })
}

/// Whether `s` is `lower` in any ASCII case, `lower` being written in lowercase (a
/// literal such as `b"content-length"`): the answer of `eq_ignore_ascii_case`, eight
/// bytes per step. Where `lower` has a letter, `| 0x20` folds `s`'s byte to lowercase (and
/// only the two cases of that letter fold to it); anywhere else the bytes must be equal.
/// The field walks compare every name and several values against such literals.
#[inline]
pub fn eq_lower(s: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.is_ascii() && !lower.iter().any(u8::is_ascii_uppercase));
    if s.len() != lower.len() {
        return false;
    }
    if s.len() < 8 {
        return s.eq_ignore_ascii_case(lower);
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let eq_at = |at: usize| {
        let l = word(lower, at);
        // 0x80 in each byte of `l` from `a` to `z` (ASCII bytes: no carry leaves a byte).
        let letters = l.wrapping_add(ONES * u64::from(0x80 - b'a'))
            & !l.wrapping_add(ONES * u64::from(0x80 - b'z' - 1))
            & (ONES * 0x80);
        word(s, at) | letters >> 2 == l
    };
    // Whole words, then the last eight bytes (overlapping the previous word).
    let last = s.len() - 8;
    let mut at = 0;
    while at < last {
        if !eq_at(at) {
            return false;
        }
        at += 8;
    }
    eq_at(last)
}

/// Case-insensitive equality where `_` and `-` are the same byte.
pub fn eq_dash_underscore(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| norm(x) == norm(y))
}

/// `Content_Length` or `Transfer_Encoding` (any case, any mix of `_` and `-`). Some
/// servers read `_` as `-` (CGI-style header maps); ringgate would forward such a field
/// as an unknown one while the backend frames the body by it, so it is refused.
pub fn is_underscore_framing_name(name: &[u8]) -> bool {
    name.contains(&b'_')
        && [&b"content-length"[..], b"transfer-encoding"]
            .iter()
            .any(|lit| eq_dash_underscore(name, lit))
}

// ---------------------------------------------------------------------------------------
// Content-Length (RFC 9110 §8.6)
// ---------------------------------------------------------------------------------------

/// Strict `Content-Length`: 1–18 ASCII digits, no sign, no leading zero (except "0"),
/// no list. Anything else is ambiguous between parsers and refused.
pub fn parse_content_length(value: &[u8]) -> Result<u64, FieldError> {
    if value.is_empty() || value.len() > MAX_CONTENT_LENGTH_DIGITS {
        return Err(FieldError::ContentLength);
    }
    if value.len() > 1 && value[0] == b'0' {
        return Err(FieldError::ContentLengthLeadingZero);
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(FieldError::ContentLength);
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Connection-named fields (RFC 9110 §7.6.1)
// ---------------------------------------------------------------------------------------

/// Mark the fields named by the tokens of every `Connection` field in `headers` (not only
/// the first few: a name listed in the ninth one is just as hop-by-hop), for the tokens
/// `applies` accepts.
pub(crate) fn mark_named_fields(
    bytes: &[u8],
    headers: &mut [HeaderField],
    applies: impl Fn(&[u8]) -> bool,
) {
    for i in 0..headers.len() {
        let field = headers[i];
        if !eq_lower(field.name.get(bytes), b"connection") {
            continue;
        }
        for token in list_elements(field.value.get(bytes)).flatten() {
            if !applies(token) {
                continue;
            }
            for f in headers.iter_mut() {
                if f.name.get(bytes).eq_ignore_ascii_case(token) {
                    f.is_hop_by_hop = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Trailer fields (RFC 9110 §6.5.1)
// ---------------------------------------------------------------------------------------

/// Field names that must never arrive in a trailer section. RFC 9110 §6.5.1: fields
/// "necessary prior to receiving the content, such as those that describe message
/// framing, routing, authentication, request modifiers, response controls, or content
/// format" cannot be processed after the content; a recipient that merges trailers into
/// the header section (many frameworks do) would act on a value ringgate never saw when
/// it framed, routed and rewrote the head. The list follows the categories RFC 7230
/// §4.1.2 spelled out, plus the hop-by-hop fields and the fields ringgate itself owns.
const FORBIDDEN_TRAILER_FIELDS: &[&[u8]] = &[
    // Message framing.
    b"content-length",
    b"transfer-encoding",
    // Routing.
    b"host",
    // Request modifiers: controls and conditionals (RFC 9110 §13, RFC 9111 §5.2).
    b"cache-control",
    b"expect",
    b"max-forwards",
    b"pragma",
    b"range",
    b"te",
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"if-range",
    // Authentication and state (RFC 9110 §11, RFC 6265).
    b"authorization",
    b"proxy-authorization",
    b"www-authenticate",
    b"proxy-authenticate",
    b"cookie",
    b"set-cookie",
    // Response control data.
    b"age",
    b"expires",
    b"date",
    b"location",
    b"retry-after",
    b"vary",
    b"warning",
    // Content format: how to process the content.
    b"content-encoding",
    b"content-type",
    b"content-range",
    // Connection management (hop-by-hop, RFC 9110 §7.6.1).
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"upgrade",
    // Fields the edge owns: a trailer must not re-introduce what the head
    // rewrite drops or sets.
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"cf-connecting-ip",
    b"x-cluster-client-ip",
    b"fastly-client-ip",
    b"x-original-forwarded-for",
    // The default user-id fields: a backend reading the user from a
    // merged trailer could act for another user than the one ringgate routed.
    b"x-user-id",
    b"x-trader-id",
];

/// Length of the longest name in the trailer deny-list: a trailer name longer than this
/// is allowed without looking further.
pub const MAX_FORBIDDEN_TRAILER_NAME: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < FORBIDDEN_TRAILER_FIELDS.len() {
        if FORBIDDEN_TRAILER_FIELDS[i].len() > max {
            max = FORBIDDEN_TRAILER_FIELDS[i].len();
        }
        i += 1;
    }
    max
};

/// Whether a field named `name` is refused in a trailer section (any case; `_` counts as
/// `-`, for the servers that map one to the other).
pub fn is_forbidden_trailer(name: &[u8]) -> bool {
    name.len() <= MAX_FORBIDDEN_TRAILER_NAME
        && FORBIDDEN_TRAILER_FIELDS
            .iter()
            .any(|f| eq_dash_underscore(name, f))
}

// ---------------------------------------------------------------------------------------
// Host and authority (RFC 9110 §7.2, §4.2; RFC 3986 §3.2.2–3.2.3)
// ---------------------------------------------------------------------------------------

/// A validated `uri-host [ ":" port ]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host: a reg-name, a dotted-quad IPv4 address, or `[IPv6]` with its brackets.
    pub host: &'a [u8],
    /// The port, when one was given.
    pub port: Option<u16>,
}

impl HostPort<'_> {
    /// Whether both name the same origin server: hosts equal ignoring ASCII case, ports
    /// equal once a missing one is read as `default_port` (RFC 9110 §4.2.3).
    pub fn is_same_origin(&self, other: &HostPort<'_>, default_port: u16) -> bool {
        self.host.eq_ignore_ascii_case(other.host)
            && self.port.unwrap_or(default_port) == other.port.unwrap_or(default_port)
    }
}

/// Parse `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2) with a non-empty host:
///
/// - `host` is an IP-literal holding an IPv6 address (`[::1]`; IPvFuture and zone ids
///   are refused), a dotted-quad IPv4 address (no leading zeros), or a reg-name
///   (unreserved / pct-encoded / sub-delims). A reg-name that *ends in a number* (its
///   last label all digits, or `0x` hex) must be a valid dotted quad: `127.1`,
///   `010.0.0.1` or `0x7f.0.0.1` are IPv4 addresses to `inet_aton` and to the WHATWG URL
///   parser, plain names to RFC 3986. A `,` is refused: it is what two `Host` fields
///   combined into one value look like (RFC 9110 §5.3).
/// - `port` is 1–5 digits with a value up to 65535. An empty port (`host:`) is valid
///   RFC 3986 but refused: recipients disagree on whether `a:` is `a`.
///
/// Returns `None` for anything else.
pub fn parse_host_port(value: &[u8]) -> Option<HostPort<'_>> {
    let (host, rest) = if value.first() == Some(&b'[') {
        let close = memchr::memchr(b']', value)?;
        let (literal, rest) = value.split_at(close + 1);
        if !is_ipv6_literal(literal) {
            return None;
        }
        (literal, rest)
    } else {
        let (name, rest) = value.split_at(reg_name_len(value)?);
        if ends_in_a_number(name) && !is_ipv4_dotted_quad(name) {
            return None;
        }
        if memchr::memchr(b'%', name).is_some() && !is_plain_when_decoded(name) {
            return None;
        }
        (name, rest)
    };
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => Some(parse_port(digits)?),
        _ => return None,
    };
    Some(HostPort { host, port })
}

/// A `Host` field value (RFC 9112 §3.2): empty (the target URI has no authority), or a
/// valid [`parse_host_port`].
pub fn is_host_value(value: &[u8]) -> bool {
    value.is_empty() || parse_host_port(value).is_some()
}

/// `[` IPv6address `]`, checked by the standard library's parser (RFC 4291 text forms,
/// embedded IPv4 included; no zone id, no IPvFuture).
fn is_ipv6_literal(literal: &[u8]) -> bool {
    let [b'[', inner @ .., b']'] = literal else {
        return false;
    };
    inner
        .iter()
        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        && std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
            .is_some()
}

/// Bytes of a reg-name other than its pct-encodings: unreserved, and sub-delims without
/// `,` (RFC 3986 §3.2.2). A table, as the host check runs on every request.
static REG_NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' // unreserved
                    | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b';' | b'='
            );
        i += 1;
    }
    table
};

/// The length of the non-empty reg-name `value` starts with, up to a `:` or its end, or
/// `None` if a byte on the way is not a reg-name's.
fn reg_name_len(value: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if REG_NAME_BYTE[usize::from(b)] {
            i += 1;
        } else if b == b'%'
            && value.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && value.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 3;
        } else if b == b':' {
            break;
        } else {
            return None;
        }
    }
    (i > 0).then_some(i)
}

/// Whether a reg-name with pct-encodings reads the same to the WHATWG URL parser, which
/// decodes them before anything else: the decoded name must be ASCII reg-name bytes (a
/// decoded non-ASCII byte goes through IDNA, which maps fullwidth digits to digits and
/// `。` to `.`) at most 255 long, and must not end in a number (`127.0.0.%31` is
/// 127.0.0.1 to that parser, a name to RFC 3986). Only a `Host` holding a `%` pays this.
fn is_plain_when_decoded(name: &[u8]) -> bool {
    let mut decoded = [0u8; 255];
    let mut len = 0;
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        let byte = if b == b'%' {
            // reg_name_len checked the two hex digits.
            let hex = std::str::from_utf8(&name[i + 1..i + 3]).unwrap_or("");
            i += 3;
            u8::from_str_radix(hex, 16).unwrap_or(0)
        } else {
            i += 1;
            b
        };
        if !REG_NAME_BYTE[usize::from(byte)] || len == decoded.len() {
            return false;
        }
        decoded[len] = byte;
        len += 1;
    }
    !ends_in_a_number(&decoded[..len])
}

/// WHATWG URL Standard "ends in a number": the last label (after one trailing dot) is all
/// digits, or `0x`/`0X` followed by hex digits.
fn ends_in_a_number(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let last = match name.iter().rposition(|&b| b == b'.') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    if last.is_empty() {
        return false;
    }
    if last.iter().all(u8::is_ascii_digit) {
        return true;
    }
    matches!(last, [b'0', b'x' | b'X', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit))
}

/// RFC 3986 `IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet`, where a
/// dec-octet is 0–255 without leading zeros.
fn is_ipv4_dotted_quad(name: &[u8]) -> bool {
    let mut at = 0;
    for i in 0..4 {
        if i > 0 {
            if name.get(at) != Some(&b'.') {
                return false;
            }
            at += 1;
        }
        match dec_octet_len(&name[at..]) {
            Some(n) => at += n,
            None => return false,
        }
    }
    at == name.len()
}

/// The length of the dec-octet `s` starts with (1–3 digits, 0–255, no leading zero) when
/// no further digit follows it, or `None`.
fn dec_octet_len(s: &[u8]) -> Option<usize> {
    let digit = |i: usize| {
        s.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    };
    match (digit(0)?, digit(1), digit(2)) {
        (0, Some(_), _) => None,
        (_, None, _) => Some(1),
        (_, Some(_), None) => Some(2),
        (a, Some(b), Some(c)) => (a * 100 + b * 10 + c <= 255 && digit(3).is_none()).then_some(3),
    }
}

/// 1–5 digits, at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut n = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    u16::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bytes() {
        for b in 0u8..=255 {
            let expected = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), expected, "byte {b:#x}");
        }
    }

    #[test]
    fn value_and_quoted_string_bytes() {
        for b in 0u8..=255 {
            let vchar_or_obs = (0x21..=0x7e).contains(&b) || b >= 0x80;
            assert_eq!(
                is_field_value_byte(b),
                vchar_or_obs || b == b' ' || b == b'\t',
                "{b:#x}"
            );
            assert_eq!(
                is_qdtext(b),
                (vchar_or_obs || b == b' ' || b == b'\t') && b != b'"' && b != b'\\',
                "{b:#x}"
            );
            assert_eq!(
                is_quoted_pair_byte(b),
                vchar_or_obs || b == b' ' || b == b'\t',
                "{b:#x}"
            );
        }
        for b in [0u8, b'\r', b'\n', 0x7f, 0x1f] {
            assert!(!is_field_value_byte(b) && !is_qdtext(b) && !is_quoted_pair_byte(b));
        }
    }

    #[test]
    fn whitespace_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        let v: Vec<Option<&[u8]>> = list_elements(b"gzip , chunked,, ").collect();
        assert_eq!(v, vec![Some(&b"gzip"[..]), Some(b"chunked"), None, None]);
    }

    #[test]
    fn dash_underscore_names() {
        assert!(eq_dash_underscore(b"Content_Length", b"content-length"));
        assert!(eq_dash_underscore(b"x-user_id", b"X_USER-ID"));
        assert!(!eq_dash_underscore(b"content-lengthx", b"content-length"));
        assert!(is_underscore_framing_name(b"TRANSFER_encoding"));
        assert!(!is_underscore_framing_name(b"Transfer-Encoding"));
        assert!(!is_underscore_framing_name(b"X_Other"));
    }

    #[test]
    fn content_length_parser() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b"123456"), Ok(123456));
        assert_eq!(
            parse_content_length(b"999999999999999999"),
            Ok(999_999_999_999_999_999)
        );
        assert_eq!(
            parse_content_length(b"05"),
            Err(FieldError::ContentLengthLeadingZero)
        );
        for bad in [
            &b""[..],
            b"00",
            b"1a",
            b"+1",
            b" 1",
            b"1,1",
            b"0x10",
            b"1234567890123456789",
        ] {
            assert!(parse_content_length(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn connection_named_fields() {
        let raw = b"Connection: a, b\r\nA: 1\r\nb: 2\r\nC: 3\r\nConnection: c\r\n";
        let field = |name: &[u8], value: &[u8]| HeaderField {
            is_forwarding: false,
            name: Span::of(raw, name),
            value: Span::of(raw, value),
            is_hop_by_hop: false,
        };
        let mut headers = [
            field(&raw[0..10], &raw[12..16]),
            field(&raw[18..19], &raw[21..22]),
            field(&raw[24..25], &raw[27..28]),
            field(&raw[30..31], &raw[33..34]),
            field(&raw[36..46], &raw[48..49]),
        ];
        mark_named_fields(raw, &mut headers, |t| t != b"b");
        let flags: Vec<bool> = headers.iter().map(|f| f.is_hop_by_hop).collect();
        assert_eq!(flags, vec![false, true, false, true, false]);
        assert_eq!(field_line(&headers, raw.len() + 2, 1), (18, 24));
        assert_eq!(field_line(&headers, raw.len() + 2, 4), (36, raw.len()));
    }

    #[test]
    fn trailer_deny_list() {
        for name in [
            &b"Content-Length"[..],
            b"content-length",
            b"CONTENT-LENGTH",
            b"Content_Length",
            b"transfer-encoding",
            b"Transfer_Encoding",
            b"Host",
            b"HOST",
            b"Authorization",
            b"Cookie",
            b"Set-Cookie",
            b"Cache-Control",
            b"If-None-Match",
            b"Content-Type",
            b"Connection",
            b"TE",
            b"X-Forwarded-For",
            b"True-Client-IP",
            b"X_Original_Forwarded_For",
            b"x-user-id",
            b"X_Trader_Id",
        ] {
            assert!(
                is_forbidden_trailer(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        for name in [
            &b"X-Checksum"[..],
            b"Server-Timing",
            b"Trailer",
            b"Content-Length2",
            b"Hostx",
            b"ETag",
            b"Digest",
            b"a",
        ] {
            assert!(
                !is_forbidden_trailer(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(
            MAX_FORBIDDEN_TRAILER_NAME,
            b"x-original-forwarded-for".len()
        );
    }

    #[test]
    fn forwarding_names() {
        for name in [
            &b"Forwarded"[..],
            b"X-Real-IP",
            b"x_real_ip",
            b"X-Forwarded-For",
            b"X-FORWARDED_HOST",
            b"x-forwarded-proto",
            b"True-Client-IP",
            b"X-Client-IP",
            b"cf-connecting-ip",
            b"CF_Connecting_IP",
            b"X-Cluster-Client-IP",
            b"Fastly-Client-IP",
            b"X-Original-Forwarded-For",
            b"x_original_forwarded_for",
            b"X-Forwarded-Port",
        ] {
            assert!(
                is_forwarding_name(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        for name in [
            &b"Host"[..],
            b"X-Client-Id",
            b"Content-Length",
            b"Accept-Encoding",
            b"Fastly-Client-IPs",
            b"X-Cluster-Client-Id",
            b"X-Original-Forwarded-To",
        ] {
            assert!(
                !is_forwarding_name(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(is_forwarded_proto_name(b"X_Forwarded_Proto"));
        assert!(!is_forwarded_proto_name(b"X-Forwarded-Host"));
    }

    fn hp(host: &str, port: Option<u16>) -> Option<HostPort<'_>> {
        Some(HostPort {
            host: host.as_bytes(),
            port,
        })
    }

    #[test]
    fn host_values_accepted() {
        for (value, want) in [
            ("example.com", hp("example.com", None)),
            ("Example.COM:8080", hp("Example.COM", Some(8080))),
            ("a", hp("a", None)),
            ("localhost:0", hp("localhost", Some(0))),
            ("h:65535", hp("h", Some(65535))),
            ("h:00080", hp("h", Some(80))),
            ("127.0.0.1:80", hp("127.0.0.1", Some(80))),
            ("0.0.0.0", hp("0.0.0.0", None)),
            ("255.255.255.255", hp("255.255.255.255", None)),
            ("[::1]", hp("[::1]", None)),
            ("[::1]:8080", hp("[::1]", Some(8080))),
            (
                "[2001:DB8::ffff:192.0.2.1]",
                hp("[2001:DB8::ffff:192.0.2.1]", None),
            ),
            ("my_host%41", hp("my_host%41", None)),
            ("a-b.c~d!$&'()*+;=", hp("a-b.c~d!$&'()*+;=", None)),
            ("example.com.", hp("example.com.", None)),
            ("v1.example", hp("v1.example", None)),
            ("1a.example", hp("1a.example", None)),
        ] {
            assert_eq!(parse_host_port(value.as_bytes()), want, "{value:?}");
            assert!(is_host_value(value.as_bytes()));
        }
        assert!(is_host_value(b""), "an empty Host is allowed");
    }

    #[test]
    fn host_values_refused() {
        for value in [
            // The reported bug: a port that is not digits.
            "ex:abc",
            "ex:80a",
            "ex:-1",
            "ex:+80",
            "ex: 80",
            // Empty port (valid RFC 3986, refused: readers disagree).
            "ex:",
            "[::1]:",
            // Too long or too large.
            "ex:123456",
            "ex:65536",
            "ex:99999",
            // Two ports, userinfo, path, query, fragment, spaces.
            "ex:80:80",
            "user@ex",
            "user:pw@ex",
            "ex/path",
            "ex?q",
            "ex#f",
            "e x",
            " ex",
            "ex\t",
            // Empty host.
            ":80",
            "",
            // Bad pct-encoding.
            "ex%",
            "ex%4",
            "ex%zz",
            // A list (what two Host fields merged look like).
            "a,b",
            "a, b",
            // Quotes, brackets out of place, obs-text, controls.
            "\"ex\"",
            "ex]",
            "e[x",
            "ex\u{e9}",
            "ex\0",
            // IPv6 without brackets, bad literals, zone ids, IPvFuture.
            "::1",
            "[::1",
            "[::1]x",
            "[::1]]",
            "[]",
            "[:::1]",
            "[1:2:3:4:5:6:7:8:9]",
            "[fe80::1%25eth0]",
            "[v1.fe80::1]",
            "[127.0.0.1]",
            // Ends in a number but not a dotted quad.
            "127.1",
            "010.0.0.1",
            "0x7f.0.0.1",
            "1.2.3.0x1",
            // The same once the WHATWG parser has decoded it; a decoded byte that is not
            // a reg-name's, or not ASCII (IDNA maps fullwidth digits to digits).
            "127.0.0.%31",
            "%31%32%37.1",
            "a.%30x7f",
            "127.0.0.%EF%BC%91",
            "a%2Fb",
            "a%25",
            "256.0.0.1",
            "1.2.3.4.5",
            "1.2.3.4.",
            "example.123",
            "example.0x",
            "10",
            "1..2.3",
        ] {
            if value.is_empty() {
                assert!(parse_host_port(b"").is_none());
                continue;
            }
            assert_eq!(parse_host_port(value.as_bytes()), None, "{value:?}");
            assert!(!is_host_value(value.as_bytes()), "{value:?}");
        }
    }

    /// The dotted-quad check against the grammar read the plain way (split on `.`, four
    /// decimal octets without leading zeros), over every string of up to six bytes of
    /// digits, dots and one letter, and every octet value with a neighbour.
    #[test]
    fn dotted_quad_matches_the_grammar() {
        fn reference(name: &[u8]) -> bool {
            let octets: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
            octets.len() == 4
                && octets.iter().all(|o| {
                    !o.is_empty()
                        && o.len() <= 3
                        && o.iter().all(u8::is_ascii_digit)
                        && (o.len() == 1 || o[0] != b'0')
                        && std::str::from_utf8(o).unwrap().parse::<u32>().unwrap() <= 255
                })
        }
        let alphabet = b"0125.9x";
        let mut name = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                name.clear();
                for _ in 0..len {
                    name.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(is_ipv4_dotted_quad(&name), reference(&name), "{name:?}");
            }
        }
        for v in 0..=1000 {
            for name in [
                format!("{v}.0.0.1"),
                format!("1.2.3.{v}"),
                format!("1.{v}0.3.4"),
            ] {
                let name = name.as_bytes();
                assert_eq!(is_ipv4_dotted_quad(name), reference(name), "{v}");
            }
        }
    }

    /// `eq_lower` answers as `eq_ignore_ascii_case` for every byte value at every
    /// position of the literals the field walks use, and for every length around them.
    #[test]
    fn eq_lower_is_eq_ignore_ascii_case() {
        for lower in [
            &b"content-length"[..],
            b"transfer-encoding",
            b"proxy-connection",
            b"application/json",
            b"100-continue",
            b"keep-alive",
            b"connection",
            b"x-compress",
            b"chunked",
            b"te",
            b"",
        ] {
            let upper = lower.to_ascii_uppercase();
            assert!(eq_lower(lower, lower) && eq_lower(&upper, lower));
            for i in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut s = upper.clone();
                    s[i] = b;
                    assert_eq!(eq_lower(&s, lower), s.eq_ignore_ascii_case(lower), "{s:?}");
                }
            }
            for len in 0..lower.len() + 9 {
                let s: Vec<u8> = upper.iter().copied().cycle().take(len).collect();
                assert_eq!(eq_lower(&s, lower), s.eq_ignore_ascii_case(lower), "{s:?}");
            }
        }
    }

    #[test]
    fn same_origin() {
        let a = parse_host_port(b"Example.com").unwrap();
        let b = parse_host_port(b"example.COM:80").unwrap();
        let c = parse_host_port(b"example.com:8080").unwrap();
        assert!(a.is_same_origin(&b, 80));
        assert!(!a.is_same_origin(&b, 443));
        assert!(!a.is_same_origin(&c, 80));
        let d = parse_host_port(b"other.example").unwrap();
        assert!(!a.is_same_origin(&d, 80));
    }
}
