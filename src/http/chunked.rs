//! Chunked transfer coding (RFC 9112 §7.1): a strict, incremental decoder.
//!
//! The decoder never buffers: it is fed whatever bytes have arrived, says how many of them
//! belong to the message, and hands chunk *data* to a sink (used to de-chunk a body for
//! the user-id scan). Ringgate forwards chunked bodies exactly as sent, so the decoder's
//! only jobs are to find where the message ends and to refuse anything two parsers could
//! read differently.
//!
//! The same decoder reads request bodies (a refusal is a 400) and upstream responses (a
//! 502), so both directions follow the rules below.
//!
//! # Invariants
//! - chunk-size is at most [`MAX_SIZE_DIGITS`] hex digits with a value below 2^63, nothing
//!   else before `;` or CRLF (no `0x`, no sign, no whitespace). The digit limit counts
//!   leading zeros: parsers that cap the digits (Go's among them) would otherwise refuse
//!   or misread a size ringgate passed on;
//! - chunk extensions are exactly `*( ";" token [ "=" ( token / quoted-string ) ] )`
//!   (RFC 9112 §7.1.1, quoted-string per RFC 9110 §5.6.4) and travel byte for byte.
//!   Stricter than the RFC in two places, both because ringgate forwards the line as
//!   received and cannot normalise it: no BWS (a sender MUST NOT generate it, RFC 9110
//!   §5.6.3; recipients disagree on `5 ;`), and no quoted-pair escaping `"` (a reader that
//!   ignores `\` ends the string there and would then read a quote as still open). So a
//!   valid line ends at its first CRLF for every reader: one that skips to CRLF, one that
//!   honours quoted-strings, and one that reads quotes without escapes. `2;a="\r\nx"` —
//!   framed differently by a reader that looks for the closing quote — is refused;
//! - a chunk line (size + extensions) is at most [`MAX_CHUNK_LINE`] bytes;
//! - chunk data is followed by exactly CRLF;
//! - trailer lines are field lines as in a head (token name, colon, field-content bytes,
//!   no obs-fold, no bare CR/LF), at most [`MAX_TRAILER_BYTES`] in total, and never name a
//!   field RFC 9110 §6.5.1 keeps out of trailers (framing, routing, request modifiers,
//!   authentication, response control, content format; see
//!   [`super::field::is_forbidden_trailer`]), nor, in a request, a configured user-id
//!   field ([`ChunkedDecoder::refusing`]). Such a trailer refuses the whole message;
//!   it is not dropped, because the decoder only delimits bytes that are relayed as they
//!   arrived.

use super::field::{
    is_field_value_byte, is_forbidden_trailer, is_qdtext, is_quoted_pair_byte, is_tchar,
    MAX_FORBIDDEN_TRAILER_NAME,
};

/// Longest accepted chunk-size line including extensions, without CRLF.
pub const MAX_CHUNK_LINE: u32 = 4096;
/// Most hex digits in a chunk size, leading zeros included (16 hold any size below 2^63).
pub const MAX_SIZE_DIGITS: u8 = 16;
/// Largest accepted trailer section.
pub const MAX_TRAILER_BYTES: u32 = 8192;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A byte that cannot appear where it did.
    InvalidSize,
    /// The size does not fit an i64 (2^63 or more) or has more than [`MAX_SIZE_DIGITS`].
    SizeOverflow,
    /// A chunk line longer than [`MAX_CHUNK_LINE`].
    LineTooLong,
    /// Chunk data not followed by CRLF.
    MissingDataCrlf,
    /// A bare CR or LF.
    BadLineEnding,
    /// A chunk extension outside the RFC 9112 §7.1.1 grammar (or with BWS or `\"`).
    BadExtension,
    /// A malformed or oversized trailer section.
    BadTrailer,
    /// A trailer field that must not be sent in trailers (RFC 9110 §6.5.1).
    ForbiddenTrailer,
}

impl ChunkError {
    /// Short reason for a 400/502 body.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size overflow",
            ChunkError::LineTooLong => "chunk line too long",
            ChunkError::MissingDataCrlf => "chunk data not followed by CRLF",
            ChunkError::BadLineEnding => "bare CR or LF in chunked body",
            ChunkError::BadExtension => "invalid chunk extension",
            ChunkError::BadTrailer => "invalid trailer section",
            ChunkError::ForbiddenTrailer => "field not allowed in a trailer section",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// After `;`: the first byte of an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// After `=`: the first byte of an extension value.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After `\` inside a quoted-string.
    ExtQuotedPair,
    /// After the closing quote: `;` or CR.
    ExtQuotedEnd,
    /// Saw CR after the size line, need LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After data, need CR.
    DataCr,
    /// After data CR, need LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// After the colon of a trailer line: the value until CR.
    TrailerValue,
    /// Saw CR at the end of a trailer line, need LF.
    TrailerLf,
    /// Saw CR of the final empty line, need LF.
    EndLf,
    /// Message complete.
    Done,
}

