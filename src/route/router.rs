//! The routing table: class → partition → server.
//!
//! [`RoutingTable`] is immutable and built off the data path by the control plane, once
//! per config version; every worker gets an `Arc` of it. What a worker mutates while
//! routing — its round-robin positions — lives in its own [`WorkerTable`] (plain `Cell`s),
//! so routing takes no lock and touches no memory another core writes, apart from the
//! backends' health atomics, which it only loads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, DefaultRoute, Policy, RateLimitSettings, Settings, UpstreamTls};
use crate::error::{ErrorKind, ProxyError};
use crate::health::state::{admit, would_admit, Admission};
use crate::http::parse::Method;
use crate::route::extract::{hex, ExtractRules};
use crate::route::partition::{partition_seed, rendezvous_pick, user_hash};
use crate::upstream::backend::{Backend, BackendRegistry};
use crate::users::inflight::partition_id;
use crate::users::rate::Limit;

/// Command (write) or Query (read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Writes: go to `write` servers, never retried once sent.
    Command,
    /// Reads: go to `read` servers (falling back to `write`), may be retried.
    Query,
}

impl Class {
    /// Lower-case label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Class::Command => "command",
            Class::Query => "query",
        }
    }
}

/// A partition with its server lists as indices into [`RoutingTable::backends`].
#[derive(Debug)]
pub struct Partition {
    /// Name.
    pub name: Box<str>,
    /// Command servers.
    pub write: Box<[u16]>,
    /// Query servers (never empty: a copy of `write` when none are configured).
    pub read: Box<[u16]>,
    /// Policy.
    pub policy: Policy,
    /// The partition that gets a copy of every Query routed here.
    pub mirror: Option<u16>,
    /// Stable id (from the name) of this partition, the same in every table version:
    /// what the migration table records a user's Commands in flight against.
    pub id: u32,
}

impl Partition {
    /// The server list for a class.
    #[inline]
    pub fn servers(&self, class: Class) -> &[u16] {
        match class {
            Class::Command => &self.write,
            Class::Query => &self.read,
        }
    }
}

/// An immutable routing table, one per config version.
#[derive(Debug)]
pub struct RoutingTable {
    /// Monotonic version (1 for the first load).
    pub version: u64,
    /// Hash of the config file.
    pub config_hash: u64,
    /// When the config was loaded.
    pub loaded_at: SystemTime,
    /// Distinct backends.
    pub backends: Box<[Arc<Backend>]>,
    /// Partitions (the implicit default partition, if any, is last).
    pub partitions: Box<[Partition]>,
    /// Explicit users.
    users: HashMap<Box<[u8]>, u16, ahash::RandomState>,
    /// Indices of partitions that take hashed users, and their seeds.
    hashed: Box<[u16]>,
    hashed_seeds: Box<[u64]>,
    /// Requests without a user id.
    default: Option<u16>,
    command_prefixes: Box<[Box<[u8]>]>,
    query_prefixes: Box<[Box<[u8]>]>,
    /// Extraction lists.
    pub extract: ExtractRules,
    /// Per-user rate limits (None: nobody is limited).
    pub rate_limits: Option<RateLimits>,
    /// TLS to each backend (indexed like `backends`; None: plain TCP).
    pub backend_tls: Box<[Option<Arc<UpstreamTls>>]>,
    /// TLS on the listener for connections accepted from now on (None: cleartext).
    pub listener_tls: Option<Arc<rustls::ServerConfig>>,
    /// Per-request settings.
    pub settings: Settings,
}

/// The per-user rate limits of one table version.
#[derive(Debug)]
pub struct RateLimits {
    /// Everyone's, by class (None: no limit).
    default: [Option<Limit>; 2],
    /// Users with their own.
    users: HashMap<Box<[u8]>, [Option<Limit>; 2], ahash::RandomState>,
}

impl RateLimits {
    fn build(r: &RateLimitSettings) -> Self {
        let mut users = HashMap::with_capacity_and_hasher(r.users.len(), ahash::RandomState::new());
        for (user, commands, queries) in &r.users {
            users.insert(
                user.clone(),
                [
                    Limit::new(*commands, r.burst_secs),
                    Limit::new(*queries, r.burst_secs),
                ],
            );
        }
        Self {
            default: [
                Limit::new(r.commands, r.burst_secs),
                Limit::new(r.queries, r.burst_secs),
            ],
            users,
        }
    }

