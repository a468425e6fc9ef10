//! TLS peers for the tests: a client that speaks TLS to the router (blocking rustls over a
//! std socket, with this harness's own response framing), a TLS upstream, and
//! certificates made for the occasion.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

use super::client::{frame_message, Response};
use super::find;

/// A self-signed certificate for `localhost` and `127.0.0.1`, in a directory of its own.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCert {
    pub fn new(name: &str) -> TestCert {
        let dir = std::env::temp_dir().join(format!("ringgate-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        ringgate::tls::write_self_signed(&cert, &key).unwrap();
        TestCert { dir, cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        let pem = std::fs::read(&self.cert).unwrap();
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap()
    }

    /// A client configuration that trusts only this certificate.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let key_pem = std::fs::read(&self.key).unwrap();
        let key: PrivateKeyDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(&key_pem).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let c = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der()], key)
            .unwrap();
        Arc::new(c)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client connection to the router.
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connect and complete the handshake (TLS 1.3 or 1.2, as `config` allows).
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        Self::try_connect(addr, config).expect("TLS handshake")
    }

    pub fn try_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
        self.stream.flush().unwrap();
    }

    /// One response (1xx skipped).
    pub fn read_response(&mut self) -> Response {
        loop {
            if let Some((resp, used)) = frame_message(&self.buf, false, false).unwrap() {
                self.buf.drain(..used);
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    continue;
                }
                return resp;
            }
            let mut tmp = [0u8; 16 * 1024];
            let n = self.stream.read(&mut tmp).expect("response bytes");
            assert!(
                n > 0,
                "closed before a complete response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub fn roundtrip(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// Exactly `n` raw bytes (a tunnel).
    pub fn read_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut tmp = [0u8; 16 * 1024];
            let got = self.stream.read(&mut tmp).expect("tunnel bytes");
            assert!(got > 0, "closed early");
            self.buf.extend_from_slice(&tmp[..got]);
        }
        self.buf.drain(..n).collect()
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    /// The certificate the server presented (DER).
    pub fn peer_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

/// A TLS upstream: answers every request `200` with its path as the body, and records
/// each request's raw bytes and how many connections it accepted.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsBackend {
    pub fn start(cert: &TestCert) -> TlsBackend {
        Self::start_with_trailer(cert, 0, b"")
    }

    /// Like [`TlsBackend::start`], but every answer's body is the path padded with `.` to
    /// `pad_to` bytes, and the answer is followed by `trailer` in a TLS record of its own,
    /// sent in the same TCP write (a server that writes more than its answer's framing
    /// says: nothing of it may reach another request).
    pub fn start_with_trailer(
        cert: &TestCert,
        pad_to: usize,
        trailer: &'static [u8],
    ) -> TlsBackend {
        Self::start_full(cert, pad_to, trailer, b"", None)
    }

    /// Like [`TlsBackend::start`], but every answer's records go out in one TCP write with
    /// `raw` after them, bytes outside TLS (e.g. the start of a record that never ends).
    pub fn start_with_raw_after(cert: &TestCert, raw: &'static [u8]) -> TlsBackend {
        Self::start_full(cert, 0, b"", raw, None)
    }

    /// Like [`TlsBackend::start`], but after each answer it waits `pause(connection,
    /// request)` (both counted from 0), then sends `close_notify` and closes the socket, as
    /// a server's keep-alive timeout does (a request that arrived meanwhile, unread, turns
    /// the close into a reset).
    pub fn start_closing_after(cert: &TestCert, pause: fn(usize, usize) -> Duration) -> TlsBackend {
        Self::start_full(cert, 0, b"", b"", Some(pause))
    }

    fn start_full(
        cert: &TestCert,
        pad_to: usize,
        trailer: &'static [u8],
        raw: &'static [u8],
        close_after: Option<fn(usize, usize) -> Duration>,
    ) -> TlsBackend {
        let config = cert.server_config();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a) = (seen.clone(), accepted.clone());
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { return };
                let conn = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (config, seen) = (config.clone(), s.clone());
                let close_after = close_after.map(|f| move |i| f(conn, i));
                std::thread::spawn(move || {
                    serve(tcp, config, &seen, pad_to, trailer, raw, close_after)
                });
            }
        });
        TlsBackend {
            addr,
            seen,
            accepted,
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    seen: &Mutex<Vec<Vec<u8>>>,
    pad_to: usize,
    trailer: &[u8],
    raw: &[u8],
    close_after: Option<impl Fn(usize) -> Duration>,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut s = StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    for index in 0.. {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 16 * 1024];
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut tmp = [0u8; 16 * 1024];
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let request: Vec<u8> = buf.drain(..end + len).collect();
        let mut body = head.split(' ').nth(1).unwrap_or("").to_string();
        seen.lock().unwrap().push(request);
        if body.len() < pad_to {
            body.push_str(&".".repeat(pad_to - body.len()));
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // Each write to rustls's writer is sealed into records of its own; the flush sends
        // them together.
        let mut w = s.conn.writer();
        if w.write_all(reply.as_bytes()).is_err() || w.write_all(trailer).is_err() {
            return;
        }
        if raw.is_empty() {
            if s.flush().is_err() {
                return;
            }
            if let Some(pause) = &close_after {
                std::thread::sleep(pause(index));
                s.conn.send_close_notify();
                let _ = s.flush();
                return;
            }
            continue;
        }
        let mut out = Vec::new();
        while s.conn.wants_write() {
            if s.conn.write_tls(&mut out).is_err() {
                return;
            }
        }
        out.extend_from_slice(raw);
        if s.sock.write_all(&out).is_err() {
            return;
        }
    }
}
