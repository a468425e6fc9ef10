//! Incremental HTTP/1.1 response framing (RFC 9112 §6.3), just enough to know where each
//! response ends, its status, and whether the connection survives it.
//!
//! The parser never copies or keeps body bytes: it counts them down. The caller owns the read
//! buffer, feeds the unread part, advances by [`Progress::consumed`], and calls again after a
//! response completes (several pipelined responses may sit in one read).
//!
//! Framing rules, in order: 1xx (other than 101) are skipped; 204 and 304 have no body;
//! `Transfer-Encoding` whose last coding is `chunked` → chunked (chunk extensions and trailers
//! skipped); any other `Transfer-Encoding` → body until close; `Content-Length` (repeated
//! values must agree) → that many bytes; neither → body until close. `Connection: close`, or
//! HTTP/1.0 without `keep-alive`, marks the response as closing the connection.
//!
//! # Errors
//!
//! [`FramingError`] for malformed heads, bad lengths, bad chunk lines, oversize heads, 101
//! upgrades, and EOF inside a response ([`FramingError::Truncated`]).

use std::fmt;

/// Largest response head accepted; the caller's read buffer must be at least this big.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one response head.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size or trailer line accepted.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// What the caller needs from a completed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The server will close the connection after this response.
    pub is_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    Malformed,
    HeadTooLarge,
    TooManyHeaders,
    BadContentLength,
    BadChunk,
    UnsupportedUpgrade,
    /// The connection ended inside a response.
    Truncated,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FramingError::Malformed => "malformed response head",
            FramingError::HeadTooLarge => "response head too large",
            FramingError::TooManyHeaders => "too many response headers",
            FramingError::BadContentLength => "bad Content-Length",
            FramingError::BadChunk => "bad chunked encoding",
            FramingError::UnsupportedUpgrade => "101 upgrade not supported",
            FramingError::Truncated => "connection closed inside a response",
        };
        f.write_str(text)
    }
}

impl std::error::Error for FramingError {}

/// Result of one [`ResponseParser::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input the parser is done with; the caller drops them.
    pub consumed: usize,
    /// Set when a response completed within the consumed bytes.
    pub done: Option<ResponseHead>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkDataEnd,
    Trailer,
    UntilClose,
}

enum BodyFraming {
    None,
    Fixed(u64),
    Chunked,
    UntilClose,
}

/// One connection's response framing state.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    state: State,
    head: ResponseHead,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        ResponseParser {
            state: State::Head,
            head: ResponseHead {
                status: 0,
                is_close: false,
            },
        }
    }

    /// True between responses (nothing partially read).
    pub fn is_between_responses(&self) -> bool {
        self.state == State::Head
    }

    /// Consumes as much of `input` as possible, stopping after at most one complete response.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, FramingError> {
        let mut pos = 0usize;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        return Ok(need_more(pos));
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut response = httparse::Response::new(&mut headers);
                    let head_len = match response.parse(rest) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => {
                            if rest.len() > MAX_HEAD_BYTES {
                                return Err(FramingError::HeadTooLarge);
                            }
                            return Ok(need_more(pos));
                        }
                        Err(httparse::Error::TooManyHeaders) => {
                            return Err(FramingError::TooManyHeaders)
                        }
                        Err(_) => return Err(FramingError::Malformed),
                    };
                    if head_len > MAX_HEAD_BYTES {
                        return Err(FramingError::HeadTooLarge);
                    }
                    pos += head_len;
                    let status = response.code.ok_or(FramingError::Malformed)?;
                    if status == 101 {
                        return Err(FramingError::UnsupportedUpgrade);
                    }
                    if (100..200).contains(&status) {
                        continue; // interim response: the real one follows
                    }
                    let (framing, is_close) = body_framing(&response, status)?;
                    self.head = ResponseHead { status, is_close };
                    match framing {
                        BodyFraming::None | BodyFraming::Fixed(0) => {
                            return Ok(self.complete(pos));
                        }
                        BodyFraming::Fixed(n) => self.state = State::Fixed { remaining: n },
                        BodyFraming::Chunked => self.state = State::ChunkSize,
                        BodyFraming::UntilClose => {
                            self.head.is_close = true;
                            self.state = State::UntilClose;
                        }
                    }
                }
                State::Fixed { remaining } => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    if take == remaining {
                        return Ok(self.complete(pos));
                    }
                    self.state = State::Fixed {
                        remaining: remaining - take,
                    };
                    return Ok(need_more(pos));
                }
                State::ChunkSize => {
                    let Some(line_len) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_CHUNK_LINE_BYTES {
                            return Err(FramingError::BadChunk);
                        }
                        return Ok(need_more(pos));
                    };
                    let size = parse_chunk_size(&rest[..line_len])?;
                    pos += line_len + 1;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData { remaining: size }
                    };
                }
                State::ChunkData { remaining } => {
                    let take = remaining.min(rest.len() as u64);
                    pos += take as usize;
                    if take < remaining {
                        self.state = State::ChunkData {
                            remaining: remaining - take,
                        };
                        return Ok(need_more(pos));
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => match rest {
                    [] | [b'\r'] => return Ok(need_more(pos)),
                    [b'\n', ..] => {
                        pos += 1;
                        self.state = State::ChunkSize;
                    }
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    _ => return Err(FramingError::BadChunk),
                },
                State::Trailer => {
                    let Some(line_len) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_CHUNK_LINE_BYTES {
                            return Err(FramingError::BadChunk);
                        }
                        return Ok(need_more(pos));
                    };
                    let is_last = matches!(&rest[..line_len], [] | [b'\r']);
                    pos += line_len + 1;
                    if is_last {
                        return Ok(self.complete(pos));
                    }
                }
                State::UntilClose => return Ok(need_more(input.len())),
            }
        }
    }

    /// The peer closed the connection. `unconsumed` is how many fed bytes were not consumed.
    /// Returns the response that EOF completes (read-until-close bodies), `None` for a clean
    /// close between responses, or [`FramingError::Truncated`].
    pub fn finish_at_eof(
        &mut self,
        unconsumed: usize,
    ) -> Result<Option<ResponseHead>, FramingError> {
        match self.state {
            State::UntilClose => {
                self.state = State::Head;
                Ok(Some(self.head))
            }
            State::Head if unconsumed == 0 => Ok(None),
            _ => Err(FramingError::Truncated),
        }
    }

    fn complete(&mut self, pos: usize) -> Progress {
        self.state = State::Head;
        Progress {
            consumed: pos,
            done: Some(self.head),
        }
    }
}

