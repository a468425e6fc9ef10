//! A minimal level-triggered `epoll` wrapper with nanosecond wait timeouts.
//!
//! Why not monoio (io_uring) or mio here: both round timers to whole milliseconds (monoio's
//! timer wheel has 1 ms slots; mio rounds `epoll_wait` timeouts up to 1 ms). An open-loop
//! generator that sends late by up to a millisecond adds up to a millisecond of *measured*
//! latency to every request, which would swamp the microsecond-scale differences this tool
//! exists to show. `epoll_pwait2` (Linux ≥ 5.11) takes a `timespec`; the worker also sets its
//! timer slack to 1 ns. On older kernels we fall back to `epoll_wait` (1 ms resolution) and say
//! so once on stderr.
//!
//! # Invariants
//!
//! Tokens are opaque `u64`s chosen by the caller; the worker packs a connection slot and a
//! generation into them so events for a closed socket are recognised and dropped.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static WARNED_NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// One readiness event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: u64,
    /// Readable, or error/hang-up (a read will tell which).
    pub is_readable: bool,
    /// Writable, or error/hang-up.
    pub is_writable: bool,
}

pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    has_pwait2: bool,
}

impl Poller {
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
            has_pwait2: true,
        })
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64, is_writable: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if is_writable {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; the kernel
        // copies it. `fd` validity is checked by the kernel (EBADF).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Starts watching `fd` for reads (and writes if `is_writable`).
    pub fn add(&self, fd: RawFd, token: u64, is_writable: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, is_writable)
    }

    /// Changes the interest of a watched `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, is_writable: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, is_writable)
    }

    /// Stops watching `fd` (call before closing it).
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events, at most `timeout` (`None` = forever). Returns how many are ready;
    /// read them with [`Poller::event`]. An interrupted wait returns 0.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let capacity = self.events.len() as libc::c_int;
        let rc = if self.has_pwait2 {
            let spec = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
            });
            let spec_ptr = spec
                .as_ref()
                .map_or(std::ptr::null(), |s| s as *const libc::timespec);
            // SAFETY: `events` has `capacity` initialised slots the kernel may write; the
            // timespec (or null) lives across the call; a null sigmask means "unchanged".
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    capacity,
                    spec_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.has_pwait2 = false;
                if !WARNED_NO_PWAIT2.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "ringgate-load: epoll_pwait2 unavailable (kernel < 5.11); send times \
                         are now accurate to 1 ms only"
                    );
                }
                return self.wait(timeout);
            }
            rc as libc::c_int
        } else {
            let ms = timeout.map_or(-1, |t| {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as libc::c_int
            });
            // SAFETY: as above, `events` has `capacity` writable slots.
            unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    capacity,
                    ms,
                )
            }
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(rc as usize)
    }

    /// The `i`-th event of the last [`Poller::wait`].
    pub fn event(&self, i: usize) -> Event {
        let raw = self.events[i];
        let flags = raw.events as libc::c_int;
        let is_broken = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
        Event {
            token: raw.u64,
            is_readable: is_broken || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0,
            is_writable: is_broken || flags & libc::EPOLLOUT != 0,
        }
    }
}

/// Lets the kernel wake this thread within 1 ns of a timer instead of the default 50 µs.
pub fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[test]
    fn sub_millisecond_timeouts_are_honoured() {
        set_fine_timer_slack();
        let mut poller = Poller::new(8).unwrap();
        let mut best = Duration::MAX;
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(poller.wait(Some(Duration::from_micros(200))).unwrap(), 0);
            best = best.min(started.elapsed());
        }
        assert!(best >= Duration::from_micros(200), "{best:?}");
        if poller.has_pwait2 {
            // A 1 ms-resolution wait could never come back this early.
            assert!(best < Duration::from_micros(900), "{best:?}");
        }
    }

    #[test]
    fn readiness_is_reported_with_the_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut poller = Poller::new(8).unwrap();
        poller.add(server.as_raw_fd(), 42, false).unwrap();
        assert_eq!(poller.wait(Some(Duration::from_millis(1))).unwrap(), 0);
        client.write_all(b"x").unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(5))).unwrap(), 1);
        let event = poller.event(0);
        assert_eq!(event.token, 42);
        assert!(event.is_readable && !event.is_writable);
        poller.modify(server.as_raw_fd(), 43, true).unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(5))).unwrap(), 1);
        assert_eq!(poller.event(0).token, 43);
        assert!(poller.event(0).is_writable);
        poller.remove(server.as_raw_fd()).unwrap();
        assert_eq!(poller.wait(Some(Duration::from_millis(1))).unwrap(), 0);
    }
}
