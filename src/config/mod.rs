//! Configuration: load the TOML file, validate it, produce a typed [`Config`].
//!
//! Two layers (STYLE habit 3): [`file::FileConfig`] mirrors the TOML exactly; [`Config`] is
//! validated and typed, with units in names, so nothing downstream parses a string.
//! An invalid file is refused with a [`ConfigError`] naming the file, the line and the key.
//! Loading never touches the data path: the control plane builds a new routing table from
//! a `Config` and hands it to the workers.
//!
//! `config` produces plain data and imports nothing from the data path (`route`,
//! `upstream`, `forward`, `runtime`): they depend on it, never the other way round.
//!
//! - [`file`](mod@file): the serde mirror of the TOML file, with every default;
//! - `admin`: the admin bearer token ([`AdminToken`]) and who needs one;
//! - `error`: [`ConfigError`] and the collector validation reports into;
//! - `settings`: workers, limits, timeouts, retries, health checks, access log;
//! - `routes`: partitions, users, the default route, classification, extraction lists;
//! - `extract`: [`ExtractRules`] and the default extraction lists;
//! - `users`: per-user rate limits, migration and mirroring bounds.

mod admin;
mod error;
mod extract;
pub mod file;
mod routes;
mod settings;
mod tls;
mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::access_log::AccessLogConfig;
use crate::hash::fnv1a64;
pub use admin::{admin_needs_token, AdminToken, MIN_TOKEN_BYTES};
pub use error::ConfigError;
use error::Errors;
pub use extract::{
    ExtractRules, JsonKeys, DEFAULT_HEADERS, DEFAULT_JSON_KEYS, DEFAULT_MAX_USER_ID_BYTES,
    DEFAULT_QUERY_KEYS,
};
use file::FileConfig;
pub use routes::{DefaultRoute, PartitionSpec, Policy, RouteSpec, IMPLICIT_DEFAULT_PARTITION};
pub use settings::{
    CircuitSettings, DriverChoice, HealthSettings, RetrySettings, RingSetup, Settings,
    WorkerSettings, MAX_SPIN_US, MAX_WORKERS,
};
pub use tls::{default_alpn, ListenerTls, UpstreamTls};
pub use users::{RateLimitSettings, UserTables};

/// Where a config came from.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// File path.
    pub path: PathBuf,
    /// FNV-1a 64 of the file bytes (identical files, identical hash, on every host).
    pub hash: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Provenance.
    pub source: ConfigSource,
    /// Data-plane listen address.
    pub listen: SocketAddr,
    /// listen(2) backlog.
    pub backlog: i32,
    /// Connection bound per worker.
    pub max_connections_per_worker: usize,
    /// Admin listener (None: disabled).
    pub admin: Option<SocketAddr>,
    /// Bearer token admin requests must carry (None: none; then `admin` is loopback).
    pub admin_token: Option<AdminToken>,
    /// Workers.
    pub workers: WorkerSettings,
    /// Per-request settings.
    pub settings: Settings,
    /// Routing.
    pub routes: RouteSpec,
    /// Access log (None: off).
    pub access_log: Option<AccessLogConfig>,
    /// Active health checks (None: off).
    pub health: Option<HealthSettings>,
    /// Sizes of the per-user tables.
    pub user_tables: UserTables,
    /// TLS on the listener (None: cleartext).
    pub listener_tls: Option<ListenerTls>,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole_file(path, format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Validate config text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| error::from_toml(&e, text, path))?;
        let mut errors = Errors::new(path, text);
        let config = build(&file, path, &mut errors);
        match errors.into_first() {
            Some(e) => Err(e),
            None => Ok(Config {
                source: ConfigSource {
                    path: path.to_path_buf(),
                    hash: fnv1a64(text.as_bytes()),
                    loaded_at: SystemTime::now(),
                },
                ..config
            }),
        }
    }

    /// Why the admin listener may not run at `addr` with this config (an address given on
    /// the command line bypasses the file's own check).
    pub fn admin_access_problem(&self, addr: SocketAddr) -> Option<String> {
        (admin_needs_token(addr) && self.admin_token.is_none()).then(|| {
            format!(
                "admin address {addr} is not loopback: set admin.token_file in {}",
                self.source.path.display()
            )
        })
    }

    /// Number of distinct backend addresses.
    pub fn backend_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .routes
            .partitions
            .iter()
            .flat_map(|p| p.write.iter().chain(p.read.iter()).copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// A human summary (for `--check` and logs).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "config {} (hash {:016x})",
            self.source.path.display(),
            self.source.hash
        );
        let _ = writeln!(
            s,
            "listen {}  admin {}{}",
            self.listen,
            self.admin.map_or("off".into(), |a| a.to_string()),
            if self.admin_token.is_some() {
                " (bearer token required)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "workers {} (pin {}, driver {:?})",
            self.workers.count, self.workers.pin, self.workers.driver
        );
        for p in &self.routes.partitions {
            let read = if p.read.is_empty() {
                "= write".to_string()
            } else {
                list(&p.read)
            };
            let _ = writeln!(
                s,
                "partition {}{}: write [{}] read [{}] {:?}",
                p.name,
                if p.is_hashed {
                    ""
                } else {
                    " (no hashed users)"
                },
                list(&p.write),
                read,
                p.policy
            );
        }
        let default = match &self.routes.default {
            DefaultRoute::Partition(i) => self.routes.partitions[*i].name.clone(),
            DefaultRoute::Reject => "reject (400)".into(),
        };
        let _ = writeln!(
            s,
            "users {} explicit; no user id -> {default}",
            self.routes.users.len()
        );
        s
    }
}

