//! The optional access log: one line per request, written by its own thread.
//!
//! A worker formats the line into a recycled buffer and pushes it onto a bounded lock-free
//! queue; the writer thread drains the queue to the file and hands the buffers back. A
//! slow disk therefore never stalls a worker: when the queue is full the line is dropped
//! and counted (`ringgate_access_log_dropped_total`).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `time client method path key=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

/// Where and how to write the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// A file path, or `-` for stderr.
    pub path: PathBuf,
    /// Line format.
    pub format: AccessLogFormat,
    /// Lines queued before new ones are dropped.
    pub queue_lines: usize,
}

/// The status logged for a request whose client went away before its response's head
/// went out (nginx's "client closed request"); `/metrics` counts it as `status="none"`.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The fields of one line (borrowed from the request's buffers).
pub struct AccessRecord<'a> {
    /// Client address.
    pub client: IpAddr,
    /// Method token.
    pub method: &'a [u8],
    /// Request target as received.
    pub target: &'a [u8],
    /// User id, if found.
    pub user: Option<&'a [u8]>,
    /// "command"/"query", if classified.
    pub class: &'a str,
    /// Partition name, if chosen.
    pub partition: &'a str,
    /// Backend address, if chosen (formatted by the caller's Display).
    pub backend: Option<std::net::SocketAddr>,
    /// Status sent, or [`CLIENT_CLOSED_REQUEST`].
    pub status: u16,
    /// Request duration.
    pub duration: Duration,
}

/// The producer side, shared by all workers (lock-free).
pub struct AccessLog {
    lines: ArrayQueue<Vec<u8>>,
    free: ArrayQueue<Vec<u8>>,
    format: AccessLogFormat,
    stop: AtomicBool,
}

impl AccessLog {
    /// Queue one line; false if it was dropped (queue full).
    pub fn log(&self, r: &AccessRecord<'_>) -> bool {
        let mut buf = self.free.pop().unwrap_or_else(|| Vec::with_capacity(256));
        buf.clear();
        format_line(&mut buf, r, self.format);
        match self.lines.push(buf) {
            Ok(()) => true,
            Err(buf) => {
                let _ = self.free.push(buf);
                false
            }
        }
    }
}

/// What `--check` can tell without starting: a file access log [`start`] could open for
/// appending. An existing file is opened (not changed); a new one is not created, but its
/// directory must exist and be writable.
pub fn check(config: &AccessLogConfig) -> std::io::Result<()> {
    let path = &config.path;
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
    };
    match OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| named(std::io::ErrorKind::InvalidInput.into()))?;
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
                Ok(())
            } else {
                Err(named(std::io::Error::last_os_error()))
            }
        }
        Err(e) => Err(named(e)),
    }
}

/// Start the writer thread. Returns the shared producer and the thread's handle; call
/// [`stop`] to flush and end it.
pub fn start(config: &AccessLogConfig) -> std::io::Result<(Arc<AccessLog>, JoinHandle<()>)> {
    let mut out: Box<dyn Write + Send> = if config.path.as_os_str() == "-" {
        Box::new(std::io::stderr())
    } else {
        Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.path)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("access log {}: {e}", config.path.display()),
                    )
                })?,
        )
    };
    let log = Arc::new(AccessLog {
        lines: ArrayQueue::new(config.queue_lines.max(16)),
        free: ArrayQueue::new(config.queue_lines.max(16)),
        format: config.format,
        stop: AtomicBool::new(false),
    });
    let shared = log.clone();
    let handle = std::thread::Builder::new()
        .name("ringgate-accesslog".into())
        .spawn(move || {
            let mut w = BufWriter::with_capacity(64 * 1024, &mut out);
            loop {
                let mut wrote = false;
                while let Some(line) = shared.lines.pop() {
                    let _ = w.write_all(&line);
                    let _ = shared.free.push(line);
                    wrote = true;
                }
                if wrote {
                    let _ = w.flush();
                } else if shared.stop.load(Ordering::Acquire) {
                    let _ = w.flush();
                    return;
                } else {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })?;
    Ok((log, handle))
}

/// Ask the writer to flush what is queued and exit.
pub fn stop(log: &AccessLog, handle: JoinHandle<()>) {
    log.stop.store(true, Ordering::Release);
    let _ = handle.join();
}

struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Append `bytes` as one field of the text format, replacing what could break the line
/// or the field (controls, quotes, backslashes, non-ASCII, and spaces, which end a field:
/// a request-controlled value such as a user id must not add fields of its own) with
/// escapes.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    push_escaped_from(out, bytes, false);
}

/// [`push_escaped`] for the method and the target, the fields before the `key=value`
/// ones: an `=` before the first `/` or `?` is escaped too, so neither can begin like a
/// field of its own (`status=200`). A valid method has no `=`, and a valid target a `/`
/// before any.
fn push_escaped_leading(out: &mut Vec<u8>, bytes: &[u8]) {
    push_escaped_from(out, bytes, true);
}

