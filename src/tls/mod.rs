//! TLS on monoio TCP streams: handshakes, a split stream whose halves work concurrently
//! and whose stoppable operations hand back exactly what was transferred, and the rustls
//! configurations built from PEM files.
//!
//! - `config`: [`server_config`], [`client_config`] and [`write_self_signed`].
//! - `handshake`: [`accept`] and [`connect`], each bounded by a timeout.
//! - `stream`: [`TlsRead`] and [`TlsWrite`], the two halves of one TLS session, and
//!   [`TlsInfo`], what the handshake settled.
//!
//! Why not `monoio-rustls`: its split halves alias one rustls session through an
//! `UnsafeCell`, and a dropped read loses the ciphertext it had taken. Here the halves
//! share the session through `Rc<RefCell<..>>`, borrowed only between awaits, and every
//! stoppable operation goes through monoio's `CancelHandle`, so a stop is an ordinary
//! return with nothing lost.
//!
//! # Buffers
//! - Read half: one ciphertext buffer of [`CIPHERTEXT_READ_BYTES`] (TCP reads land there,
//!   rustls takes them from there), plus rustls' own deframer and plaintext buffers.
//!   Plaintext is copied from rustls into the caller's buffer: a read costs the kernel
//!   copy, the copy into rustls and the copy out of it (decryption is in place).
//! - Write half: plaintext is encrypted by rustls (one copy) and its records are moved
//!   into the stream's outgoing queue (a second copy) that io_uring sends from. rustls
//!   accepts at most 64 KiB of plaintext per write (its default buffer limit): a larger
//!   buffer is taken in parts, like a short `write(2)`.
//!
//! # The flush rule
//! The outgoing ciphertext is one ordered queue: what is already in the stream's queue,
//! then what rustls holds. It is sent by whoever holds the socket's send side:
//! - the write half, for the whole of a write, flush or shutdown: it sends what was
//!   queued before its own records, and before it lets go it also sends whatever the read
//!   side produced meanwhile;
//! - the read half, when no write is in progress (the send side is not taken): after
//!   each batch of records it processes, it sends queued records with a non-blocking
//!   `send(2)` (`MSG_DONTWAIT`). It never waits for the socket to take them: what does
//!   not fit stays queued for the next read or write. This is how a stream that is only
//!   read still answers a TLS 1.3 KeyUpdate (rustls holds that answer back until the next
//!   write; the read half releases it) and delivers the alert for a bad record.
//!
//! # Stopping (cancel) semantics
//! - Read: a read whose [`CancelHandle`](monoio::io::CancelHandle) fires while it waits
//!   for TCP returns `ECANCELED` (os error 125, as monoio does). Ciphertext that arrived
//!   stays in the half's buffer or in rustls; the next read returns every byte. A read that
//!   finds plaintext ready returns it even if its handle has fired.
//! - Write: a stop while records queued by an *earlier* write are being sent returns
//!   `ECANCELED` with nothing of this buffer taken. Once this buffer is encrypted its
//!   bytes are committed to the TLS stream (records are numbered and cannot be taken
//!   back): the write returns `Ok(n)` even if a stop then lands, and the records not yet
//!   sent stay queued ([`TlsWrite::queued_bytes`]) and go out first on the next write,
//!   flush or shutdown.
//! - Dropping an in-flight future is *not* a stop: its buffer goes with the kernel
//!   operation, so the direction it belonged to is poisoned (later operations fail).
//!   Stop through a `CancelHandle` instead. A read half so cut can still read raw
//!   ciphertext to throw away ([`TlsRead::read_discarded`]), as a closing connection does.
//!
//! # End of stream
//! A peer's `close_notify` makes reads return `Ok(0)` once the plaintext before it is
//! read. A TCP EOF without `close_notify` is an error of kind `UnexpectedEof`: a possible
//! truncation, reported the way rustls' own reader does. A caller whose framing is
//! self-delimiting (Content-Length, chunked) may treat it as a plain EOF; one that reads
//! to EOF must not.
//!
//! # Hot path
//! This layer allocates nothing per read or write once its two buffers have grown (rustls'
//! buffered API still allocates a `Vec` per record it decrypts or encrypts); no `RefCell`
//! borrow is held across an `.await`; the read half makes a `send(2)` only when records are
//! queued (rare: KeyUpdate answers, alerts, leftovers of a stopped write).
//!
//! # Threads
//! A `ServerConfig` or `ClientConfig` is built once and shared by every worker: the
//! ticket key must be the same on every core, or a client that resumes on another core
//! gets a full handshake. Session caches and ticket rotation take a lock, during
//! handshakes only; a stream itself is `!Send` and belongs to one worker.

