//! The pieces `scripts/bench.sh`, `scripts/soak.sh` and `scripts/flamegraph.sh` are built
//! from, checked without running any load or timing anything:
//!
//! - the ringgate config the scripts generate from `benches/peers/ringgate.toml.in` (and
//!   the soak's `[pool]` addition) is accepted by [`Config::parse`] and says what the
//!   scripts rely on (one worker on the proxy CPU, two partitions, admin off), so a config
//!   change that would break the harness fails here rather than at bench time;
//! - the nginx and HAProxy templates leave no placeholder unfilled;
//! - the `/proc` samplers of `scripts/bench/lib.sh` (`cpu_ticks`, `rss_kib`, `fd_count`)
//!   read sane numbers for a live process;
//! - `pause_pids` / `resume_paused`, with which bench.sh keeps every other proxy stopped
//!   while one path is measured, stop and continue a live process.
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

/// scripts/bench/counters.sh's TCP segment count (Tcp OutSegs of /proc/net/snmp) is a
/// number that grows by at least what a loopback exchange sends.
#[test]
fn tcp_segments_counter_moves_with_loopback_traffic() {
    if !has_bash() || !Path::new("/proc/net/snmp").exists() {
        eprintln!("skipped: no bash or no /proc/net/snmp");
        return;
    }
    let counters = repo().join("scripts/bench/counters.sh");
    let read = || -> u64 {
        let out = with_lib(&format!("source {}; tcp_out_segments", counters.display()));
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("a count: {out:?}"))
    };
    let before = read();
    // Ten writes, each acknowledged by a reply before the next: at least 20 segments.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        for _ in 0..10 {
            std::io::Read::read_exact(&mut s, &mut b).unwrap();
            std::io::Write::write_all(&mut s, &b).unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    for _ in 0..10 {
        std::io::Write::write_all(&mut c, b"x").unwrap();
        std::io::Read::read_exact(&mut c, &mut b).unwrap();
    }
    echo.join().unwrap();
    let after = read();
    assert!(after >= before + 20, "{before} → {after}");
}

/// scripts/bench/rounds.awk folds rounds into one row per path (medians of req/s and
/// latency, totals of ticks and counts, the median per-round difference to direct and the
/// median per-round CPU ratio to ringgate), and table.awk prints that ratio as such.
#[test]
fn rounds_fold_into_medians_and_per_round_ratios() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    // path mode req/s p50 p99 p99.9 requests failed utime stime syscalls submits arms
    // segments round. Round 1: ringgate 30/180 ticks per request, nginx 40/160 (ratio
    // 0.667); round 2: 20/190 against 20/160 (0.842); round 3: 30/200 against 20/100 (0.75).
    // Median 0.75, whereas the totals (80/570 against 80/420) would give 0.737.
    let rows = "direct\twrk\t100\t50\t60\t70\t200\t0\t-\t-\t-\t-\t-\t400\t1\n\
                ringgate\twrk\t90\t60\t80\t90\t180\t0\t10\t20\t5\t6\t7\t720\t1\n\
                nginx\twrk\t80\t70\t90\t95\t160\t0\t20\t20\t5\t6\t7\t640\t1\n\
                nginx\twrk\t81\t75\t90\t95\t160\t0\t10\t10\t5\t6\t7\t640\t2\n\
                direct\twrk\t100\t52\t61\t70\t200\t0\t-\t-\t-\t-\t-\t400\t2\n\
                ringgate\twrk\t95\t58\t80\t90\t190\t0\t10\t10\t5\t6\t7\t760\t2\n\
                ringgate\twrk\t99\t59\t81\t90\t200\t1\t10\t20\t5\t6\t7\t1000\t3\n\
                nginx\twrk\t82\t90\t99\t99\t100\t0\t10\t10\t5\t6\t7\t400\t3\n";
    let script = repo().join("scripts/bench");
    let out = with_lib(&format!(
        "printf '{rows}' | awk -f {dir}/rounds.awk \
         | awk -v tck=100 -v wrk_conns=50 -v wrk_rounds=3 -f {dir}/table.awk",
        rows = rows.replace('\t', "\\t").replace('\n', "\\n"),
        dir = script.display(),
    ));
    let row = |path: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("| {path} |")))
            .unwrap_or_else(|| panic!("no {path} row in {out}"))
            .split('|')
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let nginx = row("nginx");
    assert_eq!(nginx[2], "wrk POST c=50 (field layout; median of 3 rounds)");
    assert_eq!(nginx[3], "81", "median req/s");
    assert_eq!(nginx[4], "75", "median p50");
    assert_eq!(
        nginx[15], "+22 / +30",
        "medians of 20, 23 and of 30, 29: round 3 has no direct"
    );
    assert_eq!(
        nginx[17], "0.75× (rounds)",
        "median of the per-round CPU ratios"
    );
    assert_eq!(
        nginx[10], "1904.8",
        "CPU per request from the totals: 0.8 s / 420 requests"
    );
    assert_eq!(
        nginx[14], "4.00",
        "TCP segments per request from the totals: 1,680 / 420"
    );
    let ringgate = row("ringgate");
    assert_eq!(ringgate[7], "1", "failures are summed");
    assert_eq!(ringgate[14], "4.35", "2,480 segments / 570 requests");
    assert_eq!(ringgate[17], "1.00× (rounds)");
    let direct = row("direct");
    assert_eq!(
        direct[14], "2.00",
        "segments are counted for the direct path too"
    );
    assert_eq!(direct[11], "—", "no syscall count without a proxy");
}

