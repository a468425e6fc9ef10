//! Control plane over real sockets: hot reload under load (zero errors), user migration,
//! partition added, server removed, invalid reloads, every admin endpoint, Prometheus
//! metrics (checked by `promtool`), the access log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{get, request, Client};
use common::router::{demo_backend, served, Router, RouterProcess};
use common::wait_until;

/// The real binary started from a config file (so reloads re-read it), with an admin
/// listener and two workers.
fn managed(name: &str, routes: &str) -> RouterProcess {
    RouterProcess::start(name, routes, 2, true, &[])
}

fn zones(z1: &[SocketAddr], z2: &[SocketAddr], users: &str) -> String {
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "default_backend = \"zone_1\"\n[partitions.zone_1]\nservers = [{}]\n[partitions.zone_2]\nservers = [{}]\n[users]\n{users}\n",
        list(z1),
        list(z2)
    )
}

/// Keep-alive clients hammering the router until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let raw = if n.is_multiple_of(2) {
                            format!("GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: user-{i}-{}\r\n\r\n", n % 7)
                        } else {
                            let body = format!(r#"{{"user_id":"user-{i}-{}","n":{n}}}"#, n % 7);
                            format!("POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        };
                        let got = c.try_send(raw.as_bytes()).map_err(|e| e.to_string()).and_then(
                            |()| c.try_read_response().map_err(|e| e.to_string()),
                        );
                        match got {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                eprintln!("load failure: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                c = Client::connect(addr);
                            }
                        }
                        // A fresh connection now and then, so reloads meet new ones too.
                        if n.is_multiple_of(50) {
                            c = Client::connect(addr);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Requests answered 200 so far.
    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests have been answered 200.
    fn wait_for_more(&self, n: usize) {
        let from = self.ok();
        wait_until(
            &format!("{n} more requests answered"),
            Duration::from_secs(10),
            || self.ok() >= from + n,
        );
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn reloads_under_load_lose_nothing() {
    let z1 = [demo_backend("zone_1"), demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2"), demo_backend("zone_2")];
    let m = managed("load", &zones(&z1, &z2, "alice = \"zone_1\""));
    let load = Load::start(m.addr, 4);
    for i in 0..30 {
        // Traffic between every two reloads.
        load.wait_for_more(12);
        // Alternate: move alice, drop a server from each zone, bring them back.
        let text = if i % 2 == 0 {
            zones(&z1[..1], &z2[..1], "alice = \"zone_2\"")
        } else {
            zones(&z1, &z2, "alice = \"zone_1\"")
        };
        m.rewrite(&text);
        let r = m.admin_post("/reload");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    load.wait_for_more(12);
    let (ok, failed) = load.finish();
    assert_eq!(
        failed, 0,
        "{failed} requests failed during 30 reloads ({ok} succeeded)"
    );
    assert!(ok > 300, "load ran: {ok}");
    let cfg = m.admin_get("/config");
    assert_eq!(cfg.json_field("version").unwrap(), "31");
}

#[test]
fn user_migration_partition_addition_and_server_removal_apply_at_once() {
    let z1 = [demo_backend("zone_1"), demo_backend("zone_1b")];
    let z2 = [demo_backend("zone_2")];
    let z3 = demo_backend("zone_3");
    let m = managed("migrate", &zones(&z1, &z2, "alice = \"zone_1\""));
    let mut c = Client::connect(m.addr);
    let alice = b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n";
    assert!(c.roundtrip(alice).zone().starts_with("zone_1"));

    // Migrate alice: the same keep-alive connection follows at once.
    m.rewrite(&zones(&z1, &z2, "alice = \"zone_2\""));
    assert_eq!(m.admin_post("/reload").status, 200);
    assert_eq!(c.roundtrip(alice).zone(), "zone_2");

    // Add a partition and place a user there.
    let with_z3 = format!(
        "{}[partitions.zone_3]\nservers = [\"{z3}\"]\n",
        zones(&z1, &z2, "alice = \"zone_2\"\neve = \"zone_3\"")
    );
    m.rewrite(&with_z3);
    assert_eq!(m.admin_post("/reload").status, 200);
    let eve = get(m.addr, "/api/spot/user/data", "X-User-Id: eve\r\n");
    assert_eq!(eve.zone(), "zone_3");

    // Remove zone_1b: no request reaches it afterwards.
    m.rewrite(&zones(&z1[..1], &z2, ""));
    assert_eq!(m.admin_post("/reload").status, 200);
    let before = served(z1[1]);
    for _ in 0..10 {
        assert_eq!(get(m.addr, "/x", "").zone(), "zone_1");
    }
    assert_eq!(served(z1[1]), before);
}

#[test]
fn invalid_reload_keeps_serving_and_says_why() {
    let z1 = [demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2")];
    let m = managed("invalid", &zones(&z1, &z2, "alice = \"zone_1\""));
    m.rewrite(&zones(&z1, &z2, "alice = \"zone_9\""));
    let r = m.admin_post("/reload");
    assert_eq!(r.status, 400);
    let err = r.json_field("error").unwrap();
    assert!(
        err.contains(":7: key `users.alice`: unknown partition \"zone_9\""),
        "{err}"
    );
    assert_eq!(get(m.addr, "/x", "X-User-Id: alice\r\n").zone(), "zone_1");
    let metrics = m.admin_get("/metrics").text();
    assert!(
        metrics.contains("ringgate_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    let cfg = m.admin_get("/config");
    assert!(cfg
        .json_field("last_reload_error")
        .unwrap()
        .contains("zone_9"));
    assert_eq!(cfg.json_field("version").unwrap(), "1");
}

#[test]
fn admin_endpoints() {
    let z1 = [demo_backend("zone_1"), demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2")];
    let m = managed("admin", &zones(&z1, &z2, ""));
    assert_eq!(m.admin_get("/health").status, 200);
    assert_eq!(m.admin_get("/ready").status, 200);
    let cfg = m.admin_get("/config");
    assert_eq!(cfg.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&cfg.body).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["config_hash"].as_str().unwrap().len(), 16);
    assert_eq!(v["partitions"][0]["name"], "zone_1");
    assert_eq!(v["partitions"][0]["write"][0]["up"], true);
    assert_eq!(v["workers"].as_array().unwrap().len(), 2);

    // Drain one zone_1 server: traffic avoids it; undrain: it comes back.
    let drained = z1[0];
    let r = m.admin_post(&format!("/backends/{drained}/drain"));
    assert_eq!(r.status, 200, "{}", r.text());
    let before = served(drained);
    for _ in 0..8 {
        assert_eq!(get(m.addr, "/x", "").status, 200);
    }
    assert_eq!(served(drained), before, "drained server got traffic");
    assert_eq!(
        m.admin_post(&format!("/backends/{drained}/undrain")).status,
        200
    );
    for _ in 0..8 {
        get(m.addr, "/x", "");
    }
    assert!(served(drained) > before);
    assert_eq!(m.admin_post("/backends/127.0.0.1:1/drain").status, 404);

    // Not ready while a partition has no available server.
    m.admin_post(&format!("/backends/{}/drain", z2[0]));
    let r = m.admin_get("/ready");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("zone_2"), "{}", r.text());
    m.admin_post(&format!("/backends/{}/undrain", z2[0]));
    assert_eq!(m.admin_get("/ready").status, 200);
    assert_eq!(m.admin_get("/nope").status, 404);
    assert_eq!(m.admin_post("/health").status, 405);
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn metrics_move_with_traffic_and_pass_promtool() {
    let z1 = [demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2")];
    let m = managed(
        "metrics",
        &zones(&z1, &z2, "alice = \"zone_1\"\nbob = \"zone_2\""),
    );
    let before = m.admin_get("/metrics").text();
    let mut c = Client::connect(m.addr);
    for _ in 0..20 {
        c.roundtrip(b"GET /api/spot/user/data HTTP/1.1\r\nHost: t\r\nX-User-Id: alice\r\n\r\n");
    }
    let body = r#"{"user_id":"bob"}"#;
    for _ in 0..5 {
        c.roundtrip(
            format!(
                "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    request(
        m.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    let after = m.admin_get("/metrics");
    assert_eq!(
        after.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = after.text();
    let q = format!("ringgate_requests_total{{class=\"query\",partition=\"zone_1\",backend=\"{}\",status=\"2xx\"}}", z1[0]);
    let cmd = format!("ringgate_requests_total{{class=\"command\",partition=\"zone_2\",backend=\"{}\",status=\"2xx\"}}", z2[0]);
    assert_eq!(metric(&text, &q), 20 + metric(&before, &q), "{text}");
    assert_eq!(metric(&text, &cmd), 5);
    assert_eq!(
        metric(&text, "ringgate_errors_total{kind=\"bad_request\"}"),
        1
    );
    assert_eq!(
        metric(
            &text,
            "ringgate_request_duration_seconds_count{class=\"query\"}"
        ),
        20
    );
    assert_eq!(
        metric(
            &text,
            "ringgate_request_duration_quantiles_seconds_count{class=\"command\"}"
        ),
        5
    );
    assert!(metric(&text, "ringgate_upstream_connections_reused_total") >= 20);
    assert!(text.contains(
        "ringgate_request_duration_quantiles_seconds{class=\"query\",quantile=\"0.99\"}"
    ));
    assert!(text.contains(&format!("ringgate_backend_up{{backend=\"{}\"}} 1", z1[0])));
    assert_eq!(metric(&text, "ringgate_workers"), 2);

    // promtool validates the exposition format.
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "promtool: {report}");
            assert!(report.trim().is_empty(), "promtool lint findings: {report}");
        }
        Err(e) => {
            assert!(std::env::var_os("RINGGATE_SKIP_PROMTOOL").is_some(), "promtool not found ({e}); install the `prometheus` package or set RINGGATE_SKIP_PROMTOOL=1");
        }
    }
}

#[test]
fn access_log_lines() {
    let b = demo_backend("zone_1");
    let path = std::env::temp_dir().join(format!("ringgate-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut r = Router::start(&format!(
        "default_backend = \"{b}\"\n[partitions.zone_1]\nservers = [\"{b}\"]\n[users]\nalice = \"zone_1\"\n[log]\naccess_log = \"{}\"\n",
        path.display()
    ));
    get(r.addr, "/api/spot/user/data?x=1", "X-User-Id: alice\r\n");
    let body = r#"{"user_id":"alice"}"#;
    request(
        r.addr,
        format!(
            "POST /api/spot/v2/order HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    request(
        r.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
    );
    r.drain();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains(
            " 127.0.0.1 GET /api/spot/user/data?x=1 user=alice class=query partition=zone_1"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("backend={b} status=200 duration_us=")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("POST /api/spot/v2/order user=alice class=command"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("GET / user=- class=- partition=- backend=- status=400"),
        "{}",
        lines[2]
    );
}

/// The real binary reloads on SIGHUP and, with `--watch`, when the file changes.
#[test]
fn binary_reloads_on_sighup_and_file_change() {
    let z1 = [demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2")];
    let mut p = RouterProcess::start(
        "bin-reload",
        &zones(&z1, &z2, "alice = \"zone_1\""),
        1,
        true,
        &["--watch"],
    );
    let addr = p.addr;
    let zone_of_alice = || get(addr, "/x", "X-User-Id: alice\r\n").zone();
    assert_eq!(zone_of_alice(), "zone_1");

    // File change, picked up by the watcher within a few seconds.
    p.rewrite(&zones(&z1, &z2, "alice = \"zone_2\""));
    wait_until("the watcher reloads", Duration::from_secs(15), || {
        zone_of_alice() == "zone_2"
    });

    // The watcher compares the file with what runs, not with its own last read (which
    // is now zone_2): a file changed and reloaded by hand, then changed back before the
    // watcher looked, is still picked up.
    p.rewrite(&zones(&z1, &z2, "alice = \"zone_1\""));
    assert_eq!(p.admin_post("/reload").status, 200);
    assert_eq!(zone_of_alice(), "zone_1");
    p.rewrite(&zones(&z1, &z2, "alice = \"zone_2\""));
    wait_until(
        "the watcher reloads what the file says",
        Duration::from_secs(15),
        || zone_of_alice() == "zone_2",
    );

    // SIGHUP.
    p.rewrite(&zones(&z1, &z2, "alice = \"zone_1\""));
    p.signal(libc::SIGHUP);
    wait_until("SIGHUP reloads", Duration::from_secs(10), || {
        zone_of_alice() == "zone_1"
    });
    let version: u64 = p
        .admin_get("/config")
        .json_field("version")
        .unwrap()
        .parse()
        .unwrap();
    assert!(version >= 5, "version {version}");

    p.signal(libc::SIGTERM);
    assert!(p.wait_exit().success());
}

#[test]
fn ready_again_once_an_open_circuits_cool_down_is_over() {
    // Two 500s open the only server's circuit. Only a request would move it to half-open;
    // behind a balancer that honours /ready none would come, so readiness must count a
    // circuit whose cool-down is over as available.
    let failures = Arc::new(AtomicUsize::new(2));
    let left = failures.clone();
    let b = common::backend::ScriptedBackend::start(move |_| {
        if left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            common::backend::Reply::status("500 Internal Server Error", "no")
        } else {
            common::backend::Reply::ok("yes")
        }
    });
    let routes = format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{}\"]\n[health]\nenabled = false\n[circuit]\nconsecutive_failures = 2\ncooldown_ms = 1000\n[retry]\nmax_attempts = 1\n",
        b.addr
    );
    let m = managed("ready_cooldown", &routes);
    assert_eq!(m.admin_get("/ready").status, 200);
    for _ in 0..2 {
        assert_eq!(get(m.addr, "/x", "").status, 500);
    }
    let r = m.admin_get("/ready");
    assert_eq!(r.status, 503, "open circuit, cooling down: {}", r.text());
    wait_until("ready after the cool-down", Duration::from_secs(10), || {
        m.admin_get("/ready").status == 200
    });
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(get(m.addr, "/x", "").status, 200, "the probe closes it");
}

#[test]
fn command_line_settings_hold_across_reloads_and_are_not_reported_as_changes() {
    // The file says two workers, the command line one. A reload of the unchanged file
    // keeps one worker and needs no restart (it reported `workers.count` on every reload).
    let z = demo_backend("zone_1");
    let routes = zones(&[z], &[z], "");
    let m = RouterProcess::start("cli_overrides", &routes, 2, true, &["--workers", "1"]);
    let needs_restart = |r: &common::client::Response| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["needs_restart"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.text()))
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    let r = m.admin_post("/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(needs_restart(&r).is_empty(), "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["workers_pending"],
        0,
        "every worker confirms: {}",
        r.text()
    );
    let cfg: serde_json::Value = serde_json::from_slice(&m.admin_get("/config").body).unwrap();
    assert_eq!(cfg["workers"].as_array().unwrap().len(), 1);
    // A change of what only a restart applies is still reported.
    m.rewrite(&format!("{routes}[log]\naccess_log = \"/dev/null\"\n"));
    let r = m.admin_post("/reload");
    assert_eq!(needs_restart(&r), ["log"], "{}", r.text());
}

#[test]
fn health_checks_turned_off_and_on_by_a_reload_apply_at_once() {
    // One dead server: the checker marks it down, so the router is not ready. A reload
    // that turns the checks off lets it be tried again (no checker's verdict stands); one
    // that turns them back on marks it down again.
    let dead = common::router::dead_addr();
    let with = |health: &str| {
        format!(
            "default_backend = \"z\"\n[partitions.z]\nservers = [\"{dead}\"]\n[health]\n{health}\n"
        )
    };
    let on = with("enabled = true\ninterval_ms = 50\ntimeout_ms = 50\nfall = 1\nrise = 1");
    let m = managed("health_toggle", &on);
    wait_until(
        "the dead server marked down",
        Duration::from_secs(5),
        || m.admin_get("/ready").status == 503,
    );
    m.rewrite(&with("enabled = false"));
    let r = m.admin_post("/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("health.enabled"), "{}", r.text());
    assert_eq!(
        m.admin_get("/ready").status,
        200,
        "no checker keeps it down"
    );
    m.rewrite(&on);
    assert_eq!(m.admin_post("/reload").status, 200);
    wait_until("down again once checked", Duration::from_secs(5), || {
        m.admin_get("/ready").status == 503
    });
}

#[test]
fn a_sighup_sent_as_soon_as_the_router_says_it_listens_reloads_it() {
    // The handlers are in place before the listening line: a signal right after it must
    // not meet the default action (which ends the process).
    let z = demo_backend("zone_1");
    for round in 0..3 {
        let m = RouterProcess::start(
            &format!("early_hup_{round}"),
            &zones(&[z], &[z], ""),
            1,
            true,
            &[],
        );
        m.signal(libc::SIGHUP);
        wait_until("the reload counted", Duration::from_secs(5), || {
            m.admin_get("/config").json_field("version").as_deref() == Some("2")
        });
    }
}

/// A SIGHUP that arrives while the router is still starting (systemd's `ExecReload` or a
/// reload sidecar firing just after a start) must not kill it: SIGHUP is a reload, and
/// systemd's `Restart=on-failure` does not restart a process ended by SIGHUP. The config
/// is read from a FIFO so that the signal lands, deterministically, while the router is
/// inside `Config::load`.
#[test]
fn a_sighup_while_the_router_starts_does_not_kill_it() {
    let z = demo_backend("zone_1");
    let dir = std::env::temp_dir().join(format!("ringgate-review-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("routing.toml");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .arg("--config")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing returns once the router has opened it for reading:
    // it is then blocked reading its config.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    let text = format!(
        "default_backend = \"z\"\n[partitions.z]\nservers = [\"{z}\"]\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[workers]\ncount = 1\npin = false\ndriver = \"{}\"\n",
        common::router::test_driver()
    );
    let _ = w.write_all(text.as_bytes());
    drop(w);
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    // The first line, or EOF: then the process is gone (reap it to show how it ended).
    let status = if line.is_empty() {
        Some(child.wait().unwrap())
    } else {
        None
    };
    let _ = std::fs::remove_file(&fifo);
    assert!(
        line.starts_with("ringgate listening on"),
        "the router did not start (exit: {status:?}, first line {line:?})"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let addr: std::net::SocketAddr = words[3].parse().unwrap();
    assert_eq!(get(addr, "/x", "").status, 200);
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    wait_until("the router exits", Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
}

/// Round-robin is per worker, and a reload must not send every worker back to the first
/// server of every list: with a reload between requests (a sidecar moving users, a
/// watcher), all the traffic went to the first server.
#[test]
fn a_reload_does_not_restart_round_robin_at_the_first_server() {
    let a = demo_backend("a");
    let b = demo_backend("b");
    let routes = format!("default_backend = \"z\"\n[health]\nenabled = false\n[partitions.z]\nservers = [\"{a}\", \"{b}\"]\n");
    let mut r = Router::start(&routes);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(r.addr, "/x", "").zone());
        r.reload(&routes);
    }
    assert_eq!(
        seen,
        ["a", "b", "a", "b"],
        "servers chosen, a reload between requests"
    );
}

/// The `/config` entry of server `addr` in the first partition's write list.
fn server_json(m: &RouterProcess, addr: SocketAddr) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&m.admin_get("/config").body).unwrap();
    v["partitions"][0]["write"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == addr.to_string())
        .cloned()
}

#[test]
fn a_drain_outlasts_reloads_that_remove_and_add_back_the_server() {
    let z1 = [demo_backend("zone_1"), demo_backend("zone_1")];
    let z2 = [demo_backend("zone_2")];
    let m = managed("drain_kept", &zones(&z1, &z2, ""));
    let d = z1[1];
    let label = format!("{{backend=\"{d}\"");
    let reload = |servers: &[SocketAddr]| {
        m.rewrite(&zones(servers, &z2, ""));
        let r = m.admin_post("/reload");
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let config =
        || -> serde_json::Value { serde_json::from_slice(&m.admin_get("/config").body).unwrap() };
    let backend_series = || -> Vec<String> {
        let metrics = m.admin_get("/metrics").text();
        metrics
            .lines()
            .filter(|l| l.starts_with("ringgate_") && l.contains(&label))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(m.admin_post(&format!("/backends/{d}/drain")).status, 200);

    // Removed: its per-backend series leave /metrics (so a count that starts again from 0
    // once it is back is a new series to Prometheus, not a counter going down), and
    // /config lists the drain it keeps.
    reload(&z1[..1]);
    let series = backend_series();
    assert!(
        !series
            .iter()
            .any(|l| !l.starts_with("ringgate_requests_total")),
        "a removed server's state is still exported: {series:?}"
    );
    assert_eq!(
        config()["drained_removed"],
        serde_json::json!([d.to_string()])
    );

    // Added back by an unrelated reload: still drained, and gets no traffic.
    reload(&z1);
    assert_eq!(server_json(&m, d).unwrap()["drained"], true);
    assert_eq!(config()["drained_removed"], serde_json::json!([]));
    let series = backend_series();
    assert!(
        series.contains(&format!("ringgate_backend_drained{label}}} 1")),
        "{series:?}"
    );
    let before = served(d);
    for _ in 0..8 {
        assert_eq!(get(m.addr, "/x", "").status, 200);
    }
    assert_eq!(
        served(d),
        before,
        "a drained server got traffic after a reload"
    );

    // Undrain ends it.
    assert_eq!(m.admin_post(&format!("/backends/{d}/undrain")).status, 200);
    assert_eq!(server_json(&m, d).unwrap()["drained"], false);
    for _ in 0..8 {
        assert_eq!(get(m.addr, "/x", "").status, 200);
    }
    assert!(served(d) > before);

    // Undrained while removed: it comes back undrained.
    assert_eq!(m.admin_post(&format!("/backends/{d}/drain")).status, 200);
    reload(&z1[..1]);
    assert_eq!(m.admin_post(&format!("/backends/{d}/undrain")).status, 200);
    assert_eq!(config()["drained_removed"], serde_json::json!([]));
    reload(&z1);
    assert_eq!(server_json(&m, d).unwrap()["drained"], false);
}
