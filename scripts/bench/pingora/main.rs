//! Pingora as the fourth reverse-proxy peer of scripts/bench.sh (BENCH_PINGORA=1).
//!
//! The script copies this file and `Cargo.toml` next to it into a cache directory outside
//! the repository (~/.cache/ringgate-bench/pingora) and builds it there with `nice -n 19`.
//!
//! Same job as the nginx and HAProxy peers: every request goes to the next backend in
//! round-robin order over Pingora's upstream connection pool (keep-alive on both sides),
//! `X-Forwarded-For` is added, nothing is logged, and the body is not read for routing
//! (ringgate routes every Command by its JSON body, so Pingora does strictly less work per
//! request). One service with one worker thread: `threads: 1` and `work_stealing: false`,
//! i.e. a single current-thread tokio runtime — the same thread-per-core shape as ringgate's
//! one worker (the script pins the whole process to the proxy CPU).
//!
//! Usage: pingora-peer LISTEN_ADDR PID_FILE BACKEND_ADDR...

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

/// Round-robin over fixed backends; no health checks (the peers run none either).
struct RoundRobinProxy {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for RoundRobinProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(self.backends[i], false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream_request.insert_header("X-Forwarded-For", client.ip().to_string())?;
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: pingora-peer LISTEN_ADDR PID_FILE BACKEND_ADDR...");
        std::process::exit(2);
    }
    let backends = args[2..]
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("backend {a}: {e}")))
        .collect();

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        pid_file: args[1].clone(),
        upgrade_sock: format!("{}.upgrade.sock", args[1]),
        // SIGTERM (the bench's stop) exits at once instead of draining for 5 minutes.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy = RoundRobinProxy {
        backends,
        next: AtomicUsize::new(0),
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&args[0]);
    server.add_service(service);
    println!("pingora-peer listening on {}", args[0]);
    server.run_forever();
}
