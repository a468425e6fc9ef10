//! Data-plane listeners: one `SO_REUSEPORT` socket per worker, so the kernel spreads new
//! connections over the workers with no accept lock and no hand-off between cores.
//!
//! `SO_REUSEPORT` would also let a second process — a second ringgate started by mistake —
//! join the group and silently take a share of live traffic. So the address is first
//! claimed with a plain bind (no `SO_REUSEPORT`): if anything already listens there, the
//! bind fails and ringgate refuses to start. Its own workers still share the port.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Bind `count` listeners on `addr` with `SO_REUSEPORT`. With port 0 the first socket picks
/// the port and the others join it. Sockets are non-blocking, ready for any driver.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    if addr.port() != 0 {
        ensure_unclaimed(addr)?;
    }
    // Name the address: "Cannot assign requested address" alone does not say which.
    bind_group(addr, count, backlog)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut bound = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog)?;
        let listener: std::net::TcpListener = socket.into();
        if bound.port() == 0 {
            bound = listener.local_addr()?;
        }
        out.push(listener);
    }
    Ok((bound, out))
}

/// Fail if another socket already listens on `addr` (a plain bind, without
/// `SO_REUSEPORT`, cannot join a listening group).
fn ensure_unclaimed(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} is already in use by another process; ringgate does not share its \
                 listen address (stop the other instance, or choose another address)"
            ),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_is_refused_and_workers_share_a_free_one() {
        let (addr, group) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        assert_eq!(group.len(), 2);
        // A second group on the same address: refused, whoever holds it.
        let e = bind_reuseport(addr, 2, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already in use"), "{e}");
        drop(group);
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind_reuseport(other.local_addr().unwrap(), 1, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
