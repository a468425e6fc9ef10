//! The routing part of the file: partitions and their servers, explicit users, where
//! requests without a user id go, classification prefixes and the extraction lists.
//!
//! # Invariants
//! - every partition has at least one write server, and no server twice in one list;
//! - the implicit partition made from a `default_backend` *address* is last, takes no
//!   hashed users, and is named [`IMPLICIT_DEFAULT_PARTITION`];
//! - every `[users]` entry names a partition that takes hashed users.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::tls::{upstream_tls_from, UpstreamTls};

use super::error::{dotted, Errors};
use super::file::{FileConfig, PartitionSection};
use super::{ExtractRules, JsonKeys};
use crate::http::chunked::{TrailerNames, MAX_REFUSED_TRAILER_NAMES};

/// Name of the partition made from a `default_backend` address. A `[partitions.default]`
/// beside such an address is refused rather than renamed, so the name in `/config`, metrics
/// and logs always means the same partition.
pub const IMPLICIT_DEFAULT_PARTITION: &str = "default";

/// Load-balancing policy inside a server list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Round-robin over available servers (per worker).
    RoundRobin,
    /// First available server always.
    PrimaryBackup,
}

/// A validated partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Name (`zone_1`).
    pub name: String,
    /// Servers for Commands.
    pub write: Vec<SocketAddr>,
    /// Servers for Queries (empty: use `write`).
    pub read: Vec<SocketAddr>,
    /// Policy.
    pub policy: Policy,
    /// Whether unknown users may hash here (false for the implicit default partition and
    /// for mirror targets).
    pub is_hashed: bool,
    /// The partition (index) that gets a copy of every Query routed here.
    pub mirror: Option<usize>,
    /// TLS to its servers (None: plain TCP).
    pub tls: Option<Arc<UpstreamTls>>,
}

/// Where requests without a user id go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultRoute {
    /// To this partition (index into `partitions`).
    Partition(usize),
    /// Refused with 400.
    Reject,
}

/// Everything the router needs to build a routing table.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Partitions; the implicit default partition (if any) is last.
    pub partitions: Vec<PartitionSpec>,
    /// Explicit user → partition index.
    pub users: Vec<(Box<[u8]>, usize)>,
    /// Requests without a user id.
    pub default: DefaultRoute,
    /// Command path prefixes.
    pub command_prefixes: Vec<Box<[u8]>>,
    /// Query path prefixes.
    pub query_prefixes: Vec<Box<[u8]>>,
    /// Extraction lists.
    pub extract: ExtractRules,
}

pub(crate) fn routes_from(f: &FileConfig, path: &Path, errors: &mut Errors<'_>) -> RouteSpec {
    let mut partitions: Vec<PartitionSpec> = f
        .partitions
        .iter()
        .map(|(name, section)| partition_from(name, section, path, errors))
        .collect();
    same_tls_for_each_server(f, &partitions, errors);
    let default = default_route(f, &mut partitions, errors);
    mirrors_from(f, &mut partitions, errors);
    if partitions.is_empty() {
        errors.add(
            0..0,
            "partitions",
            "no partitions and no default_backend: nothing to route to".into(),
        );
    }
    let extract = extract_rules_from(f, errors);
    let users = users_from(f, &partitions, extract.max_user_id_bytes, errors);
    RouteSpec {
        partitions,
        users,
        default,
        command_prefixes: prefixes_from(
            &f.classify.command_prefixes,
            "classify.command_prefixes",
            errors,
        ),
        query_prefixes: prefixes_from(
            &f.classify.query_prefixes,
            "classify.query_prefixes",
            errors,
        ),
        extract,
    }
}

