//! The per-user checks of a routed request: its rate limit, and the order of a moved
//! user's Commands.
//!
//! Both use tables shared by every worker (`crate::users`); a request whose user is not
//! limited, or a Query, or a Command whose user is not moving, never waits for another
//! core.

use std::time::{Duration, Instant};

use super::request::Request;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::timer;
use crate::route::router::{Class, WorkerTable};
use crate::runtime::client::Client;
use crate::runtime::worker::Worker;
use crate::users::{retry_after_secs, InFlightGuard};

/// First pause of a held Command before it looks again; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(100);
const MAX_PAUSE: Duration = Duration::from_millis(1);

/// The 429 for a user over its rate limit, if it is; counts the request otherwise.
pub fn over_rate_limit(
    worker: &Worker,
    wt: &WorkerTable,
    c: &Client,
    req: &Request,
) -> Option<ProxyError> {
    let limits = wt.table.rate_limits.as_ref()?;
    if !req.has_user {
        return None;
    }
    let limit = limits.limit(&c.user, req.class)?;
    let users = &worker.users;
    match users
        .rate
        .admit(&c.user, req.class as usize, limit, users.now_ns())
    {
        Ok(()) => None,
        Err(wait) => {
            worker.metrics.users.rate_limited(req.class);
            Some(ProxyError::internal(ErrorKind::RateLimited(
                retry_after_secs(wait),
            )))
        }
    }
}

/// Record a Command in flight to its partition. A user whose Commands are still in flight
/// to another partition (it was moved by a reload) waits until they have completed, at
/// most `migration.max_wait_ms`; then 503. The guard ends the record when dropped.
pub async fn enter_in_flight<'w>(
    worker: &'w Worker,
    wt: &WorkerTable,
    c: &Client,
    req: &Request,
) -> Result<Option<InFlightGuard<'w>>, ProxyError> {
    if req.class != Class::Command || !req.has_user {
        return Ok(None);
    }
    let partition = wt.table.partitions[req.partition as usize].id;
    let table = &worker.users.in_flight;
    if let Ok(guard) = table.try_enter(&c.user, partition) {
        // Not held, but routed on a table replaced since (its body was still arriving):
        // the user's Commands to the new partition may have completed meanwhile.
        if moved_since(worker, wt, c, partition) {
            drop(guard);
            worker.metrics.users.migration_refused();
            return Err(ProxyError::internal(ErrorKind::MigrationWait));
        }
        return Ok(Some(guard));
    }
    let started = Instant::now();
    let mut max = wt.table.settings.migration_max_wait;
    // Never past the request's deadline: a Command sent after it would be answered 504
    // while its server executes it.
    let deadline = wt.table.settings.request_deadline.map(|d| c.started + d);
    if let Some(d) = deadline {
        max = max.min(d.saturating_duration_since(started));
    }
    let mut pause = FIRST_PAUSE;
    loop {
        if moved_since(worker, wt, c, partition) || started.elapsed() >= max {
            worker.metrics.users.migration_refused();
            return Err(ProxyError::internal(ErrorKind::MigrationWait));
        }
        timer::sleep(pause.min(max.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(MAX_PAUSE);
        if let Ok(guard) = table.try_enter(&c.user, partition) {
            // A reload installed during the pause.
            if moved_since(worker, wt, c, partition) {
                drop(guard);
                worker.metrics.users.migration_refused();
                return Err(ProxyError::internal(ErrorKind::MigrationWait));
            }
            // The client may have given up while the Command was held: a Command sent
            // now would be executed with nobody to hear the answer.
            if client_gone(c.fd) {
                return Err(ProxyError::downstream(ErrorKind::ClientGone));
            }
            worker
                .metrics
                .users
                .migration_held(started.elapsed().as_nanos() as u64);
            return Ok(Some(guard));
        }
    }
}

/// Whether the request was routed (to `partition`) on a table the worker has since
/// replaced with one that sends its user elsewhere: sent on, the Command would reach the
/// old partition after the new one got the user's Commands. It is refused; the client's
/// retry is routed on the new table. A pointer comparison unless a reload came meanwhile.
#[inline]
fn moved_since(worker: &Worker, wt: &WorkerTable, c: &Client, partition: u32) -> bool {
    if worker.is_current(&wt.table) {
        return false;
    }
    let newest = worker.table();
    newest
        .table
        .partition_for(Some(&c.user))
        .is_ok_and(|p| newest.table.partitions[p as usize].id != partition)
}

/// Whether the client closed (FIN) or reset its connection, as far as the socket says
/// without waiting or taking any byte. Bytes unread before a FIN do not make it stay: over
/// TLS they are the `close_notify` every client sends before its FIN.
fn client_gone(fd: std::os::fd::RawFd) -> bool {
    crate::forward::io::peer_closed(fd)
}
