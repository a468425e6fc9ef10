//! The runtime: listeners, pinned workers, the per-connection loop, the exchange of one
//! request, and the control plane's handle on them.

pub mod client;
pub mod conn;
pub mod eager;
pub mod exchange;
pub mod listener;
pub mod multishot;
pub mod ring;
pub mod server;
pub mod worker;
