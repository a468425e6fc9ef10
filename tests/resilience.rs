//! Resilience over real sockets (SPEC §3): a backend killed under load, backends that never
//! answer or reset mid-response, recovery after `rise` probes, half-open probing, shedding
//! order, bounded retries, and a graceful drain of the real binary on SIGTERM.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A backend that records every request id it receives and can be killed (listener closed,
/// live connections reset) and restarted on the same address.
struct Killable {
    addr: SocketAddr,
    alive: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    ids: Arc<Mutex<HashMap<String, usize>>>,
    name: &'static str,
}

impl Killable {
    fn start(name: &'static str, ids: Arc<Mutex<HashMap<String, usize>>>) -> Killable {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, ids)
    }

    fn start_on(
        addr: SocketAddr,
        name: &'static str,
        ids: Arc<Mutex<HashMap<String, usize>>>,
    ) -> Killable {
        let listener = TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let alive = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (a, c, i) = (alive.clone(), conns.clone(), ids.clone());
        std::thread::spawn(move || {
            while a.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        c.lock().unwrap().push(s.try_clone().unwrap());
                        let (a, i) = (a.clone(), i.clone());
                        std::thread::spawn(move || serve_ids(s, name, a, i));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Killable {
            addr,
            alive,
            conns,
            ids,
            name,
        }
    }

    fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restart(&self) -> Killable {
        // The old listener thread notices `alive` within a few ms and drops the socket.
        std::thread::sleep(Duration::from_millis(50));
        Killable::start_on(self.addr, self.name, self.ids.clone())
    }
}

fn serve_ids(
    mut s: TcpStream,
    name: &str,
    alive: Arc<AtomicBool>,
    ids: Arc<Mutex<HashMap<String, usize>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut s, &mut buf) else {
            return;
        };
        if !alive.load(Ordering::SeqCst) {
            return;
        }
        if let Some(i) = request.find("\"id\":\"") {
            let rest = &request[i + 6..];
            let id = rest[..rest.find('"').unwrap()].to_string();
            *ids.lock().unwrap().entry(id).or_insert(0) += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
        let body = format!("{{\"zone\":\"{name}\"}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn partition_of(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [{}]\n{extra}",
        list.join(", ")
    )
}

#[test]
fn killing_a_backend_under_load_loses_no_query_and_duplicates_no_command() {
    let ids = Arc::new(Mutex::new(HashMap::new()));
    let a = Killable::start("a", ids.clone());
    let b = Killable::start("b", ids.clone());
    let r = Router::start(&partition_of(
        &[a.addr, b.addr],
        "[health]\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\n",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(bool, String, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (stop, results, addr) = (stop.clone(), results.clone(), r.addr);
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("t{t}-{n}");
                    let is_command = n % 2 == 0;
                    let raw = if is_command {
                        let body = format!(r#"{{"user_id":"u{t}","id":"{id}"}}"#);
                        format!("POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    } else {
                        format!("GET /api/spot/user/data?user_id=u{t}&q={id} HTTP/1.1\r\nHost: t\r\n\r\n")
                    };
                    c.send(raw.as_bytes());
                    let status = match c.read_response(false) {
                        Some(resp) => resp.status,
                        None => 0,
                    };
                    if status != 200 {
                        c = Conn::open(addr);
                    }
                    results.lock().unwrap().push((is_command, id, status));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let results = results.lock().unwrap();
    let queries: Vec<_> = results.iter().filter(|r| !r.0).collect();
    let commands: Vec<_> = results.iter().filter(|r| r.0).collect();
    let failed_queries: Vec<_> = queries.iter().filter(|r| r.2 != 200).collect();
    assert!(
        failed_queries.is_empty(),
        "queries failed: {failed_queries:?}"
    );
    for (_, id, status) in &commands {
        assert!(
            matches!(*status, 200 | 502 | 503 | 504),
            "command {id} got {status}"
        );
    }
    let ids = ids.lock().unwrap();
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "commands delivered twice: {dup:?}");
    let ok_commands = commands.iter().filter(|r| r.2 == 200).count();
    assert!(
        ok_commands * 10 > commands.len() * 9,
        "{ok_commands} of {} commands succeeded",
        commands.len()
    );
    assert!(
        queries.len() > 50 && commands.len() > 50,
        "load ran: {} queries, {} commands",
        queries.len(),
        commands.len()
    );
    // Every successful Command arrived exactly once.
    for (_, id, status) in &commands {
        if *status == 200 {
            assert_eq!(ids.get(id), Some(&1), "command {id}");
        }
    }
}

#[test]
fn silent_backend_times_out_and_queries_retry_elsewhere() {
    let (hang, hang_count) = scripted_backend(|_, _| Action::Hang);
    let good = backend("good");
    let r = Router::start(&partition_of(
        &[hang, good],
        "policy = \"primary_backup\"\n[timeouts]\nupstream_response_ms = 300\n[health]\nenabled = false\n",
    ));
    // A Command waits for the silent server, then gets 504; it is not re-sent.
    let started = Instant::now();
    let body = r#"{"user_id":"u"}"#;
    let resp = request(
        r.addr,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(hang_count.load(Ordering::SeqCst), 1);
    // A Query times out on the silent server and is retried on the next one.
    let resp = get(r.addr, "/api/spot/user/data", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.zone(), "good");
}

#[test]
fn request_deadline_bounds_all_attempts() {
    let (hang, _) = scripted_backend(|_, _| Action::Hang);
    let r = Router::start(&partition_of(
        &[hang],
        "[timeouts]\nupstream_response_ms = 5000\nrequest_deadline_ms = 250\n[health]\nenabled = false\n",
    ));
    let started = Instant::now();
    let resp = get(r.addr, "/x", "X-User-Id: u\r\n");
    assert_eq!(resp.status, 504);
    assert!(resp.text().contains("deadline"), "{}", resp.text());
    assert!(started.elapsed() < Duration::from_millis(2000));
}

#[test]
fn reset_mid_response_closes_the_client_and_later_requests_are_clean() {
    let (b, _) = scripted_backend(|_, req| {
        if req.contains("/partial") {
            Action::RespondThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part".to_vec(),
                Duration::ZERO,
            )
        } else {
            Action::Respond(ok_response("whole"))
        }
    });
    let r = Router::start(&partition_of(&[b], "[health]\nenabled = false\n"));
    let mut c = Conn::open(r.addr);
    c.send(b"GET /partial HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert!(
        c.read_response(false).is_none(),
        "a truncated response is not completed"
    );
    for _ in 0..3 {
        assert_eq!(get(r.addr, "/ok", "X-User-Id: u\r\n").body, b"whole");
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_dead_backend_is_marked_down_and_returns_after_rise_checks() {
    let ids = Arc::new(Mutex::new(HashMap::new()));
    let a = Killable::start("a", ids.clone());
    let b = backend("b");
    let mut r = Router::start(&partition_of(
        &[a.addr, b],
        "[health]\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\nrise = 3\n",
    ));
    let backend_a = r
        .server()
        .table()
        .backends
        .iter()
        .find(|x| x.addr == a.addr)
        .unwrap()
        .clone();
    a.kill();
    wait_until("a marked down", Duration::from_secs(3), || {
        !backend_a.is_available()
    });
    // While down, no request is even tried on it.
    for _ in 0..6 {
        assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").zone(), "b");
    }
    let restarted = a.restart();
    let back_at = Instant::now();
    wait_until("a marked up", Duration::from_secs(3), || {
        backend_a.is_available()
    });
    assert!(
        back_at.elapsed() >= Duration::from_millis(150),
        "needs `rise` good checks, not one"
    );
    let zones: Vec<String> = (0..6)
        .map(|_| get(r.addr, "/x", "X-User-Id: u\r\n").zone())
        .collect();
    assert!(zones.iter().any(|z| z == "a"), "{zones:?}");
    drop(restarted);
}

#[test]
fn circuit_opens_on_5xx_then_one_probe_closes_it() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let (b, count) = scripted_backend(move |_, _| {
        if f.load(Ordering::SeqCst) {
            Action::Respond(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail".to_vec(),
            )
        } else {
            Action::Respond(ok_response("fine"))
        }
    });
    let mut r = Router::start(&partition_of(
        &[b],
        "[health]\nenabled = false\n[circuit]\nconsecutive_failures = 3\ncooldown_ms = 300\n[retry]\nmax_attempts = 1\n",
    ));
    let mut c = Conn::open(r.addr);
    let cmd = |c: &mut Conn| {
        let body = r#"{"user_id":"u"}"#;
        c.roundtrip(
            format!(
                "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    for _ in 0..3 {
        assert_eq!(cmd(&mut c).status, 500, "upstream 5xx is relayed");
    }
    // Open: rejected without reaching the backend.
    let before = count.load(Ordering::SeqCst);
    for _ in 0..3 {
        let resp = cmd(&mut c);
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("retry-after"), Some("1"));
    }
    assert_eq!(count.load(Ordering::SeqCst), before);
    // Still failing after the cool-down: one probe goes through and re-opens it.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(cmd(&mut c).status, 500);
    assert_eq!(count.load(Ordering::SeqCst), before + 1);
    assert_eq!(cmd(&mut c).status, 503);
    // Healthy again: the next probe closes the circuit and traffic flows.
    failing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(350));
    for _ in 0..3 {
        assert_eq!(cmd(&mut c).status, 200);
    }
    let m = r.server().table().backends[0].circuit_transitions();
    assert_eq!(
        (m[0].1, m[1].1, m[2].1),
        (1, 2, 2),
        "closed, open and half-open transitions"
    );
}

#[test]
fn saturation_sheds_queries_before_commands() {
    let b = backend("slow");
    let r = Router::start(&partition_of(
        &[b],
        "[overload]\nmax_in_flight_per_worker = 4\nquery_shed_ratio = 0.5\n",
    ));
    // Two slow Commands keep two requests in flight.
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let addr = r.addr;
            std::thread::spawn(move || {
                let body = format!(r#"{{"user_id":"u{i}"}}"#);
                request(addr, format!("POST /api/spot/v2/order?delay_ms=800 HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let q = get(r.addr, "/api/spot/user/data", "X-User-Id: q\r\n");
    assert_eq!(q.status, 503, "Queries are shed at half the bound");
    assert_eq!(q.header("retry-after"), Some("1"));
    let body = r#"{"user_id":"c"}"#;
    let c = request(
        r.addr,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.status, 200, "Commands still pass below the full bound");
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(
        get(r.addr, "/api/spot/user/data", "X-User-Id: q\r\n").status,
        200,
        "recovers"
    );
}

#[test]
fn retries_are_bounded_by_attempts_and_budget() {
    let (b1, c1) = scripted_backend(|_, _| Action::Close);
    let (b2, c2) = scripted_backend(|_, _| Action::Close);
    let r = Router::start(&partition_of(
        &[b1, b2],
        "[health]\nenabled = false\n[circuit]\nenabled = false\n",
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 502);
    assert_eq!(
        c1.load(Ordering::SeqCst) + c2.load(Ordering::SeqCst),
        2,
        "first attempt + one retry"
    );

    let (b3, c3) = scripted_backend(|_, _| Action::Close);
    let (b4, c4) = scripted_backend(|_, _| Action::Close);
    let r = Router::start(&partition_of(
        &[b3, b4],
        "[health]\nenabled = false\n[circuit]\nenabled = false\n[retry]\nbudget_ratio = 0.0\nbudget_reserve = 0.0\n",
    ));
    assert_eq!(get(r.addr, "/q", "X-User-Id: u\r\n").status, 502);
    assert_eq!(
        c3.load(Ordering::SeqCst) + c4.load(Ordering::SeqCst),
        1,
        "an empty budget allows no retry"
    );
}

/// The real binary drains on SIGTERM: the request in flight completes, idle keep-alive
/// connections are closed, new connections are refused, and it exits 0.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let b = backend("zone_1");
    let path = std::env::temp_dir().join(format!("ringgate-drain-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!("default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[workers]\ncount = 1\npin = false\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["--config", path.to_str().unwrap(), "--drain-seconds", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();

    let mut idle = Conn::open(addr);
    assert_eq!(
        idle.roundtrip(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        200
    );
    let in_flight = std::thread::spawn(move || {
        let mut c = Conn::open(addr);
        c.roundtrip(b"GET /slow?delay_ms=700 HTTP/1.1\r\nHost: t\r\n\r\n")
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        idle.is_closed(),
        "idle keep-alive connection closed by the drain"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "new connections refused while draining"
    );
    let resp = in_flight.join().unwrap();
    assert_eq!(resp.status, 200, "in-flight request completed");
    assert_eq!(resp.header("connection"), Some("close"));
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_epoll_driver_serves_the_same_traffic() {
    let b = backend("zone_1");
    let mut text = format!("default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[limits]\nsplice_threshold_bytes = 65536\n");
    text.push_str("\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[workers]\ncount = 1\npin = false\ndriver = \"epoll\"\n");
    let config =
        ringgate::config::Config::parse(&text, std::path::Path::new("epoll.toml")).unwrap();
    let mut server = ringgate::runtime::server::Server::start(config).unwrap();
    assert_eq!(
        server.drivers(),
        vec![ringgate::runtime::worker::ActiveDriver::Epoll]
    );
    let addr = server.listen_addr;
    let mut c = Conn::open(addr);
    for i in 0..5 {
        let resp = c.roundtrip(
            format!("GET /e/{i} HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n").as_bytes(),
        );
        assert_eq!(resp.json_field("path").unwrap(), format!("/e/{i}"));
    }
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut raw = format!(
        "POST /big HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let resp = c.roundtrip(&raw);
    assert_eq!(resp.json_field("body_fnv64").unwrap(), fnv_hex(&body));
    let resp =
        c.roundtrip(b"GET /dl?resp_bytes=3000000 HTTP/1.1\r\nHost: t\r\nX-User-Id: u\r\n\r\n");
    assert_eq!(resp.body.len(), 3_000_000);
    server.drain(Duration::from_millis(200));
}

#[test]
fn http_health_checks_mark_a_failing_backend_down() {
    let (sick, _) = scripted_backend(|_, req| {
        if req.starts_with("GET /healthz ") {
            Action::Respond(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            Action::Respond(ok_response("sick-but-answering"))
        }
    });
    let good = backend("good");
    let mut r = Router::start(&partition_of(
        &[sick, good],
        "[health]\ninterval_ms = 100\ntimeout_ms = 200\nfall = 2\nrise = 2\nhttp_path = \"/healthz\"\n",
    ));
    let sick_backend = r
        .server()
        .table()
        .backends
        .iter()
        .find(|b| b.addr == sick)
        .unwrap()
        .clone();
    wait_until("sick marked down", Duration::from_secs(3), || {
        !sick_backend.is_available()
    });
    for _ in 0..6 {
        assert_eq!(get(r.addr, "/x", "X-User-Id: u\r\n").zone(), "good");
    }
}

#[test]
fn idle_keep_alive_connections_are_closed_and_counted() {
    let b = backend("zone_1");
    let mut r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[timeouts]\nclient_idle_ms = 200\n"
    ));
    let mut c = Conn::open(r.addr);
    assert_eq!(
        c.roundtrip(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    let started = Instant::now();
    assert!(c.is_closed());
    assert!(started.elapsed() >= Duration::from_millis(150));
    let snaps = ringgate::runtime::server::collect_snapshots(
        &r.server().worker_controls(),
        Duration::from_secs(2),
    );
    assert_eq!(snaps.iter().map(|s| s.idle_timeouts).sum::<u64>(), 1);
}