fn push_escaped_from(out: &mut Vec<u8>, bytes: &[u8], mut is_leading: bool) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            b'=' if is_leading => out.extend_from_slice(b"\\u003d"),
            b'/' | b'?' => {
                is_leading = false;
                out.push(b);
            }
            0x21..=0x7e => out.push(b),
            _ => {
                let _ = write!(Bytes(out), "\\u{b:04x}");
            }
        }
    }
}

/// Append `bytes` as the inside of a JSON string: UTF-8 text as itself (a `\\u00XX` per
/// byte would decode as other characters), quotes, backslashes and controls escaped, and a
/// byte that is not UTF-8 as the text `\\xNN`.
fn push_json_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\\' => {
                    out.push(b'\\');
                    out.push(c as u8);
                }
                '\u{0}'..='\u{1f}' | '\u{7f}' => {
                    let _ = write!(Bytes(out), "\\u{:04x}", c as u32);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        for &b in chunk.invalid() {
            let _ = write!(Bytes(out), "\\\\x{b:02x}");
        }
    }
}

fn format_line(out: &mut Vec<u8>, r: &AccessRecord<'_>, format: AccessLogFormat) {
    let time = humantime::format_rfc3339_millis(SystemTime::now());
    let micros = r.duration.as_micros();
    match format {
        AccessLogFormat::Text => {
            let _ = write!(Bytes(out), "{time} {} ", r.client);
            push_escaped_leading(out, r.method);
            out.push(b' ');
            push_escaped_leading(out, r.target);
            out.extend_from_slice(b" user=");
            match r.user {
                Some(u) => push_escaped(out, u),
                None => out.push(b'-'),
            }
            let _ = write!(Bytes(out), " class={} partition=", or_dash(r.class));
            // A partition name is the config's, but TOML lets it hold spaces and newlines.
            match r.partition {
                "" => out.push(b'-'),
                p => push_escaped(out, p.as_bytes()),
            }
            out.extend_from_slice(b" backend=");
            match r.backend {
                Some(b) => {
                    let _ = write!(Bytes(out), "{b}");
                }
                None => out.push(b'-'),
            }
            let _ = writeln!(Bytes(out), " status={} duration_us={micros}", r.status);
        }
        AccessLogFormat::Json => {
            let _ = write!(
                Bytes(out),
                "{{\"time\":\"{time}\",\"client\":\"{}\",\"method\":\"",
                r.client
            );
            push_json_escaped(out, r.method);
            out.extend_from_slice(b"\",\"path\":\"");
            push_json_escaped(out, r.target);
            out.extend_from_slice(b"\",\"user_id\":");
            match r.user {
                Some(u) => {
                    out.push(b'"');
                    push_json_escaped(out, u);
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
            let _ = write!(Bytes(out), ",\"class\":\"{}\",\"partition\":\"", r.class);
            push_json_escaped(out, r.partition.as_bytes());
            out.extend_from_slice(b"\",\"backend\":\"");
            if let Some(b) = r.backend {
                let _ = write!(Bytes(out), "{b}");
            }
            let _ = writeln!(
                Bytes(out),
                "\",\"status\":{},\"duration_us\":{micros}}}",
                r.status
            );
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            client: "10.0.0.1".parse().unwrap(),
            method: b"POST",
            target: b"/api/spot/v2/order?x=\"1\"",
            user: Some(b"alice"),
            class: "command",
            partition: "zone_1",
            backend: Some("127.0.0.1:3001".parse().unwrap()),
            status: 200,
            duration: Duration::from_micros(85),
        }
    }

    #[test]
    fn text_and_json_lines() {
        let mut out = Vec::new();
        format_line(&mut out, &record(), AccessLogFormat::Text);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with(" 10.0.0.1 POST /api/spot/v2/order?x=\\\"1\\\" user=alice class=command partition=zone_1 backend=127.0.0.1:3001 status=200 duration_us=85\n"), "{line}");
        let mut out = Vec::new();
        format_line(&mut out, &record(), AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_id"], "alice");
        assert_eq!(v["path"], "/api/spot/v2/order?x=\"1\"");
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn json_keeps_non_ascii_user_ids() {
        let mut r = record();
        r.user = Some("José".as_bytes());
        r.target = b"/a\xff";
        let mut out = Vec::new();
        format_line(&mut out, &r, AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_id"], "José", "{}", String::from_utf8_lossy(&out));
        assert_eq!(v["path"], "/a\\xff", "an invalid byte is written as \\xNN");
    }

    #[test]
    fn full_queue_drops_and_writer_flushes() {
        let dir = std::env::temp_dir().join(format!("rg-al-{}", std::process::id()));
        let config = AccessLogConfig {
            path: dir.clone(),
            format: AccessLogFormat::Text,
            queue_lines: 16,
        };
        let (log, handle) = start(&config).unwrap();
        let mut accepted = 0;
        for _ in 0..10_000 {
            accepted += usize::from(log.log(&record()));
        }
        stop(&log, handle);
        let text = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(text.lines().count(), accepted);
        assert!(accepted >= 16);
    }
}
