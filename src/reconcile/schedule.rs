//! When the reconciler runs: the loop's decisions, pure, on an injected clock.
//!
//! - **Leading edge.** The first change after a quiet period is acted on at once: no
//!   debounce delays it.
//! - **Cool-down.** A pass that wrote something starts a cool-down; changes that arrive
//!   during it (or during the pass) are coalesced into one pass at its end. When that pass
//!   writes too, the burst is still going on and the cool-down doubles (100 ms up to
//!   500 ms, so the last change of a burst waits half a second at most);
//!   a pass that starts after a quiet cool-down resets it. A burst of 50 changes in 1 s
//!   becomes about 5 writes, and the echo of our own write (the entry watch) costs one
//!   pass that writes nothing.
//! - **Requeue.** A pass says when to look again (a deferral to a newer instance); a
//!   failed pass is retried after the error policy's backoff. A change does not wait for
//!   either.
//! - **Agent check.** Every [`AGENT_CHECK_INTERVAL`] a pass also asks the agent whether it
//!   still holds our registration.

use std::time::Duration;

use tokio::time::Instant;

/// First cool-down after a pass that wrote.
pub const COOLDOWN_BASE: Duration = Duration::from_millis(100);
/// The cool-down doubles during a burst up to this.
pub const COOLDOWN_MAX: Duration = Duration::from_millis(500);
/// How often the agent is asked whether it still holds our registration (an agent
/// restarted in dev mode, or critical reaping, loses it silently).
pub const AGENT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// What a pass asks of the loop (the kube-rs `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    AwaitChange,
    /// Look again after this, whatever happens meanwhile.
    RequeueAfter(Duration),
}

/// One pass to run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Ask the agent about our registration first.
    pub check_agent: bool,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    /// When the first change not yet acted on arrived.
    pending_since: Option<Instant>,
    requeue_at: Option<Instant>,
    agent_check_at: Instant,
    /// End of the current cool-down.
    quiet_at: Option<Instant>,
    cooldown: Duration,
    /// Whether the pass being run was held back by a cool-down.
    held: bool,
    check_agent: bool,
}

impl Schedule {
    /// The first pass runs at once.
    pub fn new(now: Instant) -> Schedule {
        Schedule {
            pending_since: Some(now),
            requeue_at: None,
            agent_check_at: now + AGENT_CHECK_INTERVAL,
            quiet_at: None,
            cooldown: COOLDOWN_BASE,
            held: false,
            check_agent: false,
        }
    }

    /// Something changed in Consul.
    pub fn changed(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
    }