    /// The limit of `user` for `class` (None: not limited).
    #[inline]
    pub fn limit(&self, user: &[u8], class: Class) -> Option<Limit> {
        let by_class = if self.users.is_empty() {
            &self.default
        } else {
            self.users.get(user).unwrap_or(&self.default)
        };
        by_class[class as usize]
    }
}

impl RoutingTable {
    /// Build a table from a validated config; backends come from (and are added to) the
    /// registry so their shared state survives reloads.
    pub fn build(config: &Config, registry: &mut BackendRegistry, version: u64) -> Self {
        let mut backends: Vec<Arc<Backend>> = Vec::new();
        let mut index_of = |addr| -> u16 {
            if let Some(i) = backends.iter().position(|b| b.addr == addr) {
                return i as u16;
            }
            backends.push(registry.get_or_create(addr));
            (backends.len() - 1) as u16
        };
        let routes = &config.routes;
        let mut backend_tls: Vec<Option<Arc<UpstreamTls>>> = Vec::new();
        let partitions: Vec<Partition> = routes
            .partitions
            .iter()
            .map(|p| {
                let write: Box<[u16]> = p.write.iter().map(|&a| index_of(a)).collect();
                let read: Box<[u16]> = if p.read.is_empty() {
                    write.clone()
                } else {
                    p.read.iter().map(|&a| index_of(a)).collect()
                };
                for &b in write.iter().chain(read.iter()) {
                    if backend_tls.len() <= b as usize {
                        backend_tls.resize(b as usize + 1, None);
                    }
                    backend_tls[b as usize] = p.tls.clone();
                }
                Partition {
                    name: p.name.clone().into_boxed_str(),
                    write,
                    read,
                    policy: p.policy,
                    mirror: p.mirror.map(|m| m as u16),
                    id: partition_id(&p.name),
                }
            })
            .collect();
        let hashed: Box<[u16]> = routes
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_hashed)
            .map(|(i, _)| i as u16)
            .collect();
        let hashed_seeds = hashed
            .iter()
            .map(|&i| partition_seed(&routes.partitions[i as usize].name))
            .collect();
        let mut users =
            HashMap::with_capacity_and_hasher(routes.users.len(), ahash::RandomState::new());
        for (user, p) in &routes.users {
            users.insert(user.clone(), *p as u16);
        }
        let default = match routes.default {
            DefaultRoute::Partition(i) => Some(i as u16),
            DefaultRoute::Reject => None,
        };
        Self {
            version,
            config_hash: config.source.hash,
            loaded_at: config.source.loaded_at,
            backends: backends.into_boxed_slice(),
            partitions: partitions.into_boxed_slice(),
            users,
            hashed,
            hashed_seeds,
            default,
            command_prefixes: routes.command_prefixes.clone().into_boxed_slice(),
            query_prefixes: routes.query_prefixes.clone().into_boxed_slice(),
            extract: routes.extract.clone(),
            rate_limits: config.settings.rate_limit.as_ref().map(RateLimits::build),
            backend_tls: backend_tls.into_boxed_slice(),
            listener_tls: config.listener_tls.as_ref().map(|t| t.server.clone()),
            settings: config.settings.clone(),
        }
    }

    /// Command or Query: configured prefixes first, then the method rule.
    ///
    /// A path a backend would read differently (percent-escapes, dot segments) is
    /// classified both as sent and as the backend resolves it, and is a Command if
    /// either reading is: a Command is never retried and goes to the write servers.
    #[inline]
    pub fn classify(&self, method: Method, path: &[u8]) -> Class {
        let class = self.classify_as_is(method, path);
        if class == Class::Query && needs_resolving(path) {
            return RESOLVED.with(|r| {
                let (decoded, resolved) = &mut *r.borrow_mut();
                resolve_path(path, decoded, resolved);
                self.classify_as_is(method, resolved)
            });
        }
        class
    }

    fn classify_as_is(&self, method: Method, path: &[u8]) -> Class {
        if self.command_prefixes.iter().any(|p| path.starts_with(p)) {
            Class::Command
        } else if self.query_prefixes.iter().any(|p| path.starts_with(p)) {
            Class::Query
        } else if method.is_write() {
            Class::Command
        } else {
            Class::Query
        }
    }

    /// The partition for a user (explicit table, then consistent hash), or for a request
    /// without one (default partition, or 400 when configured to reject).
    #[inline]
    pub fn partition_for(&self, user: Option<&[u8]>) -> Result<u16, ProxyError> {
        match user {
            Some(u) => {
                if let Some(&p) = self.users.get(u) {
                    return Ok(p);
                }
                match rendezvous_pick(user_hash(u), &self.hashed_seeds) {
                    Some(i) => Ok(self.hashed[i]),
                    None => self
                        .default
                        .ok_or(ProxyError::internal(ErrorKind::NoHealthyServer)),
                }
            }
            None => self
                .default
                .ok_or(ProxyError::downstream(ErrorKind::NoUserId)),
        }
    }

    /// Name of a partition.
    pub fn partition_name(&self, p: u16) -> &str {
        &self.partitions[p as usize].name
    }

    /// Whether client requests can be routed to partition `p` (it takes hashed users or
    /// is the default); a mirror's shadow that is neither only gets mirrored copies.
    pub fn takes_requests(&self, p: u16) -> bool {
        self.default == Some(p) || self.hashed.contains(&p)
    }
}