mod config;
mod handshake;
mod shared;
mod stream;

pub use config::{
    client_config, server_config, write_self_signed, CLIENT_SESSION_CACHE_ENTRIES, HTTP11_ALPN,
    SERVER_SESSION_CACHE_ENTRIES,
};
pub use handshake::{accept, connect};
pub use stream::{TlsInfo, TlsRead, TlsWrite, CIPHERTEXT_READ_BYTES};

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use monoio::buf::VecBuf;
    use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};
    use rustls::pki_types::ServerName;
    use rustls::ProtocolVersion;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Our `accept` against our `connect` in one runtime: each side streams 1 MiB on its
    /// write half while its read half takes in the other's, then both close cleanly.
    async fn both_ends_are_ours(dir: PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        write_self_signed(&cert, &key).unwrap();
        let server = server_config(&cert, &key, &[HTTP11_ALPN.to_vec()]).unwrap();
        let client = client_config(Some(&cert)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = async {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, server, TIMEOUT).await.unwrap()
        };
        let connected = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connect(tcp, client, name, TIMEOUT).await.unwrap()
        };
        let ((mut srd, mut swr), (mut crd, mut cwr)) = monoio::join!(accepted, connected);
        assert_eq!(srd.info().protocol_version, ProtocolVersion::TLSv1_3);
        assert_eq!(crd.info().alpn_protocol.as_deref(), Some(HTTP11_ALPN));
        assert_eq!(srd.info().server_name.as_deref(), Some("localhost"));

        // Vectored writes and reads: parts in order, empty parts skipped.
        let parts = VecBuf::from(vec![b"ab".to_vec(), Vec::new(), b"cde".to_vec()]);
        let (res, _) = cwr.writev(parts).await;
        assert_eq!(res.unwrap(), 5);
        let mut got = Vec::new();
        while got.len() < 5 {
            let (res, parts) = srd.readv(VecBuf::from(vec![vec![0; 2], vec![0; 8]])).await;
            let n = res.unwrap();
            let parts: Vec<Vec<u8>> = parts.into();
            got.extend(parts.concat().into_iter().take(n));
        }
        assert_eq!(got, b"abcde");

        const LEN: usize = 1024 * 1024;
        let payload = |seed: u8| {
            (0..LEN)
                .map(|i| (i % 251) as u8 ^ seed)
                .collect::<Vec<u8>>()
        };
        async fn send(wr: &mut impl AsyncWriteRent, bytes: Vec<u8>) {
            let (res, _) = wr.write_all(bytes).await;
            res.unwrap();
            wr.shutdown().await.unwrap();
        }
        async fn receive(rd: &mut impl AsyncReadRent) -> Vec<u8> {
            let (res, buf) = rd.read_exact(Vec::with_capacity(LEN)).await;
            res.unwrap();
            let (res, _) = rd.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 0, "close_notify: a clean end");
            buf
        }
        let (_, _, to_server, to_client) = monoio::join!(
            send(&mut cwr, payload(1)),
            send(&mut swr, payload(2)),
            receive(&mut srd),
            receive(&mut crd),
        );
        assert!(to_server == payload(1));
        assert!(to_client == payload(2));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn scratch(driver: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ringgate-tls-mod-{driver}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn both_ends_on_epoll() {
        crate::test_runtime::epoll().block_on(both_ends_are_ours(scratch("epoll")));
    }

    #[test]
    fn both_ends_on_io_uring() {
        let Some(mut rt) = crate::test_runtime::uring() else {
            eprintln!("io_uring unavailable: covered by the epoll test only");
            return;
        };
        rt.block_on(both_ends_are_ours(scratch("uring")));
    }
}
