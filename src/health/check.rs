//! Active health probes: a TCP connect (and TLS handshake, for a TLS backend), or an HTTP
//! `GET` that must answer 2xx.

use std::net::SocketAddr;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::config::UpstreamTls;

/// Probe `addr` once within `timeout`; true if it passed.
pub async fn probe(
    addr: SocketAddr,
    http_path: Option<&str>,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
) -> bool {
    monoio::time::timeout(timeout, probe_inner(addr, http_path, tls, timeout))
        .await
        .unwrap_or(false)
}

async fn probe_inner(
    addr: SocketAddr,
    http_path: Option<&str>,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
) -> bool {
    let Ok(stream) = TcpStream::connect_addr(addr).await else {
        return false;
    };
    match tls {
        None => {
            let Some(path) = http_path else {
                return true;
            };
            let (mut rd, mut wr) = stream.into_split();
            http_get(&mut rd, &mut wr, &addr.to_string(), path).await
        }
        Some(t) => {
            let Ok((mut rd, mut wr)) =
                crate::tls::connect(stream, t.client.clone(), t.server_name.clone(), timeout).await
            else {
                return false;
            };
            match http_path {
                None => true,
                Some(path) => {
                    // The name the certificate was checked against, as requests carry it
                    // to a virtual-hosted server; an address as written otherwise.
                    let host = match &t.server_name {
                        ServerName::DnsName(name) => format!("{}:{}", name.as_ref(), addr.port()),
                        _ => addr.to_string(),
                    };
                    http_get(&mut rd, &mut wr, &host, path).await
                }
            }
        }
    }
}

/// `GET path` with `Host: host`; true on a 2xx status line.
async fn http_get<R: AsyncReadRent, W: AsyncWriteRent>(
    rd: &mut R,
    wr: &mut W,
    host: &str,
    path: &str,
) -> bool {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringgate-health\r\nConnection: close\r\n\r\n"
    );
    if wr.write_all(request.into_bytes()).await.0.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Room for every field the bytes so far could hold: a healthy server's answer
        // is not refused for carrying many header fields.
        let lines = buf.iter().filter(|&&b| b == b'\n').count() + 1;
        let mut headers = vec![httparse::EMPTY_HEADER; lines];
        let mut res = httparse::Response::new(&mut headers);
        let parsed = res.parse(&buf).map(|s| (s, res.code));
        match parsed {
            Ok((httparse::Status::Complete(n), code)) => match code {
                // An interim answer (103 Early Hints, ...): the final one follows.
                Some(c) if (100..200).contains(&c) && c != 101 => {
                    buf.drain(..n);
                    continue;
                }
                code => return code.is_some_and(|c| (200..300).contains(&c)),
            },
            Ok((httparse::Status::Partial, _)) if buf.len() < 16 * 1024 => {}
            _ => return false,
        }
        let len = buf.len();
        let mut spare = std::mem::take(&mut buf);
        spare.reserve(1024);
        let (res, back) = rd
            .read(monoio::buf::IoBufMut::slice_mut(spare, len..))
            .await;
        buf = back.into_inner();
        match res {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}
