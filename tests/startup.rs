//! Start-up refusals of the real binary, each naming what failed: a listen address (or a demo backend's address)
//! that another process already serves is refused with a clear error and a non-zero exit,
//! instead of silently sharing the port through `SO_REUSEPORT`.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run the binary with `config` and `args`; it must exit by itself within 10 s.
fn run(name: &str, config: &str, args: &[&str]) -> Output {
    let path = std::env::temp_dir().join(format!(
        "ringgate-startup-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{name}: ringgate did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn a_listen_address_in_use_is_refused() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run(
        "listen",
        &format!("default_backend = \"127.0.0.1:9\"\n[listener]\naddress = \"{addr}\"\n[admin]\naddress = \"\"\n[health]\nenabled = false\n"),
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{addr} is already in use")), "{err}");
}

/// A taken admin port stops the start before the data listener takes any connection: no
/// worker starts (one would take a share of a running instance's connections through
/// `SO_REUSEPORT`, and reset them as the process exits).
#[test]
fn an_admin_address_in_use_is_refused_before_any_worker_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let out = run(
        "admin",
        &format!("default_backend = \"127.0.0.1:9\"\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"{admin}\"\n[health]\nenabled = false\n"),
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot bind admin listener {admin}")),
        "{err}"
    );
    assert!(!err.contains("worker started"), "{err}");
}

#[test]
fn a_demo_backend_address_in_use_is_refused() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = taken.local_addr().unwrap();
    let out = run(
        "demo",
        &format!("[partitions.zone_1]\nservers = [\"{backend}\"]\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[health]\nenabled = false\n"),
        &["--demo"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot start demo backends") && err.contains("already in use"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "nothing was started"
    );
}

#[test]
fn an_unassignable_listen_address_names_the_address() {
    // 192.0.2.1 (TEST-NET-1) is not an address of this host: EADDRNOTAVAIL.
    let out = run(
        "notavail",
        "default_backend = \"127.0.0.1:9\"\n[listener]\naddress = \"192.0.2.1:18080\"\n[admin]\naddress = \"\"\n[health]\nenabled = false\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("192.0.2.1:18080"), "{err}");
}

#[test]
fn an_unopenable_access_log_names_the_file() {
    let out = run(
        "accesslog",
        "default_backend = \"127.0.0.1:9\"\n[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"\"\n[health]\nenabled = false\n[log]\naccess_log = \"/nonexistent-ringgate-dir/access.log\"\n",
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-ringgate-dir/access.log"),
        "{err}"
    );
}