    /// When the first change not yet acted on arrived: what the next pass reacts to
    /// (`ism_reaction_seconds`). Read it before [`Schedule::due`], which clears it.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    /// When to wake up if nothing changes before.
    pub fn deadline(&self) -> Instant {
        let pending = self
            .pending_since
            .map(|since| self.quiet_at.map_or(since, |quiet| quiet.max(since)));
        [Some(self.agent_check_at), self.requeue_at, pending]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.agent_check_at)
    }

    /// The pass to run now, if one is due.
    pub fn due(&mut self, now: Instant) -> Option<Pass> {
        let check_agent = now >= self.agent_check_at;
        let requeued = self.requeue_at.is_some_and(|at| now >= at);
        let quiet = !matches!(self.quiet_at, Some(at) if now < at);
        let changed = self.pending_since.is_some() && quiet;
        if !(check_agent || requeued || changed) {
            return None;
        }
        self.held = match (self.pending_since, self.quiet_at) {
            (Some(since), Some(quiet)) => since < quiet,
            _ => false,
        };
        self.pending_since = None;
        self.requeue_at = None;
        self.check_agent = check_agent;
        Some(Pass { check_agent })
    }

    /// The pass returned `next` (or failed, and the error policy gave `next`), having
    /// written something or not.
    pub fn done(&mut self, now: Instant, next: Action, wrote: bool) {
        if self.check_agent {
            self.agent_check_at = now + AGENT_CHECK_INTERVAL;
            self.check_agent = false;
        }
        self.requeue_at = match next {
            Action::AwaitChange => None,
            Action::RequeueAfter(after) => Some(now + after),
        };
        if wrote {
            self.cooldown = if self.held {
                (self.cooldown * 2).min(COOLDOWN_MAX)
            } else {
                COOLDOWN_BASE
            };
            self.quiet_at = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs every pass that is due at `now`, returning whether one ran.
    fn tick(s: &mut Schedule, now: Instant, wrote: bool) -> bool {
        match s.due(now) {
            Some(_) => {
                s.done(now, Action::AwaitChange, wrote);
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_first_pass_and_a_change_after_a_quiet_period_run_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.deadline(), t0);
        assert!(tick(&mut s, t0, true));
        assert_eq!(s.due(t0 + 500 * MS), None, "nothing changed");
        s.changed(t0 + 500 * MS);
        assert_eq!(s.deadline(), t0 + 500 * MS, "no debounce");
        assert!(tick(&mut s, t0 + 500 * MS, true));
    }

    #[test]
    fn changes_during_a_cooldown_wait_for_its_end_and_coalesce() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(tick(&mut s, t0, true));
        for k in 1..5 {
            s.changed(t0 + k * 10 * MS);
            assert!(!tick(&mut s, t0 + k * 10 * MS, true), "held at {k}0 ms");
        }
        assert_eq!(s.deadline(), t0 + COOLDOWN_BASE);
        assert!(
            tick(&mut s, t0 + COOLDOWN_BASE, true),
            "one pass for four changes"
        );
        assert_eq!(s.due(t0 + COOLDOWN_BASE + MS), None);
    }

    #[test]
    fn pending_since_is_the_first_change_until_a_pass_acts_on_it() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(tick(&mut s, t0, true));
        assert_eq!(s.pending_since(), None);
        s.changed(t0 + 10 * MS);
        s.changed(t0 + 20 * MS);
        assert_eq!(
            s.pending_since(),
            Some(t0 + 10 * MS),
            "held by the cool-down"
        );
        assert!(tick(&mut s, t0 + COOLDOWN_BASE, true));
        assert_eq!(s.pending_since(), None);
    }

    #[test]
    fn a_pass_that_writes_nothing_starts_no_cooldown() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(tick(&mut s, t0, false));
        s.changed(t0 + MS);
        assert!(tick(&mut s, t0 + MS, false), "at once");
    }

    #[test]
    fn a_burst_of_fifty_changes_in_one_second_is_at_most_five_passes_that_write() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let mut passes = 0;
        let mut now = t0;
        // One change every 20 ms for a second, then quiet; step the clock by 1 ms.
        while now < t0 + Duration::from_secs(4) {
            let since = now - t0;
            if since < Duration::from_secs(1) && since.as_millis() % 20 == 0 {
                s.changed(now);
            }
            if tick(&mut s, now, true) {
                passes += 1;
            }
            now += MS;
        }
        assert!(passes <= 5, "{passes} passes");
        assert!(s.due(now).is_none(), "the last change was acted on");
        // The burst is over: the next change is acted on at once, and the cool-down after
        // it is the base one again.
        s.changed(now);
        assert!(tick(&mut s, now, true));
        s.changed(now + MS);
        assert_eq!(s.deadline(), now + COOLDOWN_BASE);
    }

    #[test]
    fn the_cooldown_doubles_up_to_its_cap() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let mut now = t0;
        assert!(tick(&mut s, now, true));
        let mut cooldowns = vec![s.cooldown.as_millis()];
        for _ in 0..5 {
            s.changed(now + MS);
            now = s.deadline();
            assert!(tick(&mut s, now, true));
            cooldowns.push(s.cooldown.as_millis());
        }
        assert_eq!(cooldowns, [100, 200, 400, 500, 500, 500]);
    }

    #[test]
    fn requeue_and_error_backoff_come_back_without_a_change() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(s.due(t0).is_some());
        s.done(t0, Action::RequeueAfter(Duration::from_secs(1)), false);
        assert_eq!(s.deadline(), t0 + Duration::from_secs(1));
        assert_eq!(s.due(t0 + 999 * MS), None);
        assert!(s.due(t0 + Duration::from_secs(1)).is_some());
        s.done(t0 + Duration::from_secs(1), Action::AwaitChange, false);
        assert_eq!(s.deadline(), t0 + AGENT_CHECK_INTERVAL);
    }

    #[test]
    fn a_change_does_not_wait_for_a_requeue() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert!(s.due(t0).is_some());
        s.done(t0, Action::RequeueAfter(Duration::from_secs(30)), false);
        s.changed(t0 + MS);
        assert!(s.due(t0 + MS).is_some());
    }

    #[test]
    fn the_agent_is_checked_every_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        assert_eq!(s.due(t0), Some(Pass { check_agent: false }));
        s.done(t0, Action::AwaitChange, false);
        assert_eq!(s.deadline(), t0 + AGENT_CHECK_INTERVAL);
        let at = t0 + AGENT_CHECK_INTERVAL;
        assert_eq!(s.due(at), Some(Pass { check_agent: true }));
        s.done(at + MS, Action::AwaitChange, false);
        assert_eq!(s.deadline(), at + MS + AGENT_CHECK_INTERVAL);
        s.changed(at + 2 * MS);
        assert_eq!(s.due(at + 2 * MS), Some(Pass { check_agent: false }));
    }
}
