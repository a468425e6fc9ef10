//! Moving bytes: timed I/O on owned buffers, framing-aware body relay, splice for large
//! bodies, and tunnels after a protocol switch.

pub mod io;
pub mod relay;
pub mod splice;
pub mod stream;
pub mod timer;
pub mod tunnel;
