//! HTTP/1.1 framing: find heads, parse them once, decide body framing, rewrite heads for
//! the next hop, decode chunked bodies. Pure functions over byte slices; no I/O here.

pub mod chunked;
pub mod head;
pub mod parse;
pub mod response;
pub mod scan;
