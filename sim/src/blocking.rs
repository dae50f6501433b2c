//! Blocking queries (consul-api.md §1), following `agent/blockingquery`: run the query;
//! answer when its index is above the client's; otherwise wait for a change of the
//! watched tables, a snapshot restore, or the deadline. (A client that leaves closes its
//! connection, and hyper drops the pending query with it.) A "not found"
//! or "not changed" result during the wait moves the floor up and keeps blocking, so
//! spurious wake-ups stay invisible while a request with a stale index answers at once.

use std::time::Duration;

use tokio::sync::watch;

use crate::http::Reply;
use crate::server::{Shared, TableKind};
use crate::state::State;

/// How a query result compares for wake-up suppression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any wake-up with a higher index answers.
    Plain,
    /// Nothing found: keep blocking until something appears (`ErrNotFound`).
    NotFound,
    /// A result fingerprint: an unchanged one keeps blocking (`ErrNotChanged`).
    Fingerprint(u64),
}

/// The effective wait: `wait` absent or not positive ⇒ default, above the maximum ⇒
/// clamped, plus Consul's jitter of up to wait/16.
pub fn effective_wait(shared: &Shared, wait_ns: Option<i64>) -> Duration {
    let settings = &shared.settings;
    let wait = match wait_ns {
        Some(ns) if ns > 0 => Duration::from_nanos(ns.unsigned_abs()),
        _ => settings.default_wait,
    };
    let wait = wait.min(settings.max_wait);
    if settings.jitter {
        crate::util::jittered(wait)
    } else {
        wait
    }
}

async fn any_changed(receivers: &mut [watch::Receiver<u64>]) {
    // A closed sender would make `changed` return at once forever; never wake for it.
    async fn one(rx: &mut watch::Receiver<u64>) {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    match receivers {
        [a] => one(a).await,
        [a, b] => {
            tokio::select! {
                _ = one(a) => {}
                _ = one(b) => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Runs `query` as a blocking query over `tables`.
pub async fn query(
    shared: &Shared,
    tables: &[TableKind],
    min_index: u64,
    wait: Duration,
    mut query: impl FnMut(&State) -> (Reply, u64, Kind),
) -> Reply {
    let mut receivers: Vec<watch::Receiver<u64>> = tables
        .iter()
        .map(|t| shared.sender(*t).subscribe())
        .collect();
    let mut abandon = shared.abandon_tx.subscribe();
    // Subscribing and reading under the lock means no change can slip between the
    // query and the wait.
    let mut run = |receivers: &mut Vec<watch::Receiver<u64>>| {
        let state = shared.lock();
        for rx in receivers.iter_mut() {
            rx.borrow_and_update();
        }
        query(&state)
    };
    if min_index == 0 {
        return run(&mut receivers).0;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut floor = min_index;
    let mut not_found = false;
    let mut ran_once = false;
    let mut previous: Option<u64> = None;
    loop {
        let (reply, index, kind) = run(&mut receivers);
        match kind {
            Kind::NotFound => {
                if not_found {
                    floor = index;
                }
                not_found = true;
            }
            Kind::Fingerprint(fp) => {
                if ran_once && previous == Some(fp) {
                    floor = index;
                }
                previous = Some(fp);
            }
            Kind::Plain => {}
        }
        ran_once = true;
        if index > floor {
            return reply;
        }
        tokio::select! {
            _ = any_changed(&mut receivers) => {}
            _ = abandon.changed() => return run(&mut receivers).0,
            _ = tokio::time::sleep_until(deadline) => return reply,
        }
    }
}

/// Hash-based blocking of agent-local endpoints: answer when the content hash differs
/// from `hash` (or at once without one), or at the deadline.
pub async fn hash_query(
    shared: &Shared,
    hash: &str,
    wait: Duration,
    mut query: impl FnMut(&State) -> (Reply, String),
) -> Reply {
    let mut rx = shared.sender(TableKind::Agent).subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (reply, current) = {
            let state = shared.lock();
            rx.borrow_and_update();
            query(&state)
        };
        if hash.is_empty() || current != hash {
            return reply;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return reply;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Settings;

    fn shared(jitter: bool) -> Shared {
        Shared::new(Settings {
            acl: false,
            max_wait: Duration::from_secs(600),
            default_wait: Duration::from_secs(300),
            jitter,
            run_checks: false,
            check_interval: None,
        })
    }

    #[test]
    fn waits_default_clamp_and_jitter_like_consul() {
        let exact = shared(false);
        let cases: &[(Option<i64>, u64)] = &[
            (None, 300),
            (Some(0), 300),
            (Some(-1_000_000_000), 300),
            (Some(10_000_000_000), 10),
            (Some(3_600_000_000_000), 600),
        ];
        for (wait, secs) in cases {
            assert_eq!(
                effective_wait(&exact, *wait),
                Duration::from_secs(*secs),
                "{wait:?}"
            );
        }
        let jittered = shared(true);
        let mut saw_extra = false;
        for _ in 0..200 {
            let w = effective_wait(&jittered, Some(16_000_000_000));
            assert!(
                w >= Duration::from_secs(16) && w <= Duration::from_secs(17),
                "{w:?}"
            );
            saw_extra |= w > Duration::from_secs(16);
        }
        assert!(saw_extra, "jitter never added anything");
    }
}
