//! rustls configurations from PEM files, and a self-signed certificate for demos and tests.
//!
//! Both sides use the `ring` provider, TLS 1.3 and 1.2, and session resumption. Build each
//! configuration once and share the `Arc` across workers (see the module docs of
//! [`crate::tls`]).
//!
//! # Errors
//! Every error is a sentence that names the file and what is wrong with it: missing or
//! unreadable, not PEM, no certificate, no private key, a key type rustls does not support,
//! a key that does not belong to the certificate.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol id of HTTP/1.1.
pub const HTTP11_ALPN: &[u8] = b"http/1.1";

/// Sessions a server remembers for resumption by session id (TLS 1.2 clients that do not
/// use tickets); tickets need no server memory.
pub const SERVER_SESSION_CACHE_ENTRIES: usize = 4096;

/// Server names a client remembers sessions (tickets) for.
pub const CLIENT_SESSION_CACHE_ENTRIES: usize = 256;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: the certificate chain in `cert_pem` (leaf first) with the key
/// in `key_pem` (PKCS#8, PKCS#1 or SEC1), TLS 1.3 and 1.2, resumption by tickets (a
/// rotating ticket key) and by session id (a cache of [`SERVER_SESSION_CACHE_ENTRIES`]),
/// and the ALPN protocols `alpn` in preference order (e.g. `[HTTP11_ALPN.to_vec()]`; empty
/// for none). A client that offers ALPN but none of these is refused.
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
    alpn: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs(cert_pem)?;
    let key = load_key(key_pem)?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("{}: unsupported private key: {e}", key_pem.display()))?;
    CertifiedKey::new(certs.clone(), signing_key)
        .keys_match()
        .map_err(|e| {
            format!(
                "{}: the private key does not match the certificate in {} ({e})",
                key_pem.display(),
                cert_pem.display()
            )
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| format!("TLS server configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    config.alpn_protocols = alpn.to_vec();
    // One ticket key (rotating) and one session cache for the process, not per
    // configuration: a reload builds a new configuration, and sessions from before it must
    // still resume (or every client does a full handshake after every reload).
    static SESSIONS: OnceLock<Arc<dyn StoresServerSessions>> = OnceLock::new();
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    config.session_storage = SESSIONS
        .get_or_init(|| ServerSessionMemoryCache::new(SERVER_SESSION_CACHE_ENTRIES))
        .clone();
    config.ticketer = match TICKETER.get() {
        Some(t) => t.clone(),
        None => {
            let t = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| format!("TLS session tickets: {e}"))?;
            TICKETER.get_or_init(|| t).clone()
        }
    };
    Ok(Arc::new(config))
}

/// A client configuration for upstreams: the server's certificate is verified against the
/// CA certificates in `ca_pem` only, or against the Mozilla roots of `webpki-roots` when
/// `None`; TLS 1.3 and 1.2; ALPN `http/1.1`; resumption with a cache of
/// [`CLIENT_SESSION_CACHE_ENTRIES`] server names.
pub fn client_config(ca_pem: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_pem {
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
            roots
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP11_ALPN.to_vec()];
    config.resumption = Resumption::in_memory_sessions(CLIENT_SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}

/// Write a new self-signed certificate for `localhost` and `127.0.0.1` to `cert_pem` and
/// its private key (PKCS#8, file mode 0600) to `key_pem`, replacing existing files. For
/// `--demo-tls` and tests: a client trusts it by using `cert_pem` as its CA file.
pub fn write_self_signed(cert_pem: &Path, key_pem: &Path) -> Result<(), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("generating a self-signed certificate: {e}"))?;
    std::fs::write(cert_pem, generated.cert.pem())
        .map_err(|e| format!("{}: cannot write: {e}", cert_pem.display()))?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key_pem)
        .and_then(|mut f| f.write_all(generated.signing_key.serialize_pem().as_bytes()))
        .map_err(|e| format!("{}: cannot write: {e}", key_pem.display()))
}

/// Every certificate in a PEM file, in order; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    // Opened first so a missing file is named as such, not as "no certificate".
    File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{}: no private key in it (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA \
             PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        e => pem_error(path, e),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("{}: cannot read: {e}", path.display()),
        e => format!("{}: not a valid PEM file: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("ringgate-tls-config-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, file: &str) -> PathBuf {
            self.0.join(file)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn alpn() -> Vec<Vec<u8>> {
        vec![HTTP11_ALPN.to_vec()]
    }

    #[test]
    fn a_self_signed_pair_makes_both_configs() {
        let dir = Scratch::new("good");
        let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
        write_self_signed(&cert, &key).unwrap();
        let server = server_config(&cert, &key, &alpn()).unwrap();
        assert_eq!(server.alpn_protocols, alpn());
        assert!(server.ticketer.enabled());
        let client = client_config(Some(&cert)).unwrap();
        assert_eq!(client.alpn_protocols, alpn());
        assert!(client_config(None).is_ok(), "webpki roots load");
        let mode = std::fs::metadata(&key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let dir = Scratch::new("bad");
        let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
        write_self_signed(&cert, &key).unwrap();
        let (other_cert, other_key) = (dir.path("other-cert.pem"), dir.path("other-key.pem"));
        write_self_signed(&other_cert, &other_key).unwrap();
        let missing = dir.path("missing.pem");
        let empty = dir.path("empty.pem");
        std::fs::write(&empty, "just some text\n").unwrap();
        let broken = dir.path("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();

        let err = |cert: &Path, key: &Path| server_config(cert, key, &alpn()).unwrap_err();
        let cases = [
            (err(&missing, &key), &missing, "cannot read"),
            (err(&cert, &missing), &missing, "cannot read"),
            (err(&empty, &key), &empty, "no certificate in it"),
            (err(&key, &key), &key, "no certificate in it"),
            (err(&broken, &key), &broken, "not a valid PEM file"),
            (err(&cert, &empty), &empty, "no private key in it"),
            (err(&cert, &cert), &cert, "no private key in it"),
            (
                err(&cert, &other_key),
                &other_key,
                "the private key does not match the certificate in",
            ),
        ];
        for (message, file, reason) in cases {
            let named = format!("{}: ", file.display());
            assert!(message.starts_with(&named), "{message:?} names {file:?}");
            assert!(message.contains(reason), "{message:?} says {reason:?}");
        }
        let message = client_config(Some(&missing)).unwrap_err();
        assert!(message.contains("missing.pem: cannot read"), "{message}");
        let message = client_config(Some(&empty)).unwrap_err();
        assert!(
            message.contains("empty.pem: no certificate in it"),
            "{message}"
        );
    }
}
