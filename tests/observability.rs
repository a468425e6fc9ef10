//! What operators see: failover and retry counters, the access log, readiness, request counters by class, the per-user tables' untracked counts, and the exposition format of `/metrics` (checked without promtool), over real sockets.

mod common;

use std::net::SocketAddr;

use common::backend::{Ending, Reply, ScriptedBackend};
use common::client::get;
use common::router::{dead_addr, Router};

fn partition_of(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [{}]\n{extra}",
        list.join(", ")
    )
}

const NO_HEALTH: &str = "[health]\nenabled = false\n[circuit]\nenabled = false\n";

/// Every request meets a dead first server and fails over to a live one: every one of
/// them is a failover, whether the live server's connection came from the pool or not.
#[test]
fn failover_to_a_pooled_connection_is_counted() {
    let live = ScriptedBackend::start(|_| Reply::ok("ok"));
    let r = Router::start(&partition_of(&[dead_addr(), live.addr], NO_HEALTH));
    for _ in 0..3 {
        assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 200);
    }
    assert_eq!(live.request_count(), 3);
    assert_eq!(
        live.accepted(),
        1,
        "the live server's connection was reused"
    );
    let m = r.metrics();
    assert_eq!(m.pool_reused, 2);
    assert_eq!(
        m.failovers, 3,
        "three connect failures answered by the next server"
    );
}

/// A Query whose first server closes without answering is re-sent to the other server:
/// a retry, not a failover (no connect failed).
#[test]
fn a_retry_after_an_upstream_close_is_not_a_failover() {
    let closing = ScriptedBackend::start(|_| Reply::close());
    let live = ScriptedBackend::start(|_| {
        Reply::bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .then(Ending::Close)
    });
    let r = Router::start(&partition_of(&[closing.addr, live.addr], NO_HEALTH));
    for _ in 0..3 {
        assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 200);
    }
    assert_eq!(closing.request_count(), 3);
    let m = r.metrics();
    assert_eq!(m.retries, 3);
    assert_eq!(m.failovers, 0, "no connect failed: nothing failed over");
}

/// A user id is request-controlled: in the text access log it must not be able to add
/// `key=value` fields of its own (a space ends the field).
#[test]
fn text_access_log_user_id_cannot_forge_fields() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let path = std::env::temp_dir().join(format!("ringgate-obs-al-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut r = Router::start(&format!(
        "{}[log]\naccess_log = \"{}\"\n",
        partition_of(&[b.addr], NO_HEALTH),
        path.display()
    ));
    let resp = get(
        r.addr,
        "/q",
        "X-User-Id: mallory status=200 partition=zone_9 duration_us=1\r\n",
    );
    assert_eq!(resp.status, 200);
    // A request line with spaces in its target is refused (400) but still logged.
    let resp = common::client::request(
        r.addr,
        b"GET /x user=alice class=command status=200 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    // Nor can a method or target that begins like a field (both refused, and logged).
    for raw in [
        &b"status=200 /x HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET partition=zone_9 HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        assert_eq!(common::client::request(r.addr, raw).status, 400);
    }
    r.drain();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for line in lines {
        assert_each_field_once(line);
    }
}