/// Most field names a decoder refuses in trailers on top of the fixed deny-list
/// ([`TrailerNames`]); `extract.headers` is limited to as many.
pub const MAX_REFUSED_TRAILER_NAMES: usize = 8;

/// Field names refused in a trailer section on top of the fixed deny-list: the configured
/// user-id fields, which a backend merging trailers into the head would read as the user
/// ringgate did not route. Kept as 32-bit hashes of the names (any case, `_` read as `-`),
/// so that a decoder stays small and `Copy` and needs no buffer for names up to 64 bytes;
/// a name whose hash collides with one of them is refused too, which errs on the refusing
/// side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailerNames {
    hashes: [u32; MAX_REFUSED_TRAILER_NAMES],
    len: u8,
}

impl TrailerNames {
    /// No names.
    pub const NONE: Self = Self {
        hashes: [0; MAX_REFUSED_TRAILER_NAMES],
        len: 0,
    };

    /// The first [`MAX_REFUSED_TRAILER_NAMES`] of `names`.
    pub fn new<N: AsRef<[u8]>>(names: &[N]) -> Self {
        let mut set = Self::NONE;
        for (slot, name) in set.hashes.iter_mut().zip(names) {
            *slot = name.as_ref().iter().fold(NAME_HASH_START, name_hash_step);
            set.len += 1;
        }
        set
    }

    fn contains(&self, hash: u32) -> bool {
        self.hashes[..usize::from(self.len)].contains(&hash)
    }
}

/// FNV-1a (32-bit) over a field name read without case and with `_` as `-`.
const NAME_HASH_START: u32 = 0x811c_9dc5;

fn name_hash_step(hash: u32, b: &u8) -> u32 {
    let b = match *b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    };
    (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
}

