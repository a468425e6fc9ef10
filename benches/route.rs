//! Stage 3 of the data path: class → partition → server, and the whole routing decision.
//!
//! What is measured (ns per request, warm, one thread):
//!
//! - `table/*`, on the seed's table (2 partitions, 4 explicit users) and on a large one
//!   (8 partitions, 10,000 explicit users): [`RoutingTable::classify`] by prefix and by
//!   method; [`RoutingTable::partition_for`] with an explicit user (`ahash` map hit), a
//!   hashed user (map miss + rendezvous hash) and no user (default route);
//!   [`WorkerTable::pick_server`] (round-robin over health atomics).
//! - `hash/*`: the consistent hash alone, [`user_hash`] + [`rendezvous_pick`] over 2, 8
//!   and 32 partitions (its cost grows with the partition count; a ring with binary
//!   search would not, but would move more users on a change: see `route::partition`).
//! - `decision/*`: everything ringgate does to a request before it touches an upstream,
//!   as the exchange does it: scan + parse the head, user id from headers → query →
//!   JSON body, classify, partition, pick a server. `command_load_200B_json` is the
//!   budget case (head + 200-byte JSON body, user id only in the body; goal ≤ 500 ns);
//!   the others are an SDK-style Command (11 header fields + the same body) and the two
//!   Query forms `ringgate-load` sends. `command_load_200B_json_simd_json_tape` is the
//!   goal case with the body scanned as ringgate did before its single-pass scanner
//!   (`fixtures::tape`: a full `simd-json` tape), the "before" in the same run.
//!   `+head_rewrite` adds writing the head for the upstream (hop-by-hop removal,
//!   `X-Forwarded-For`, `X-Forwarded-Proto`), the next step on the data path.
//!   Against what: the sum of the stage benches (`parse`, `extract`, `table/*`); a
//!   decision much larger than that sum would point at glue cost.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::config::Config;
use ringgate::http::head::{write_request_head, FORWARDED_PROTO_HTTP};
use ringgate::http::parse::{parse_request, BodyFraming, Method, RequestHead};
use ringgate::http::scan::HeadScanner;
use ringgate::route::extract::{user_id_from_headers, user_id_from_query, JsonScanner};
use ringgate::route::partition::{partition_seed, rendezvous_pick, user_hash};
use ringgate::route::router::{Class, RoutingTable, WorkerTable};
use ringgate::upstream::backend::BackendRegistry;

mod fixtures;

use fixtures::tape::TapeScanner;

const SEED_CONFIG: &str = r#"
default_backend = "127.0.0.1:3001"
[partitions.zone_1]
servers = ["127.0.0.1:3001", "127.0.0.1:3002"]
[partitions.zone_2]
write = ["127.0.0.1:3003"]
read  = ["127.0.0.1:3013", "127.0.0.1:3014"]
[users]
alice = "zone_1"
bob = "zone_2"
charlie = "zone_1"
david = "zone_2"
"#;

/// 8 partitions of 2 servers, users u1..=u10000 placed explicitly.
fn large_config() -> String {
    let mut s = String::from("default_backend = \"zone_1\"\n");
    for p in 1..=8 {
        s.push_str(&format!(
            "[partitions.zone_{p}]\nservers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            4000 + 2 * p,
            4001 + 2 * p
        ));
    }
    s.push_str("[users]\n");
    for u in 1..=10_000 {
        s.push_str(&format!("u{u} = \"zone_{}\"\n", 1 + u % 8));
    }
    s
}

fn worker_table(text: &str) -> WorkerTable {
    let config = Config::parse(text, Path::new("bench.toml")).expect("bench config is valid");
    let table = RoutingTable::build(&config, &mut BackendRegistry::new(), 1);
    WorkerTable::new(Arc::new(table))
}

/// Which JSON body scan a decision uses.
#[derive(Clone, Copy)]
enum BodyScan {
    /// ringgate's [`JsonScanner`].
    Scanner,
    /// The `simd-json` tape scan it replaced (`fixtures::tape`).
    SimdJsonTape,
}

/// Per-connection state the decision reuses, as `runtime::conn` keeps it.
struct ConnState {
    head: RequestHead,
    json: JsonScanner,
    tape: TapeScanner,
    user: Vec<u8>,
    out: Vec<u8>,
}

impl ConnState {
    fn new() -> Self {
        Self {
            head: RequestHead::default(),
            json: JsonScanner::new(),
            tape: TapeScanner::new(),
            user: Vec::with_capacity(64),
            out: Vec::with_capacity(1024),
        }
    }
}

