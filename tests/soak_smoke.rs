//! The pieces `scripts/bench.sh`, `scripts/soak.sh` and `scripts/flamegraph.sh` are built
//! from, checked without running any load or timing anything:
//!
//! - the ringgate config the scripts generate from `benches/peers/ringgate.toml.in` (and
//!   the soak's `[pool]` addition) is accepted by [`Config::parse`] and says what the
//!   scripts rely on (one worker on the proxy CPU, two partitions, admin off), so a config
//!   change that would break the harness fails here rather than at bench time;
//! - the nginx and HAProxy templates leave no placeholder unfilled;
//! - the `/proc` samplers of `scripts/bench/lib.sh` (`cpu_ticks`, `rss_kib`, `fd_count`)
//!   read sane numbers for a live process.
//!
//! Needs `bash` (every script does); skipped with a message where there is none.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringgate::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn has_bash() -> bool {
    Command::new("bash").arg("-c").arg("true").status().is_ok()
}

/// Run `script` in bash after sourcing scripts/bench/lib.sh; returns stdout.
fn with_lib(script: &str) -> String {
    let lib = repo().join("scripts/bench/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; source {}; {script}",
            lib.display()
        ))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fill(template: &str, vars: &str) -> String {
    let name = Path::new(template).file_name().unwrap().to_string_lossy();
    let out = std::env::temp_dir().join(format!("ringgate-smoke-{}-{name}", std::process::id()));
    with_lib(&format!(
        "fill_template {} {out} {vars}; cat {out}; rm -f {out}",
        repo().join(template).display(),
        out = out.display(),
    ))
}

#[test]
fn generated_ringgate_config_is_valid() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let text = fill(
        "benches/peers/ringgate.toml.in",
        "PORT=18800 ADMIN= CPU=0 BACKEND_1=18810 BACKEND_2=18811",
    );
    let config = Config::parse(&text, Path::new("bench.toml")).expect("bench config parses");
    assert_eq!(config.workers.count, 1);
    assert_eq!(config.routes.partitions.len(), 2);
    assert!(config.admin.is_none(), "admin must be off");
    assert_eq!(config.listen.port(), 18800);

    // scripts/soak.sh appends a [pool] section.
    let soak = format!("{text}\n[pool]\nmax_idle_per_backend = 64\nidle_timeout_ms = 2000\n");
    Config::parse(&soak, Path::new("soak.toml")).expect("soak config parses");
}

#[test]
fn peer_templates_fill_completely() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let nginx = fill(
        "benches/peers/nginx.conf.in",
        "WORK=/tmp/w CPU_MASK=1 PORT=18801 BACKEND_1=18810 BACKEND_2=18811",
    );
    let haproxy = fill(
        "benches/peers/haproxy.cfg.in",
        "CPU=0 PORT=18802 BACKEND_1=18810 BACKEND_2=18811",
    );
    for (name, text) in [("nginx", &nginx), ("haproxy", &haproxy)] {
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            !body.contains('@'),
            "{name}: unfilled placeholder in {body}"
        );
        assert!(
            body.contains("18810") && body.contains("18811"),
            "{name}: backends"
        );
    }
    assert!(
        nginx.contains("keepalive 64;"),
        "nginx keeps upstream connections"
    );
    assert!(haproxy.contains("http-reuse always"));
}

#[test]
fn proc_samplers_read_a_live_process() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let pid = std::process::id();
    let out = with_lib(&format!(
        "cpu_ticks {pid}; rss_kib {pid}; fd_count {pid}; cpu_ticks 999999999"
    ));
    let v: Vec<u64> = out
        .split_whitespace()
        .map(|s| s.parse().expect("a number"))
        .collect();
    assert_eq!(v.len(), 4, "{out}");
    assert!(
        v[1] > 1000,
        "RSS of a test binary is over 1 MiB: {} KiB",
        v[1]
    );
    assert!(v[2] >= 3, "stdin, stdout, stderr at least: {}", v[2]);
    assert_eq!(v[3], 0, "a missing process counts zero ticks");
}
