//! The runtime: listeners, pinned workers, the per-connection loop, and the control
//! plane's handle on them.

pub mod conn;
pub mod listener;
pub mod server;
pub mod worker;