/// Incremental strict decoder of one chunked message body.
#[derive(Clone, Copy, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    line_len: u32,
    trailer_len: u32,
    /// The current trailer name's length, and its first bytes (enough to compare it with
    /// the deny-list; a longer name cannot be on it).
    name_len: u32,
    name: [u8; MAX_FORBIDDEN_TRAILER_NAME],
    /// The current trailer name's hash (see [`TrailerNames`]).
    name_hash: u32,
    /// Names refused on top of the fixed deny-list.
    refused: TrailerNames,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub const fn new() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
            name_len: 0,
            name: [0; MAX_FORBIDDEN_TRAILER_NAME],
            name_hash: NAME_HASH_START,
            refused: TrailerNames::NONE,
        }
    }

    /// A decoder at the start of a body that also refuses `names` in its trailer section.
    pub const fn refusing(names: TrailerNames) -> Self {
        let mut d = Self::new();
        d.refused = names;
        d
    }

    /// Whether the terminating chunk and trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of chunk data still expected in the current chunk (0 outside data), so a
    /// relay can move a large chunk's data without looking at it.
    pub fn data_remaining(&self) -> u64 {
        if self.state == State::Data {
            self.size
        } else {
            0
        }
    }

    /// Account for `n` bytes of chunk data moved without passing through [`Self::feed`].
    pub fn skip_data(&mut self, n: u64) {
        debug_assert!(self.state == State::Data && n <= self.size);
        self.size -= n;
        if self.size == 0 {
            self.state = State::DataCr;
        }
    }

    /// Feed bytes; returns how many belong to this message (all of `buf` unless the message
    /// ended inside it). Chunk data is passed to `sink`.
    pub fn feed(&mut self, buf: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Data => {
                    let take = (buf.len() - i).min(self.size.min(usize::MAX as u64) as usize);
                    sink(&buf[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Done => return Ok(i),
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size => {
                if let Some(d) = hex_value(b) {
                    // Sizes must fit an i64: backends that parse into signed integers
                    // must not read a huge chunk as a negative one.
                    if self.size > (i64::MAX as u64) >> 4 || self.digits == MAX_SIZE_DIGITS {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.size = (self.size << 4) | u64::from(d);
                    self.digits += 1;
                    self.bump_line()?;
                } else if self.digits == 0 {
                    return Err(ChunkError::InvalidSize);
                } else if b == b';' {
                    self.state = State::ExtNameStart;
                    self.bump_line()?;
                } else if b == b'\r' {
                    self.state = State::SizeLf;
                } else {
                    return Err(ChunkError::InvalidSize);
                }
            }
            State::ExtNameStart
            | State::ExtName
            | State::ExtValueStart
            | State::ExtToken
            | State::ExtQuoted
            | State::ExtQuotedPair
            | State::ExtQuotedEnd => self.step_extension(b)?,
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.line_len = 0;
                self.digits = 0;
                self.state = if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingDataCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingDataCrlf);
                }
                self.state = State::Size;
            }
            State::TrailerStart => {
                if b == b'\r' {
                    self.state = State::EndLf;
                } else if is_tchar(b) {
                    self.name_len = 0;
                    self.name_hash = NAME_HASH_START;
                    self.push_name_byte(b);
                    self.state = State::TrailerName;
                    self.bump_trailer()?;
                } else {
                    // Includes SP/HTAB (obs-fold) and bare LF.
                    return Err(ChunkError::BadTrailer);
                }
            }
            State::TrailerName => {
                if is_tchar(b) {
                    self.push_name_byte(b);
                } else if b == b':' {
                    let len = self.name_len as usize;
                    if (len <= MAX_FORBIDDEN_TRAILER_NAME
                        && is_forbidden_trailer(&self.name[..len]))
                        || self.refused.contains(self.name_hash)
                    {
                        return Err(ChunkError::ForbiddenTrailer);
                    }
                    self.state = State::TrailerValue;
                } else {
                    // Whitespace before the colon, a missing colon, CR, LF, controls.
                    return Err(ChunkError::BadTrailer);
                }
                self.bump_trailer()?;
            }
            State::TrailerValue => {
                if b == b'\r' {
                    self.state = State::TrailerLf;
                } else if is_field_value_byte(b) {
                    self.bump_trailer()?;
                } else {
                    return Err(ChunkError::BadTrailer);
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.state = State::Done;
            }
            State::Data | State::Done => unreachable!("handled by feed"),
        }
        Ok(())
    }

    /// One byte of a chunk extension (RFC 9112 §7.1.1, without BWS):
    /// `*( ";" token [ "=" ( token / quoted-string ) ] )`, ended by CR.
    fn step_extension(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, b) {
            // A name: at least one tchar (so no bare `;`, no `;=v`, no `; a`).
            (State::ExtNameStart, _) if is_tchar(b) => State::ExtName,
            (State::ExtName, _) if is_tchar(b) => State::ExtName,
            (State::ExtName, b'=') => State::ExtValueStart,
            // A value: a token or a quoted-string (so no `a=`, no `a= b`).
            (State::ExtValueStart, b'"') => State::ExtQuoted,
            (State::ExtValueStart | State::ExtToken, _) if is_tchar(b) => State::ExtToken,
            (State::ExtQuoted, b'"') => State::ExtQuotedEnd,
            (State::ExtQuoted, b'\\') => State::ExtQuotedPair,
            (State::ExtQuoted, _) if is_qdtext(b) => State::ExtQuoted,
            // `\"` is valid RFC 9110 but ends the string early for a reader without
            // escapes, and makes the rest of the line look quoted to it: refused.
            (State::ExtQuotedPair, _) if b != b'"' && is_quoted_pair_byte(b) => State::ExtQuoted,
            // After a complete name, value or quoted-string: the next extension or CRLF.
            (State::ExtName | State::ExtToken | State::ExtQuotedEnd, b';') => State::ExtNameStart,
            (State::ExtName | State::ExtToken | State::ExtQuotedEnd, b'\r') => {
                self.state = State::SizeLf;
                return Ok(());
            }
            // Anything else: BWS, CR/LF/NUL or other controls inside a quoted-string, an
            // unterminated quote, a bare `;`, `;=`, `a=`, a second `=`.
            _ => return Err(ChunkError::BadExtension),
        };
        self.bump_line()
    }

    fn push_name_byte(&mut self, b: u8) {
        if let Some(slot) = self.name.get_mut(self.name_len as usize) {
            *slot = b;
        }
        self.name_len = self.name_len.saturating_add(1);
        self.name_hash = name_hash_step(self.name_hash, &b);
    }

    fn bump_line(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_BYTES {
            return Err(ChunkError::BadTrailer);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` delivered in pieces of `step` bytes; returns (consumed, data).
    fn decode(input: &[u8], step: usize) -> Result<(usize, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            pos += d.feed(&input[pos..end], &mut |s| data.extend_from_slice(s))?;
        }
        assert!(d.is_done(), "incomplete");
        Ok((pos, data))
    }

    #[test]
    fn decodes_at_every_split_size() {
        let body = b"5\r\nhello\r\nA;ext=1;x\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (n, data) = decode(body, step).unwrap();
            assert_eq!(n, body.len() - 4, "step {step}");
            assert_eq!(data, b"hello0123456789");
        }
    }

    #[test]
    fn refuses_ambiguous_bodies() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"5\r\nhelloX\r\n0\r\n\r\n", ChunkError::MissingDataCrlf),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataCrlf),
            (b"10000000000000000\r\n", ChunkError::SizeOverflow),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
            (b"0\r\n folded\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nNoColon\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX: a\nY: b\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\n\n", ChunkError::BadTrailer),
            (b"0\r\n\r\r", ChunkError::BadLineEnding),
        ];
        for (input, want) in cases {
            let mut d = ChunkedDecoder::new();
            let got = d.feed(input, &mut |_| {});
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE as usize));
        assert_eq!(
            ChunkedDecoder::new().feed(&long, &mut |_| {}),
            Err(ChunkError::LineTooLong)
        );
    }

    /// Feed `input` whole and one byte at a time; both must give the same answer.
    fn outcome(input: &[u8]) -> Result<usize, ChunkError> {
        let whole = ChunkedDecoder::new().feed(input, &mut |_| {});
        let mut d = ChunkedDecoder::new();
        let mut bytewise = Ok(0);
        for (i, b) in input.iter().enumerate() {
            match d.feed(std::slice::from_ref(b), &mut |_| {}) {
                Ok(_) if d.is_done() => {
                    bytewise = Ok(i + 1);
                    break;
                }
                Ok(_) => bytewise = Ok(i + 1),
                Err(e) => {
                    bytewise = Err(e);
                    break;
                }
            }
        }
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(input));
        whole
    }

    /// A one-chunk body `5<ext>\r\nhello\r\n0\r\n\r\n`.
    fn with_ext(ext: &[u8]) -> Vec<u8> {
        let mut v = b"5".to_vec();
        v.extend_from_slice(ext);
        v.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        v
    }

    #[test]
    fn chunk_extensions_per_rfc9112_7_1_1() {
        for ext in [
            &b""[..],
            b";a",
            b";a=b",
            b";a=b;c",
            b";name=value;other=\"quoted value\"",
            b";a=\"\"",
            b";a=\"x;y=z\"",
            b";a=\"\\\\\"",
            b";a=\"\\x\\\t\"",
            b";a=\"tab\there\"",
            b";a=\"\xc3\xa9 obs-text\"",
            b";!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~",
            b";a=\"x\";b=\"y\"",
        ] {
            let input = with_ext(ext);
            assert_eq!(
                outcome(&input),
                Ok(input.len()),
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
        for ext in [
            // The smuggling vector: CR LF inside a quoted string.
            &b";a=\"\r\nx\""[..],
            b";a=\"\n\"",
            b";a=\"\rx\"",
            b";a=\"\0\"",
            b";a=\"\x7f\"",
            b";a=\"\x01\"",
            // Unterminated quote (the line would end inside it).
            b";a=\"x",
            b";a=\"x\\\"",
            // Escaped quote: valid RFC 9110, refused (see the module docs).
            b";a=\"x\\\"y\"",
            b";a=\"\\\"\"",
            // quoted-pair of a control byte.
            b";a=\"\\\r\"",
            b";a=\"\\\0\"",
            // Bare `;`, empty names and values.
            b";",
            b";;a",
            b";a;",
            b";=v",
            b";a=",
            b";a=;b",
            // BWS anywhere (before the first `;` it is a size error, below).
            b"; a",
            b";a =b",
            b";a= b",
            b";a=b ",
            b";a=\"x\" ",
            // Not tokens.
            b";a=b=c",
            b";a=b\"c\"",
            b";a\"b\"",
            b";a=\"x\"y",
            b";a/b",
            b";a=b,c",
            b";a@b",
            b";\xc3\xa9",
            b";a=\xc3\xa9",
        ] {
            assert_eq!(
                outcome(&with_ext(ext)),
                Err(ChunkError::BadExtension),
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
        // The last chunk's extensions follow the same grammar.
        assert_eq!(
            outcome(b"0;a=\"x\"\r\n\r\n"),
            Ok(b"0;a=\"x\"\r\n\r\n".len())
        );
        assert_eq!(
            outcome(b"0;a=\"\r\n\"\r\n\r\n"),
            Err(ChunkError::BadExtension)
        );
        // Whitespace right after the size stays a size error.
        for ext in [&b" "[..], b" ;a", b"\t;a=b"] {
            assert_eq!(outcome(&with_ext(ext)), Err(ChunkError::InvalidSize));
        }
    }

    #[test]
    fn quoted_crlf_cannot_hide_a_request() {
        // A reader that looks for the closing quote would take `GET /smuggled ...` as
        // part of the extension and read the chunk data from after it.
        let attack = b"2;a=\"\r\nxx\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\"\r\nxx\r\n0\r\n\r\n";
        assert_eq!(outcome(attack), Err(ChunkError::BadExtension));
    }

    #[test]
    fn trailer_fields_follow_head_rules() {
        for trailer in [
            &b"X-Checksum: abc\r\n"[..],
            b"X-A:1\r\n",
            b"X-Empty:\r\n",
            b"X-Ows: \t v \t\r\n",
            b"X-Obs: \xc3\xa9\r\n",
            b"Trailer: X-Checksum\r\n",
            b"Server-Timing: db;dur=53\r\nX-B: 2\r\n",
            b"Content-Length2: 5\r\n",
            b"X-Content-Length: 5\r\n",
        ] {
            let mut input = b"0\r\n".to_vec();
            input.extend_from_slice(trailer);
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                outcome(&input),
                Ok(input.len()),
                "{:?}",
                String::from_utf8_lossy(trailer)
            );
        }
        for (trailer, want) in [
            (&b"X: a\r\n b\r\n"[..], ChunkError::BadTrailer),
            (b"X: a\r\n\tb\r\n", ChunkError::BadTrailer),
            (b" X: a\r\n", ChunkError::BadTrailer),
            (b"X : a\r\n", ChunkError::BadTrailer),
            (b"X\t: a\r\n", ChunkError::BadTrailer),
            (b": a\r\n", ChunkError::BadTrailer),
            (b"NoColon\r\n", ChunkError::BadTrailer),
            (b"X: a\nY: b\r\n", ChunkError::BadTrailer),
            (b"X: a\rY: b\r\n", ChunkError::BadLineEnding),
            (b"X: a\0b\r\n", ChunkError::BadTrailer),
            (b"X: a\x7fb\r\n", ChunkError::BadTrailer),
            (b"X: a\x0bb\r\n", ChunkError::BadTrailer),
            (b"X\xc3\xa9: a\r\n", ChunkError::BadTrailer),
            (b"X\"Y: a\r\n", ChunkError::BadTrailer),
        ] {
            let mut input = b"0\r\n".to_vec();
            input.extend_from_slice(trailer);
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                outcome(&input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(trailer)
            );
        }
    }

    #[test]
    fn configured_user_id_fields_are_refused_in_trailers() {
        let refused = TrailerNames::new(&["X-Account", "trader-desk"]);
        let body = |trailer: &str| format!("3\r\nabc\r\n0\r\nX-Ok: 1\r\n{trailer}\r\n\r\n");
        let decode = |d: ChunkedDecoder, input: &[u8]| {
            // Whole, and byte by byte (the name split over feeds).
            let (mut once, mut bytewise) = (d, d);
            let whole = once.feed(input, &mut |_| {}).map(|_| ());
            let split = input.iter().try_for_each(|b| {
                bytewise
                    .feed(std::slice::from_ref(b), &mut |_| {})
                    .map(|_| ())
            });
            assert_eq!(whole, split);
            whole
        };
        for trailer in [
            "X-Account: bob",
            "x-account: bob",
            "X_ACCOUNT: bob",
            "X-Account:",
            "Trader-Desk: 7",
            "trader_desk: 7",
        ] {
            assert_eq!(
                decode(ChunkedDecoder::refusing(refused), body(trailer).as_bytes()),
                Err(ChunkError::ForbiddenTrailer),
                "{trailer}"
            );
            // Without the configured names only the fixed list applies.
            assert_eq!(
                decode(ChunkedDecoder::new(), body(trailer).as_bytes()),
                Ok(())
            );
        }
        for trailer in ["X-Accounts: 1", "X-Accoun: 1", "Desk: 1", "X-Checksum: 1"] {
            assert_eq!(
                decode(ChunkedDecoder::refusing(refused), body(trailer).as_bytes()),
                Ok(()),
                "{trailer}"
            );
        }
        // The fixed list still applies with configured names.
        assert_eq!(
            decode(
                ChunkedDecoder::refusing(refused),
                body("Host: evil").as_bytes()
            ),
            Err(ChunkError::ForbiddenTrailer)
        );
    }

    #[test]
    fn framing_and_routing_fields_are_refused_in_trailers() {
        for trailer in [
            &b"Content-Length: 5"[..],
            b"content-length: 5",
            b"CONTENT-LENGTH: 5",
            b"Content_Length: 5",
            b"Content-Length:",
            b"Transfer-Encoding: chunked",
            b"transfer-encoding: chunked",
            b"TRANSFER_ENCODING: chunked",
            b"Host: evil",
            b"host: evil",
            b"HoSt:evil",
            b"Authorization: Bearer x",
            b"Cookie: a=b",
            b"Cache-Control: no-store",
            b"If-Match: *",
            b"Range: bytes=0-1",
            b"Expect: 100-continue",
            b"Location: /x",
            b"Set-Cookie: a=b",
            b"Content-Type: text/plain",
            b"Connection: close",
            b"Upgrade: h2c",
            b"TE: trailers",
            b"X-Forwarded-For: 1.2.3.4",
            b"X-User-Id: bob",
        ] {
            // Also after an allowed trailer, and with the name split over feeds.
            let mut input = b"3\r\nabc\r\n0\r\nX-Ok: 1\r\n".to_vec();
            input.extend_from_slice(trailer);
            input.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                outcome(&input),
                Err(ChunkError::ForbiddenTrailer),
                "{:?}",
                String::from_utf8_lossy(trailer)
            );
        }
    }

    #[test]
    fn response_bodies_follow_the_same_rules() {
        // relay_chunked reads upstream responses with this decoder; its errors become
        // a 502. A `Content-Length` trailer in a response is refused the same way.
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.feed(
                b"5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n",
                &mut |_| {}
            ),
            Err(ChunkError::ForbiddenTrailer)
        );
        assert_eq!(
            ChunkError::ForbiddenTrailer.reason(),
            "field not allowed in a trailer section"
        );
        assert_eq!(ChunkError::BadExtension.reason(), "invalid chunk extension");
    }

    #[test]
    fn every_split_gives_the_same_answer() {
        let inputs: &[&[u8]] = &[
            b"5;a=\"q;\\\\x\";b=c\r\nhello\r\n0;z\r\nX-A: 1\r\nX-B:2\r\n\r\n",
            b"5;a=\"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n0\r\nproxy-authorization: x\r\n\r\n",
            b"5\r\nhello\r\n0\r\nproxy-authorizationx: x\r\n\r\n",
        ];
        for input in inputs {
            let whole = ChunkedDecoder::new().feed(input, &mut |_| {});
            for split in 1..input.len() {
                let mut d = ChunkedDecoder::new();
                let got = d
                    .feed(&input[..split], &mut |_| {})
                    .and_then(|n| Ok(n + d.feed(&input[split..], &mut |_| {})?));
                assert_eq!(
                    got,
                    whole,
                    "split at {split} of {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn skip_data_for_spliced_chunks() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"100000\r\n", &mut |_| {}).unwrap(), 8);
        assert_eq!(d.data_remaining(), 0x100000);
        d.skip_data(0x100000);
        assert_eq!(d.feed(b"\r\n0\r\n\r\n", &mut |_| {}).unwrap(), 7);
        assert!(d.is_done());
    }

    #[test]
    fn chunk_sizes_are_capped_at_i64_max() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"7FFFFFFFFFFFFFFF\r\n", &mut |_| {}).unwrap(), 18);
        assert_eq!(d.data_remaining(), i64::MAX as u64);
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.feed(b"8000000000000000\r\n", &mut |_| {}),
            Err(ChunkError::SizeOverflow)
        );
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.feed(b"0000000000000001\r\n", &mut |_| {}).unwrap(),
            18,
            "16 digits with leading zeros are a size"
        );
        assert_eq!(d.data_remaining(), 1);
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.feed(b"00000000000000001\r\n", &mut |_| {}),
            Err(ChunkError::SizeOverflow),
            "a 17th digit is refused even as a leading zero"
        );
    }
}
