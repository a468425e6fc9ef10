//! The answers ringgate writes itself: a short plain-text status for a request that could
//! not be forwarded.

use std::io::Write as _;
use std::time::Duration;

use crate::error::ProxyError;
use crate::forward::io::write_all;
use crate::runtime::client::Client;

/// Longest wait for the client to take an error answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Answer `e` with a short plain-text body, from the connection's scratch buffer (never
/// the buffers holding the request). `close` adds `Connection: close`; otherwise an
/// HTTP/1.0 client (whose request `c.head` holds) is told `Connection: keep-alive`. The answer to a
/// HEAD request (`is_head`) has the head alone (RFC 9110 §9.3.2: its `Content-Length` is
/// the body a GET would get): a client reads no body after it, and bytes sent anyway
/// would be read as the start of its next response. Nothing is sent when the error has
/// no status (the client is gone). Returns whether the answer was written.
pub async fn respond_error(
    c: &mut Client,
    e: ProxyError,
    close: bool,
    is_head: bool,
    write_timeout: Duration,
) -> bool {
    let Some(status) = e.status() else {
        return false;
    };
    let reason = e.reason();
    let out = &mut c.out;
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        reason.len() + 1
    );
    if let Some(secs) = e.retry_after_secs() {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if c.head.minor_version == 0 {
        // An HTTP/1.0 client reads an answer without it as the connection's last.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        let _ = writeln!(out, "{reason}");
    }
    write_all(&mut c.wr, out, write_timeout.min(ANSWER_TIMEOUT))
        .await
        .is_ok()
}

/// Standard reason phrases for the statuses ringgate generates.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}
