//! The state of one client connection, reused by every request on it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use monoio::net::TcpStream;

use crate::forward::io::Stopper;
use crate::forward::stream::{plain, Reader, Writer};
use crate::http::head::{FORWARDED_PROTO_HTTP, FORWARDED_PROTO_HTTPS};
use crate::http::parse::RequestHead;
use crate::http::response::ResponseHead;

/// Initial size of a client connection's read buffer.
pub const CLIENT_BUFFER_BYTES: usize = 16 * 1024;

/// One client connection: its socket halves and the buffers every request reuses. Once
/// warm, nothing here allocates per request.
pub struct Client {
    /// Reading side.
    pub rd: Reader,
    /// Writing side.
    pub wr: Writer,
    /// The peer's address.
    pub peer: IpAddr,
    /// Client bytes: the current request's head (from offset 0), then whatever followed.
    pub buf: Vec<u8>,
    /// The current request's parsed head (offsets into `buf`).
    pub head: RequestHead,
    /// The current request's user id.
    pub user: Vec<u8>,
    /// The request head as forwarded, with a small complete body riding along: what every
    /// attempt sends. Written once per request, never modified by an attempt.
    pub fwd: Vec<u8>,
    /// Scratch for everything ringgate writes to the client itself: interim responses,
    /// rewritten response heads, error answers.
    pub out: Vec<u8>,
    /// The current response head (offsets into the upstream connection's buffer).
    pub response: ResponseHead,
    /// When the current request's head was complete: the latency clock's start, and an
    /// instant before any answer to it (see [`crate::upstream::pool::Pools::put`]).
    pub started: Instant,
    /// `X-Forwarded-For: <peer>\r\n`, built once per connection.
    pub forwarded_for: Vec<u8>,
    /// `X-Forwarded-Proto: <the listener's scheme>\r\n`.
    pub forwarded_proto: &'static [u8],
    /// Copy of the request line, kept for the access log (only when it is enabled).
    pub request_line: Vec<u8>,
    /// Stops the request sender's operations (client body reads, upstream writes) when an
    /// upstream answers before the whole request was sent.
    pub stop: Stopper,
    /// The socket (a drain shuts its reading side to wake an idle read).
    pub fd: RawFd,
}

impl Client {
    /// State for a freshly accepted plain TCP connection.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let (rd, wr) = plain(stream);
        Self::with_halves(rd, wr, fd, peer)
    }

    /// State for a connection whose halves (over socket `fd`) are ready (after a TLS
    /// handshake).
    pub fn with_halves(rd: Reader, wr: Writer, fd: RawFd, peer: SocketAddr) -> Self {
        let mut forwarded_for = Vec::with_capacity(48);
        // An IPv4 client on a dual-stack listener is `::ffff:a.b.c.d` to the socket: the
        // backend is told the IPv4 address, as the trust check reads it.
        let _ = write!(
            forwarded_for,
            "X-Forwarded-For: {}\r\n",
            peer.ip().to_canonical()
        );
        let forwarded_proto = if matches!(rd, Reader::ServerTls(_)) {
            FORWARDED_PROTO_HTTPS
        } else {
            FORWARDED_PROTO_HTTP
        };
        Self {
            rd,
            wr,
            peer: peer.ip(),
            buf: Vec::with_capacity(CLIENT_BUFFER_BYTES),
            head: RequestHead::default(),
            user: Vec::with_capacity(64),
            fwd: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
            response: ResponseHead::default(),
            started: Instant::now(),
            forwarded_for,
            forwarded_proto,
            request_line: Vec::new(),
            stop: Stopper::new(),
            fd,
        }
    }

    /// The socket alone, for a tunnel: the request-stage buffers (~18 KB, the 16 KiB read
    /// buffer the most) are freed rather than held for the tunnel's life.
    pub fn into_halves(self) -> crate::forward::tunnel::Halves {
        (self.rd, self.wr, self.fd)
    }
}
