//! A strict HTTP/1.1 client for talking to the router: keep-alive and pipelining, its own
//! head parser and body framing (Content-Length, chunked with trailers, until-close,
//! HEAD/204/304, 1xx skipped or returned), and an honest account of how the connection
//! ended: a clean close (FIN: `read` returns 0) is told from a reset (RST: `ECONNRESET` or
//! `EPIPE`), and bytes received after the last complete response are reported, never
//! dropped.
//!
//! The framing code is written here on purpose: it must not share a parser with the code
//! under test. It is stricter than a browser: a head with a bare LF, obs-fold, a malformed
//! field, both `Content-Length` and `Transfer-Encoding`, or more than one `Content-Length`
//! is reported as [`Failure::Malformed`] — the router must never send one.
//!
//! # Invariants
//! Every read has a timeout ([`Client::set_timeout`], 10 s by default); a read that times
//! out is a [`Failure::Timeout`], never a hang.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::find;

/// Default read timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::closed`] waits for the router to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How a connection ended, or that it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A clean close: `read` returned 0. `leftover` holds bytes received after the last
    /// complete response.
    Fin { leftover: Vec<u8> },
    /// A reset: `ECONNRESET` (or `EPIPE`). An answer still in flight may have been lost.
    Reset { leftover: Vec<u8> },
    /// Still open when the wait ended.
    StillOpen { leftover: Vec<u8> },
}

impl Closed {
    /// Bytes received after the last complete response.
    pub fn leftover(&self) -> &[u8] {
        match self {
            Closed::Fin { leftover }
            | Closed::Reset { leftover }
            | Closed::StillOpen { leftover } => leftover,
        }
    }

    pub fn is_fin(&self) -> bool {
        matches!(self, Closed::Fin { .. })
    }

    pub fn is_reset(&self) -> bool {
        matches!(self, Closed::Reset { .. })
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, leftover) = match self {
            Closed::Fin { leftover } => ("closed with FIN", leftover),
            Closed::Reset { leftover } => ("reset (RST)", leftover),
            Closed::StillOpen { leftover } => ("still open", leftover),
        };
        if leftover.is_empty() {
            write!(f, "{what}")
        } else {
            write!(
                f,
                "{what}, with {} leftover bytes: {:?}",
                leftover.len(),
                String::from_utf8_lossy(leftover)
            )
        }
    }
}

/// Why no complete response could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The router closed cleanly (FIN) first.
    Fin,
    /// The connection was reset (RST) first.
    Reset,
    /// Nothing complete arrived within the read timeout.
    Timeout,
    /// The bytes are not a valid HTTP/1.1 response.
    Malformed(String),
    /// Another socket error.
    Io(String),
}

/// A response that could not be read, with the bytes of it that did arrive.
#[derive(Debug, Clone)]
pub struct ReadError {
    pub failure: Failure,
    /// Bytes received since the last complete response (the incomplete one).
    pub partial: Vec<u8>,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} after {} bytes of the response: {:?}",
            self.failure,
            self.partial.len(),
            String::from_utf8_lossy(&self.partial[..self.partial.len().min(2048)])
        )
    }
}

