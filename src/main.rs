//! `ringgate`: parse the command line, load the config, start the workers, wait for
//! signals (SIGHUP reloads, SIGTERM/SIGINT drain and exit).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use ringgate::admin::SharedServer;
use ringgate::config::{Config, DriverChoice, RingSetup, MAX_SPIN_US, MAX_WORKERS};
use ringgate::runtime::server::{ReloadTrigger, Server};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Thread-per-core io_uring HTTP/1.1 router: routes by user_id and Command/Query.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Cli {
    /// Routing table and settings (TOML).
    #[arg(long, default_value = "config/routing.toml")]
    config: PathBuf,
    /// Data-plane listen address (overrides `[listener] address`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address (overrides `[admin] address`).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Number of workers (default: one per core; overrides `[workers] count`).
    #[arg(long)]
    workers: Option<usize>,
    /// io driver: auto, io_uring or epoll (overrides `[workers] driver`; env RINGGATE_DRIVER).
    #[arg(long, env = "RINGGATE_DRIVER")]
    driver: Option<String>,
    /// io_uring setup: defer_taskrun, coop_taskrun, plain or sqpoll (overrides
    /// `[workers] ring`).
    #[arg(long)]
    ring: Option<String>,
    /// Workers never sleep: they spin on their completion queue (overrides
    /// `[workers] busy_poll`; dedicated cores only).
    #[arg(long)]
    busy_poll: bool,
    /// After each request's arrival, poll instead of sleeping for this many microseconds
    /// (overrides `[workers] spin_us`; io_uring only).
    #[arg(long, value_name = "MICROSECONDS")]
    spin_us: Option<u64>,
    /// Receive plain TCP by multishot recv into a provided-buffer ring: true or false
    /// (overrides `[workers] multishot`; io_uring only).
    #[arg(long, value_name = "BOOL")]
    multishot: Option<bool>,
    /// Validate the config, print a summary and exit.
    #[arg(long)]
    check: bool,
    /// Also start the demo backends named in the config (loopback addresses only).
    #[arg(long)]
    demo: bool,
    /// With --demo: terminate TLS on the listener with a self-signed certificate for
    /// localhost/127.0.0.1, written to DIR (cert.pem, key.pem) for clients to trust.
    #[arg(long, value_name = "DIR", requires = "demo")]
    demo_tls: Option<PathBuf>,
    /// Seconds to let in-flight requests finish on SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Also reload when the config file changes (checked once a second; off by default).
    #[arg(long)]
    watch: bool,
}