/// A shadow partition (a mirror target) takes no client traffic: a dead shadow must not
/// take the instance out of its load balancer through `/ready` (the README: nothing the
/// mirror does reaches the client).
#[test]
fn a_dead_shadow_partition_does_not_make_the_router_unready() {
    let live = ScriptedBackend::start(|_| Reply::ok("ok"));
    let dead = dead_addr();
    let p = common::router::RouterProcess::start(
        "obs-ready-shadow",
        &format!(
            "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\nmirror = \"shadow\"\n[partitions.shadow]\nservers = [\"{dead}\"]\n[health]\ninterval_ms = 50\ntimeout_ms = 50\nfall = 1\nrise = 1\n",
            live.addr
        ),
        1,
        true,
        &[],
    );
    // The health checker has seen the shadow's server down.
    common::wait_until(
        "the shadow server is marked down",
        std::time::Duration::from_secs(10),
        || p.admin_get("/config").text().contains("\"up\": false"),
    );
    assert_eq!(
        get(p.addr, "/api/spot/user/data", "X-User-Id: u\r\n").status,
        200
    );
    let ready = p.admin_get("/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// A request refused before it was classified (a malformed head, a head timeout, a client
/// gone mid-head) is neither a Command nor a Query: counting it as a Command puts
/// internet noise into the Commands' error rate.
#[test]
fn unclassified_requests_are_not_counted_as_commands() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let p = common::router::RouterProcess::start(
        "obs-unclassified",
        &partition_of(&[b.addr], NO_HEALTH),
        1,
        true,
        &[],
    );
    let resp = common::client::request(p.addr, b"GET /x y HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status, 400);
    let metrics = p.admin_get("/metrics").text();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ringgate_requests_total{"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        !lines[0].contains("class=\"command\""),
        "a malformed request counted as a Command: {}",
        lines[0]
    );
}

/// The README: when the rate table has no slot for a user, "the request is admitted and
/// counted as untracked rather than refused". An operator must be able to see that count
/// (it means rate limits are not enforced for those requests) on `/metrics`.
#[test]
fn untracked_rate_limit_requests_are_visible_on_metrics() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let p = common::router::RouterProcess::start(
        "obs-untracked",
        &partition_of(
            &[b.addr],
            &format!(
                "{NO_HEALTH}[rate_limit]\nper_user_queries = 1\nburst = 1.0\nmax_users = 64\n"
            ),
        ),
        1,
        true,
        &[],
    );
    // 400 distinct users, each sending at its limit: far more active users than the
    // table's 128 slots.
    let mut c = common::client::Client::connect(p.addr);
    for i in 0..400 {
        let resp = c.roundtrip(
            format!("GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: user-{i}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(resp.status, 200);
    }
    let metrics = p.admin_get("/metrics").text();
    let untracked: u64 = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("untracked"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        untracked > 0,
        "no untracked count on /metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("rate_limit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A backend whose answer to `/gN` waits until the gate is opened to at least `N` (the
/// client has done its part by then), and a router in front of it, as a process, with
/// `/metrics` and a text access log.
struct Gated {
    gate: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    backend: ScriptedBackend,
    router: common::router::RouterProcess,
    log: std::path::PathBuf,
}

impl Gated {
    fn start(name: &str, answer: impl Fn() -> Reply + Send + Sync + 'static) -> Gated {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = std::sync::Arc::new(AtomicUsize::new(0));
        let open = gate.clone();
        let backend = ScriptedBackend::start(move |req| {
            let n: usize = req.path().trim_start_matches("/g").parse().unwrap();
            common::wait_until(
                "the test opens the backend's gate",
                std::time::Duration::from_secs(5),
                || open.load(Ordering::SeqCst) >= n,
            );
            answer()
        });
        let log = std::env::temp_dir().join(format!("ringgate-{name}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let router = common::router::RouterProcess::start(
            name,
            &format!(
                "{}[log]\naccess_log = \"{}\"\n",
                partition_of(&[backend.addr], NO_HEALTH),
                log.display()
            ),
            1,
            true,
            &[],
        );
        Gated {
            gate,
            backend,
            router,
            log,
        }
    }

    fn open(&self, n: usize) {
        self.gate.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn log_lines(&self, n: usize) -> Vec<String> {
        log_lines(&self.log, n)
    }

    fn counted(&self) -> (std::collections::BTreeMap<String, u64>, u64) {
        counted(&self.router)
    }
}

/// The access log's lines, once there are `n`.
fn log_lines(log: &std::path::Path, n: usize) -> Vec<String> {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    common::wait_until(
        &format!("the access log has {n} lines"),
        std::time::Duration::from_secs(5),
        || read().lines().count() >= n,
    );
    read().lines().map(str::to_string).collect()
}

/// `ringgate_requests_total` by status label, and `ringgate_errors_total{kind="client_gone"}`.
fn counted(
    router: &common::router::RouterProcess,
) -> (std::collections::BTreeMap<String, u64>, u64) {
    let text = router.admin_get("/metrics").text();
    let mut by_status = std::collections::BTreeMap::new();
    let mut gone = 0;
    for line in text.lines() {
        let value = || line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
        if line.starts_with("ringgate_requests_total{") {
            let status = line.split("status=\"").nth(1).unwrap();
            let status = status.split('"').next().unwrap().to_string();
            *by_status.entry(status).or_insert(0) += value();
        } else if line.starts_with("ringgate_errors_total{kind=\"client_gone\"}") {
            gone = value();
        }
    }
    (by_status, gone)
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn counts(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A client that goes away (reset) while a slow backend works on its request never gets
/// the backend's 200: it is counted `status="none"` and logged 499 (nginx's "client
/// closed request"), not as a success.
#[test]
fn a_client_gone_before_its_answer_is_not_counted_under_the_answers_status() {
    gone_while_answered(
        "obs-gone-wait",
        || Reply::ok("ok"),
        b"GET /g1 HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n",
    );
}

/// Send `request` to a gated backend answering with `reply`, reset the client while the
/// backend holds it, then let the answer go: counted `none` and logged 499.
fn gone_while_answered(name: &str, reply: fn() -> Reply, request: &[u8]) {
    let g = Gated::start(name, reply);
    let mut c = common::client::Client::connect(g.router.addr);
    c.send(request);
    g.backend.wait_for_requests(1);
    c.reset();
    g.open(1);
    let lines = g.log_lines(1);
    assert!(lines[0].contains(" status=499 "), "{}", lines[0]);
    assert_eq!(g.counted(), (counts(&[("none", 1)]), 1));
}

/// The same for a `101 Switching Protocols` the client was gone for: no switch happened.
#[test]
fn a_switch_whose_client_is_gone_is_not_counted_as_101() {
    gone_while_answered(
        "obs-gone-101",
        || {
            Reply::bytes(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            )
            .then(common::backend::Ending::Echo)
        },
        b"GET /g1 HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
}

/// Answers that reached their clients keep their status: an ordinary exchange, a client
/// that resets (or closes) once it has read the whole answer, and one that half-closed
/// before the answer came (HTTP/1.1 allows it; it still reads).
#[test]
fn answered_clients_that_leave_afterwards_keep_their_status() {
    let g = Gated::start("obs-gone-after", || Reply::ok("ok"));
    g.open(3);
    let get = |n: usize| format!("GET /g{n} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    let mut c = common::client::Client::connect(g.router.addr);
    assert_eq!(c.roundtrip(get(1).as_bytes()).status, 200);
    drop(c);
    let mut c = common::client::Client::connect(g.router.addr);
    assert_eq!(c.roundtrip(get(2).as_bytes()).status, 200);
    c.reset();
    let mut c = common::client::Client::connect(g.router.addr);
    c.send(get(4).as_bytes());
    c.finish_sending();
    g.backend.wait_for_requests(3);
    g.open(4);
    assert_eq!(c.read_response().status, 200);
    let lines = g.log_lines(3);
    for line in &lines {
        assert!(line.contains(" status=200 "), "{line}");
    }
    assert_eq!(g.counted(), (counts(&[("2xx", 3)]), 0));
}

/// A backend that holds its answer to `/holdN` until its gate is opened to at least `N`,
/// reading its connection meanwhile: an end the router gives it before the answer (EOF or
/// a reset) is counted, and that request is never answered. Other paths are answered at
/// once. In front of it, a router process with one worker, `/metrics`, a text access log,
/// and an in-flight bound of 2 (Queries shed from 1 in flight, Commands from 2).
struct Held {
    state: std::sync::Arc<HeldState>,
    router: common::router::RouterProcess,
    log: std::path::PathBuf,
    /// Whether the router watches a waiting client for a reset: on io_uring with
    /// multishot receives (the suite's default pass), not on epoll nor with multishot off.
    watched: bool,
}

#[derive(Default)]
struct HeldState {
    gate: std::sync::atomic::AtomicUsize,
    /// `/hold` requests received.
    held: std::sync::atomic::AtomicUsize,
    /// Connections the router ended while the backend held their answer.
    ended_unanswered: std::sync::atomic::AtomicUsize,
}

const HELD_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

impl Held {
    fn start(name: &str) -> Held {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(HeldState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let st = st.clone();
                std::thread::spawn(move || serve_held(stream, &st));
            }
        });
        let log = std::env::temp_dir().join(format!("ringgate-{name}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let multishot_off = std::env::var("RINGGATE_TEST_MULTISHOT").as_deref() == Ok("0");
        let args: &[&str] = if multishot_off {
            &["--multishot", "false"]
        } else {
            &[]
        };
        let router = common::router::RouterProcess::start(
            name,
            &format!(
                "{}[overload]\nmax_in_flight_per_worker = 2\nquery_shed_ratio = 0.5\n[log]\naccess_log = \"{}\"\n",
                partition_of(&[addr], NO_HEALTH),
                log.display()
            ),
            1,
            true,
            args,
        );
        Held {
            state,
            router,
            log,
            watched: common::router::test_driver() != "epoll" && !multishot_off,
        }
    }

    fn open(&self, n: usize) {
        self.state
            .gate
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn wait_held(&self, n: usize) {
        common::wait_until(
            &format!("the backend holds {n} requests"),
            std::time::Duration::from_secs(5),
            || self.state.held.load(std::sync::atomic::Ordering::SeqCst) >= n,
        );
    }

    fn ended_unanswered(&self) -> usize {
        self.state
            .ended_unanswered
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Whatever is still held is let go.
        self.open(usize::MAX);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn serve_held(mut s: std::net::TcpStream, st: &HeldState) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = common::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or_default();
        if let Some(n) = path.strip_prefix("/hold") {
            let n: usize = n.parse().unwrap();
            st.held.fetch_add(1, SeqCst);
            s.set_read_timeout(Some(std::time::Duration::from_millis(5)))
                .unwrap();
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while st.gate.load(SeqCst) < n && std::time::Instant::now() < until {
                match s.read(&mut tmp) {
                    Ok(0) => {
                        st.ended_unanswered.fetch_add(1, SeqCst);
                        return;
                    }
                    Ok(k) => buf.extend_from_slice(&tmp[..k]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        st.ended_unanswered.fetch_add(1, SeqCst);
                        return;
                    }
                }
            }
            s.set_read_timeout(None).unwrap();
        }
        if s.write_all(HELD_ANSWER).is_err() {
            return;
        }
    }
}

fn held_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n")
}

/// A client that resets while its Query waits for the upstream's answer: on io_uring with
/// multishot receives the wait ends at once — the upstream connection is closed (the
/// backend sees its end before it answered), the in-flight place is free (a next Query is
/// admitted where Queries are shed from 1 in flight), and the request is counted
/// `status="none"`/`client_gone` and logged 499. Elsewhere the reset is noticed only when
/// the answer is written: the place is held until then (the next Query is shed).
#[test]
fn a_query_whose_client_resets_while_its_answer_is_awaited_ends_at_once() {
    let h = Held::start("obs-abort-query");
    let mut c = common::client::Client::connect(h.router.addr);
    c.send(held_get("/hold1").as_bytes());
    h.wait_held(1);
    c.reset();
    if h.watched {
        common::wait_until(
            "the router closes the upstream connection of the Query whose client reset",
            std::time::Duration::from_secs(5),
            || h.ended_unanswered() == 1,
        );
        assert_eq!(get(h.router.addr, "/now", "X-User-Id: u\r\n").status, 200);
        let lines = log_lines(&h.log, 2);
        assert!(lines[0].contains(" status=499 "), "{}", lines[0]);
        assert!(lines[1].contains(" status=200 "), "{}", lines[1]);
        assert_eq!(counted(&h.router), (counts(&[("2xx", 1), ("none", 1)]), 1));
    } else {
        assert_eq!(get(h.router.addr, "/now", "X-User-Id: u\r\n").status, 503);
        h.open(1);
        let lines = log_lines(&h.log, 2);
        assert!(lines[0].contains(" status=503 "), "{}", lines[0]);
        assert!(lines[1].contains(" status=499 "), "{}", lines[1]);
        assert_eq!(counted(&h.router), (counts(&[("5xx", 1), ("none", 1)]), 1));
        assert_eq!(h.ended_unanswered(), 0);
    }
}

/// A client that only half-closes (FIN) after its Query, or sends a pipelined request
/// while the first one's answer is awaited, is no client gone: both wait and are answered.
#[test]
fn a_query_whose_client_half_closes_or_pipelines_while_waiting_is_answered() {
    let h = Held::start("obs-abort-fin");
    let still_held = std::time::Duration::from_millis(200);
    let mut c = common::client::Client::connect(h.router.addr);
    c.send(held_get("/hold1").as_bytes());
    c.finish_sending();
    h.wait_held(1);
    common::assert_holds_for("the upstream connection stays open", still_held, || {
        h.ended_unanswered() == 0
    });
    h.open(1);
    assert_eq!(c.read_response().status, 200);
    let mut p = common::client::Client::connect(h.router.addr);
    p.send(held_get("/hold2").as_bytes());
    h.wait_held(2);
    p.send(held_get("/now").as_bytes());
    common::assert_holds_for("the upstream connection stays open", still_held, || {
        h.ended_unanswered() == 0
    });
    h.open(2);
    assert_eq!(p.read_response().status, 200);
    assert_eq!(p.read_response().status, 200);
    assert_eq!(counted(&h.router), (counts(&[("2xx", 3)]), 0));
}

/// A Command whose client resets while its answer is awaited keeps waiting for it (its
/// bytes reached the server, which may execute it whatever the client does): its place
/// stays taken (a Query is shed meanwhile) and its upstream connection open until the
/// answer, which goes to nobody: counted `status="none"`/`client_gone`, logged 499.
#[test]
fn a_command_whose_client_resets_while_its_answer_is_awaited_waits_for_it() {
    let h = Held::start("obs-abort-command");
    let mut c = common::client::Client::connect(h.router.addr);
    c.send(b"POST /hold1 HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: 0\r\n\r\n");
    h.wait_held(1);
    c.reset();
    assert_eq!(get(h.router.addr, "/now", "X-User-Id: u\r\n").status, 503);
    common::assert_holds_for(
        "the Command's upstream connection stays open",
        std::time::Duration::from_millis(200),
        || h.ended_unanswered() == 0,
    );
    h.open(1);
    let lines = log_lines(&h.log, 2);
    assert!(lines[0].contains(" status=503 "), "{}", lines[0]);
    assert!(lines[1].contains(" status=499 "), "{}", lines[1]);
    assert_eq!(counted(&h.router), (counts(&[("5xx", 1), ("none", 1)]), 1));
}

/// `/metrics` shows each backend's open upstream connections and the connections not
/// opened at `pool.max_connections_per_backend`, in a format promtool accepts.
#[test]
fn open_upstream_connections_and_the_connection_limit_are_on_metrics() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let extra = format!("{NO_HEALTH}[pool]\nmax_connections_per_backend = 1\n");
    let p = common::router::RouterProcess::start(
        "obs-max-conns",
        &partition_of(&[b.addr], &extra),
        1,
        true,
        &[],
    );
    assert_eq!(
        common::client::get(p.addr, "/x", "X-User-Id: u\r\n").status,
        200
    );
    let metrics = p.admin_get("/metrics").text();
    for line in [
        format!(
            "ringgate_upstream_connections_open{{backend=\"{}\"}} 1",
            b.addr
        ),
        format!(
            "ringgate_upstream_connection_limit_total{{backend=\"{}\"}} 0",
            b.addr
        ),
        "# TYPE ringgate_upstream_connections_open gauge".to_string(),
        "# TYPE ringgate_upstream_connection_limit_total counter".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    check_exposition(&metrics);
    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("no promtool here: format not checked");
        return;
    };
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One sample of a scrape: its family's type, and its value.
#[derive(Clone, Debug)]
struct Sample {
    kind: String,
    value: f64,
}

/// Check `text` as Prometheus text exposition 0.0.4 the way `promtool check metrics` would
/// (promtool is not installed everywhere the suite runs): every sample follows its
/// family's `# HELP` and `# TYPE`, a family's lines are together, names and label names
/// follow the grammar, label values use only the three escapes, no series twice,
/// counters end in `_total`, `le` / `quantile` only where they belong, and each
/// histogram's buckets rise to a `+Inf` equal to its `_count`, with a `_sum`. Returns the
/// samples by series (`name{labels}` as written).
fn check_exposition(text: &str) -> std::collections::BTreeMap<String, Sample> {
    use std::collections::{BTreeMap, BTreeSet};
    fn is_name(s: &str, colon: bool) -> bool {
        let mut b = s.bytes();
        let ok_first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
        matches!(b.next(), Some(c) if ok_first(c))
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':'))
    }
    // Parse `{a="x",b="y"}` (after the name); returns the labels (values unescaped) and
    // the rest of the line.
    fn labels(line: &str, s: &str) -> (Vec<(String, String)>, String) {
        let mut out = Vec::new();
        let Some(mut rest) = s.strip_prefix('{') else {
            return (out, s.to_string());
        };
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return (out, r.to_string());
            }
            let eq = rest
                .find('=')
                .unwrap_or_else(|| panic!("no '=' in {line:?}"));
            let name = &rest[..eq];
            assert!(is_name(name, false), "label name {name:?} in {line:?}");
            assert!(
                !name.starts_with("__"),
                "reserved label {name:?} in {line:?}"
            );
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in a label value: {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            out.push((name.to_string(), value));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            }
        }
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples: BTreeMap<String, Sample> = BTreeMap::new();
    let mut seen_series: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    // Histogram series by family and labels without `le`: buckets, sum, count.
    type Hist = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut hists: BTreeMap<(String, Vec<(String, String)>), Hist> = BTreeMap::new();
    let mut enter = |family: &str, current: &mut Option<String>, line: &str| {
        if current.as_deref() != Some(family) {
            if let Some(prev) = current.take() {
                done.insert(prev);
            }
            assert!(
                !done.contains(family),
                "family {family} appears in two places: {line:?}"
            );
            *current = Some(family.to_string());
        }
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the exposition");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name, true), "HELP of {name:?}");
            assert!(!help.trim().is_empty(), "no help text for {name}");
            let mut it = help.chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    assert!(
                        matches!(it.next(), Some('\\' | 'n')),
                        "bad escape in HELP: {line:?}"
                    );
                }
            }
            enter(name, &mut current, line);
            assert!(helps.insert(name.to_string()), "second HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_name(name, true), "TYPE of {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "type {kind:?}"
            );
            enter(name, &mut current, line);
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "second TYPE for {name}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            } else {
                assert!(!name.ends_with("_total"), "{kind} {name} ends in _total");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        assert!(is_name(name, true), "metric name {name:?}");
        let (mut labels, rest) = labels(line, &line[name_end..]);
        let value_text = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value_text = value_text.split(' ').next().unwrap();
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?} in {line:?}")),
        };
        // The family: the name itself, or a histogram's / summary's base name.
        let family = [
            name,
            name.strip_suffix("_bucket").unwrap_or(""),
            name.strip_suffix("_sum").unwrap_or(""),
            name.strip_suffix("_count").unwrap_or(""),
        ]
        .into_iter()
        .find(|f| {
            !f.is_empty()
                && match types.get(*f).map(String::as_str) {
                    Some("histogram") => true,
                    Some("summary") => *f == name || !name.ends_with("_bucket"),
                    Some(_) => *f == name,
                    None => false,
                }
        })
        .unwrap_or_else(|| panic!("sample before its family's TYPE: {line:?}"));
        assert!(helps.contains(family), "sample before its HELP: {line:?}");
        assert_eq!(
            current.as_deref(),
            Some(family),
            "sample away from its family: {line:?}"
        );
        let kind = types[family].clone();
        let has = |l: &str| labels.iter().any(|(n, _)| n == l);
        assert!(
            !has("le") || (kind == "histogram" && name.ends_with("_bucket")),
            "le outside a histogram's buckets: {line:?}"
        );
        assert!(
            !has("quantile") || (kind == "summary" && name == family),
            "quantile outside a summary: {line:?}"
        );
        if kind == "counter" || name.ends_with("_count") || name.ends_with("_bucket") {
            assert!(value >= 0.0 && value.fract() == 0.0, "count {line:?}");
        }
        labels.sort();
        assert!(
            seen_series.insert((name.to_string(), labels.clone())),
            "series twice: {line:?}"
        );
        if kind == "histogram" {
            let le = labels.iter().position(|(n, _)| n == "le");
            let le = le.map(|i| labels.remove(i).1);
            let h = hists.entry((family.to_string(), labels)).or_default();
            match (name.strip_prefix(family), le) {
                (Some("_bucket"), Some(le)) => {
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()
                            .unwrap_or_else(|_| panic!("le {le:?} in {line:?}"))
                    };
                    h.0.push((bound, value));
                }
                (Some("_sum"), None) => h.1 = Some(value),
                (Some("_count"), None) => h.2 = Some(value),
                _ => panic!("unexpected histogram sample {line:?}"),
            }
        }
        let kind = if name == family {
            kind
        } else {
            // A histogram's or summary's parts only ever grow, as counters do.
            "counter".to_string()
        };
        samples.insert(
            line[..line.len() - rest.len()].to_string(),
            Sample { kind, value },
        );
    }
    for ((family, labels), (buckets, sum, count)) in &hists {
        let at = format!("{family}{labels:?}");
        assert!(!buckets.is_empty(), "{at}: no buckets");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{at}: buckets not in increasing le order");
            assert!(
                w[0].1 <= w[1].1,
                "{at}: buckets not cumulative: {buckets:?}"
            );
        }
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{at}: no +Inf bucket");
        assert_eq!(Some(last.1), *count, "{at}: +Inf bucket is not _count");
        assert!(sum.is_some_and(|s| s >= 0.0), "{at}: no _sum");
    }
    samples
}

/// Counters (and histogram parts) of `after` are at least what they were in `before`, and
/// every `ringgate_requests_total` series of `before` is still there.
fn check_counters_did_not_go_down(
    before: &std::collections::BTreeMap<String, Sample>,
    after: &std::collections::BTreeMap<String, Sample>,
) {
    for (series, b) in before {
        if b.kind != "counter" {
            continue;
        }
        match after.get(series) {
            Some(a) => assert!(
                a.value >= b.value,
                "{series} went down: {} -> {}",
                b.value,
                a.value
            ),
            None => assert!(
                !series.starts_with("ringgate_requests_total"),
                "{series} ({}) vanished",
                b.value
            ),
        }
    }
}

/// `/metrics` is valid exposition text (names, escapes, families, histograms) with
/// partition names that need escaping, before and after a reload that renames a
/// partition and removes a server, and no counter goes down across it.
#[test]
fn metrics_exposition_is_valid_and_counters_survive_a_reload() {
    let b1 = ScriptedBackend::start(|_| Reply::ok("ok"));
    let b2 = ScriptedBackend::start(|_| Reply::ok("ok"));
    let weird = r#"we\"ird\\name\nx"#;
    let routes = |name: &str, second: bool| {
        let plain = if second {
            format!("[partitions.plain]\nservers = [\"{}\"]\n", b2.addr)
        } else {
            String::new()
        };
        let servers = if second {
            format!("\"{}\", \"{}\"", b1.addr, b2.addr)
        } else {
            format!("\"{}\"", b1.addr)
        };
        format!(
            "[partitions.\"{name}\"]\nservers = [{servers}]\n{plain}[users]\nalice = \"{name}\"\n{NO_HEALTH}[timeouts]\nclient_header_ms = 300\n"
        )
    };
    let p =
        common::router::RouterProcess::start("obs-exposition", &routes(weird, true), 2, true, &[]);
    let traffic = || {
        for _ in 0..4 {
            let r =
                common::client::post_json(p.addr, "/api/spot/v2/order", r#"{"user_id":"alice"}"#);
            assert_eq!(r.status, 200);
            assert_eq!(
                get(p.addr, "/api/spot/user/x", "X-User-Id: bob\r\n").status,
                200
            );
        }
        let bad = common::client::request(p.addr, b"GET /x y HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(bad.status, 400);
        let mut slow = common::client::Client::connect(p.addr);
        slow.send(b"GET /slow HTTP/1.1\r\n");
        assert_eq!(slow.read_response().status, 408);
    };
    traffic();
    let first = p.admin_get("/metrics").text();
    let first = check_exposition(&first);
    let weird_series = first
        .keys()
        .find(|k| k.starts_with("ringgate_requests_total{") && k.contains("we\\\"ird"))
        .unwrap_or_else(|| panic!("no series for the escaped partition: {first:?}"));
    assert!(
        weird_series.contains(r#"partition="we\"ird\\name\nx""#),
        "{weird_series}"
    );

    // Renamed, one server fewer, and "plain" gone (bob now hashes to the renamed one).
    p.rewrite(&routes("renamed", false));
    assert_eq!(p.admin_post("/reload").status, 200);
    let second = check_exposition(&p.admin_get("/metrics").text());
    check_counters_did_not_go_down(&first, &second);
    traffic();
    let third = check_exposition(&p.admin_get("/metrics").text());
    check_counters_did_not_go_down(&second, &third);
    let q = "ringgate_request_duration_seconds_count{class=\"query\"}";
    assert!(third[q].value >= 8.0, "{q}: {}", third[q].value);
}

/// Requests refused early — a bad request line (400), a head not finished in time (408,
/// logged with the time it took), an oversized head (431), a client gone mid-head (499) —
/// each have one access log line with their status; a partition name from the config
/// (spaces, a newline) cannot break a line or add fields of its own either.
#[test]
fn early_failures_and_config_names_each_log_one_line() {
    let b = ScriptedBackend::start(|_| Reply::ok("ok"));
    let path = std::env::temp_dir().join(format!("ringgate-obs-early-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut r = Router::start(&format!(
        "[partitions.\"zone 1\\nstatus=200 x=\"]\nservers = [\"{}\"]\n{NO_HEALTH}[timeouts]\nclient_header_ms = 300\n[limits]\nmax_head_bytes = 1024\n[log]\naccess_log = \"{}\"\n",
        b.addr,
        path.display()
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 200);
    let bad = common::client::request(r.addr, b"GET /x y HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(bad.status, 400);
    let mut slow = common::client::Client::connect(r.addr);
    slow.send(b"GET /slow HTTP/1.1\r\n");
    assert_eq!(slow.read_response().status, 408);
    let big = format!("GET /big HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(2000));
    assert_eq!(common::client::request(r.addr, big.as_bytes()).status, 431);
    let mut gone = common::client::Client::connect(r.addr);
    gone.send(b"GET /gone HTTP/1.1\r\nHost");
    gone.reset();
    common::wait_until(
        "the reset client's request is counted",
        std::time::Duration::from_secs(5),
        || r.metrics().errors_of("client_gone") == 1,
    );
    r.drain();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.split(" status=")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, ["200", "400", "408", "431", "499"], "{text}");
    // The 408 came after the header timeout (300 ms), counted from the head's first byte.
    let micros: u64 = lines[2]
        .rsplit("duration_us=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(micros >= 250_000, "a 408 logged with duration_us={micros}");
    for line in &lines {
        assert_each_field_once(line);
    }
}

/// A text access-log line holds each keyed field exactly once: nothing a request sent (or a
/// config name) forged a second one.
fn assert_each_field_once(line: &str) {
    for key in [
        " user=",
        " class=",
        " partition=",
        " status=",
        " duration_us=",
    ] {
        assert_eq!(line.matches(key).count(), 1, "{key} in {line}");
    }
}
