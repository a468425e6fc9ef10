//! Admin access over real sockets: the bearer token from `admin.token_file`, required off
//! loopback for everything but `GET /health` and `GET /ready`, and on loopback too once
//! configured; configs and listeners that would expose the admin API without one are
//! refused. Also how the listener answers and closes: one request per connection, closed in
//! stages so an answer is not lost to a reset, and its slots bounded per peer and in time
//! so that no client can hold them all.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringgate::admin::{self, SharedServer};
use ringgate::config::Config;
use ringgate::runtime::server::Server;

use common::client::Client;

const TOKEN: &str = "s3cret-token-0123456789";

/// Files in a per-test temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ringgate-admin-auth-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config file: one (unreachable) partition, no health checks, the given `[admin]` lines.
fn config_text(admin: &str) -> String {
    format!(
        "[partitions.zone_1]\nservers = [\"127.0.0.1:1\"]\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\n{admin}\n[workers]\ncount = 1\npin = false\n[health]\nenabled = false\n"
    )
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One admin request on its own connection (the admin listener closes after each).
fn call(addr: SocketAddr, method: &str, path: &str, headers: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (head, body) = (head.to_string(), body.to_string());
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply { status, head, body }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Start the router from `path` and its admin listener on `admin_addr`.
fn start(path: &Path, admin_addr: &str) -> (SharedServer, std::io::Result<SocketAddr>) {
    let server: SharedServer = Arc::new(Mutex::new(
        Server::start(Config::load(path).unwrap()).unwrap(),
    ));
    let admin = admin::spawn(admin_addr.parse().unwrap(), server.clone()).map(|(a, _)| a);
    (server, admin)
}

fn stop(server: &SharedServer) {
    server.lock().unwrap().drain(Duration::from_millis(100));
}

#[test]
fn a_configured_token_is_required_on_loopback_too() {
    let dir = TempDir::new("loopback");
    dir.write("admin.token", &format!("{TOKEN}\n"));
    // A relative token_file is found beside the config file.
    let path = dir.write(
        "routing.toml",
        &config_text("address = \"\"\ntoken_file = \"admin.token\""),
    );
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();

    // Probes need no token.
    assert_eq!(call(admin, "GET", "/health", "").status, 200);
    assert_ne!(call(admin, "GET", "/ready", "").status, 401);
    let head = call(admin, "HEAD", "/health", "");
    assert_eq!(
        (head.status, head.body.as_str()),
        (200, ""),
        "HEAD has no body"
    );
    assert!(head.head.contains("Content-Length: 3"), "{}", head.head);

    // Everything else does, and says how to authenticate.
    for (method, path) in [
        ("GET", "/config"),
        ("GET", "/metrics"),
        ("POST", "/reload"),
        ("POST", "/backends/127.0.0.1:1/drain"),
        ("GET", "/nope"),
        ("POST", "/health"),
    ] {
        let r = call(admin, method, path, "");
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(
            r.head
                .contains("\r\nWWW-Authenticate: Bearer realm=\"ringgate-admin\""),
            "{}",
            r.head
        );
    }
    let wrong = call(admin, "GET", "/config", &bearer("s3cret-token-0123456780"));
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.head.contains("error=\"invalid_token\""),
        "{}",
        wrong.head
    );
    assert_eq!(
        call(admin, "GET", "/config", "Authorization: Basic czNjcmV0\r\n").status,
        401
    );
    let twice = format!("{}{}", bearer(TOKEN), bearer(TOKEN));
    assert_eq!(call(admin, "GET", "/config", &twice).status, 401);

    assert_eq!(call(admin, "GET", "/config", &bearer(TOKEN)).status, 200);
    assert_eq!(
        call(
            admin,
            "GET",
            "/metrics",
            &format!("authorization: bearer {TOKEN}\r\n")
        )
        .status,
        200
    );
    assert_eq!(call(admin, "GET", "/nope", &bearer(TOKEN)).status, 404);

    // A reload re-reads the token file: the new token works at once, the old one no longer.
    let rotated = "rotated-token-abcdefghijkl";
    dir.write("admin.token", rotated);
    assert_eq!(call(admin, "POST", "/reload", &bearer(TOKEN)).status, 200);
    assert_eq!(call(admin, "GET", "/config", &bearer(TOKEN)).status, 401);
    assert_eq!(call(admin, "GET", "/config", &bearer(rotated)).status, 200);
    stop(&server);
}

#[test]
fn off_loopback_the_token_is_required() {
    let dir = TempDir::new("wildcard");
    let token_file = dir.write("admin.token", TOKEN);
    let path = dir.write(
        "routing.toml",
        &config_text(&format!(
            "address = \"\"\ntoken_file = \"{}\"",
            token_file.display()
        )),
    );
    // 0.0.0.0 is not loopback; the test reaches it through 127.0.0.1.
    let (server, admin) = start(&path, "0.0.0.0:0");
    let admin: SocketAddr = ([127, 0, 0, 1], admin.unwrap().port()).into();
    assert_eq!(call(admin, "GET", "/health", "").status, 200);
    assert_eq!(call(admin, "GET", "/metrics", "").status, 401);
    assert_eq!(call(admin, "GET", "/metrics", &bearer(TOKEN)).status, 200);

    // A reload may not drop the token while the listener is off loopback.
    std::fs::write(&path, config_text("address = \"\"")).unwrap();
    let r = call(admin, "POST", "/reload", &bearer(TOKEN));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("key `admin.token_file`"), "{}", r.body);
    assert_eq!(call(admin, "GET", "/metrics", &bearer(TOKEN)).status, 200);
    stop(&server);
}