/// One `[partitions.NAME]` section.
fn partition_from(
    name: &str,
    section: &Spanned<PartitionSection>,
    path: &Path,
    errors: &mut Errors<'_>,
) -> PartitionSpec {
    let key = dotted("partitions", name);
    let span = section.span();
    let p = section.get_ref();
    if name.is_empty() {
        errors.add(span.clone(), &key, "a partition needs a name".into());
    }
    let servers = server_list(&p.servers, &format!("{key}.servers"), errors);
    let mut write = server_list(&p.write, &format!("{key}.write"), errors);
    let mut read = server_list(&p.read, &format!("{key}.read"), errors);
    if !servers.is_empty() {
        if !write.is_empty() || !read.is_empty() {
            errors.add(
                span.clone(),
                &key,
                "use either `servers` or `write`/`read`, not both".into(),
            );
        }
        write = servers;
        read = Vec::new();
    }
    if write.is_empty() {
        errors.add(
            span,
            &key,
            "a partition needs at least one server (`servers` or `write`)".into(),
        );
    }
    let policy = match p.policy.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("round_robin", _)) => Policy::RoundRobin,
        Some(("primary_backup", _)) => Policy::PrimaryBackup,
        Some((other, s)) => {
            errors.add(
                s,
                &format!("{key}.policy"),
                format!("\"{other}\" is not round_robin or primary_backup"),
            );
            Policy::RoundRobin
        }
    };
    let all: Vec<SocketAddr> = write.iter().chain(&read).copied().collect();
    let tls = upstream_tls_from(name, section, &all, path, errors);
    PartitionSpec {
        name: name.to_string(),
        write,
        read,
        policy,
        is_hashed: true,
        mirror: None,
        tls,
    }
}

/// A server listed in several partitions must be spoken to the same way in all of them
/// (its pooled connections are shared).
fn same_tls_for_each_server(f: &FileConfig, partitions: &[PartitionSpec], errors: &mut Errors<'_>) {
    let mut seen: Vec<(SocketAddr, &Option<Arc<UpstreamTls>>, &str)> = Vec::new();
    for p in partitions {
        for a in p.write.iter().chain(&p.read) {
            match seen.iter().find(|(s, ..)| s == a) {
                Some((_, tls, other)) if *tls != &p.tls => {
                    let span = f.partitions.get(&p.name).map_or(0..0, |s| s.span());
                    errors.add(
                        span,
                        &dotted("partitions", &p.name),
                        format!("{a} is also in partition \"{other}\" with other TLS settings (tls, sni, ca must agree)"),
                    );
                }
                Some(_) => {}
                None => seen.push((*a, &p.tls, &p.name)),
            }
        }
    }
}

/// `mirror = "NAME"` of each partition: an existing partition, not itself, and not one that
/// mirrors in turn (no chains). A mirror target takes no hashed users: it is a shadow.
fn mirrors_from(f: &FileConfig, partitions: &mut [PartitionSpec], errors: &mut Errors<'_>) {
    let index = |name: &str| partitions.iter().position(|p| p.name == name);
    let mut links = Vec::new();
    for (name, section) in &f.partitions {
        let Some(target) = &section.get_ref().mirror else {
            continue;
        };
        let key = format!("{}.mirror", dotted("partitions", name));
        match index(target.get_ref()) {
            None => errors.add(
                target.span(),
                &key,
                format!("unknown partition \"{}\"", target.get_ref()),
            ),
            Some(t) if partitions[t].name == *name => errors.add(
                target.span(),
                &key,
                "a partition cannot mirror to itself".into(),
            ),
            Some(t) => links.push((
                index(name).expect("listed partition"),
                t,
                target.span(),
                key,
            )),
        }
    }
    for (from, to, span, key) in &links {
        if links.iter().any(|(f2, ..)| f2 == to) {
            errors.add(
                span.clone(),
                key,
                format!(
                    "\"{}\" mirrors to another partition itself; mirrors do not chain",
                    partitions[*to].name
                ),
            );
        }
        partitions[*from].mirror = Some(*to);
        partitions[*to].is_hashed = false;
    }
}

/// A list of `host:port` servers, each resolved, none twice.
fn server_list(list: &[Spanned<String>], key: &str, errors: &mut Errors<'_>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for v in list {
        if let Some(a) = errors.addr(v, key) {
            if out.contains(&a) {
                errors.add(v.span(), key, format!("{a} is listed twice"));
            } else if is_connectable(v, a, key, errors) && out.len() == MAX_SERVERS_PER_LIST {
                errors.add(
                    v.span(),
                    key,
                    format!("more than {MAX_SERVERS_PER_LIST} servers in one list"),
                );
            }
            out.push(a);
        }
    }
    out
}

