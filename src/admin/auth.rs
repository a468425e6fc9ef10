//! Bearer-token checks for the admin listener.
//!
//! Off loopback every endpoint but `GET /health` and `GET /ready` (and their `HEAD`) needs
//! `Authorization: Bearer <token>`; with a token configured, loopback needs it too. A
//! refusal is `401` with `WWW-Authenticate: Bearer` (RFC 6750 §3). The token is compared in
//! constant time: the time taken depends on the lengths only, never on where the bytes
//! differ.

/// The challenge sent with every 401.
pub const CHALLENGE: &str = "Bearer realm=\"ringgate-admin\"";
/// The challenge when a token was sent but is wrong (RFC 6750 §3.1).
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"ringgate-admin\", error=\"invalid_token\"";

/// Endpoints a load balancer or orchestrator probes without credentials.
pub fn is_open_endpoint(method: &str, path: &str) -> bool {
    matches!(method, "GET" | "HEAD") && matches!(path, "/health" | "/ready")
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No usable `Authorization: Bearer` field.
    Missing,
    /// A bearer token that does not match.
    Invalid,
}

impl Refusal {
    /// The `WWW-Authenticate` value to answer with.
    pub fn challenge(self) -> &'static str {
        match self {
            Refusal::Missing => CHALLENGE,
            Refusal::Invalid => CHALLENGE_INVALID,
        }
    }
}

/// Check the request's `Authorization` field values against `expected`. `None` expected
/// (no token configured) refuses everything: callers only ask when a token is required.
pub fn check(authorization: &[&[u8]], expected: Option<&[u8]>) -> Result<(), Refusal> {
    // Exactly one field: two could be read differently by something in front of us.
    let [value] = authorization else {
        return Err(Refusal::Missing);
    };
    let Some(presented) = bearer_credentials(value) else {
        return Err(Refusal::Missing);
    };
    match expected {
        Some(token) if constant_time_eq(presented, token) => Ok(()),
        _ => Err(Refusal::Invalid),
    }
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// Equality whose running time depends only on the lengths of `a` and `b`.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef";

    #[test]
    fn bearer_values() {
        assert_eq!(check(&[b"Bearer 0123456789abcdef"], Some(TOKEN)), Ok(()));
        assert_eq!(check(&[b"bearer   0123456789abcdef "], Some(TOKEN)), Ok(()));
        assert_eq!(
            check(&[b"Bearer 0123456789abcdeX"], Some(TOKEN)),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            check(&[b"Bearer 0123456789abcdef0"], Some(TOKEN)),
            Err(Refusal::Invalid)
        );
        for missing in [
            &b"Basic YWxhZGRpbjpvcGVu"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer0123",
        ] {
            assert_eq!(check(&[missing], Some(TOKEN)), Err(Refusal::Missing));
        }
        assert_eq!(check(&[], Some(TOKEN)), Err(Refusal::Missing));
        let twice: [&[u8]; 2] = [b"Bearer 0123456789abcdef", b"Bearer 0123456789abcdef"];
        assert_eq!(check(&twice, Some(TOKEN)), Err(Refusal::Missing));
        assert_eq!(
            check(&[b"Bearer 0123456789abcdef"], None),
            Err(Refusal::Invalid),
            "no token configured: nothing matches"
        );
    }

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn open_endpoints() {
        assert!(is_open_endpoint("GET", "/health"));
        assert!(is_open_endpoint("HEAD", "/ready"));
        assert!(!is_open_endpoint("POST", "/health"));
        assert!(!is_open_endpoint("GET", "/metrics"));
    }
}