fn need_more(pos: usize) -> Progress {
    Progress {
        consumed: pos,
        done: None,
    }
}

fn body_framing(
    response: &httparse::Response<'_, '_>,
    status: u16,
) -> Result<(BodyFraming, bool), FramingError> {
    let mut is_close = response.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut last_transfer_coding: Option<&[u8]> = None;
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_decimal(trim(header.value)).ok_or(FramingError::BadContentLength)?;
            if content_length.is_some_and(|seen| seen != value) {
                return Err(FramingError::BadContentLength);
            }
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if let Some(coding) = header.value.split(|&b| b == b',').map(trim).next_back() {
                last_transfer_coding = Some(coding);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in header.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    is_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && response.version == Some(0) {
                    is_close = false;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 {
        BodyFraming::None
    } else if let Some(coding) = last_transfer_coding {
        if coding.eq_ignore_ascii_case(b"chunked") {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    } else if let Some(n) = content_length {
        BodyFraming::Fixed(n)
    } else {
        BodyFraming::UntilClose
    };
    Ok((framing, is_close))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// `1a;ext=x\r` → 26. Only the hex digits before `;` or whitespace count.
fn parse_chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits_end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err(FramingError::BadChunk);
    }
    let rest = trim(rest);
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(FramingError::BadChunk);
    }
    let mut size = 0u64;
    for &b in digits {
        let digit = (b as char).to_digit(16).ok_or(FramingError::BadChunk)?;
        size = size * 16 + u64::from(digit);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after another the way a connection would (unconsumed bytes stay in
    /// the buffer and are fed again with the next chunk), then EOF. Returns the responses.
    fn run(chunks: &[&[u8]]) -> Result<Vec<ResponseHead>, FramingError> {
        let mut parser = ResponseParser::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let p = parser.feed(&buf)?;
                buf.drain(..p.consumed);
                match p.done {
                    Some(head) => out.push(head),
                    None => break,
                }
            }
        }
        if let Some(head) = parser.finish_at_eof(buf.len())? {
            out.push(head);
        }
        Ok(out)
    }

    /// Same bytes, split at every position (and at every pair of positions for short input).
    fn run_all_splits(bytes: &[u8]) -> Result<Vec<ResponseHead>, FramingError> {
        let whole = run(&[bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
        }
        if bytes.len() <= 160 {
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    assert_eq!(
                        run(&[&bytes[..i], &bytes[i..j], &bytes[j..]]),
                        whole,
                        "split at {i},{j}"
                    );
                }
            }
        }
        let one_at_a_time: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&one_at_a_time), whole, "byte by byte");
        whole
    }

    fn ok(status: u16, is_close: bool) -> ResponseHead {
        ResponseHead { status, is_close }
    }

    #[test]
    fn content_length_responses_pipelined() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            run_all_splits(bytes),
            Ok(vec![ok(200, false), ok(404, false), ok(503, false)])
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            run_all_splits(bytes),
            Ok(vec![ok(200, false), ok(201, false)])
        );
    }

    #[test]
    fn interim_responses_are_skipped_and_no_body_statuses_have_none() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            run_all_splits(bytes),
            Ok(vec![ok(204, false), ok(304, false), ok(200, false)])
        );
    }

    #[test]
    fn connection_close_and_read_until_close() {
        let bytes =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(run_all_splits(bytes), Ok(vec![ok(200, true)]));
        let bytes = b"HTTP/1.1 500 Oops\r\n\r\nthe body runs until the connection closes";
        assert_eq!(run_all_splits(bytes), Ok(vec![ok(500, true)]));
        let bytes = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run_all_splits(bytes), Ok(vec![ok(200, true)]));
        let bytes = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run_all_splits(bytes), Ok(vec![ok(200, false)]));
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz";
        assert_eq!(run_all_splits(bytes), Ok(vec![ok(200, true)]));
    }

    #[test]
    fn errors_are_reported_not_guessed() {
        let cases: &[(&[u8], FramingError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
                FramingError::Truncated,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Le", FramingError::Truncated),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                FramingError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                FramingError::BadChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
                FramingError::BadChunk,
            ),
            (
                b"HTTP/1.1 101 Switching\r\n\r\n",
                FramingError::UnsupportedUpgrade,
            ),
            (b"garbage that is not http\r\n\r\n", FramingError::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                FramingError::Truncated,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                run(&[bytes]),
                Err(*want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD_BYTES {
            huge.extend_from_slice(b"X-Pad: ");
            huge.extend_from_slice(&[b'a'; 1000]);
            huge.extend_from_slice(b"\r\n");
        }
        assert_eq!(run(&[&huge]), Err(FramingError::HeadTooLarge));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X-A: 1\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(run(&[&many]), Err(FramingError::TooManyHeaders));
    }

    #[test]
    fn clean_close_between_responses_is_not_an_error() {
        assert_eq!(run(&[]), Ok(vec![]));
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run(&[bytes]), Ok(vec![ok(200, false)]));
    }
}
