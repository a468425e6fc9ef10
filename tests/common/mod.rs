//! Test harness: start demo backends and a router in-process on ephemeral ports, and a
//! small, independent HTTP/1.1 client that reads responses with its own framing code.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use ringgate::config::Config;
use ringgate::runtime::server::Server;

pub mod backend;
pub mod client;
pub mod router;

/// How often [`wait_until`] and [`assert_holds_for`] look at their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Poll `condition` until it is true; panic naming `what` if `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Check that `condition` stays true for `duration` (for "nothing else happens" checks,
/// which no event can signal); panic naming `what` as soon as it turns false.
pub fn assert_holds_for(what: &str, duration: Duration, condition: impl FnMut() -> bool) {
    assert!(holds_for(duration, condition), "no longer true: {what}");
}

/// Whether `condition` stays true for `duration` (false as soon as it turns false).
pub fn holds_for(duration: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    loop {
        if !condition() {
            return false;
        }
        if started.elapsed() >= duration {
            return true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Start a demo backend on an ephemeral loopback port.
pub fn backend(zone: &str) -> SocketAddr {
    ringgate::demo::spawn("127.0.0.1:0".parse().unwrap(), zone, 1).expect("demo backend")
}

/// An address on which nothing listens (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A router started from config text (top-level keys and partitions); listener, admin
/// and worker sections are appended, so the text must not contain them.
pub struct Router {
    pub server: Option<Server>,
    pub addr: SocketAddr,
}

impl Router {
    /// Start with one worker (deterministic round-robin), no pinning.
    pub fn start(config_text: &str) -> Router {
        Self::start_with(config_text, 1)
    }

    /// `RINGGATE_TEST_DRIVER=epoll` runs every router of the suite on the epoll driver (CI
    /// does one pass with it, so the fallback path is tested too).
    pub fn start_with(config_text: &str, workers: usize) -> Router {
        let driver = std::env::var("RINGGATE_TEST_DRIVER").unwrap_or_else(|_| "auto".into());
        let text = format!(
            "{config_text}\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[workers]\ncount = {workers}\npin = false\ndriver = \"{driver}\"\n"
        );
        let config = Config::parse(&text, Path::new("test.toml")).expect("valid test config");
        let server = Server::start(config).expect("router starts");
        let addr = server.listen_addr;
        Router {
            server: Some(server),
            addr,
        }
    }

    pub fn server(&mut self) -> &mut Server {
        self.server.as_mut().unwrap()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.drain(Duration::from_millis(200));
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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

    pub fn zone(&self) -> String {
        self.json_field("zone").unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.json_field("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

/// A client connection with a read buffer (for keep-alive and pipelining).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
    }

    /// Send and read one response.
    pub fn roundtrip(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response(false).expect("response")
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// Read one response (skipping 1xx); `None` when the connection closed first.
    pub fn read_response(&mut self, is_head: bool) -> Option<Response> {
        loop {
            let end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if !self.fill() {
                    return None;
                }
            };
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            r.parse(&self.buf[..end]).expect("valid response head");
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            self.buf.drain(..end);
            if (100..200).contains(&status) {
                continue;
            }
            let mut resp = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if is_head || status == 204 || status == 304 {
                return Some(resp);
            }
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
            if chunked {
                resp.body = self.read_chunked()?;
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len.parse().unwrap();
                while self.buf.len() < len {
                    if !self.fill() {
                        return None;
                    }
                }
                resp.body = self.buf.drain(..len).collect();
            } else {
                while self.fill() {}
                resp.body = std::mem::take(&mut self.buf);
            }
            return Some(resp);
        }
    }

    fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill() {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).ok()?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    let e = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if !self.fill() {
                            return None;
                        }
                    };
                    self.buf.drain(..e + 2);
                    if e == 0 {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Whether the server closed the connection (after any pending bytes).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut tmp = [0u8; 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    Conn::open(addr).roundtrip(raw)
}

/// A GET with optional extra header lines.
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

/// Requests served so far by a demo backend.
pub fn served(backend: SocketAddr) -> u64 {
    get(backend, "/__backend/stats", "")
        .json_field("served")
        .unwrap()
        .parse()
        .unwrap()
}

/// FNV-1a 64 as lowercase hex (what the demo backend reports).
pub fn fnv_hex(bytes: &[u8]) -> String {
    format!("{:016x}", ringgate::route::partition::fnv1a64(bytes))
}

/// What a scripted backend does with one request.
pub enum Action {
    /// Send these bytes and keep the connection.
    Respond(Vec<u8>),
    /// Send these bytes, wait, then close (without announcing it).
    RespondThenClose(Vec<u8>, Duration),
    /// Close without answering.
    Close,
    /// Never answer (hold the connection).
    Hang,
}

/// A thread-per-connection backend driven by a closure of (index of the request on its
/// connection, request head + body) → action. Returns its address and a counter of the
/// requests it has read.
pub fn scripted_backend<F>(
    script: F,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(usize, &str) -> Action + Send + Sync + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let script = script.clone();
            let count = c.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut index = 0;
                loop {
                    let Some(request) = read_request(&mut s, &mut buf) else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    match script(index, &request) {
                        Action::Respond(bytes) => {
                            if s.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                        Action::RespondThenClose(bytes, wait) => {
                            let _ = s.write_all(&bytes);
                            std::thread::sleep(wait);
                            return;
                        }
                        Action::Close => return,
                        Action::Hang => {
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                    }
                    index += 1;
                }
            });
        }
    });
    (addr, count)
}

/// Read one request (head and `Content-Length` body) from a backend-side socket; bytes
/// after it stay in `buf`. `None` when the peer closed first.
pub fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut tmp = [0u8; 16384];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let request = String::from_utf8_lossy(&buf[..end + len]).into_owned();
    buf.drain(..end + len);
    Some(request)
}

/// A minimal 200 response with a body.
pub fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
