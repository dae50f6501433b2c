//! Blocking-query watch (consul-api §1): one endpoint, one connection, Consul's index rules.
//!
//! - first request without an index (immediate answer), then `index=<last>&wait=<wait>`;
//! - index went backwards: reset to 0 and read again at once; never send 0 after the
//!   first answer (floor 1); an unchanged index (wait expired) is not reported;
//! - a token bucket limits how fast requests are re-issued under churn;
//! - after an error, the next request waits a jittered exponential backoff (cap 30 s);
//! - the client timeout is `wait + wait/16 + margin`.

use std::time::Duration;

use crate::consul::client::{Connection, ConsulError, Response};

/// Blocking wait asked of Consul.
pub const WAIT: Duration = Duration::from_secs(300);

pub struct BlockingWatch {}

impl BlockingWatch {
    /// `path_and_query` is the endpoint with its own parameters, e.g.
    /// `/v1/catalog/services?filter=...`; `index`/`wait` are appended.
    pub fn new(connection: Connection, path_and_query: String) -> BlockingWatch {
        let _ = (connection, path_and_query);
        todo!()
    }

    /// The next answer whose index differs from the last one reported (the first call
    /// answers at once). Status 200 or 404. On error, returns the error; the following
    /// call first waits the backoff. Never returns the same index twice in a row.
    pub async fn next(&mut self) -> Result<Response, ConsulError> {
        todo!()
    }
}

/// Jittered exponential backoff: 250 ms doubling to a 30 s cap, reset on success.
pub struct Backoff {}

impl Backoff {
    pub fn new() -> Backoff {
        todo!()
    }
    /// The next delay (and advances).
    pub fn next_delay(&mut self) -> Duration {
        todo!()
    }
    pub fn reset(&mut self) {
        todo!()
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Logs a problem once per change of state: a new or different message is logged at
/// `warn`/`error`, the same message again is not, and recovery is logged once at `info`.
pub struct ProblemLog {}

impl ProblemLog {
    /// `what` names the activity ("watch catalog services", "write config entry").
    pub fn new(what: &'static str) -> ProblemLog {
        let _ = what;
        todo!()
    }
    /// Logs `err` unless the same message was the last one logged.
    pub fn failed(&mut self, err: &ConsulError) {
        let _ = err;
        todo!()
    }
    /// Logs recovery if the last state was a failure.
    pub fn ok(&mut self) {
        todo!()
    }
    /// The current problem, if any (for /health).
    pub fn current(&self) -> Option<&str> {
        todo!()
    }
}
