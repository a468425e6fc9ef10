//! Tunnelling after `101 Switching Protocols` (WebSocket and other upgrades).
//!
//! Only a 101 from the upstream switches a connection to raw bytes; an `Upgrade` request
//! that gets any other answer stays HTTP (an early switch is how CVE-2026-2833 desynced
//! Pingora). Once switched, bytes flow both ways until either side closes; a close on
//! one side half-closes the other so in-flight bytes still arrive.

use monoio::io::AsyncWriteRent;
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};

/// Both halves of one side of a tunnel.
pub type Halves = (TcpOwnedReadHalf, TcpOwnedWriteHalf);

/// Copy both ways until both directions have ended.
pub async fn run(client: Halves, upstream: Halves) {
    let (mut client_read, mut client_write) = client;
    let (mut upstream_read, mut upstream_write) = upstream;
    let up = async {
        let _ = monoio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let down = async {
        let _ = monoio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    monoio::join!(up, down);
}
