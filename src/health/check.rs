//! Active health probes: a TCP connect, or an HTTP `GET` that must answer 2xx.

use std::net::SocketAddr;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Probe `addr` once within `timeout`; true if it passed.
pub async fn probe(addr: SocketAddr, http_path: Option<&str>, timeout: Duration) -> bool {
    monoio::time::timeout(timeout, probe_inner(addr, http_path))
        .await
        .unwrap_or(false)
}

async fn probe_inner(addr: SocketAddr, http_path: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect_addr(addr).await else {
        return false;
    };
    let Some(path) = http_path else {
        return true;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringgate-health\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.into_bytes()).await.0.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return res.code.is_some_and(|c| (200..300).contains(&c));
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            _ => return false,
        }
        let spare = std::mem::take(&mut buf);
        let len = spare.len();
        let mut spare = spare;
        spare.reserve(1024);
        let (res, back) = stream
            .read(monoio::buf::IoBufMut::slice_mut(spare, len..))
            .await;
        buf = back.into_inner();
        match res {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}
