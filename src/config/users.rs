//! Per-user policies: rate limits, ordered migration and Query mirroring bounds.

use std::time::Duration;

use super::error::{dotted, Errors};
use super::file::FileConfig;

/// `[rate_limit]`, validated: requests per second per user and class (0 = no limit).
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitSettings {
    /// Commands per second per user.
    pub commands: f64,
    /// Queries per second per user.
    pub queries: f64,
    /// Seconds of the rate a user may send at once.
    pub burst_secs: f64,
    /// Users with their own rates: (user id, commands, queries).
    pub users: Vec<(Box<[u8]>, f64, f64)>,
}

impl Eq for RateLimitSettings {}

/// Process-level sizes of the per-user tables (restart to change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserTables {
    /// Users the rate table tracks at once.
    pub rate_users: usize,
    /// Users with Commands in flight the migration table tracks at once.
    pub migration_users: usize,
}

/// A rate: finite and not negative.
fn rate(v: f64, span: std::ops::Range<usize>, key: &str, errors: &mut Errors<'_>) -> f64 {
    if v.is_finite() && v >= 0.0 {
        v
    } else {
        errors.add(
            span,
            key,
            format!("{v} is not a rate (requests per second, 0 or more)"),
        );
        0.0
    }
}

/// `[rate_limit]`: `None` when nothing is limited.
pub(crate) fn rate_limit_from(
    f: &FileConfig,
    max_user_id_bytes: usize,
    errors: &mut Errors<'_>,
) -> Option<RateLimitSettings> {
    let r = &f.rate_limit;
    let commands = rate(
        *r.per_user_commands.get_ref(),
        r.per_user_commands.span(),
        "rate_limit.per_user_commands",
        errors,
    );
    let queries = rate(
        *r.per_user_queries.get_ref(),
        r.per_user_queries.span(),
        "rate_limit.per_user_queries",
        errors,
    );
    let burst_secs = rate(
        *r.burst.get_ref(),
        r.burst.span(),
        "rate_limit.burst",
        errors,
    );
    let mut users = Vec::with_capacity(r.users.len());
    for (user, v) in &r.users {
        let key = dotted("rate_limit.users", user);
        if user.is_empty() || user.len() > max_user_id_bytes {
            errors.add(
                v.span(),
                &key,
                format!("a user id is 1 to limits.max_user_id_bytes = {max_user_id_bytes} bytes"),
            );
            continue;
        }
        let u = v.get_ref();
        let c = rate(u.commands.unwrap_or(commands), v.span(), &key, errors);
        let q = rate(u.queries.unwrap_or(queries), v.span(), &key, errors);
        users.push((user.as_bytes().to_vec().into_boxed_slice(), c, q));
    }
    let limited = commands > 0.0 || queries > 0.0 || users.iter().any(|u| u.1 > 0.0 || u.2 > 0.0);
    limited.then_some(RateLimitSettings {
        commands,
        queries,
        burst_secs,
        users,
    })
}

/// `[migration] max_wait_ms`.
pub(crate) fn migration_wait_from(f: &FileConfig) -> Duration {
    Duration::from_millis(f.migration.max_wait_ms)
}

/// Sizes of the per-user tables.
pub(crate) fn user_tables_from(f: &FileConfig, errors: &mut Errors<'_>) -> UserTables {
    UserTables {
        rate_users: errors.range(&f.rate_limit.max_users, "rate_limit.max_users", 64, 1 << 20),
        migration_users: errors.range(&f.migration.max_users, "migration.max_users", 64, 1 << 20),
    }
}
