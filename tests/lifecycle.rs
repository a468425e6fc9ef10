//! The real binary's lifecycle: start-up errors that name what failed, several workers on
//! one ephemeral port, fd exhaustion and recovery, and drains on SIGINT.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

fn cfg_path(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("ringgate-life-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

struct Running {
    child: Child,
    addr: SocketAddr,
    stderr: Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Start the binary (with `nofile` as its RLIMIT_NOFILE) and read its listening line.
    fn start(name: &str, config: &str, args: &[&str], nofile: Option<u64>) -> Running {
        let path = cfg_path(name, config);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringgate"));
        cmd.arg("--config")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, stderr) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (addr, _) = common::router::listening_line(&mut child);
        Running {
            child,
            addr,
            stderr,
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// A backend answering 200 "ok" to every request, with keep-alive.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn config(listen: &str, backend: SocketAddr, workers: usize, extra: &str) -> String {
    format!(
        "default_backend = \"{backend}\"\n[partitions.zone_1]\nservers = [\"{backend}\"]\n[listener]\naddress = \"{listen}\"\n[admin]\naddress = \"\"\n[workers]\ncount = {workers}\npin = false\n[health]\nenabled = false\n{extra}"
    )
}

#[test]
fn port_zero_with_four_workers_all_serve_on_the_reported_port() {
    let b = backend();
    let r = Running::start("p0", &config("127.0.0.1:0", b, 4, ""), &[], None);
    for _ in 0..64 {
        let resp = get(r.addr).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

#[test]
fn fd_exhaustion_recovers_once_fds_free_up() {
    let driver = std::env::var("RINGGATE_TEST_DRIVER").unwrap_or("auto".into());
    let b = backend();
    let r = Running::start(
        "nofile",
        &config("127.0.0.1:0", b, 1, ""),
        &["--driver", &driver],
        Some(64),
    );
    // Hold many idle connections: more than the fd limit allows.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(r.addr) {
            held.push(s);
        }
    }
    // Wait until the router reports accept failures.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw = false;
    while Instant::now() < deadline {
        if let Ok(line) = r.stderr.recv_timeout(Duration::from_millis(200)) {
            if line.contains("accept failed") {
                saw = true;
                break;
            }
        }
    }
    assert!(saw, "expected accept failures at the fd limit");
    // While exhausted: how many warnings a second?
    let until = Instant::now() + Duration::from_secs(1);
    let mut warned = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match r.stderr.recv_timeout(left) {
            Ok(line) if line.contains("accept failed") => warned += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // Free them; the router must serve again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match get(r.addr) {
            Ok(resp) if resp.starts_with("HTTP/1.1 200") => break,
            other => {
                assert!(Instant::now() < deadline, "never recovered: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(
        warned <= 5,
        "{warned} 'accept failed' warnings in one second of fd exhaustion"
    );
}

#[test]
fn sigint_drains_and_exits_zero() {
    let b = backend();
    let mut r = Running::start("sigint", &config("127.0.0.1:0", b, 2, ""), &[], None);
    assert!(get(r.addr).unwrap().starts_with("HTTP/1.1 200"));
    r.signal(libc::SIGINT);
    let status = r.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_fresh_connection_with_no_request_does_not_hold_the_drain() {
    let b = backend();
    let mut r = Running::start(
        "fresh",
        &config("127.0.0.1:0", b, 1, ""),
        &["--drain-seconds", "8"],
        None,
    );
    // Make sure the worker is up and accepting.
    assert!(get(r.addr).unwrap().starts_with("HTTP/1.1 200"));
    let _fresh = TcpStream::connect(r.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(Duration::from_secs(4));
    assert!(
        status.is_some(),
        "drain held by a connection that never sent a request"
    );
    eprintln!("exit after {:?}", t.elapsed());
}