#[test]
fn no_admin_api_off_loopback_without_a_token() {
    let dir = TempDir::new("refused");
    // The file: refused, naming file, line and key.
    let path = dir.write("routing.toml", &config_text("address = \"0.0.0.0:9901\""));
    let e = Config::load(&path).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}:6: key `admin.address`: 0.0.0.0:9901 is not a loopback address: set admin.token_file", path.display())),
        "{text}"
    );

    // A bad token file is refused where it is named.
    dir.write("short.token", "abc");
    let path = dir.write("short.toml", &config_text("token_file = \"short.token\""));
    let text = Config::load(&path).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!(
            "{}:6: key `admin.token_file`: token file",
            path.display()
        )) && text.contains("at least 16"),
        "{text}"
    );
    let path = dir.write("missing.toml", &config_text("token_file = \"nope.token\""));
    let text = Config::load(&path).unwrap_err().to_string();
    assert!(
        text.contains(":6: key `admin.token_file`: cannot read token file"),
        "{text}"
    );

    // The listener itself refuses to serve off loopback without a token.
    let path = dir.write("loopback.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "0.0.0.0:0");
    assert_eq!(admin.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    stop(&server);

    // So does the binary when --admin moves it off loopback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args([
            "--check",
            "--config",
            path.to_str().unwrap(),
            "--admin",
            "0.0.0.0:9901",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not loopback: set admin.token_file"),
        "{stderr}"
    );
}

#[test]
fn without_a_token_loopback_stays_open() {
    let dir = TempDir::new("open");
    let path = dir.write("routing.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    assert_eq!(call(admin, "GET", "/config", "").status, 200);
    assert_eq!(call(admin, "GET", "/metrics", "").status, 200);
    stop(&server);
}

#[test]
fn a_request_head_trickling_in_is_cut_off_as_a_whole() {
    // One byte every 300 ms never trips a per-read timeout; a few such clients would hold
    // every admin slot (and `/health` with them) for as long as they liked.
    let dir = TempDir::new("trickle");
    let path = dir.write("routing.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for &b in b"GET /health HTTP/1.1\r\nHost: admin\r\nX-Slow: "
        .iter()
        .cycle()
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still reading after {:?}",
            started.elapsed()
        );
        if s.write_all(&[b]).is_err() {
            break;
        }
        let mut tmp = [0u8; 256];
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // The slot is free again.
    assert_eq!(call(admin, "GET", "/health", "").status, 200);
    stop(&server);
}

/// A router whose admin listener (on loopback) requires `TOKEN`.
fn start_with_token(dir: &TempDir) -> (SharedServer, SocketAddr) {
    dir.write("admin.token", TOKEN);
    let path = dir.write(
        "routing.toml",
        &config_text("address = \"\"\ntoken_file = \"admin.token\""),
    );
    let (server, admin) = start(&path, "127.0.0.1:0");
    (server, admin.unwrap())
}

#[test]
fn an_answer_sent_before_the_request_was_read_whole_is_not_lost_to_a_reset() {
    // Closing a socket with received bytes unread resets it (RST), and a client still
    // sending may lose the answer to that reset (SPEC §8, clean closes).
    let dir = TempDir::new("linger");
    let (server, admin) = start_with_token(&dir);

    // A head beyond the admin bound, answered while the client is still sending it.
    let mut c = Client::connect(admin);
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: admin\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let _ = c.try_send(big.as_bytes());
    assert_eq!(c.read_response().status, 431);
    c.expect_fin();

    // A request refused before its body was read.
    let mut c = Client::connect(admin);
    send_reload_with_a_large_body(&mut c);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (401, "unauthorized\n"));
    c.expect_fin();
    stop(&server);
}

#[test]
fn a_refusal_of_head_has_no_body_and_a_405_says_what_is_allowed() {
    let dir = TempDir::new("methods");
    let (server, admin) = start_with_token(&dir);

    // RFC 9110 §9.3.2: no content in a response to HEAD, refusals included.
    let mut c = Client::connect(admin);
    c.send(b"HEAD /config HTTP/1.1\r\nHost: admin\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-length"), Some("13"));
    c.expect_fin();

    // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
    for (method, path, allow) in [
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("GET", "/reload", "POST"),
        ("GET", "/backends/127.0.0.1:1/drain", "POST"),
        ("PUT", "/backends/127.0.0.1:1/undrain", "POST"),
    ] {
        let r = call(admin, method, path, &bearer(TOKEN));
        assert_eq!(r.status, 405, "{method} {path}: {}", r.head);
        assert!(
            r.head.contains(&format!("\r\nAllow: {allow}\r\n")),
            "{method} {path}: {}",
            r.head
        );
    }
    stop(&server);
}

