//! `ringgate::tls` over real loopback sockets: the crate's `TlsRead`/`TlsWrite` on one
//! side, a blocking rustls peer on a std thread on the other (a `StreamOwned`, or a raw
//! `ClientConnection` when a test must control exactly which record bytes are on the wire).
//! Every scenario runs on the epoll driver and, when the kernel allows, on io_uring.
//!
//! Every blocking socket has a read timeout, and every wait on the monoio side has a
//! deadline, so a broken stream fails a test instead of hanging it.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use ringgate::forward::io::{read_some_stoppable, send_range, IoFail, Stopper};
use ringgate::tls::{self, TlsInfo, HTTP11_ALPN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig,
    ServerConnection, StreamOwned, SupportedProtocolVersion,
};

/// Handshake timeout for scenarios that expect the handshake to succeed.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Read timeout of every blocking peer socket.
const PEER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The large payload of the bulk scenarios.
const LARGE: usize = 5 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// One self-signed certificate for the whole test binary, and the configurations built
/// from it by `ringgate::tls::config`.
struct Pki {
    cert: PathBuf,
    key: PathBuf,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        tls::write_self_signed(&cert, &key).unwrap();
        let server = tls::server_config(&cert, &key, &[HTTP11_ALPN.to_vec()]).unwrap();
        let client = tls::client_config(Some(&cert)).unwrap();
        Pki {
            cert,
            key,
            server,
            client,
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A peer client configuration limited to `versions`, trusting the test certificate.
fn peer_client_config(versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki().cert).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    Arc::new(config)
}

/// A peer server configuration limited to `versions`, with tickets, serving the test
/// certificate.
fn peer_server_config(versions: &[&'static SupportedProtocolVersion]) -> Arc<ServerConfig> {
    let cert = CertificateDer::from_pem_file(&pki().cert).unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki().key).unwrap();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Deterministic bytes that differ at every position a reordering or loss could show.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Runtimes and waiting
// ---------------------------------------------------------------------------------------

/// Run `scenario` on the epoll driver, then on io_uring if the kernel allows it.
fn on_both_drivers<F, Fut>(scenario: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(scenario());
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(scenario()),
        Err(e) => eprintln!("io_uring unavailable ({e}): covered by the epoll driver only"),
    }
}

/// Wait, without blocking the runtime, for a message from a peer thread.
async fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    let started = Instant::now();
    loop {
        if let Ok(v) = rx.try_recv() {
            return v;
        }
        assert!(
            started.elapsed() < PEER_READ_TIMEOUT,
            "timed out waiting for {what}"
        );
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Wait, without blocking the runtime, for a peer thread to end; its panic is the test's.
async fn join<T>(peer: JoinHandle<T>) -> T {
    let started = Instant::now();
    while !peer.is_finished() {
        assert!(
            started.elapsed() < PEER_READ_TIMEOUT * 2,
            "peer thread did not end"
        );
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    peer.join().expect("peer thread panicked")
}

/// A listener on loopback for our side, and its address for the peer.
fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A blocking peer listener, served by `serve` on a thread (one connection).
fn peer_server<T: Send + 'static>(
    serve: impl FnOnce(StdStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(PEER_READ_TIMEOUT)).unwrap();
        serve(sock)
    });
    (addr, peer)
}

fn peer_socket(addr: SocketAddr) -> StdStream {
    let sock = StdStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(PEER_READ_TIMEOUT)).unwrap();
    sock
}

type PeerClient = StreamOwned<ClientConnection, StdStream>;
type PeerServer = StreamOwned<ServerConnection, StdStream>;

