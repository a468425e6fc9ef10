//! # ringgate
//!
//! A thread-per-core io_uring HTTP/1.1 router for the edge of a trading system: it reads
//! each request just far enough to learn *who* it is for (`user_id`) and *what kind* it
//! is (Command or Query), and forwards it to the right server of the right partition.
//!
//! # Layout
//! In the order a request flows:
//!
//! - [`runtime`]: `listener` binds one `SO_REUSEPORT` socket per worker; `worker` runs one
//!   pinned monoio runtime per core; `conn` is the per-connection loop that ties the
//!   stages below together; `server` starts, reloads and drains the workers.
//! - [`http`]: `scan` finds the end of a head, `parse` parses it once and decides the body
//!   framing (the anti-smuggling rules), `chunked` decodes chunked bodies, `head` writes
//!   heads for the next hop, `response` parses upstream response heads.
//! - [`route`]: `extract` finds the user id (header → query → top-level JSON), `partition`
//!   hashes unknown users onto partitions, `router` classifies and picks a server.
//! - [`upstream`]: `backend` holds each server's shared health atomics, `pool` the
//!   per-worker keep-alive pools.
//! - [`health`]: active checks on their own thread (rise/fall), and the circuit breaker
//!   the workers drive with atomics.
//! - [`forward`]: timed I/O on owned buffers, body relay (copy or `splice`), tunnels.
//! - [`users`]: the per-user state every worker shares, in fixed lock-free tables of
//!   atomics: rate limits (GCRA) and the Commands in flight that order a user's move.
//! - [`tls`]: TLS handshakes and a split, cancel-safe TLS stream over monoio TCP halves,
//!   and the rustls configurations built from PEM files.
//! - [`config`]: the TOML file and its validation, producing plain data that imports
//!   nothing from the data path; [`error`]: the one error type; [`hash`]: the fixed FNV-1a
//!   hash shared by config hashing, partitioning and the demo backend.
//! - [`metrics`]: per-worker counters and HDR histograms, merged into Prometheus text at
//!   scrape time; [`access_log`]: the optional access log, written by its own thread.
//! - [`admin`]: the admin listener (health, readiness, config, reload, drain, metrics),
//!   behind a bearer token off loopback.
//! - [`demo`]: the demo/test backend behind `ringgate-backend` and `ringgate --demo`.
//!
//! `http`, `route`, `upstream` and `forward` never take a lock: cross-core state arrives as
//! a new table installed between requests, or as an atomic load.

#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod hash;
pub mod health;
pub mod http;
pub mod metrics;
pub mod route;
pub mod runtime;
pub mod tls;
pub mod upstream;
pub mod users;

/// Runtimes for the unit tests that drive sockets and timers.
#[cfg(test)]
pub(crate) mod test_runtime {
    /// An epoll runtime with timers.
    pub fn epoll() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// An io_uring runtime with timers, if the kernel gives one.
    pub fn uring() -> Option<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .ok()
    }

    /// An io_uring runtime set up as workers set it up by default (`DEFER_TASKRUN`), if
    /// the kernel gives one.
    pub fn deferred() -> Option<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
        let mut b = io_uring::IoUring::builder();
        b.setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag();
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(b)
            .enable_timer()
            .build()
            .ok()
    }

    /// A connected pair: (client stream, accepted stream).
    pub async fn pair() -> (monoio::net::TcpStream, monoio::net::TcpStream) {
        let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = monoio::join!(monoio::net::TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    /// Fill the socket's send path (its buffer and the peer's, which is never read) until
    /// the kernel takes no more, even after the buffers had time to grow. Returns the bytes
    /// it took.
    pub fn fill(fd: i32) -> usize {
        let chunk = [0u8; 65536];
        let mut total = 0;
        let mut idle_rounds = 0;
        while idle_rounds < 5 {
            let mut took = 0;
            loop {
                // SAFETY: sends from a live stack buffer on an fd owned by the caller.
                let n = unsafe {
                    libc::send(fd, chunk.as_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT)
                };
                if n <= 0 {
                    break;
                }
                took += n as usize;
            }
            total += took;
            idle_rounds = if took == 0 { idle_rounds + 1 } else { 0 };
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        total
    }
}