/// The loopback address `127.0.0.n`: another peer, as the admin listener sees it.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

#[test]
fn one_peer_cannot_take_every_admin_slot() {
    // Each connection holds a slot until its head is complete or too slow (5 s): one
    // client that opened a few dozen and sent nothing locked everyone else out, health
    // checks and operators included, and could keep doing so with 7 connections a second.
    let dir = TempDir::new("per-peer");
    let path = dir.write("routing.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    let mut hogs: Vec<Client> = (0..40).map(|_| Client::connect(admin)).collect();
    // Accepted in the order they connected: after every hog.
    let mut other = Client::connect_from(loopback(2), admin);
    let r = other.roundtrip(b"GET /health HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    // Beyond its own 4, the hog's connections are refused at once, not kept waiting.
    let started = Instant::now();
    for c in &mut hogs[4..] {
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (503, "admin busy\n"));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    stop(&server);
}

#[test]
fn a_connection_closing_after_its_answer_holds_no_slot() {
    // The staged close after an answer (up to 2 s, until the client closes) held the
    // peer's slot: a client making requests one after another, slow to close each
    // connection, was refused its fifth within those 2 s (503 admin busy).
    let dir = TempDir::new("sequential");
    let path = dir.write("routing.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    let mut answered = Vec::new();
    for i in 0..12 {
        let mut c = Client::connect(admin);
        let r = c.roundtrip(b"GET /health HTTP/1.1\r\nHost: admin\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "request {i}");
        // Answered; the client has not closed yet.
        answered.push(c);
    }
    // Each was ended cleanly by the router after its answer.
    for mut c in answered {
        c.expect_fin();
    }
    stop(&server);
}

#[test]
fn a_refusal_when_every_slot_is_busy_is_not_lost_to_a_reset() {
    // The 503 was written on the accept thread and the socket closed at once, the request
    // unread: a reset, which can destroy the 503 before the client has read it.
    let dir = TempDir::new("busy");
    let path = dir.write("routing.toml", &config_text("address = \"\""));
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    // All 32 slots, 4 per peer, held by connections that send nothing (for 5 s).
    let _holders: Vec<Client> = (1..=8)
        .flat_map(|n| (0..4).map(move |_| Client::connect_from(loopback(n), admin)))
        .collect();
    let mut c = Client::connect_from(loopback(9), admin);
    send_reload_with_a_large_body(&mut c);
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (503, "admin busy\n"));
    c.expect_fin();
    stop(&server);
}

#[test]
fn a_slow_reader_cannot_hold_a_slot_for_the_whole_answer() {
    // The write timeout bounded each write, not the answer: a client that took a large
    // `/metrics` a little at a time held its slot for as long as the answer lasted.
    let dir = TempDir::new("slow-reader");
    // 1024 servers: about half a megabyte of metrics.
    let mut text = String::new();
    for z in 0..16 {
        let servers: Vec<String> = (1..=64)
            .map(|p| format!("\"127.0.0.1:{}\"", z * 64 + p))
            .collect();
        text += &format!("[partitions.zone_{z}]\nservers = [{}]\n", servers.join(","));
    }
    text += "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[workers]\ncount = 1\npin = false\n[health]\nenabled = false\n";
    let path = dir.write("routing.toml", &text);
    let (server, admin) = start(&path, "127.0.0.1:0");
    let admin = admin.unwrap();
    let whole = call(admin, "GET", "/metrics", "").body.len();
    assert!(whole > 400_000, "{whole} bytes of metrics");

    // A small window and small segments, so that the router's send buffer (sized from the
    // segment size: with loopback's 64 KiB segments, over a megabyte) cannot take the
    // answer whole: it goes out as the client reads.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.connect(&admin.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut read = 0;
    let ended = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still answering after {:?}: {read} bytes read",
            started.elapsed()
        );
        // The client's pace (about 10 KB/s): enough to keep every write moving.
        std::thread::sleep(Duration::from_millis(50));
        let mut tmp = [0u8; 512];
        match s.read(&mut tmp) {
            Ok(0) => break "FIN".to_string(),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => break e.to_string(),
        }
    };
    assert!(read < whole, "{read} bytes read, then {ended}");
    // The slot is free again.
    assert_eq!(call(admin, "GET", "/health", "").status, 200);
    stop(&server);
}

/// `POST /reload` with a 256 KiB body, as far as the router takes it (it may answer and
/// stop reading first).
fn send_reload_with_a_large_body(c: &mut Client) {
    let body = "y".repeat(256 * 1024);
    let _ = c.try_send(
        format!(
            "POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}
