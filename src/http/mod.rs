//! HTTP/1.1 framing: find heads, parse them once, decide body framing, rewrite heads for
//! the next hop, decode chunked bodies. Pure functions over byte slices; no I/O here.
//!
//! In data-flow order: [`scan`] finds the end of a head, [`parse`] reads a request head
//! and decides its framing, [`chunked`] delimits chunked bodies (both directions),
//! [`response`] reads upstream response heads, [`head`] writes heads for the next hop.
//! [`field`] holds the field and token grammar all of them share.

pub mod chunked;
pub mod field;
pub mod head;
pub mod parse;
pub mod response;
pub mod scan;