thread_local! {
    /// Scratch of [`resolve_path`] (decoded, resolved), reused: no allocation once warm.
    static RESOLVED: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether a backend could read `path` as another path: it holds percent-escapes,
/// `;parameters`, backslashes or dot segments.
#[inline]
fn needs_resolving(path: &[u8]) -> bool {
    memchr::memchr3(b'%', b';', b'\\', path).is_some()
        || memchr::memmem::find(path, b"/.").is_some()
}

/// The path as a backend resolves it into `out` (percent-decoded into `decoded` first,
/// `\` read as `/`, then dot segments removed, RFC 3986 §5.2.4). The WHATWG URL parser
/// (`new URL` in Node, Deno, Bun) and Node's `url.parse` read a `\` in an http path as
/// `/`, so `/api/spot/user/..\v2/order` is `/api/spot/v2/order` to them (a decoded `%5C`
/// is read so too: like `%2F`, it can only make a Command of the other reading).
fn resolve_path(path: &[u8], decoded: &mut Vec<u8>, out: &mut Vec<u8>) {
    decoded.clear();
    out.clear();
    let slash = |b: u8| if b == b'\\' { b'/' } else { b };
    let mut i = 0;
    while i < path.len() {
        let digit = |at: usize| path.get(at).copied().and_then(hex);
        match (path[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push(slash(h << 4 | l));
                i += 3;
            }
            _ => {
                decoded.push(slash(path[i]));
                i += 1;
            }
        }
    }
    for segment in decoded.split(|&b| b == b'/').skip(1) {
        // Servlet containers drop a segment's `;parameters` (`..;` is `..` to them).
        let segment = match memchr::memchr(b';', segment) {
            Some(i) => &segment[..i],
            None => segment,
        };
        match segment {
            b"." => {}
            b".." => {
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            s => {
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
    }
    // A last `.` or `..` segment leaves a directory: keep its trailing slash.
    if decoded.ends_with(b"/.") || decoded.ends_with(b"/..") {
        out.push(b'/');
    }
}

/// A worker's view of a table: the shared table plus this worker's round-robin state.
#[derive(Debug)]
pub struct WorkerTable {
    /// The shared immutable table.
    pub table: Arc<RoutingTable>,
    /// Next round-robin position per (partition, class).
    rr: Box<[Cell<u32>]>,
}

/// Set of list positions already tried for one request (lists longer than 64 are tried
/// only in their first 64 positions).
pub type Tried = u64;

impl WorkerTable {
    /// Wrap a shared table for one worker.
    pub fn new(table: Arc<RoutingTable>) -> Self {
        let rr = (0..table.partitions.len() * 2)
            .map(|_| Cell::new(0))
            .collect();
        Self { table, rr }
    }

    /// Wrap a new table for the worker that ran on `old`: partitions that keep their name
    /// keep their round-robin positions, so a reload does not send every worker back to
    /// the first server of every list.
    pub fn following(table: Arc<RoutingTable>, old: &WorkerTable) -> Self {
        let new = Self::new(table);
        for (i, p) in new.table.partitions.iter().enumerate() {
            if let Some(j) = old.table.partitions.iter().position(|q| q.name == p.name) {
                for class in 0..2 {
                    new.rr[i * 2 + class].set(old.rr[j * 2 + class].get());
                }
            }
        }
        new
    }

    /// Pick a server for `class` in partition `p`, skipping positions in `tried` and
    /// backends that are down, drained or whose circuit is open. Returns the backend
    /// index, its list position, and whether the request is a half-open probe.
    #[inline]
    pub fn pick_server(&self, p: u16, class: Class, tried: Tried) -> Option<(u16, u32, Admission)> {
        let part = &self.table.partitions[p as usize];
        let list = part.servers(class);
        let n = list.len().min(64) as u32;
        if n == 0 {
            return None;
        }
        let start = match part.policy {
            Policy::PrimaryBackup => 0,
            Policy::RoundRobin => {
                let cell = &self.rr[p as usize * 2 + class as usize];
                let s = cell.get();
                cell.set(if s + 1 >= n { 0 } else { s + 1 });
                s % n
            }
        };
        let circuit = self.table.settings.circuit.as_ref();
        for k in 0..n {
            let pos = (start + k) % n;
            if tried & (1u64 << pos) != 0 {
                continue;
            }
            let b = list[pos as usize];
            if let Some(admission) = admit(&self.table.backends[b as usize], circuit) {
                return Some((b, pos, admission));
            }
        }
        None
    }

    /// Whether [`Self::pick_server`] could find a server outside `tried` now (without
    /// moving the round-robin position or claiming a half-open probe).
    pub fn has_server(&self, p: u16, class: Class, tried: Tried) -> bool {
        let part = &self.table.partitions[p as usize];
        let circuit = self.table.settings.circuit.as_ref();
        part.servers(class)
            .iter()
            .take(64)
            .enumerate()
            .any(|(pos, &b)| {
                tried & (1u64 << pos) == 0 && would_admit(&self.table.backends[b as usize], circuit)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(text: &str) -> WorkerTable {
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        let mut reg = BackendRegistry::new();
        WorkerTable::new(Arc::new(RoutingTable::build(&c, &mut reg, 1)))
    }

    const CQRS: &str = r#"
default_backend = "127.0.0.1:3001"
[partitions.zone_1]
servers = ["127.0.0.1:3001", "127.0.0.1:3002"]
[partitions.zone_2]
write = ["127.0.0.1:3003"]
read = ["127.0.0.1:3013", "127.0.0.1:3014"]
[partitions.zone_3]
policy = "primary_backup"
servers = ["127.0.0.1:3005", "127.0.0.1:3006"]
[users]
alice = "zone_1"
bob = "zone_2"
carol = "zone_3"
"#;

    fn addr(t: &WorkerTable, b: u16) -> String {
        t.table.backends[b as usize].addr.to_string()
    }

    #[test]
    fn classification() {
        let t = table(CQRS);
        let tb = &t.table;
        assert_eq!(
            tb.classify(Method::Get, b"/api/spot/v2/order"),
            Class::Command
        );
        assert_eq!(
            tb.classify(Method::Post, b"/api/spot/user/data"),
            Class::Query
        );
        assert_eq!(tb.classify(Method::Post, b"/other"), Class::Command);
        assert_eq!(tb.classify(Method::Delete, b"/other"), Class::Command);
        assert_eq!(tb.classify(Method::Get, b"/other"), Class::Query);
        assert_eq!(tb.classify(Method::Head, b"/other"), Class::Query);
        assert_eq!(tb.classify(Method::Options, b"/other"), Class::Query);
    }

    /// A backend resolves dot segments and percent-decodes the path before it routes:
    /// `POST /api/spot/user/../v2/order` is an order to it, so it must not be a Query
    /// here (a Query goes to read servers and may be sent twice).
    #[test]
    fn classification_sees_the_path_a_backend_sees() {
        let t = table(CQRS);
        let tb = &t.table;
        use Class::{Command, Query};
        use Method::{Get, Post};
        for (method, path, class) in [
            (Post, &b"/api/spot/user/../v2/order"[..], Command),
            (Post, b"/api/spot/user/%2e%2e/v2/order", Command),
            (Post, b"/api/spot/user/%2E%2E/v2/order", Command),
            (Post, b"/api/spot/user/./../v2/order", Command),
            (Post, b"/api/spot/user/..;/v2/order", Command),
            (Get, b"/api/spot/%76%32/order", Command),
            (Get, b"/api/spot/%762/order", Command),
            (Get, b"/api/spot/x/../v2/order", Command),
            (Get, b"/api/spot/./v2/order", Command),
            // `\` is `/` to the WHATWG URL parser (`new URL` in Node, Deno, Bun) and to
            // Node's `url.parse`.
            (Get, b"/api/spot\\v2/order", Command),
            (Get, b"/api/spot/user\\..\\v2/order", Command),
            (Get, b"/api/spot/user/..\\v2\\order", Command),
            // Paths that resolve to no Command keep their class.
            (Get, b"/api/spot/user/a%20b", Query),
            (Get, b"/other/../x", Query),
        ] {
            let shown = String::from_utf8_lossy(path);
            assert_eq!(tb.classify(method, path), class, "{method:?} {shown}");
        }
        let resolved = |path: &[u8]| {
            let (mut decoded, mut out) = (Vec::new(), Vec::new());
            resolve_path(path, &mut decoded, &mut out);
            out
        };
        assert!(!needs_resolving(b"/a/b/"));
        assert_eq!(resolved(b"/a/./b/"), b"/a/b/");
        assert_eq!(resolved(b"/a/b/.."), b"/a/");
        assert_eq!(resolved(b"/../a%2"), b"/a%2");
    }

    #[test]
    fn explicit_users_cqrs_and_round_robin() {
        let t = table(CQRS);
        let bob = t.table.partition_for(Some(b"bob")).unwrap();
        assert_eq!(t.table.partition_name(bob), "zone_2");
        let w: Vec<String> = (0..3)
            .map(|_| addr(&t, t.pick_server(bob, Class::Command, 0).unwrap().0))
            .collect();
        assert_eq!(w, ["127.0.0.1:3003"; 3]);
        let r: Vec<String> = (0..4)
            .map(|_| addr(&t, t.pick_server(bob, Class::Query, 0).unwrap().0))
            .collect();
        assert_eq!(
            r,
            [
                "127.0.0.1:3013",
                "127.0.0.1:3014",
                "127.0.0.1:3013",
                "127.0.0.1:3014"
            ]
        );
        let alice = t.table.partition_for(Some(b"alice")).unwrap();
        let r: Vec<String> = (0..2)
            .map(|_| addr(&t, t.pick_server(alice, Class::Query, 0).unwrap().0))
            .collect();
        assert_eq!(r, ["127.0.0.1:3001", "127.0.0.1:3002"]);
    }

    #[test]
    fn primary_backup_and_failover_skip_unavailable() {
        let t = table(CQRS);
        let carol = t.table.partition_for(Some(b"carol")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                addr(&t, t.pick_server(carol, Class::Command, 0).unwrap().0),
                "127.0.0.1:3005"
            );
        }
        let (_, pos, _) = t.pick_server(carol, Class::Command, 0).unwrap();
        assert_eq!(
            addr(
                &t,
                t.pick_server(carol, Class::Command, 1 << pos).unwrap().0
            ),
            "127.0.0.1:3006"
        );
        assert!(t.pick_server(carol, Class::Command, 0b11).is_none());
        let primary = t
            .table
            .backends
            .iter()
            .find(|b| b.addr.port() == 3005)
            .unwrap();
        primary.set_drained(true);
        assert_eq!(
            addr(&t, t.pick_server(carol, Class::Command, 0).unwrap().0),
            "127.0.0.1:3006"
        );
    }

    /// A `default_backend` address that is also a server of a TLS partition is one
    /// backend: it must keep that partition's TLS, not be spoken to in cleartext (the
    /// implicit partition comes last and used to overwrite the backend's TLS with none).
    #[test]
    fn a_default_backend_address_in_a_tls_partition_keeps_its_tls() {
        let t = table(
            "default_backend = \"127.0.0.1:3001\"\n[partitions.z]\nservers = [\"127.0.0.1:3001\"]\ntls = true\n",
        );
        let b = t
            .table
            .backends
            .iter()
            .position(|b| b.addr.port() == 3001)
            .unwrap();
        assert!(
            t.table.backend_tls[b].is_some(),
            "partition z's TLS server is reached in cleartext"
        );
    }

    #[test]
    fn unknown_users_hash_and_missing_users_default() {
        let t = table(CQRS);
        let p = t.table.partition_for(Some(b"stranger")).unwrap();
        assert_ne!(t.table.partition_name(p), "default");
        assert_eq!(p, t.table.partition_for(Some(b"stranger")).unwrap());
        let d = t.table.partition_for(None).unwrap();
        assert_eq!(t.table.partition_name(d), "default");
        let strict = table("[partitions.z]\nservers=[\"127.0.0.1:1\"]\n");
        assert_eq!(
            strict.table.partition_for(None).unwrap_err().status(),
            Some(400)
        );
    }
}