fn list(v: &[SocketAddr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn build(f: &FileConfig, path: &Path, errors: &mut Errors<'_>) -> Config {
    let listen = errors
        .addr(&f.listener.address, "listener.address")
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let admin = if f.admin.address.get_ref().is_empty() {
        None
    } else {
        errors.addr(&f.admin.address, "admin.address")
    };
    if let Some(a) = admin {
        let overlaps =
            a.ip() == listen.ip() || a.ip().is_unspecified() || listen.ip().is_unspecified();
        if a.port() != 0 && a.port() == listen.port() && overlaps {
            errors.add(
                f.admin.address.span(),
                "admin.address",
                format!("{a} is where listener.address ({listen}) listens: the two need different ports"),
            );
        }
    }
    let admin_token = admin::token_from(f.admin.token_file.as_ref(), path, errors);
    admin::check_admin_access(&f.admin.address, admin, admin_token.as_ref(), errors);
    Config {
        source: ConfigSource {
            path: PathBuf::new(),
            hash: 0,
            loaded_at: SystemTime::UNIX_EPOCH,
        },
        listen,
        backlog: errors.range(&f.listener.backlog, "listener.backlog", 1, i32::MAX),
        max_connections_per_worker: errors.range(
            &f.listener.max_connections_per_worker,
            "listener.max_connections_per_worker",
            1,
            1 << 20,
        ),
        admin,
        admin_token,
        workers: settings::workers_from(f, errors),
        settings: settings::settings_from(f, errors),
        routes: routes::routes_from(f, path, errors),
        listener_tls: tls::listener_tls_from(f.listener.tls.as_ref(), path, errors),
        access_log: settings::access_log_from(f, path, errors),
        health: settings::health_from(f, errors),
        user_tables: users::user_tables_from(f, errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    /// A relative access-log path sits beside the config file, as certificate and token
    /// paths do (under systemd the working directory is `/`); `-` stays stderr.
    #[test]
    fn a_relative_access_log_sits_beside_the_config() {
        let text = |log: &str| {
            format!("default_backend = \"127.0.0.1:1\"\n[log]\naccess_log = \"{log}\"\n")
        };
        let at = Path::new("/etc/ringgate/routing.toml");
        let path = |log: &str| {
            Config::parse(&text(log), at)
                .unwrap()
                .access_log
                .unwrap()
                .path
        };
        assert_eq!(path("access.log"), Path::new("/etc/ringgate/access.log"));
        assert_eq!(path("/var/log/rg.log"), Path::new("/var/log/rg.log"));
        assert_eq!(path("-"), Path::new("-"));
    }

    #[test]
    fn seed_format_loads_unchanged() {
        let c = parse(
            r#"
default_backend = "127.0.0.1:3001"
[partitions.zone_1]
servers = ["127.0.0.1:3001", "127.0.0.1:3002"]   # used for both reads and writes
[partitions.zone_2]
write = ["127.0.0.1:3003"]                        # the CQRS form
read  = ["127.0.0.1:3013", "127.0.0.1:3014"]
[users]
alice = "zone_1"
bob = "zone_2"
"#,
        )
        .unwrap();
        assert_eq!(c.routes.partitions.len(), 3);
        assert_eq!(c.routes.partitions[0].write.len(), 2);
        assert!(c.routes.partitions[0].read.is_empty());
        assert_eq!(c.routes.partitions[1].read.len(), 2);
        assert_eq!(c.routes.default, DefaultRoute::Partition(2));
        assert!(!c.routes.partitions[2].is_hashed);
        assert_eq!(c.routes.users.len(), 2);
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(c.summary().contains("zone_2"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\n[users]\nalice = \"nope\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("users.alice"));
        assert!(
            e.to_string()
                .starts_with("test.toml:4: key `users.alice`: unknown partition"),
            "{e}"
        );

        let e = parse("[partitions.z]\nservers = [\"not an address\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("partitions.z.servers"))
        );

        let e = parse("[listener]\naddress = \"0.0.0.0:1\"\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("bogus"), "{e}");

        let e = parse("[workers]\nspin_us = 20000\n[partitions.z]\nservers=[\"127.0.0.1:1\"]")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("workers.spin_us"))
        );
        assert!(e.message.contains("0..=10000"), "{e}");

        let e = parse("[limits]\nmax_head_bytes = 10\n[partitions.z]\nservers=[\"127.0.0.1:1\"]")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("limits.max_head_bytes"))
        );

        let e = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\nwrite = [\"127.0.0.1:2\"]\n")
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("partitions.z"));

        let e =
            parse("[partitions.z]\npolicy = \"random\"\nservers=[\"127.0.0.1:1\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("partitions.z.policy"))
        );

        let e = parse("x = [\n").unwrap_err();
        assert!(e.line.is_some());
        assert!(parse("").is_err());
    }

    /// Numbers out of their range are refused, not quietly adjusted (README): a 0 here
    /// used to become 1, so a worker shed every request beyond its first in flight (0
    /// means "off" for other keys of the file), and 0 users became 64.
    #[test]
    fn out_of_range_bounds_are_refused_not_adjusted() {
        for (section, key) in [
            ("overload", "max_in_flight_per_worker"),
            ("rate_limit", "max_users"),
            ("migration", "max_users"),
        ] {
            let text =
                format!("[partitions.z]\nservers = [\"127.0.0.1:1\"]\n[{section}]\n{key} = 0\n");
            let e = parse(&text).expect_err(&format!("{section}.{key} = 0 accepted"));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(4), Some(format!("{section}.{key}").as_str())),
                "{e}"
            );
        }
    }

    /// The Query bound is the fraction of the in-flight bound rounded down (Queries hold
    /// no more places than it), below the full bound whenever the ratio is below 1.
    #[test]
    fn queries_are_shed_at_the_fraction_of_the_bound_rounded_down() {
        for (max, ratio, expected) in [
            (4096, "0.8", 3276),
            (4, "0.8", 3),
            (10, "0.95", 9),
            (100, "0.29", 29),
            (100, "0.57", 57),
            (4, "0.5", 2),
            (4, "1.0", 4),
            (100, "0.9999999999", 99),
            (1, "0.8", 1),
            (2, "0.01", 1),
        ] {
            let text = format!(
                "[partitions.z]\nservers = [\"127.0.0.1:1\"]\n[overload]\nmax_in_flight_per_worker = {max}\nquery_shed_ratio = {ratio}\n"
            );
            let s = parse(&text).unwrap().settings;
            assert_eq!(
                (s.max_in_flight, s.query_shed_in_flight),
                (max, expected),
                "{ratio} of {max}"
            );
        }
    }

    #[test]
    fn default_backend_may_name_a_partition_or_be_absent() {
        let c = parse("default_backend = \"z\"\n[partitions.z]\nservers = [\"127.0.0.1:1\"]\n")
            .unwrap();
        assert_eq!(c.routes.default, DefaultRoute::Partition(0));
        assert_eq!(c.routes.partitions.len(), 1);
        let c = parse("[partitions.z]\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        assert_eq!(c.routes.default, DefaultRoute::Reject);
    }
}