/// The routing decision for the request at the start of `buf` (head + complete body).
/// Returns (class, partition, backend).
fn decide(buf: &[u8], wt: &WorkerTable, c: &mut ConnState, json: BodyScan) -> (Class, u16, u16) {
    let table = &*wt.table;
    let s = &table.settings;
    let len = HeadScanner::new()
        .scan(buf, s.max_head_bytes)
        .expect("valid head")
        .expect("complete head");
    parse_request(buf, len, s.max_headers, &mut c.head).expect("parses");
    let rules = &table.extract;
    let mut found = user_id_from_headers(buf, &c.head, rules, &mut c.user).expect("ok");
    if !found {
        if let Some(q) = c.head.query {
            found = user_id_from_query(q.get(buf), rules, &mut c.user).expect("ok");
        }
    }
    if !found && c.head.body_may_be_json {
        if let BodyFraming::Length(n) = c.head.framing() {
            let body = &buf[len..len + n as usize];
            found = match json {
                BodyScan::Scanner => c.json.scan(body, rules, &mut c.user),
                BodyScan::SimdJsonTape => c.tape.scan(body, rules, &mut c.user),
            }
            .expect("ok");
        }
    }
    let user = if found { Some(&c.user[..]) } else { None };
    let class = table.classify(c.head.method(), c.head.path.get(buf));
    let partition = table.partition_for(user).expect("routable");
    let (backend, ..) = wt.pick_server(partition, class, 0).expect("a server is up");
    (class, partition, backend)
}

fn bench_table(c: &mut Criterion) {
    let seed = worker_table(SEED_CONFIG);
    let large = worker_table(&large_config());
    let mut g = c.benchmark_group("table");
    let t = &seed.table;
    g.bench_function("classify/command_prefix", |b| {
        b.iter(|| t.classify(black_box(Method::Post), black_box(b"/api/spot/v2/order")))
    });
    g.bench_function("classify/query_prefix", |b| {
        b.iter(|| t.classify(black_box(Method::Get), black_box(b"/api/spot/user/data")))
    });
    g.bench_function("classify/by_method", |b| {
        b.iter(|| t.classify(black_box(Method::Get), black_box(b"/other/path")))
    });
    for (name, wt) in [("seed", &seed), ("large", &large)] {
        let t = &wt.table;
        let explicit: &[u8] = if name == "seed" { b"alice" } else { b"u123" };
        g.bench_function(format!("partition_for/{name}/explicit_user"), |b| {
            b.iter(|| t.partition_for(Some(black_box(explicit))))
        });
        g.bench_function(format!("partition_for/{name}/hashed_user"), |b| {
            b.iter(|| t.partition_for(Some(black_box(b"unlisted-user-77"))))
        });
        g.bench_function(format!("partition_for/{name}/no_user"), |b| {
            b.iter(|| t.partition_for(black_box(None)))
        });
    }
    g.bench_function("pick_server/round_robin_2", |b| {
        b.iter(|| seed.pick_server(black_box(0), black_box(Class::Query), 0))
    });
    g.finish();

    let mut g = c.benchmark_group("hash");
    for n in [2usize, 8, 32] {
        let seeds: Vec<u64> = (1..=n)
            .map(|i| partition_seed(&format!("zone_{i}")))
            .collect();
        g.bench_function(format!("user_hash+rendezvous/{n}_partitions"), |b| {
            b.iter(|| rendezvous_pick(user_hash(black_box(b"u123")), black_box(&seeds)))
        });
    }
    g.finish();
}

fn bench_decision(c: &mut Criterion) {
    let wt = worker_table(SEED_CONFIG);
    let body = fixtures::command_body_200();
    let load_command = fixtures::request(&fixtures::load_command_head(body.len()), &body);
    let cases: [(&str, Vec<u8>, Class, BodyScan); 5] = [
        (
            "command_load_200B_json",
            load_command.clone(),
            Class::Command,
            BodyScan::Scanner,
        ),
        (
            "command_load_200B_json_simd_json_tape",
            load_command,
            Class::Command,
            BodyScan::SimdJsonTape,
        ),
        (
            "command_sdk_200B_json",
            fixtures::request(&fixtures::realistic_command_head(body.len()), &body),
            Class::Command,
            BodyScan::Scanner,
        ),
        (
            "query_header",
            fixtures::QUERY_HEADER_HEAD.to_vec(),
            Class::Query,
            BodyScan::Scanner,
        ),
        (
            "query_param",
            fixtures::QUERY_PARAM_HEAD.to_vec(),
            Class::Query,
            BodyScan::Scanner,
        ),
    ];
    let mut state = ConnState::new();
    let expected_partition = wt.table.partition_for(Some(b"u123")).unwrap();
    let mut g = c.benchmark_group("decision");
    for (name, buf, class, json) in &cases {
        let (got_class, got_partition, _) = decide(buf, &wt, &mut state, *json);
        assert_eq!((got_class, got_partition), (*class, expected_partition));
        assert_eq!(state.user, b"u123");
        g.bench_function(*name, |b| {
            b.iter(|| decide(black_box(buf), &wt, &mut state, *json))
        });
    }
    let (_, buf, ..) = &cases[0];
    let xff = b"X-Forwarded-For: 127.0.0.1\r\n";
    g.bench_function("command_load_200B_json+head_rewrite", |b| {
        b.iter(|| {
            let routed = decide(black_box(buf), &wt, &mut state, BodyScan::Scanner);
            write_request_head(
                buf,
                &state.head,
                xff,
                FORWARDED_PROTO_HTTP,
                false,
                &mut state.out,
            );
            (routed, state.out.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_table, bench_decision
}
criterion_main!(benches);
