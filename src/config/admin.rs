//! Admin access: the bearer token from `admin.token_file`, and the rule that an admin
//! listener off loopback must have one.
//!
//! # Invariants
//! - a [`Config`](super::Config) whose admin address is not loopback has a token;
//! - a token is at least [`MIN_TOKEN_BYTES`] visible ASCII characters (no spaces), so it can
//!   be sent as `Authorization: Bearer <token>` unchanged;
//! - the token never appears in `Debug` output, logs or `/config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::error::Errors;

/// Shortest token accepted, in bytes: guessing 16 random characters over the network is
/// hopeless; guessing a short password is not.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The admin bearer token (cheap to clone; redacted in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// The token's bytes, for a constant-time comparison.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Whether an admin listener on `addr` must require the token (anything but loopback).
pub fn admin_needs_token(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Read and check the token file named by `admin.token_file`; `config_path` anchors a
/// relative path.
pub(crate) fn token_from(
    token_file: Option<&Spanned<String>>,
    config_path: &Path,
    errors: &mut Errors<'_>,
) -> Option<AdminToken> {
    const KEY: &str = "admin.token_file";
    let v = token_file?;
    if v.get_ref().is_empty() {
        errors.add(
            v.span(),
            KEY,
            "empty path (omit the key for no token)".into(),
        );
        return None;
    }
    let path = resolve_beside(config_path, v.get_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            errors.add(
                v.span(),
                KEY,
                format!("cannot read token file {}: {e}", path.display()),
            );
            return None;
        }
    };
    match check_token(text.trim()) {
        Ok(()) => Some(AdminToken(text.trim().into())),
        Err(why) => {
            errors.add(
                v.span(),
                KEY,
                format!("token file {}: {why}", path.display()),
            );
            None
        }
    }
}

/// `file` as written, or relative to the directory of the config file.
/// A path from the config file: relative ones are relative to the file's directory.
pub(crate) fn resolve_beside(config_path: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    match config_path.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes; at least {MIN_TOKEN_BYTES} are required",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be one line of visible ASCII characters, no spaces".into());
    }
    Ok(())
}

/// Refuse an admin address off loopback without a token.
pub(crate) fn check_admin_access(
    address: &Spanned<String>,
    admin: Option<SocketAddr>,
    token: Option<&AdminToken>,
    errors: &mut Errors<'_>,
) {
    if let Some(addr) = admin {
        if admin_needs_token(addr) && token.is_none() {
            errors.add(
                address.span(),
                "admin.address",
                format!(
                    "{addr} is not a loopback address: set admin.token_file, so that admin requests must carry \"Authorization: Bearer <token>\""
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_visible_and_redacted() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("short").unwrap_err().contains("at least 16"));
        assert!(check_token("0123456789 abcdef").is_err());
        let t = AdminToken("0123456789abcdef".into());
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn loopback_needs_no_token() {
        assert!(!admin_needs_token("127.0.0.1:1".parse().unwrap()));
        assert!(!admin_needs_token("[::1]:1".parse().unwrap()));
        assert!(admin_needs_token("0.0.0.0:1".parse().unwrap()));
        assert!(admin_needs_token("10.1.2.3:1".parse().unwrap()));
    }

    #[test]
    fn relative_token_files_sit_beside_the_config() {
        let p = resolve_beside(Path::new("/etc/ringgate/routing.toml"), "admin.token");
        assert_eq!(p, Path::new("/etc/ringgate/admin.token"));
        let p = resolve_beside(Path::new("/etc/ringgate/routing.toml"), "/run/t");
        assert_eq!(p, Path::new("/run/t"));
    }
}