/// One response (final, or a 1xx when read with [`Client::read_message`]).
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body with the transfer coding removed.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// 1xx responses that came before this one (skipped by [`Client::read_response`]).
    pub interim: Vec<Response>,
    /// The response exactly as received: head and framed body.
    pub raw: Vec<u8>,
    /// Length of the head within `raw`.
    pub head_len: usize,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as sent, transfer coding included.
    pub fn framed_body(&self) -> &[u8] {
        &self.raw[self.head_len..]
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A top-level string or number field of a JSON body (tiny extractor for the demo
    /// backend's flat JSON).
    pub fn json_field(&self, key: &str) -> Option<String> {
        let text = self.text();
        let pat = format!("\"{key}\":");
        let start = text.find(&pat)? + pat.len();
        let rest = text[start..].trim_start();
        if let Some(stripped) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = stripped.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out),
                    '\\' => match chars.next()? {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        c => out.push(c),
                    },
                    c => out.push(c),
                }
            }
            None
        } else {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        }
    }

    /// The zone a demo backend reported.
    pub fn zone(&self) -> String {
        self.json_field("zone").unwrap_or_default()
    }

    /// The port a demo backend reported.
    pub fn port(&self) -> u16 {
        self.json_field("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

/// A client connection with a read buffer (for keep-alive and pipelining).
pub struct Client {
    stream: TcpStream,
    /// Received and not yet consumed by a complete response.
    buf: Vec<u8>,
    /// How reading ended, once it has (FIN, RST or another error); reads stop there.
    ended: Option<Failure>,
    timeout: Duration,
}

impl Client {
    /// Connect (panics if the connection is refused).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr} failed: {e}"));
        Self::on(stream)
    }

    /// A client on a connected stream.
    fn on(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        let mut c = Client {
            stream,
            buf: Vec::new(),
            ended: None,
            timeout: READ_TIMEOUT,
        };
        c.set_timeout(READ_TIMEOUT);
        c
    }

    /// Connect from the local address `from` (another loopback address, say: a second
    /// peer as the router sees it).
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|e| panic!("binding to {from} failed: {e}"));
        socket
            .connect(&addr.into())
            .unwrap_or_else(|e| panic!("connecting to {addr} from {from} failed: {e}"));
        Self::on(socket.into())
    }

    /// The read timeout for every later read.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
    }

    /// The socket, for what this type does not do (half-close, socket options).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Send all of `raw`; panics on a socket error.
    pub fn send(&mut self, raw: &[u8]) {
        if let Err(e) = self.try_send(raw) {
            panic!("sending {} bytes failed: {e}", raw.len());
        }
    }

    /// Send all of `raw`; the router may close before reading it all (that is what a
    /// refusal does), so the error is the caller's to judge.
    pub fn try_send(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Half-close: send FIN, keep reading.
    pub fn finish_sending(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Send `raw` and read one response (panics if none comes).
    pub fn roundtrip(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// The next final response (1xx skipped into [`Response::interim`]); panics with what
    /// arrived if there is none.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("no complete response: {e}"))
    }

    /// [`read_response`](Self::read_response) for a response to `HEAD` (no body).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_head_response()
            .unwrap_or_else(|e| panic!("no complete response to HEAD: {e}"))
    }

    pub fn try_read_response(&mut self) -> Result<Response, ReadError> {
        self.read_final(false)
    }

    pub fn try_read_head_response(&mut self) -> Result<Response, ReadError> {
        self.read_final(true)
    }

    /// The next message, 1xx included (a 1xx is returned on its own, with no body).
    pub fn read_message(&mut self) -> Response {
        self.try_read_message(false)
            .unwrap_or_else(|e| panic!("no complete message: {e}"))
    }

    fn read_final(&mut self, is_head: bool) -> Result<Response, ReadError> {
        let mut interim = Vec::new();
        loop {
            let mut msg = self.try_read_message(is_head)?;
            // 101 ends HTTP on this connection: it is final.
            if (100..200).contains(&msg.status) && msg.status != 101 {
                interim.push(msg);
                continue;
            }
            msg.interim = interim;
            return Ok(msg);
        }
    }

    /// Read one message with the framing rules of RFC 9112 §6.3.
    pub fn try_read_message(&mut self, is_head: bool) -> Result<Response, ReadError> {
        loop {
            let at_eof = self.ended == Some(Failure::Fin);
            match frame_message(&self.buf, is_head, at_eof) {
                Ok(Some((resp, used))) => {
                    self.buf.drain(..used);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(ReadError {
                        failure: Failure::Malformed(reason),
                        partial: self.buf.clone(),
                    })
                }
            }
            if let Some(failure) = &self.ended {
                return Err(ReadError {
                    failure: failure.clone(),
                    partial: self.buf.clone(),
                });
            }
            if let Err(failure) = self.fill() {
                // FIN: until-close bodies end here; look once more.
                if failure != Failure::Fin && failure != Failure::Reset {
                    return Err(ReadError {
                        failure,
                        partial: self.buf.clone(),
                    });
                }
            }
        }
    }

    /// Exactly `n` raw bytes (a tunnel after a 101); panics if they do not come.
    pub fn read_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if let Err(f) = self.fill() {
                panic!(
                    "{f:?} after {} of {n} raw bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// One read into the buffer. A timeout leaves the connection usable; FIN, RST and
    /// other errors are remembered (a later read would not tell them apart any more).
    fn fill(&mut self) -> Result<usize, Failure> {
        if let Some(f) = &self.ended {
            return Err(f.clone());
        }
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.ended = Some(Failure::Fin);
                Err(Failure::Fin)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) => {
                let failure = classify(&e);
                if failure != Failure::Timeout {
                    self.ended = Some(failure.clone());
                }
                Err(failure)
            }
        }
    }

    /// Wait up to `wait` for the router to close, collecting whatever else arrives.
    pub fn closed_within(&mut self, wait: Duration) -> Closed {
        let deadline = Instant::now() + wait;
        loop {
            match &self.ended {
                Some(Failure::Fin) => {
                    return Closed::Fin {
                        leftover: std::mem::take(&mut self.buf),
                    }
                }
                Some(Failure::Reset) | Some(Failure::Io(_)) => {
                    return Closed::Reset {
                        leftover: std::mem::take(&mut self.buf),
                    }
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Closed::StillOpen {
                    leftover: std::mem::take(&mut self.buf),
                };
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let _ = self.fill();
            self.stream.set_read_timeout(Some(self.timeout)).unwrap();
        }
    }

    /// Close with a reset (`SO_LINGER` 0: an RST, no FIN).
    pub fn reset(self) {
        socket2::SockRef::from(self.stream())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }

    /// How the connection ends (waits up to 5 s).
    pub fn closed(&mut self) -> Closed {
        self.closed_within(CLOSE_WAIT)
    }

    /// The router closed cleanly (FIN) with nothing after the last response.
    pub fn expect_fin(&mut self) {
        match self.closed() {
            Closed::Fin { leftover } if leftover.is_empty() => {}
            other => panic!("expected a clean close (FIN, no leftover bytes), got: {other}"),
        }
    }

    /// The router closed, with FIN or RST, and nothing after the last response. The lax
    /// form of [`expect_fin`](Self::expect_fin), for paths that reset today.
    pub fn expect_closed(&mut self) {
        match self.closed() {
            Closed::Fin { leftover } | Closed::Reset { leftover } if leftover.is_empty() => {}
            other => panic!(
                "expected the connection closed, nothing after the last response; got: {other}"
            ),
        }
    }

    /// Nothing arrives and the connection stays open for `wait`.
    pub fn expect_open_for(&mut self, wait: Duration) {
        match self.closed_within(wait) {
            Closed::StillOpen { leftover } if leftover.is_empty() => {}
            other => panic!("expected the connection open and quiet, got: {other}"),
        }
    }
}

fn classify(e: &std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Failure::Reset
        }
        _ => Failure::Io(e.to_string()),
    }
}

