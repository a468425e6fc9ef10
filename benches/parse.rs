//! Stage 1 of the data path: finding the end of a request head and parsing it.
//!
//! What is measured (ns per head, warm: the `RequestHead` and its header `Vec` are reused
//! as a connection reuses them):
//!
//! - `head/*`: [`HeadScanner::scan`] + [`parse_request`] of a complete head that arrived
//!   in one read: the 75-byte Query head `ringgate-load` sends, and an 11-field, ~400-byte
//!   Command head of an exchange SDK. `scan_only` and `parse_only` split the SDK case.
//! - against what: `httparse_only` is bare `httparse::Request::parse` of the same bytes,
//!   the floor under ringgate's framing rules (anti-smuggling checks, offsets, hop-by-hop
//!   marking); the gap between it and `parse_only` is what those rules cost.
//! - `split/*`: the SDK head arriving in 64-byte reads (7 reads) and one byte per read
//!   (worst case, slowloris-like). `incremental` is ringgate's *check, then parse*: the
//!   scanner resumes where it stopped, then the head is parsed once. `httparse_rescan` is
//!   the naive alternative: re-run `httparse` from byte 0 after every read until it says
//!   `Complete`. Both walk prefixes of one buffer, so neither pays for copying.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringgate::http::parse::{parse_request, RequestHead};
use ringgate::http::scan::HeadScanner;

mod fixtures;

const MAX_HEAD_BYTES: usize = 16_384;
const MAX_HEADERS: usize = 100;

fn scan_and_parse(buf: &[u8], head: &mut RequestHead) -> usize {
    let mut scanner = HeadScanner::new();
    let len = scanner
        .scan(buf, MAX_HEAD_BYTES)
        .expect("valid head")
        .expect("complete head");
    parse_request(buf, len, MAX_HEADERS, head).expect("parses");
    len
}

/// Bare httparse over `buf`; `Some(len)` when complete.
fn httparse_len(buf: &[u8]) -> Option<usize> {
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut storage) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!("bench head must be valid: {e}"),
    }
}

fn bench_complete_heads(c: &mut Criterion) {
    let sdk = fixtures::realistic_command_head(200);
    let mut head = RequestHead::default();
    let mut g = c.benchmark_group("head");
    for (name, bytes) in [
        ("query_header_75B", fixtures::QUERY_HEADER_HEAD),
        ("sdk_command_400B", &sdk[..]),
    ] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("scan_parse/{name}"), |b| {
            b.iter(|| scan_and_parse(black_box(bytes), &mut head))
        });
    }
    g.throughput(Throughput::Bytes(sdk.len() as u64));
    g.bench_function("scan_only/sdk_command_400B", |b| {
        b.iter(|| {
            let mut scanner = HeadScanner::new();
            scanner.scan(black_box(&sdk), MAX_HEAD_BYTES)
        })
    });
    g.bench_function("parse_only/sdk_command_400B", |b| {
        b.iter(|| parse_request(black_box(&sdk), sdk.len(), MAX_HEADERS, &mut head))
    });
    g.bench_function("httparse_only/sdk_command_400B", |b| {
        b.iter(|| httparse_len(black_box(&sdk)))
    });
    g.finish();
}

fn bench_split_arrival(c: &mut Criterion) {
    let sdk = fixtures::realistic_command_head(200);
    let mut head = RequestHead::default();
    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(sdk.len() as u64));
    for (name, step) in [("64B_reads", 64usize), ("1B_reads", 1usize)] {
        let ends: Vec<usize> = (1..=sdk.len().div_ceil(step))
            .map(|k| (k * step).min(sdk.len()))
            .collect();
        assert_eq!(*ends.last().unwrap(), sdk.len());
        g.bench_function(format!("incremental/{name}"), |b| {
            b.iter(|| {
                let mut scanner = HeadScanner::new();
                for &end in &ends {
                    let arrived = black_box(&sdk[..end]);
                    if let Some(len) = scanner.scan(arrived, MAX_HEAD_BYTES).expect("valid") {
                        parse_request(arrived, len, MAX_HEADERS, &mut head).expect("parses");
                        return len;
                    }
                }
                unreachable!("head completes at the last read")
            })
        });
        g.bench_function(format!("httparse_rescan/{name}"), |b| {
            b.iter(|| {
                for &end in &ends {
                    if let Some(len) = httparse_len(black_box(&sdk[..end])) {
                        return len;
                    }
                }
                unreachable!("head completes at the last read")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_complete_heads, bench_split_arrival
}
criterion_main!(benches);
