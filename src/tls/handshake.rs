//! TLS handshakes over a monoio TCP stream, each bounded by a timeout.
//!
//! # Errors
//! `TimedOut` when the handshake does not finish in time; `InvalidData` when rustls
//! rejects what the peer sent (a plain HTTP request on the TLS port, a certificate that
//! does not verify, no common protocol version or ALPN protocol), after a best-effort
//! alert; `UnexpectedEof` when the peer closes mid-handshake; the socket's own errors.
//! On any error the caller closes the connection: nothing about it is reusable.

use std::io;
use std::ops::DerefMut;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, ClientConnection, CommonState, ConnectionCommon, HandshakeKind, ServerConfig,
    ServerConnection, SideData,
};

use super::shared::{hand_to_rustls, Records};
use super::stream::{split, Inbound, Sender, TlsInfo, TlsRead, TlsWrite, CIPHERTEXT_READ_BYTES};

/// Run the server side of a handshake on `tcp`; fails if it takes longer than `timeout`.
/// The halves share the session and the socket; `info()` on either tells what was settled
/// (SNI name, ALPN protocol, version, resumption).
pub async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> io::Result<(TlsRead<ServerConnection>, TlsWrite<ServerConnection>)> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    run(tcp, conn, timeout, |conn| {
        settled(conn, conn.server_name().map(str::to_owned))
    })
    .await
}

/// Run the client side of a handshake on `tcp`, verifying the server's certificate for
/// `server_name` (also sent as SNI unless it is an IP address); fails if it takes longer
/// than `timeout`.
pub async fn connect(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> io::Result<(TlsRead<ClientConnection>, TlsWrite<ClientConnection>)> {
    let sni = match &server_name {
        ServerName::DnsName(name) => Some(name.as_ref().to_owned()),
        _ => None,
    };
    let conn = ClientConnection::new(config, server_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    run(tcp, conn, timeout, |conn| settled(conn, sni)).await
}

/// What the handshake settled, from the session's common state.
fn settled(conn: &CommonState, server_name: Option<String>) -> TlsInfo {
    TlsInfo {
        protocol_version: conn
            .protocol_version()
            .expect("a finished handshake has a version"),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .expect("a finished handshake has a cipher suite")
            .suite(),
        alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
        server_name,
        is_resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}

async fn run<C, SD>(
    tcp: TcpStream,
    mut conn: C,
    timeout: Duration,
    info: impl FnOnce(&C) -> TlsInfo,
) -> io::Result<(TlsRead<C>, TlsWrite<C>)>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    let fd = tcp.as_raw_fd();
    let (mut rd, mut wr) = tcp.into_split();
    let mut past = Inbound {
        bytes: Vec::with_capacity(CIPHERTEXT_READ_BYTES),
        consumed: 0,
        records: Records::default(),
    };
    let mut handed = 0;
    let hs = drive(&mut conn, &mut rd, &mut wr, &mut past, &mut handed);
    match monoio::time::timeout(timeout, hs).await {
        Ok(res) => res?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake did not finish within {timeout:?}"),
            ))
        }
    }
    let info = info(&conn);
    Ok(split(conn, rd, Sender::new(wr, handed), fd, past, info))
}

/// Exchange flights until the handshake is done and its last flight (for a TLS 1.3
/// server: with the session tickets) is sent. Ciphertext read past the handshake stays in
/// `past` (or in rustls) for the read half. `handed` counts the bytes sent.
async fn drive<SD: SideData>(
    conn: &mut ConnectionCommon<SD>,
    rd: &mut TcpOwnedReadHalf,
    wr: &mut TcpOwnedWriteHalf,
    past: &mut Inbound,
    handed: &mut u64,
) -> io::Result<()> {
    let Inbound {
        bytes: inbound,
        consumed,
        records,
    } = past;
    let mut out = Vec::new();
    loop {
        send_records(conn, wr, &mut out, handed).await?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        if *consumed == inbound.len() {
            let mut buf = std::mem::take(inbound);
            buf.clear();
            *consumed = 0;
            let (res, buf) = rd.read(buf).await;
            *inbound = buf;
            if res? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
        if hand_to_rustls(conn, inbound, consumed, records)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the TLS session during the handshake",
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (rustls queued the alert); the error is what matters.
            let _ = send_records(conn, wr, &mut out, handed).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS handshake failed: {e}"),
            ));
        }
    }
}

/// Send every record rustls holds, counting in `handed` what the kernel took.
async fn send_records<SD: SideData>(
    conn: &mut ConnectionCommon<SD>,
    wr: &mut TcpOwnedWriteHalf,
    out: &mut Vec<u8>,
    handed: &mut u64,
) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    let mut sent = 0;
    while sent < out.len() {
        let (res, slice) = wr.write(std::mem::take(out).slice(sent..)).await;
        *out = slice.into_inner();
        match res? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                sent += n;
                *handed += n as u64;
            }
        }
    }
    out.clear();
    Ok(())
}