/// A complete message at the start of `buf` and the bytes it used; `Ok(None)` when more
/// bytes are needed (`at_eof`: no more will come, which completes an until-close body).
pub fn frame_message(
    buf: &[u8],
    is_head: bool,
    at_eof: bool,
) -> Result<Option<(Response, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head_len = end + 4;
    let mut resp = parse_head(&buf[..head_len])?;
    resp.head_len = head_len;
    let rest = &buf[head_len..];
    let te = resp.header("transfer-encoding").map(str::to_string);
    let lengths: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let body_len =
        if is_head || (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304
        {
            Some(0)
        } else if let Some(te) = te {
            if !lengths.is_empty() {
                return Err("both Content-Length and Transfer-Encoding".into());
            }
            let last = te.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                match dechunk(rest)? {
                    Some((body, trailers, used)) => {
                        resp.body = body;
                        resp.trailers = trailers;
                        resp.raw = buf[..head_len + used].to_vec();
                        return Ok(Some((resp, head_len + used)));
                    }
                    None => return Ok(None),
                }
            } else if at_eof {
                Some(rest.len())
            } else {
                None
            }
        } else if let Some(v) = lengths.first() {
            if lengths.len() > 1 {
                return Err(format!("{} Content-Length fields", lengths.len()));
            }
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 18 {
                return Err(format!("invalid Content-Length {v:?}"));
            }
            let n: usize = v.parse().unwrap();
            (rest.len() >= n).then_some(n)
        } else if at_eof {
            Some(rest.len())
        } else {
            None
        };
    let Some(n) = body_len else {
        return Ok(None);
    };
    resp.body = rest[..n].to_vec();
    resp.raw = buf[..head_len + n].to_vec();
    Ok(Some((resp, head_len + n)))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse a response head (ending in CRLF CRLF) strictly.
fn parse_head(head: &[u8]) -> Result<Response, String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_string())?;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err("bare LF in the head".into());
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err("bare CR in the head".into());
        }
        if b == 0 {
            return Err("NUL in the head".into());
        }
    }
    let mut lines = text[..text.len() - 4].split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let (version, rest) = status_line
        .split_once(' ')
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("version {version:?}"));
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("status code {code:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(format!("obs-fold: {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("field without a colon: {line:?}"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("invalid field name {name:?}"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Response {
        version: version.to_string(),
        status: code.parse().unwrap(),
        reason: reason.to_string(),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        interim: Vec::new(),
        raw: head.to_vec(),
        head_len: head.len(),
    })
}

/// Decode a complete chunked body at the start of `b`: (data, trailers, bytes used), or
/// `None` when more is needed.
type Dechunked = (Vec<u8>, Vec<(String, String)>, usize);

fn dechunk(b: &[u8]) -> Result<Option<Dechunked>, String> {
    let mut body = Vec::new();
    let mut i = 0;
    loop {
        let Some(line) = find(&b[i..], b"\r\n") else {
            return Ok(None);
        };
        let size_line = &b[i..i + line];
        let digits = size_line
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 15 {
            return Err(format!(
                "chunk size line {:?}",
                String::from_utf8_lossy(size_line)
            ));
        }
        let after = &size_line[digits..];
        if !after.is_empty() && !after.starts_with(b";") && !after.starts_with(b" ") {
            return Err(format!(
                "chunk size line {:?}",
                String::from_utf8_lossy(size_line)
            ));
        }
        let size =
            usize::from_str_radix(std::str::from_utf8(&size_line[..digits]).unwrap(), 16).unwrap();
        i += line + 2;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(e) = find(&b[i..], b"\r\n") else {
                    return Ok(None);
                };
                let field = String::from_utf8_lossy(&b[i..i + e]).into_owned();
                i += e + 2;
                if e == 0 {
                    return Ok(Some((body, trailers, i)));
                }
                let (name, value) = field
                    .split_once(':')
                    .ok_or_else(|| format!("trailer field {field:?}"))?;
                trailers.push((name.to_string(), value.trim().to_string()));
            }
        }
        if b.len() < i + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&b[i..i + size]);
        if &b[i + size..i + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        i += size + 2;
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    Client::connect(addr).roundtrip(raw)
}

/// A GET with optional extra header lines (each ending in CRLF).
pub fn get(addr: SocketAddr, path: &str, headers: &str) -> Response {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
    )
}

/// A POST with a JSON body.
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Response {
    request(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}
