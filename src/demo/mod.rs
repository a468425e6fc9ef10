//! The demo/test backend of seed 000 (`ringgate-backend --port 3001 --zone zone_1`).
//!
//! It answers every request with JSON naming its zone and port, the method, the path, the
//! length of the body it received and an FNV-1a 64 digest of that body, so routing and
//! byte-exact forwarding are visible from the outside. It speaks real HTTP/1.1:
//! keep-alive, pipelining, HTTP/1.0, `Content-Length` and chunked request bodies,
//! `Expect: 100-continue`.
//!
//! Query parameters shape the response, for tests and benchmarks:
//! `status=NNN`, `delay_ms=N` (sleep before answering), `resp_bytes=N` (a body of N
//! pattern bytes, see [`pattern_byte`], instead of JSON), `chunked=1` (chunked response),
//! `echo=head` (include the received head in the JSON, to see what the router forwarded).
//! `GET /__backend/stats` returns the number of other requests this process has served.
//! The JSON also carries that count (`served`), padded with spaces to a fixed width, so the
//! same request always gets a response of the same length (load tools such as `ab` count a
//! length change as a failed request).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::http::chunked::ChunkedDecoder;
use crate::http::field::{list_elements, parse_content_length};
use crate::http::scan::HeadScanner;
use crate::runtime::listener::bind_reuseport;

/// Byte `i` of a `resp_bytes=N` response body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Incremental FNV-1a 64, the digest the backend reports as `body_fnv64`.
pub use crate::hash::Fnv64;

/// A demo backend's identity.
#[derive(Clone, Debug)]
pub struct BackendIdentity {
    /// Zone name reported in responses.
    pub zone: String,
    /// Port reported in responses.
    pub port: u16,
}

