//! Data-plane listeners: one `SO_REUSEPORT` socket per worker, so the kernel spreads new
//! connections over the workers with no accept lock and no hand-off between cores.

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
