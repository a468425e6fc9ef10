//! Upstreams: backends with their shared health state, and per-worker connection pools.

pub mod backend;
pub mod pool;