/// Start a demo backend on `addr` with `threads` threads in the background; returns the
/// bound address (useful with port 0). The threads live as long as the process.
pub fn spawn(addr: SocketAddr, zone: &str, threads: usize) -> std::io::Result<SocketAddr> {
    let (bound, listeners) = bind_reuseport(addr, threads.max(1), 1024)?;
    let id = Arc::new(BackendIdentity {
        zone: zone.to_string(),
        port: bound.port(),
    });
    let served = Arc::new(AtomicU64::new(0));
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = id.clone();
        let served = served.clone();
        std::thread::Builder::new()
            .name(format!("demo-{}-{i}", bound.port()))
            .spawn(move || {
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()
                    .expect("demo backend runtime");
                rt.block_on(accept_loop(listener, id, served));
            })?;
    }
    Ok(bound)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    id: Arc<BackendIdentity>,
    served: Arc<AtomicU64>,
) {
    let listener = TcpListener::from_std(listener).expect("adopt demo listener");
    let id: Rc<BackendIdentity> = Rc::new((*id).clone());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve_conn(stream, id.clone(), served.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What the backend learned about one request.
#[derive(Default)]
struct Request {
    method: String,
    path: String,
    query: String,
    head: Vec<u8>,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    expects_continue: bool,
}

async fn serve_conn(mut stream: TcpStream, id: Rc<BackendIdentity>, served: Arc<AtomicU64>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Head.
        let mut scanner = HeadScanner::new();
        let head_len = loop {
            match scanner.scan(&buf, 64 * 1024) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(_) => return reply_bad(&mut stream).await,
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let Some(req) = parse_head(&buf[..head_len]) else {
            return reply_bad(&mut stream).await;
        };
        buf.drain(..head_len);
        if req.expects_continue {
            let (r, _) = stream
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await;
            if r.is_err() {
                return;
            }
        }
        // Body.
        let mut digest = Fnv64::default();
        let mut body_len: u64 = 0;
        if req.chunked {
            let mut d = ChunkedDecoder::new();
            loop {
                let used = match d.feed(&buf, &mut |data| {
                    digest.update(data);
                    body_len += data.len() as u64;
                }) {
                    Ok(n) => n,
                    Err(_) => return reply_bad(&mut stream).await,
                };
                buf.drain(..used);
                if d.is_done() {
                    break;
                }
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            }
        } else if let Some(n) = req.content_length {
            let mut left = n;
            loop {
                let take = (buf.len() as u64).min(left) as usize;
                digest.update(&buf[..take]);
                buf.drain(..take);
                left -= take as u64;
                body_len += take as u64;
                if left == 0 {
                    break;
                }
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            }
        }
        // Response.
        let opts = ResponseOptions::from_query(&req.query);
        if opts.delay_ms > 0 {
            monoio::time::sleep(Duration::from_millis(opts.delay_ms)).await;
        }
        let count = if req.path == "/__backend/stats" {
            served.load(Ordering::Relaxed)
        } else {
            served.fetch_add(1, Ordering::Relaxed) + 1
        };
        out.clear();
        if write_response(
            &mut stream,
            &mut out,
            &id,
            &req,
            &opts,
            body_len,
            digest.finish(),
            count,
        )
        .await
        .is_err()
        {
            return;
        }
        if !req.keep_alive {
            return;
        }
    }
}

/// Read more bytes into `buf`; false on EOF or error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(buf.capacity().max(16 * 1024));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let owned = std::mem::take(buf);
    let (res, slice) = stream.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

async fn reply_bad(stream: &mut TcpStream) {
    let _ = stream
        .write_all(
            &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
        )
        .await;
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Request::new(&mut headers);
    if !matches!(r.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let target = r.path?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let http11 = r.version == Some(1);
    let mut req = Request {
        method: r.method?.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        head: head.to_vec(),
        keep_alive: http11,
        ..Request::default()
    };
    for h in r.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if req.content_length.is_some() {
                return None;
            }
            req.content_length = Some(parse_content_length(h.value).ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.chunked = list_elements(h.value)
                .flatten()
                .last()?
                .eq_ignore_ascii_case(b"chunked");
            if !req.chunked {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for t in list_elements(h.value).flatten() {
                if t.eq_ignore_ascii_case(b"close") {
                    req.keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    req.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            req.expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if req.chunked && req.content_length.is_some() {
        return None;
    }
    Some(req)
}

#[derive(Default)]
struct ResponseOptions {
    status: u16,
    delay_ms: u64,
    resp_bytes: Option<u64>,
    chunked: bool,
    echo_head: bool,
}

impl ResponseOptions {
    fn from_query(query: &str) -> Self {
        let mut o = ResponseOptions {
            status: 200,
            ..Default::default()
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "status" => o.status = v.parse().unwrap_or(200),
                "delay_ms" => o.delay_ms = v.parse().unwrap_or(0),
                "resp_bytes" => o.resp_bytes = v.parse().ok(),
                "chunked" => o.chunked = v == "1",
                "echo" => o.echo_head = v == "head",
                _ => {}
            }
        }
        o
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    id: &BackendIdentity,
    req: &Request,
    opts: &ResponseOptions,
    body_len: u64,
    digest: u64,
    count: u64,
) -> std::io::Result<()> {
    let mut json = String::with_capacity(256);
    if opts.resp_bytes.is_none() {
        let _ = write!(
            json,
            "{{\"zone\":\"{}\",\"port\":{},\"method\":\"{}\",\"path\":\"{}\",\"body_len\":{},\"body_fnv64\":\"{:016x}\",\"served\":{:<20}",
            id.zone,
            id.port,
            req.method,
            escape(&req.path),
            body_len,
            digest,
            count
        );
        if opts.echo_head {
            let _ = write!(
                json,
                ",\"head\":\"{}\"",
                escape(&String::from_utf8_lossy(&req.head))
            );
        }
        json.push_str("}\n");
    }
    let len = opts.resp_bytes.unwrap_or(json.len() as u64);
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nX-Backend-Zone: {}\r\nX-Backend-Port: {}\r\nX-Request-Body-Len: {}\r\nX-Request-Body-Fnv64: {:016x}\r\n",
        opts.status,
        if opts.status < 400 { "OK" } else { "Error" },
        if opts.resp_bytes.is_some() { "application/octet-stream" } else { "application/json" },
        id.zone,
        id.port,
        body_len,
        digest
    );
    if opts.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        let _ = write!(head, "Content-Length: {len}\r\n");
    }
    if !req.keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    let is_head = req.method == "HEAD";
    let mut sent: u64 = 0;
    const CHUNK: u64 = 64 * 1024;
    loop {
        let piece = if is_head { 0 } else { (len - sent).min(CHUNK) };
        if piece > 0 {
            if opts.chunked {
                let _ = write!(ByteString(out), "{piece:x}\r\n");
            }
            match opts.resp_bytes {
                Some(_) => out.extend((sent..sent + piece).map(pattern_byte)),
                None => {
                    out.extend_from_slice(&json.as_bytes()[sent as usize..(sent + piece) as usize])
                }
            }
            if opts.chunked {
                out.extend_from_slice(b"\r\n");
            }
            sent += piece;
        }
        let last = is_head || sent == len;
        if last && opts.chunked && !is_head {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        let owned = std::mem::take(out);
        let (r, back) = stream.write_all(owned).await;
        *out = back;
        out.clear();
        r?;
        if last {
            return Ok(());
        }
    }
}

struct ByteString<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteString<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_options() {
        let o =
            ResponseOptions::from_query("status=503&delay_ms=5&resp_bytes=10&chunked=1&echo=head");
        assert_eq!(
            (o.status, o.delay_ms, o.resp_bytes, o.chunked, o.echo_head),
            (503, 5, Some(10), true, true)
        );
    }
}
