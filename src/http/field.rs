//! Field and token grammar shared by every parser (RFC 9110 §5, §5.6, §6.5.1).
//!
//! What a field name, a list element, a `Content-Length` or a quoted-string may be,
//! decided once, here: request heads ([`super::parse`]), response heads
//! ([`super::response`]), chunk extensions and trailer sections ([`super::chunked`]), the
//! head rewrite ([`super::head`]), the config (header names) and the demo backend all ask
//! this module, so two of them can never disagree about the same bytes.
//!
//! Also here: [`Span`] and [`HeaderField`], the offsets a parsed head records for each
//! field, and [`field_line`], the byte range of one field line.
//!
//! # Hot path
//! Byte predicates and slice walks; no allocation, no copies.

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
        if !field.name.get(bytes).eq_ignore_ascii_case(b"connection") {
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
    // Fields the edge owns (SPEC §8): a trailer must not re-introduce what the head
    // rewrite drops or sets.
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
    // The SPEC's default user-id fields (SPEC §1): a backend reading the user from a
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
        assert_eq!(MAX_FORBIDDEN_TRAILER_NAME, b"proxy-authorization".len());
    }
}