fn tls_peer_client(addr: SocketAddr, config: Arc<ClientConfig>) -> PeerClient {
    let conn = ClientConnection::new(config, localhost()).unwrap();
    let mut stream = StreamOwned::new(conn, peer_socket(addr));
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

fn tls_peer_server(sock: StdStream, config: Arc<ServerConfig>) -> PeerServer {
    let conn = ServerConnection::new(config).unwrap();
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// Our side as the server: accept one connection from a peer started by `peer`.
async fn our_server<T: Send + 'static>(
    config: Arc<ServerConfig>,
    peer: impl FnOnce(SocketAddr) -> T + Send + 'static,
) -> (
    tls::TlsRead<ServerConnection>,
    tls::TlsWrite<ServerConnection>,
    JoinHandle<T>,
) {
    let (listener, addr) = listen();
    let peer = std::thread::spawn(move || peer(addr));
    let (tcp, _) = listener.accept().await.unwrap();
    let (rd, wr) = tls::accept(tcp, config, HANDSHAKE).await.unwrap();
    (rd, wr, peer)
}

/// Our side as the client of a peer server at `addr`.
async fn our_client(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> (
    tls::TlsRead<ClientConnection>,
    tls::TlsWrite<ClientConnection>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls::connect(tcp, config, localhost(), HANDSHAKE)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Generic I/O on our halves
// ---------------------------------------------------------------------------------------

/// Read exactly `len` bytes.
async fn read_exact<R: AsyncReadRent>(rd: &mut R, len: usize) -> Vec<u8> {
    let (res, buf) = rd.read_exact(Vec::with_capacity(len)).await;
    res.unwrap_or_else(|e| panic!("reading {len} bytes: {e}"));
    buf
}

async fn write_all<W: AsyncWriteRent>(wr: &mut W, bytes: Vec<u8>) {
    let (res, _) = wr.write_all(bytes).await;
    res.unwrap();
}

/// Read one more time, expecting the clean end.
async fn expect_eof<R: AsyncReadRent>(rd: &mut R) {
    let (res, _) = rd.read(Vec::with_capacity(64)).await;
    assert_eq!(res.unwrap(), 0, "a clean end of stream");
}

/// Read until the stream ends (returning what was read and how it ended).
async fn read_to_end<R: AsyncReadRent>(rd: &mut R) -> (Vec<u8>, std::io::Result<()>) {
    let mut all = Vec::new();
    loop {
        let (res, buf) = rd.read(Vec::with_capacity(32 * 1024)).await;
        match res {
            Ok(0) => return (all, Ok(())),
            Ok(_) => all.extend_from_slice(&buf),
            Err(e) => return (all, Err(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

fn expect_info(info: &TlsInfo, version: ProtocolVersion, server_name: Option<&str>) {
    assert_eq!(info.protocol_version, version);
    assert_eq!(info.alpn_protocol.as_deref(), Some(HTTP11_ALPN));
    assert_eq!(info.server_name.as_deref(), server_name);
    assert!(!info.is_resumed, "a first connection is a full handshake");
}

#[test]
fn handshakes_on_tls13_and_tls12_with_alpn_and_sni() {
    on_both_drivers(|| async {
        for (version, wire) in [
            (&TLS13, ProtocolVersion::TLSv1_3),
            (&TLS12, ProtocolVersion::TLSv1_2),
        ] {
            // Our server, a peer client.
            let config = peer_client_config(&[version]);
            let (mut rd, mut wr, peer) = our_server(pki().server.clone(), move |addr| {
                let mut peer = tls_peer_client(addr, config);
                peer.write_all(b"hi").unwrap();
                let mut answer = [0; 2];
                peer.read_exact(&mut answer).unwrap();
                assert_eq!(&answer, b"ok");
                peer.conn.alpn_protocol().map(<[u8]>::to_vec)
            })
            .await;
            expect_info(rd.info(), wire, Some("localhost"));
            assert_eq!(rd.info(), wr.info());
            assert_eq!(read_exact(&mut rd, 2).await, b"hi");
            write_all(&mut wr, b"ok".to_vec()).await;
            assert_eq!(join(peer).await.as_deref(), Some(HTTP11_ALPN));

            // Our client, a peer server.
            let config = peer_server_config(&[version]);
            let (addr, peer) = peer_server(move |sock| {
                let mut peer = tls_peer_server(sock, config);
                let mut asked = [0; 2];
                peer.read_exact(&mut asked).unwrap();
                peer.write_all(&asked).unwrap();
                peer.conn.server_name().map(str::to_owned)
            });
            let (mut rd, mut wr) = our_client(addr, pki().client.clone()).await;
            expect_info(wr.info(), wire, Some("localhost"));
            write_all(&mut wr, b"yo".to_vec()).await;
            assert_eq!(read_exact(&mut rd, 2).await, b"yo");
            assert_eq!(join(peer).await.as_deref(), Some("localhost"), "SNI sent");
        }
    });
}

#[test]
fn a_client_without_a_common_alpn_protocol_is_refused() {
    on_both_drivers(|| async {
        let (listener, addr) = listen();
        let peer = std::thread::spawn(move || {
            let mut config = (*peer_client_config(&[&TLS13])).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let conn = ClientConnection::new(Arc::new(config), localhost()).unwrap();
            let mut stream = StreamOwned::new(conn, peer_socket(addr));
            stream.flush().and_then(|()| stream.read(&mut [0; 16]))
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let err = tls::accept(tcp, pki().server.clone(), HANDSHAKE)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        let peer_err = join(peer).await.unwrap_err().to_string();
        assert!(
            peer_err.contains("NoApplicationProtocol"),
            "the peer got the alert: {peer_err}"
        );
    });
}

/// The peer sends `payload`; we read it all and send it back; the peer checks it. Then
/// the other way round: we send, the peer echoes, we check.
async fn echo_both_ways<R, W>(rd: &mut R, wr: &mut W, len: usize)
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let received = read_exact(rd, len).await;
    assert!(received == pattern(len, 1), "peer → us intact");
    write_all(wr, received).await;
    write_all(wr, pattern(len, 2)).await;
    let echoed = read_exact(rd, len).await;
    assert!(echoed == pattern(len, 2), "us → peer → us intact");
}

/// The peer's half of [`echo_both_ways`], over any blocking stream.
fn peer_echo_both_ways(peer: &mut (impl Read + Write), len: usize) {
    peer.write_all(&pattern(len, 1)).unwrap();
    let mut back = vec![0; len];
    peer.read_exact(&mut back).unwrap();
    assert!(back == pattern(len, 1), "peer got its bytes back");
    peer.read_exact(&mut back).unwrap();
    assert!(back == pattern(len, 2), "peer got our bytes");
    peer.write_all(&back).unwrap();
}

#[test]
fn small_and_large_payloads_cross_both_ways() {
    on_both_drivers(|| async {
        for len in [5, LARGE] {
            let (mut rd, mut wr, peer) = our_server(pki().server.clone(), move |addr| {
                peer_echo_both_ways(&mut tls_peer_client(addr, pki().client.clone()), len)
            })
            .await;
            echo_both_ways(&mut rd, &mut wr, len).await;
            join(peer).await;

            let (addr, peer) = peer_server(move |sock| {
                peer_echo_both_ways(&mut tls_peer_server(sock, pki().server.clone()), len)
            });
            let (mut rd, mut wr) = our_client(addr, pki().client.clone()).await;
            echo_both_ways(&mut rd, &mut wr, len).await;
            join(peer).await;
        }
    });
}

#[test]
fn the_halves_read_and_write_at_the_same_time() {
    // The peer echoes each chunk as it reads it and never buffers more: if our read half
    // could not run while our write half is blocked, both sides would wait forever.
    on_both_drivers(|| async {
        let (addr, peer) = peer_server(|sock| {
            let mut peer = tls_peer_server(sock, pki().server.clone());
            let mut chunk = vec![0; 16 * 1024];
            let mut echoed = 0;
            while echoed < LARGE {
                let n = peer.read(&mut chunk).unwrap();
                assert!(n > 0, "early end after {echoed} bytes");
                peer.write_all(&chunk[..n]).unwrap();
                echoed += n;
            }
        });
        let (mut rd, mut wr) = our_client(addr, pki().client.clone()).await;
        let send = async {
            let payload = pattern(LARGE, 3);
            for part in payload.chunks(100_000) {
                write_all(&mut wr, part.to_vec()).await;
            }
        };
        let receive = read_exact(&mut rd, LARGE);
        let ((), echoed) = monoio::join!(send, receive);
        assert!(echoed == pattern(LARGE, 3), "echo intact");
        join(peer).await;
    });
}

/// Records for `plaintext`, as a peer client would put them on the wire.
fn seal(conn: &mut ClientConnection, plaintext: &[u8]) -> Vec<u8> {
    conn.writer().write_all(plaintext).unwrap();
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).unwrap();
    }
    records
}

/// A peer client driven by hand: the handshake through rustls' `complete_io`, then record
/// bytes written to the socket exactly as the test says.
fn raw_peer_client(addr: SocketAddr) -> (ClientConnection, StdStream) {
    let mut conn = ClientConnection::new(pki().client.clone(), localhost()).unwrap();
    let mut sock = peer_socket(addr);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    (conn, sock)
}

/// Set a socket buffer size (`SO_SNDBUF` or `SO_RCVBUF`) on `fd`.
fn set_buffer(fd: std::os::fd::RawFd, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: `fd` is an open socket for the call; the value is a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

#[test]
fn a_write_whose_records_partly_left_before_a_reset_is_reported_written() {
    use std::os::fd::AsRawFd;
    on_both_drivers(|| async {
        // Small buffers on both sides: a 256 KiB write cannot all leave, so the reset comes
        // while some of its records are out and the rest wait for room.
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        set_buffer(listener.as_raw_fd(), libc::SO_RCVBUF, 4096);
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(PEER_READ_TIMEOUT)).unwrap();
            let stream = tls_peer_server(sock, peer_server_config(&[&TLS13]));
            let sock = stream.sock;
            // Wait until the write's first bytes are here (never read), then reset.
            let started = Instant::now();
            loop {
                let mut queued: libc::c_int = 0;
                // SAFETY: FIONREAD writes one c_int into `queued`, live for the call.
                assert_eq!(
                    unsafe { libc::ioctl(sock.as_raw_fd(), libc::FIONREAD, &mut queued) },
                    0
                );
                if queued > 0 {
                    break;
                }
                assert!(started.elapsed() < PEER_READ_TIMEOUT, "nothing arrived");
                std::thread::sleep(Duration::from_millis(1));
            }
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: as in `set_buffer`, with a live `linger`.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        set_buffer(tcp.as_raw_fd(), libc::SO_SNDBUF, 4096);
        let (_rd, mut wr) =
            tls::connect(tcp, peer_client_config(&[&TLS13]), localhost(), HANDSHAKE)
                .await
                .unwrap();
        // The peer's reset fails the send while part of this write's records are out: the
        // write is reported as taken (the peer may hold part of it), and the failure
        // comes with the next operation.
        let (res, _) = wr.write(pattern(256 * 1024, 9)).await;
        assert!(res.unwrap() > 0, "a write partly sent is reported written");
        let (res, _) = wr.write(pattern(1024, 10)).await;
        assert!(res.is_err(), "the stream failed");
        join(peer).await;
    });
}

#[test]
fn a_stopped_read_loses_nothing() {
    on_both_drivers(|| async {
        let big = pattern(10_000, 4);
        let (half_sent_tx, half_sent) = channel();
        let (stopped, stopped_rx) = channel::<()>();
        let expected = big.clone();
        let (mut rd, _wr, peer) = our_server(pki().server.clone(), move |addr| {
            let (mut conn, mut sock) = raw_peer_client(addr);
            let mut first = seal(&mut conn, b"first");
            let second = seal(&mut conn, &expected);
            // A whole record, then half of the next: the rest is held back until our side
            // has been stopped (twice) while waiting for it.
            let half = second.len() / 2;
            first.extend_from_slice(&second[..half]);
            sock.write_all(&first).unwrap();
            half_sent_tx.send(()).unwrap();
            stopped_rx.recv().unwrap();
            sock.write_all(&second[half..]).unwrap();
            stopped_rx.recv().unwrap();
        })
        .await;

        assert_eq!(read_exact(&mut rd, 5).await, b"first");
        recv(&half_sent, "the peer's half record").await;
        // Our read takes the half record in, then waits for the rest, when it is stopped.
        let stop = Stopper::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        let read = read_some_stoppable(&mut rd, &mut buf, 64 * 1024, HANDSHAKE, &stop);
        let fire = async {
            monoio::time::sleep(Duration::from_millis(50)).await;
            stop.fire();
        };
        let (res, ()) = monoio::join!(read, fire);
        assert_eq!(res, Err(IoFail::Stopped));
        assert!(buf.is_empty(), "nothing was handed out");
        // Stopped by a timeout the same way.
        stop.reset();
        let res = read_some_stoppable(
            &mut rd,
            &mut buf,
            64 * 1024,
            Duration::from_millis(30),
            &stop,
        )
        .await;
        assert_eq!(res, Err(IoFail::Timeout));
        assert!(buf.is_empty());
        stop.reset();
        stopped.send(()).unwrap();
        // Every byte of the record arrives, the half held since the stops included.
        while buf.len() < big.len() {
            let res = read_some_stoppable(&mut rd, &mut buf, 64 * 1024, HANDSHAKE, &stop).await;
            assert!(res.unwrap() > 0);
        }
        assert!(buf == big, "the stopped reads lost nothing");
        stopped.send(()).unwrap();
        join(peer).await;
    });
}

#[test]
fn a_stopped_write_commits_exactly_what_it_reports() {
    on_both_drivers(|| async {
        let (go, go_rx) = channel::<()>();
        let (addr, peer) = peer_server(move |sock| {
            let mut peer = tls_peer_server(sock, pki().server.clone());
            go_rx.recv().unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let (_rd, mut wr) = our_client(addr, pki().client.clone()).await;
        // Write until the peer, which reads nothing yet, lets a write stall past its timeout.
        let stop = Stopper::new();
        let chunk_len = 64 * 1024;
        let mut committed = 0;
        let mut seed = 10;
        let mut sent = Vec::new();
        let stalled = loop {
            let mut chunk = pattern(chunk_len, seed);
            let (res, n) = send_range(
                &mut wr,
                &mut chunk,
                0,
                chunk_len,
                Duration::from_millis(200),
                &stop,
            )
            .await;
            assert_eq!(chunk, pattern(chunk_len, seed), "the buffer comes back");
            committed += n;
            sent.extend_from_slice(&chunk[..n]);
            seed += 1;
            match res {
                Ok(()) => assert!(committed < 512 * 1024 * 1024, "the peer never filled up"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(stalled, IoFail::Timeout | IoFail::Stopped),
            "{stalled:?}"
        );
        stop.reset();
        go.send(()).unwrap();
        // What was committed and not sent goes out first; then the clean end.
        wr.flush().await.unwrap();
        assert_eq!(wr.queued_bytes(), 0);
        wr.shutdown().await.unwrap();
        let received = join(peer).await;
        assert_eq!(
            received.len(),
            committed,
            "exactly what the writes reported"
        );
        assert!(received == sent, "in order");
    });
}

#[test]
fn a_handshake_that_does_not_finish_in_time_fails() {
    on_both_drivers(|| async {
        // A client that connects and says nothing.
        let (listener, addr) = listen();
        let silent = peer_socket(addr);
        let (tcp, _) = listener.accept().await.unwrap();
        let started = Instant::now();
        let err = tls::accept(tcp, pki().server.clone(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(silent);

        // A server that accepts and never answers.
        let (addr, peer) = peer_server(|sock| {
            let mut hello = [0; 512];
            let n = (&sock).read(&mut hello).unwrap();
            // Hold the socket until our side gave up (EOF or reset).
            let _ = (&sock).read(&mut hello);
            n
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = tls::connect(
            tcp,
            pki().client.clone(),
            localhost(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(join(peer).await > 0, "our ClientHello went out");
    });
}

#[test]
fn plain_http_on_the_tls_port_fails_cleanly() {
    on_both_drivers(|| async {
        let (listener, addr) = listen();
        let peer = std::thread::spawn(move || {
            let mut sock = peer_socket(addr);
            sock.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            // Whatever comes back (an alert at most), then the end: never a hang.
            let mut back = Vec::new();
            sock.read_to_end(&mut back).map(|_| back.len())
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let err = tls::accept(tcp, pki().server.clone(), HANDSHAKE)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        let answered = join(peer).await;
        assert!(answered.is_ok(), "the connection ended: {answered:?}");

        // And a client that leaves without a word.
        let (listener, addr) = listen();
        drop(StdStream::connect(addr).unwrap());
        let (tcp, _) = listener.accept().await.unwrap();
        let err = tls::accept(tcp, pki().server.clone(), HANDSHAKE)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    });
}

#[test]
fn close_notify_is_a_clean_end_and_a_bare_fin_is_not() {
    on_both_drivers(|| async {
        // close_notify while the TCP connection stays open: a clean end all the same.
        let (done, done_rx) = channel::<()>();
        let (mut rd, mut wr, peer) = our_server(pki().server.clone(), move |addr| {
            let mut peer = tls_peer_client(addr, pki().client.clone());
            peer.write_all(b"bye").unwrap();
            peer.conn.send_close_notify();
            peer.flush().unwrap();
            // Our close_notify ends the peer's reading cleanly too.
            let mut rest = Vec::new();
            let res = peer.read_to_end(&mut rest).map(|_| rest);
            done_rx.recv().unwrap();
            res
        })
        .await;
        let (data, end) = read_to_end(&mut rd).await;
        assert_eq!(data, b"bye");
        end.unwrap();
        expect_eof(&mut rd).await;
        wr.shutdown().await.unwrap();
        done.send(()).unwrap();
        assert_eq!(
            join(peer).await.unwrap(),
            b"",
            "the peer saw our close_notify"
        );

        // A FIN without close_notify: the data, then a truncation error.
        let (mut rd, _wr, peer) = our_server(pki().server.clone(), |addr| {
            let mut peer = tls_peer_client(addr, pki().client.clone());
            peer.write_all(b"cut").unwrap();
            peer.flush().unwrap();
            peer.sock.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = peer.sock.read_to_end(&mut rest);
        })
        .await;
        let (data, end) = read_to_end(&mut rd).await;
        assert_eq!(data, b"cut");
        assert_eq!(
            end.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof,
            "a bare FIN is a truncation"
        );
        drop((rd, _wr));
        join(peer).await;
    });
}

#[test]
fn a_second_connection_resumes_the_session() {
    on_both_drivers(|| async {
        for (version, versions) in [("TLS 1.3", &[&TLS13]), ("TLS 1.2", &[&TLS12])] {
            // Our server: one peer client configuration (one session cache) for both.
            let config = peer_client_config(versions);
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let config = config.clone();
                let (mut rd, mut wr, peer) = our_server(pki().server.clone(), move |addr| {
                    let mut peer = tls_peer_client(addr, config);
                    // A round trip, so a TLS 1.3 client takes in the tickets.
                    peer.write_all(b"ping").unwrap();
                    let mut pong = [0; 4];
                    peer.read_exact(&mut pong).unwrap();
                    peer.conn.handshake_kind()
                })
                .await;
                assert_eq!(read_exact(&mut rd, 4).await, b"ping");
                write_all(&mut wr, b"pong".to_vec()).await;
                kinds.push((rd.info().is_resumed, join(peer).await));
            }
            assert_eq!(
                kinds,
                [
                    (false, Some(HandshakeKind::Full)),
                    (true, Some(HandshakeKind::Resumed))
                ],
                "our server, {version}"
            );

            // Our client: one `ClientConfig` for both connections.
            let server = peer_server_config(versions);
            let client = tls::client_config(Some(&pki().cert)).unwrap();
            let mut resumed = Vec::new();
            for _ in 0..2 {
                let server = server.clone();
                let (addr, peer) = peer_server(move |sock| {
                    let mut peer = tls_peer_server(sock, server);
                    let mut ping = [0; 4];
                    peer.read_exact(&mut ping).unwrap();
                    peer.write_all(b"pong").unwrap();
                    peer.conn.handshake_kind()
                });
                let (mut rd, mut wr) = our_client(addr, client.clone()).await;
                write_all(&mut wr, b"ping".to_vec()).await;
                assert_eq!(read_exact(&mut rd, 4).await, b"pong");
                resumed.push((wr.info().is_resumed, join(peer).await));
            }
            assert_eq!(
                resumed,
                [
                    (false, Some(HandshakeKind::Full)),
                    (true, Some(HandshakeKind::Resumed))
                ],
                "our client, {version}"
            );
        }
    });
}

#[test]
fn a_key_update_is_answered_by_a_side_that_only_reads() {
    on_both_drivers(|| async {
        let (answered_tx, answered) = channel();
        let (mut rd, mut wr, peer) = our_server(pki().server.clone(), move |addr| {
            let (conn, sock) = raw_peer_client(addr);
            // Our greeting, behind the session tickets: once it is read, nothing else
            // from our side is on the way.
            let mut stream = StreamOwned::new(conn, sock);
            let mut hello = [0; 5];
            stream.read_exact(&mut hello).unwrap();
            let StreamOwned { mut conn, mut sock } = stream;
            let mut records = seal(&mut conn, b"a");
            conn.refresh_traffic_keys().unwrap();
            records.extend(seal(&mut conn, b"b"));
            sock.write_all(&records).unwrap();
            // Our side only reads; its KeyUpdate answer must arrive anyway.
            let n = conn.read_tls(&mut sock).unwrap();
            assert!(n > 0, "a record from the side that only reads");
            let state = conn.process_new_packets().unwrap();
            assert_eq!(state.plaintext_bytes_to_read(), 0, "not application data");
            answered_tx.send(()).unwrap();
            // Both directions work under the new keys.
            sock.write_all(&seal(&mut conn, b"c")).unwrap();
            let mut stream = StreamOwned::new(conn, sock);
            let mut d = [0; 1];
            stream.read_exact(&mut d).unwrap();
            d
        })
        .await;
        write_all(&mut wr, b"hello".to_vec()).await;
        // From here on, this side only reads until the peer has our KeyUpdate answer.
        assert_eq!(read_exact(&mut rd, 2).await, b"ab");
        recv(&answered, "the peer to receive our KeyUpdate").await;
        assert_eq!(read_exact(&mut rd, 1).await, b"c");
        write_all(&mut wr, b"d".to_vec()).await;
        assert_eq!(&join(peer).await, b"d");
    });
}

#[test]
fn an_upstream_whose_certificate_does_not_verify_is_refused() {
    on_both_drivers(|| async {
        for (client, name, why) in [
            (
                pki().client.clone(),
                ServerName::try_from("example.com").unwrap(),
                "certificate not valid for name",
            ),
            (
                tls::client_config(None).unwrap(),
                localhost(),
                "UnknownIssuer",
            ),
        ] {
            let (addr, peer) = peer_server(|sock| {
                let conn = ServerConnection::new(pki().server.clone()).unwrap();
                let mut stream = StreamOwned::new(conn, sock);
                stream.flush().and_then(|()| stream.read(&mut [0; 16]))
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let err = tls::connect(tcp, client, name, HANDSHAKE)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
            assert!(err.to_string().contains(why), "{err}");
            assert!(join(peer).await.is_err(), "the peer was told");
        }
    });
}

#[test]
fn a_dropped_read_poisons_the_read_half_only() {
    on_both_drivers(|| async {
        let (addr, peer) = peer_server(|sock| {
            let mut peer = tls_peer_server(sock, pki().server.clone());
            let mut got = [0; 2];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let (mut rd, mut wr) = our_client(addr, pki().client.clone()).await;
        // A timeout drops the read in flight: not a stop, so the half is unusable.
        let dropped =
            monoio::time::timeout(Duration::from_millis(20), rd.read(vec![0u8; 16])).await;
        assert!(dropped.is_err(), "nothing to read: the timeout fired");
        let (res, _) = rd.read(Vec::with_capacity(16)).await;
        let err = res.unwrap_err().to_string();
        assert!(err.contains("dropped while in flight"), "{err}");
        write_all(&mut wr, b"ok".to_vec()).await;
        assert_eq!(&join(peer).await, b"ok");
    });
}
