//! Retry policy shared by the watches and the writes: a jittered exponential backoff and
//! a log that reports each problem once per change of state.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Jittered exponential backoff: 250 ms doubling to a 30 s cap, reset on success.
///
/// "Equal jitter": each delay is drawn from `[d/2, d]` for the nominal delay `d`, so
/// clients that failed together spread out while the delay still grows predictably.
pub struct Backoff {
    pub(crate) attempt: u32,
    rng: XorShift,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            attempt: 0,
            rng: XorShift::seeded(),
        }
    }
    /// The next delay (and advances).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = nominal_delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let spread = half.as_nanos() as u64 + 1;
        half + Duration::from_nanos(self.rng.next() % spread)
    }
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// 250 ms * 2^attempt, capped at 30 s.
fn nominal_delay(attempt: u32) -> Duration {
    // 2^7 * 250 ms = 32 s is already past the cap; stop shifting there.
    let factor = 1u32 << attempt.min(7);
    (BACKOFF_BASE * factor).min(BACKOFF_CAP)
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// xorshift64*: plenty for jitter, and no shared generator.
struct XorShift(u64);

impl XorShift {
    /// Seeded from std's per-process random hash keys, so two daemons started in the
    /// same nanosecond (or with a clock stuck at the epoch) still differ.
    fn seeded() -> XorShift {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        XorShift::from_seed(hasher.finish())
    }

    fn from_seed(seed: u64) -> XorShift {
        // splitmix64 scrambles a low-entropy seed; xorshift must not start at 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Logs a problem once per change of state: a new or different message is logged at
/// `warn`/`error`, the same message again is not, and recovery is logged once at `info`.
pub struct ProblemLog {
    what: &'static str,
    current: Option<String>,
    /// How many lines were logged, by kind; lets tests check the state machine.
    warnings_logged: u64,
    recoveries_logged: u64,
}

impl ProblemLog {
    /// `what` names the activity ("watch catalog services", "write config entry").
    pub fn new(what: &'static str) -> ProblemLog {
        ProblemLog {
            what,
            current: None,
            warnings_logged: 0,
            recoveries_logged: 0,
        }
    }
    /// Logs `err` unless the same message was the last one logged.
    pub fn failed(&mut self, err: &dyn fmt::Display) {
        let message = err.to_string();
        if self.current.as_deref() == Some(message.as_str()) {
            return;
        }
        tracing::warn!(activity = self.what, error = %message, "Consul request failed; retrying with backoff");
        self.warnings_logged += 1;
        self.current = Some(message);
    }
    /// Logs recovery if the last state was a failure.
    pub fn ok(&mut self) {
        if self.current.take().is_some() {
            tracing::info!(activity = self.what, "Consul request succeeded again");
            self.recoveries_logged += 1;
        }
    }
    /// The current problem, if any (for /health).
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::client::{ConsulError, ErrorKind};

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap_and_resets() {
        let nominal_ms = [
            250u64, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
        ];
        assert_eq!(
            (0..10)
                .map(|a| nominal_delay(a).as_millis() as u64)
                .collect::<Vec<_>>(),
            nominal_ms
        );
        assert_eq!(nominal_delay(u32::MAX), BACKOFF_CAP);
        let mut b = Backoff::new();
        for round in 0..2 {
            for (i, n) in nominal_ms.iter().enumerate() {
                let d = b.next_delay();
                let n = Duration::from_millis(*n);
                assert!(
                    d >= n / 2 && d <= n,
                    "round {round} attempt {i}: {d:?} vs {n:?}"
                );
            }
            for _ in 0..100 {
                assert!(b.next_delay() <= BACKOFF_CAP);
            }
            b.reset();
        }
    }

    #[test]
    fn backoff_jitter_varies() {
        let mut b = Backoff::new();
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| {
                b.attempt = 7;
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
        let mut x = XorShift::from_seed(0);
        assert_ne!(x.next(), 0);
    }

    fn err(message: &str) -> ConsulError {
        ConsulError {
            endpoint: "GET /v1/catalog/services".into(),
            kind: ErrorKind::Connect(message.into()),
        }
    }

    #[test]
    fn problem_log_logs_once_per_state_change() {
        let mut log = ProblemLog::new("watch catalog services");
        log.ok();
        assert_eq!(
            (log.current(), log.warnings_logged, log.recoveries_logged),
            (None, 0, 0)
        );

        let refused = err("connection refused (127.0.0.1:8500)");
        log.failed(&refused);
        log.failed(&refused);
        log.failed(&refused);
        assert_eq!(
            log.current(),
            Some("GET /v1/catalog/services: connection refused (127.0.0.1:8500)")
        );
        assert_eq!(log.warnings_logged, 1);

        log.failed(&err("connection reset (127.0.0.1:8500)"));
        assert_eq!(log.warnings_logged, 2);
        assert_eq!(
            log.current(),
            Some("GET /v1/catalog/services: connection reset (127.0.0.1:8500)")
        );

        log.ok();
        log.ok();
        assert_eq!((log.current(), log.recoveries_logged), (None, 1));

        // The same problem after a recovery is news again.
        log.failed(&refused);
        assert_eq!(log.warnings_logged, 3);
    }
}
