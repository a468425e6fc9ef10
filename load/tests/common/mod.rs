//! A tiny HTTP/1.1 backend for the integration tests: one std thread per connection, keep-alive,
//! pipelining-safe, and a per-request behaviour chosen by a closure of the global request
//! index (0, 1, 2, … in arrival order). It binds `127.0.0.1:0` and lives until the test
//! process exits.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// What the backend does with one request.
pub enum Reply {
    /// Write these bytes and keep the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close.
    SendAndClose(Vec<u8>),
    /// Wait, then close without answering.
    HangThenClose(Duration),
}

pub struct Backend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
}

pub fn ok_response() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok".to_vec()
}

pub fn status_response(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 5\r\n\r\nerror").into_bytes()
}

pub fn spawn_backend<F>(behaviour: F) -> Backend
where
    F: Fn(u64) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let behaviour = Arc::new(behaviour);
    {
        let requests = Arc::clone(&requests);
        let connections = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let requests = Arc::clone(&requests);
                let behaviour = Arc::clone(&behaviour);
                thread::spawn(move || serve(stream, &requests, &*behaviour));
            }
        });
    }
    Backend {
        addr,
        requests,
        connections,
    }
}

fn serve(mut stream: TcpStream, requests: &AtomicU64, behaviour: &dyn Fn(u64) -> Reply) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Answer every complete request already buffered (pipelining).
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let head_len = match request.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            let body_len: usize = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < head_len + body_len {
                break;
            }
            buf.drain(..head_len + body_len);
            let index = requests.fetch_add(1, Ordering::SeqCst);
            match behaviour(index) {
                Reply::Send(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Reply::SendAndClose(bytes) => {
                    let _ = stream.write_all(&bytes);
                    return;
                }
                Reply::HangThenClose(wait) => {
                    thread::sleep(wait);
                    return;
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs the built `ringgate-load` binary with `args`; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate-load"))
        .args(args)
        .output()
        .expect("run ringgate-load");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