/// Print a line on stdout without panicking when stdout is closed (e.g. under systemd).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Poll the config file once a second; reload when its contents differ from those the
/// running config was loaded from and have held still for a poll (a file being written
/// is not taken half-way). Contents a reload refused are not tried again until they or the
/// running config change.
fn spawn_config_watcher(server: SharedServer, path: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("ringgate-watch".into())
        .spawn(move || {
            // Changed contents seen once (reloaded if the next poll sees them still), and
            // the last contents a reload was asked for, with the running table's version.
            let (mut seen, mut tried) = (None, None);
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Ok(bytes) = std::fs::read(&path) else {
                    seen = None;
                    continue;
                };
                let now = ringgate::hash::fnv1a64(&bytes);
                let (running, version) = {
                    let s = server.lock().unwrap_or_else(|e| e.into_inner());
                    if !s.is_running() {
                        return;
                    }
                    (s.config().source.hash, s.table().version)
                };
                if now == running || tried == Some((now, version)) {
                    seen = None;
                    continue;
                }
                // Seen changed twice in a row: it held still for a poll.
                if seen.replace(now) != Some(now) {
                    continue;
                }
                tried = Some((now, version));
                let mut s = server.lock().unwrap_or_else(|e| e.into_inner());
                // Logged by the server, like every reload.
                let _ = s.reload(ReloadTrigger::FileChange);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the config watcher");
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    // Before anything else: a SIGHUP or SIGTERM sent while the router starts (a reload
    // right after a start) must reload or drain once it runs, not kill the process with
    // the default action.
    let signals = match Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringgate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringgate: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = apply_overrides(&cli, &mut config) {
        eprintln!("ringgate: {problem}");
        return ExitCode::from(2);
    }
    if cli.check {
        if let Some(log) = &config.access_log {
            if let Err(e) = ringgate::access_log::check(log) {
                eprintln!("ringgate: {e}");
                return ExitCode::from(2);
            }
        }
        say(&format!("{}config OK", config.summary()));
        return ExitCode::SUCCESS;
    }
    warn_on_low_memlock();
    if let Some(dir) = &cli.demo_tls {
        match demo_tls(dir) {
            Ok(tls) => config.listener_tls = Some(tls),
            Err(e) => {
                eprintln!("ringgate: --demo-tls: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if cli.demo {
        if let Err(e) = start_demo_backends(&config) {
            eprintln!("ringgate: cannot start demo backends: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Bound before the data listener accepts anything: a taken admin port ends the start
    // before any client connection is taken (and then reset as the process exits). With
    // SO_REUSEPORT, a new instance started beside the running one would otherwise take a
    // share of its connections and reset them.
    let admin_listener = match config.admin.map(std::net::TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            let addr = config.admin.map_or(String::new(), |a| a.to_string());
            eprintln!("ringgate: cannot bind admin listener {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config) {
        Ok(mut s) => {
            // Every config a reload reads gets the command line's settings, and the listener
            // TLS `--demo-tls` made (the overrides were checked at start: a reload cannot
            // make them fail).
            let overrides = cli.clone();
            let demo_tls = cli.demo_tls.as_ref().and(s.config().listener_tls.clone());
            s.set_overrides(move |c| {
                let _ = apply_overrides(&overrides, c);
                if let Some(tls) = &demo_tls {
                    c.listener_tls = Some(tls.clone());
                }
            });
            s
        }
        Err(e) => {
            eprintln!("ringgate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen_addr = server.listen_addr;
    let drivers: Vec<&str> = server.drivers().iter().map(|d| d.label()).collect();
    let server: SharedServer = Arc::new(Mutex::new(server));
    let admin = match admin_listener {
        Some(listener) => match ringgate::admin::spawn_on(listener, server.clone()) {
            Ok((bound, _)) => Some(bound),
            Err(e) => {
                eprintln!("ringgate: cannot start the admin listener: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // One machine-readable line on stdout: tests and scripts wait for it.
    say(&format!(
        "ringgate listening on {listen_addr} admin {} workers {} driver {}",
        admin.map_or("off".to_string(), |a| a.to_string()),
        drivers.len(),
        drivers.first().copied().unwrap_or("none")
    ));
    if cli.watch {
        spawn_config_watcher(server.clone(), cli.config.clone());
    }
    let admin_label = admin.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(listen = %listen_addr, admin = %admin_label, workers = drivers.len(), "ringgate ready");

    wait_for_signals(signals, &server, Duration::from_secs(cli.drain_seconds));
    ExitCode::SUCCESS
}

/// Command-line options win over the file; `--admin` off loopback still needs the file's
/// token.
fn apply_overrides(cli: &Cli, config: &mut Config) -> Result<(), String> {
    if let Some(a) = cli.listen {
        config.listen = a;
    }
    if let Some(a) = cli.admin {
        if let Some(problem) = config.admin_access_problem(a) {
            return Err(format!("--admin: {problem}"));
        }
        config.admin = Some(a);
    }
    if let Some(n) = cli.workers {
        if n > MAX_WORKERS {
            return Err(format!("--workers must be at most {MAX_WORKERS}"));
        }
        // 0 means one per core, as `workers.count = 0` does.
        config.workers.count = if n == 0 {
            std::thread::available_parallelism().map_or(1, |c| c.get())
        } else {
            n
        };
    }
    if let Some(d) = &cli.driver {
        config.workers.driver = DriverChoice::parse(d)
            .ok_or_else(|| "--driver must be auto, io_uring or epoll".to_string())?;
    }
    if let Some(r) = &cli.ring {
        config.workers.ring = RingSetup::parse(r).ok_or_else(|| {
            "--ring must be defer_taskrun, coop_taskrun, plain or sqpoll".to_string()
        })?;
    }
    if cli.busy_poll {
        config.workers.busy_poll = true;
    }
    if let Some(us) = cli.spin_us {
        if us > MAX_SPIN_US as u64 {
            return Err(format!("--spin-us must be at most {MAX_SPIN_US}"));
        }
        config.workers.spin = std::time::Duration::from_micros(us);
    }
    if let Some(on) = cli.multishot {
        config.workers.multishot = on;
    }
    Ok(())
}

/// SIGHUP reloads; SIGTERM or SIGINT drains (within `grace`) and returns. A second SIGTERM
/// or SIGINT during the drain ends the process at once (exit 1), as an operator pressing
/// Ctrl-C twice expects.
fn wait_for_signals(mut signals: Signals, server: &SharedServer, grace: Duration) {
    for signal in signals.forever() {
        if signal != SIGHUP {
            break;
        }
        let mut s = server.lock().unwrap_or_else(|e| e.into_inner());
        // Logged by the server, like every reload.
        let _ = s.reload(ReloadTrigger::Signal);
    }
    ringgate::admin::set_draining();
    let spawned = std::thread::Builder::new()
        .name("ringgate-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    tracing::warn!("a second signal during the drain: exiting now");
                    std::process::exit(1);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch for a second signal during the drain");
    }
    tracing::info!(grace_s = grace.as_secs(), "draining");
    Server::drain_shared(server, grace);
    tracing::info!("stopped");
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("RINGGATE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Start one demo backend per loopback server address in the config, named after its
/// partition.
fn start_demo_backends(config: &Config) -> std::io::Result<()> {
    let mut started: Vec<SocketAddr> = Vec::new();
    for p in &config.routes.partitions {
        for addr in p.write.iter().chain(p.read.iter()) {
            if started.contains(addr) {
                continue;
            }
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "not starting a demo backend on a non-loopback address");
                continue;
            }
            ringgate::demo::spawn(*addr, &p.name, 1)?;
            tracing::info!(%addr, zone = %p.name, "demo backend started");
            started.push(*addr);
        }
    }
    Ok(())
}

/// A self-signed certificate for localhost/127.0.0.1 in `dir`, and the listener TLS that
/// uses it.
fn demo_tls(dir: &std::path::Path) -> Result<ringgate::config::ListenerTls, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    ringgate::tls::write_self_signed(&cert, &key)?;
    tracing::info!(cert = %cert.display(), "demo TLS: self-signed certificate for localhost and 127.0.0.1");
    ringgate::config::ListenerTls::load(cert, key, ringgate::config::default_alpn())
}

/// io_uring rings need locked memory on kernels before 5.12; say so before it bites, and
/// only there: from 5.12 the rings are charged to the memory cgroup instead.
fn warn_on_low_memlock() {
    let release = kernel_release();
    if !charges_rings_to_memlock(release.as_deref()) {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, a valid rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && lim.rlim_cur < MEMLOCK_WANTED_BYTES
    {
        tracing::warn!(
            memlock_bytes = lim.rlim_cur,
            kernel = release.as_deref().unwrap_or("unknown"),
            "RLIMIT_MEMLOCK is low; kernels before 5.12 charge io_uring rings to it (raise with `ulimit -l` or LimitMEMLOCK=)"
        );
    }
}

/// Locked memory that comfortably holds every worker's rings on an old kernel.
const MEMLOCK_WANTED_BYTES: libc::rlim_t = 64 * 1024 * 1024;

/// The running kernel's release (`uname -r`), e.g. `6.1.0-18-amd64`.
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain old data; all-zero is a valid value for uname to overwrite.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes NUL-terminated strings into `uts`, valid for the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// `major.minor` of a kernel release string.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether this kernel charges io_uring rings to RLIMIT_MEMLOCK (before 5.12); an unknown
/// kernel is assumed to, so the warning errs on the side of being shown.
fn charges_rings_to_memlock(release: Option<&str>) -> bool {
    release
        .and_then(kernel_version)
        .is_none_or(|version| version < (5, 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.11.0-44-generic"), Some((5, 11)));
        assert_eq!(kernel_version("5.12"), Some((5, 12)));
        assert_eq!(kernel_version("4.19.0+"), Some((4, 19)));
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn memlock_matters_before_5_12_only() {
        assert!(charges_rings_to_memlock(Some("5.11.0-44-generic")));
        assert!(charges_rings_to_memlock(Some("4.19.0")));
        assert!(!charges_rings_to_memlock(Some("5.12.0")));
        assert!(!charges_rings_to_memlock(Some("6.18.44-fc-v669")));
        assert!(charges_rings_to_memlock(Some("weird")));
        assert!(charges_rings_to_memlock(None));
    }
}
