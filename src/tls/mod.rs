//! TLS for ringgate: the rustls configurations built from PEM files.
//!
//! - `config`: [`server_config`], [`client_config`] and [`write_self_signed`].

mod config;

pub use config::{
    client_config, server_config, write_self_signed, CLIENT_SESSION_CACHE_ENTRIES, HTTP11_ALPN,
    SERVER_SESSION_CACHE_ENTRIES,
};