/// Whether `a` (the value of `v`) is a server one can connect to (not port 0, not
/// `0.0.0.0` or `::`); if not, an error says so.
fn is_connectable(v: &Spanned<String>, a: SocketAddr, key: &str, errors: &mut Errors<'_>) -> bool {
    let ok = a.port() != 0 && !a.ip().is_unspecified();
    if !ok {
        errors.add(
            v.span(),
            key,
            format!("{a} is no server one can connect to"),
        );
    }
    ok
}

/// Most servers in one partition's list: a request's tried set is a 64-bit mask.
const MAX_SERVERS_PER_LIST: usize = 64;

/// Where requests without a user id go; adds the implicit default partition when
/// `default_backend` is an address.
fn default_route(
    f: &FileConfig,
    partitions: &mut Vec<PartitionSpec>,
    errors: &mut Errors<'_>,
) -> DefaultRoute {
    let Some(v) = &f.default_backend else {
        return DefaultRoute::Reject;
    };
    // With `reject_without_user` the value is unused, but still checked.
    let reject = f.reject_without_user;
    let value = v.get_ref();
    if let Some(i) = partitions.iter().position(|p| p.name == *value) {
        return if reject {
            DefaultRoute::Reject
        } else {
            DefaultRoute::Partition(i)
        };
    }
    if !value.contains(':') {
        // Every address has a port, so a value without ':' was meant as a partition name.
        let known: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
        errors.add(
            v.span(),
            "default_backend",
            format!(
                "unknown partition \"{value}\" (partitions: {}); default_backend is a partition name or a host:port address",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
        );
        return DefaultRoute::Reject;
    }
    let Some(a) = errors.addr(v, "default_backend") else {
        return DefaultRoute::Reject;
    };
    // It becomes a partition's one server, held to what a server list's are.
    if !is_connectable(v, a, "default_backend", errors) {
        return DefaultRoute::Reject;
    }
    if reject {
        return DefaultRoute::Reject;
    }
    if let Some(section) = f.partitions.get(IMPLICIT_DEFAULT_PARTITION) {
        // Two partitions called "default" would be indistinguishable in /config, metrics
        // and logs.
        errors.add(
            section.span(),
            &dotted("partitions", IMPLICIT_DEFAULT_PARTITION),
            format!(
                "the name \"{IMPLICIT_DEFAULT_PARTITION}\" is reserved for the partition made from default_backend = \"{value}\"; rename this partition, or set default_backend = \"{IMPLICIT_DEFAULT_PARTITION}\" to send requests without a user id to it"
            ),
        );
    }
    // The address may be a server of a partition too: it is one backend, spoken to the
    // same way (TLS included) whichever partition a request came through.
    let tls = partitions
        .iter()
        .find(|p| p.write.contains(&a) || p.read.contains(&a))
        .and_then(|p| p.tls.clone());
    partitions.push(PartitionSpec {
        name: IMPLICIT_DEFAULT_PARTITION.into(),
        write: vec![a],
        read: Vec::new(),
        policy: Policy::RoundRobin,
        is_hashed: false,
        mirror: None,
        tls,
    });
    DefaultRoute::Partition(partitions.len() - 1)
}

/// `[users]`: user id → index of a partition that takes hashed users. Ids must be ones a
/// request could carry: not empty, at most `max_user_id_bytes` long.
fn users_from(
    f: &FileConfig,
    partitions: &[PartitionSpec],
    max_user_id_bytes: usize,
    errors: &mut Errors<'_>,
) -> Vec<(Box<[u8]>, usize)> {
    let mut users = Vec::with_capacity(f.users.len());
    for (user, part) in &f.users {
        let key = dotted("users", user);
        if user.is_empty() {
            errors.add(
                part.span(),
                &key,
                "an empty user id names nobody (requests without a user id go to default_backend)"
                    .into(),
            );
            continue;
        }
        if user == "default_backend" {
            // Written at the end of the seed's file, after `[users]`, the top-level key
            // lands in the table; taken as a user, it would quietly leave requests
            // without a user id refused.
            errors.add(
                part.span(),
                &key,
                "default_backend is a top-level key: here, after [users], it would name a \
                 user; move it above the first [table]"
                    .into(),
            );
            continue;
        }
        if user.len() > max_user_id_bytes {
            errors.add(
                part.span(),
                &key,
                format!(
                    "user id is {} bytes, longer than limits.max_user_id_bytes = {max_user_id_bytes}: no request could carry it",
                    user.len()
                ),
            );
            continue;
        }
        match partitions
            .iter()
            .position(|p| p.is_hashed && p.name == *part.get_ref())
        {
            Some(i) => users.push((user.as_bytes().to_vec().into_boxed_slice(), i)),
            None if partitions
                .iter()
                .filter_map(|p| p.mirror)
                .any(|m| partitions[m].name == *part.get_ref()) =>
            {
                errors.add(
                    part.span(),
                    &key,
                    format!(
                        "partition \"{}\" is a mirror's shadow: it takes no users",
                        part.get_ref()
                    ),
                )
            }
            None => errors.add(
                part.span(),
                &key,
                format!("unknown partition \"{}\"", part.get_ref()),
            ),
        }
    }
    users
}

/// Path prefixes: each must start with `/`.
fn prefixes_from(list: &[Spanned<String>], key: &str, errors: &mut Errors<'_>) -> Vec<Box<[u8]>> {
    list.iter()
        .map(|p| {
            if !p.get_ref().starts_with('/') {
                errors.add(
                    p.span(),
                    key,
                    format!("\"{}\" must start with /", p.get_ref()),
                );
            }
            p.get_ref().as_bytes().to_vec().into_boxed_slice()
        })
        .collect()
}

fn extract_rules_from(f: &FileConfig, errors: &mut Errors<'_>) -> ExtractRules {
    let headers = names_from(&f.extract.headers, "extract.headers", true, errors);
    if let Some(extra) = f.extract.headers.get(MAX_REFUSED_TRAILER_NAMES) {
        errors.add(
            extra.span(),
            "extract.headers",
            format!("at most {MAX_REFUSED_TRAILER_NAMES} user id header names"),
        );
    }
    for n in f
        .extract
        .json_keys
        .iter()
        .filter(|n| !n.get_ref().is_ascii())
    {
        // Go's encoding/json matches keys to fields in any case, by Unicode folding; the
        // scanner folds the case of ASCII keys only.
        errors.add(
            n.span(),
            "extract.json_keys",
            format!("\"{}\" is not ASCII", n.get_ref()),
        );
    }
    ExtractRules {
        refused_trailers: TrailerNames::new(&headers),
        headers,
        query_keys: names_from(&f.extract.query, "extract.query", false, errors),
        json_keys: JsonKeys::new(names_from(
            &f.extract.json_keys,
            "extract.json_keys",
            false,
            errors,
        )),
        max_user_id_bytes: errors.range(
            &f.limits.max_user_id_bytes,
            "limits.max_user_id_bytes",
            1,
            4096,
        ),
    }
}

/// Field, parameter or key names: 1–64 bytes, and token characters for header names.
fn names_from(
    list: &[Spanned<String>],
    key: &str,
    is_header: bool,
    errors: &mut Errors<'_>,
) -> Vec<Box<[u8]>> {
    list.iter()
        .map(|n| {
            let s = n.get_ref();
            let valid = !s.is_empty()
                && s.len() <= 64
                && (!is_header || s.bytes().all(crate::http::field::is_tchar));
            if !valid {
                errors.add(
                    n.span(),
                    key,
                    format!(
                        "\"{s}\" is not a valid name (1-64 bytes{})",
                        if is_header { ", token characters" } else { "" }
                    ),
                );
            }
            s.as_bytes().to_vec().into_boxed_slice()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// `reject_without_user` makes `default_backend` unused, not unchecked: a misspelt
    /// partition or a bad address is still an invalid file (and would start routing the
    /// day the flag is turned off).
    #[test]
    fn default_backend_is_checked_when_requests_without_user_are_refused() {
        for value in ["zone_9", "127.0.0.1:99999"] {
            let text = format!(
                "reject_without_user = true\ndefault_backend = \"{value}\"\n[partitions.z]\nservers = [\"127.0.0.1:1\"]\n"
            );
            assert!(
                Config::parse(&text, Path::new("t.toml")).is_err(),
                "{value}"
            );
        }
        let ok = "reject_without_user = true\ndefault_backend = \"z\"\n[partitions.z]\nservers = [\"127.0.0.1:1\"]\n";
        assert!(Config::parse(ok, Path::new("t.toml")).is_ok());
    }
}
