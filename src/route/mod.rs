//! Routing: who is the request for (`extract`), which partition (`partition`), which
//! class and server (`router`).

pub mod extract;
pub mod json;
pub mod partition;
pub mod router;