/// bench.sh stops every other proxy while one path is measured (a busy-polling one would
/// spin on the measured one's core): a paused process is stopped until resumed, and
/// `stop_all` continues a paused one before ending it (a stopped process takes no SIGTERM).
#[test]
fn paused_processes_stop_until_resumed_and_stop_all_ends_them() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let out = with_lib(
        r#"
        start_bg /dev/null sleep 60
        pid=$LAST_PID
        state() { awk '{ print $3 }' "/proc/$pid/stat"; }
        wait_state() {
            for _ in $(seq 200); do [ "$(state)" "$1" T ] && return 0; sleep 0.05; done
            return 1
        }
        pause_pids "$pid"
        wait_state = && echo "paused $(state)"
        resume_paused
        wait_state != && echo "resumed $(state) ${#PAUSED_PIDS[@]}"
        pause_pids "$pid"
        wait_state = && echo "paused again"
        stop_all
        [[ -e /proc/$pid ]] && echo "still there" || echo "gone ${#PAUSED_PIDS[@]}"
        "#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["paused T", "resumed S 0", "paused again", "gone 0"]);
}

/// scripts/bench.sh times the window of a ringgate-load cell's CPU ticks and perf counts by
/// `seconds_of` of the same duration text it hands the load, and divides them by the
/// requests the load counted: a unit read differently there than by the load (`1min` as
/// one second) would divide one second's CPU time by a minute's requests. `seconds_of`
/// reads every unit ringgate-load takes (ns us µs ms s sec m min h, bare = seconds) and
/// refuses anything else.
#[test]
fn bench_durations_read_as_the_load_generator_reads_them() {
    if !has_bash() {
        eprintln!("skipped: no bash");
        return;
    }
    let cases = [
        ("6s", "6"),
        ("3", "3"),
        ("1.5", "1.5"),
        ("500ms", "0.5"),
        ("250us", "0.00025"),
        ("250µs", "0.00025"),
        ("20000000ns", "0.02"),
        ("10sec", "10"),
        ("2m", "120"),
        ("1min", "60"),
        ("1h", "3600"),
    ];
    let script: String = cases
        .iter()
        .map(|(text, _)| format!("seconds_of '{text}'; "))
        .collect();
    let out = with_lib(&script);
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<&str> = cases.iter().map(|(_, seconds)| *seconds).collect();
    assert_eq!(got, want, "seconds of {cases:?}");
    assert_eq!(
        with_lib("whole_seconds 1min; whole_seconds 400ms"),
        "60\n1\n"
    );

    for bad in ["6x", "1 min", "s", "2S", "1.2.3s", ""] {
        let lib = repo().join("scripts/bench/lib.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail; source {}; x=$(seconds_of '{bad}'); echo \"read $x\"",
                lib.display()
            ))
            .output()
            .expect("bash runs");
        assert!(
            !out.status.success(),
            "{bad:?} was read as {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
