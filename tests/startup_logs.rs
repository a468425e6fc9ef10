//! What the real binary logs at start and on reload: the worker's core as a plain number,
//! no memlock warning on kernels that do not need one, and one identical "config reloaded"
//! line whether the reload came from `POST /reload` or SIGHUP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next stderr line containing `needle` within a few seconds.
fn wait_for(lines: &Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no log line with {needle:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

fn post(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The running kernel's `major.minor`, from /proc (independent of the code under test).
fn kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[test]
fn start_and_reload_log_lines() {
    let path = std::env::temp_dir().join(format!("ringgate-logs-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[partitions.zone_1]\nservers = [\"127.0.0.1:1\"]\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[workers]\ncount = 1\npin = true\ncpus = [0]\n[health]\nenabled = false\n",
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["--config", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("RINGGATE_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = channel();
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let admin: SocketAddr = first.split_whitespace().nth(5).unwrap().parse().unwrap();
    let mut seen = Vec::new();

    let started = wait_for(&lines, "worker started", &mut seen);
    assert!(started.contains("core=0"), "{started}");
    assert!(!started.contains("Some("), "{started}");
    let ready = wait_for(&lines, "ringgate ready", &mut seen);
    assert!(!ready.contains("Some("), "{ready}");
    assert!(
        !ready.contains('\u{1b}'),
        "no colours when stderr is not a terminal: {ready}"
    );
    if kernel().is_some_and(|v| v >= (5, 12)) {
        assert!(
            !seen.iter().any(|l| l.contains("RLIMIT_MEMLOCK")),
            "memlock warning on a kernel that does not need it:\n{}",
            seen.join("\n")
        );
    }

    assert!(post(admin, "/reload").starts_with("HTTP/1.1 200"));
    let by_admin = wait_for(&lines, "config reloaded", &mut seen);
    assert!(
        by_admin.contains("trigger=\"admin\"") || by_admin.contains("trigger=admin"),
        "{by_admin}"
    );
    assert!(by_admin.contains("version=2"), "{by_admin}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let by_signal = wait_for(&lines, "config reloaded", &mut seen);
    assert!(by_signal.contains("version=3"), "{by_signal}");
    // The same line, but for the trigger, version and timestamp.
    let shape = |l: &str| {
        l.split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("trigger=") && !w.starts_with("version="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(shape(&by_admin), shape(&by_signal));

    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().unwrap().success());
    reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
