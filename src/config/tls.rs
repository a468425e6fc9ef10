//! TLS settings: the listener's certificate (`[listener.tls]`) and each partition's
//! upstream TLS (`tls`, `sni`, `ca`). Certificates and keys are read and checked when the
//! config is loaded, so a bad file refuses the config (file, line, key and reason) and a
//! reload brings new certificates to new handshakes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use toml::Spanned;

use super::admin::resolve_beside;
use super::error::{dotted, Errors};
use super::file::{ListenerTlsSection, PartitionSection};

/// The listener's TLS.
#[derive(Clone, Debug)]
pub struct ListenerTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// The rustls configuration built from them (shared by every worker, so sessions
    /// resume on any core).
    pub server: Arc<rustls::ServerConfig>,
}

impl ListenerTls {
    /// Load the certificate chain and key and build the server configuration; the error
    /// names the file and the reason.
    pub fn load(cert: PathBuf, key: PathBuf, alpn: Vec<String>) -> Result<Self, String> {
        let protocols: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let server = crate::tls::server_config(&cert, &key, &protocols)?;
        Ok(Self {
            cert,
            key,
            alpn,
            server,
        })
    }
}

impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert && self.key == other.key && self.alpn == other.alpn
    }
}

/// TLS to a partition's servers.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// Name the certificate must carry (and SNI, unless an IP address).
    pub server_name: ServerName<'static>,
    /// CA file, if not the built-in roots.
    pub ca: Option<PathBuf>,
    /// The CA file's contents when the configuration was built: a file rewritten in place
    /// makes other settings.
    pub ca_pem: Option<Vec<u8>>,
    /// The rustls configuration (with its cache of sessions to resume).
    pub client: Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name && self.ca == other.ca && self.ca_pem == other.ca_pem
    }
}

impl Eq for UpstreamTls {}

/// The ALPN protocols offered when the config names none, in preference order: a client
/// that offers `http/1.1` gets it, and one that offers only `http/1.0` (`curl --http1.0`)
/// is served rather than refused.
pub fn default_alpn() -> Vec<String> {
    vec!["http/1.1".to_string(), "http/1.0".to_string()]
}

/// `[listener.tls]`.
pub(crate) fn listener_tls_from(
    section: Option<&ListenerTlsSection>,
    config_path: &Path,
    errors: &mut Errors<'_>,
) -> Option<ListenerTls> {
    let t = section?;
    let cert = resolve_beside(config_path, t.cert.get_ref());
    let key = resolve_beside(config_path, t.key.get_ref());
    let alpn = match &t.alpn {
        None => default_alpn(),
        Some(list) => {
            // A client that gets `h2` speaks HTTP/2, which ringgate does not.
            if let Some(p) = list
                .get_ref()
                .iter()
                .find(|p| !matches!(p.as_str(), "http/1.1" | "http/1.0"))
            {
                errors.add(
                    list.span(),
                    "listener.tls.alpn",
                    format!("\"{p}\" cannot be offered: ringgate speaks http/1.1 and http/1.0"),
                );
                return None;
            }
            list.get_ref().clone()
        }
    };
    match ListenerTls::load(cert, key, alpn) {
        Ok(tls) => Some(tls),
        Err(why) => {
            errors.add(t.cert.span(), "listener.tls", why);
            None
        }
    }
}

/// A partition's `tls = true` (with `sni` and `ca`): its servers speak TLS. Without `sni`,
/// the name checked is the servers' IP address (the certificate must carry it), so they
/// must all have the same one: the name is one per partition.
pub(crate) fn upstream_tls_from(
    name: &str,
    section: &Spanned<PartitionSection>,
    servers: &[SocketAddr],
    config_path: &Path,
    errors: &mut Errors<'_>,
) -> Option<Arc<UpstreamTls>> {
    let p = section.get_ref();
    let key = dotted("partitions", name);
    if !p.tls {
        for (field, v) in [("sni", &p.sni), ("ca", &p.ca)] {
            if let Some(v) = v {
                errors.add(
                    v.span(),
                    &format!("{key}.{field}"),
                    "needs tls = true".into(),
                );
            }
        }
        return None;
    }
    let server_name = match &p.sni {
        Some(v) => match ServerName::try_from(v.get_ref().clone()) {
            Ok(n) => n,
            Err(e) => {
                errors.add(
                    v.span(),
                    &format!("{key}.sni"),
                    format!("not a DNS name or IP address: {e}"),
                );
                return None;
            }
        },
        None => {
            let ip = servers.first()?.ip();
            if servers.iter().any(|s| s.ip() != ip) {
                errors.add(
                    section.span(),
                    &format!("{key}.sni"),
                    "servers at different IP addresses need `sni`: without it each certificate \
                     is checked against one address, the first server's"
                        .into(),
                );
                return None;
            }
            ServerName::IpAddress(ip.into())
        }
    };
    let ca =
        p.ca.as_ref()
            .map(|v| (v, resolve_beside(config_path, v.get_ref())));
    // Read before the configuration is built from it: a file replaced in between then
    // reads as changed at the next reload, never as unchanged.
    let ca_pem = ca
        .as_ref()
        .map(|(_, path)| std::fs::read(path).unwrap_or_default());
    match crate::tls::client_config(ca.as_ref().map(|(_, path)| path.as_path())) {
        Ok(client) => Some(Arc::new(UpstreamTls {
            server_name,
            ca: ca.map(|(_, path)| path),
            ca_pem,
            client,
        })),
        Err(why) => {
            let span = ca.map_or(0..0, |(v, _)| v.span());
            errors.add(span, &format!("{key}.ca"), why);
            None
        }
    }
}
