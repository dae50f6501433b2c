//! The reconciler: watch → snapshot → plan → diff → apply → report, one pass at a time.
//!
//! ```text
//!  watches ──► Inputs (latest value of each, one wake-up) ─┐
//!                      Overlay (our writes, fresh reads) ──┤ snapshot
//!                                                          ▼
//!              plan (pure) ─► diff (pure) ─► apply ops in order ─► report (/health)
//!                  ▲                              │
//!                  └── CAS miss: re-read that entry into the overlay, plan again
//! ```
//!
//! The reconciler is never told *why* it runs: each pass reads the latest state of every
//! watch and makes Consul match. When it runs is the [`schedule`]'s decision (leading
//! edge, cool-down under bursts, requeue, agent check); a failed pass is retried after
//! [`error_policy`]'s backoff. A pass stops between two operations when the daemon shuts
//! down, so the operation in flight finishes and nothing is sent after it.

pub mod diff;
pub mod inputs;
pub mod schedule;
pub mod status;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::consul::api;
use crate::consul::client::{Connection, ConsulError};
use crate::consul::retry::{Backoff, ProblemLog};
use crate::health::HealthState;
use crate::metrics::{Metrics, Reaction, WriteKind, WriteResult};
use crate::model::{
    modify_index, Body, Catalog, EntryKey, Intentions, Kind, Registration, Warning,
};
use crate::plan::intentions::{self, Change};
use crate::plan::{self, PlanSettings, Snapshot};
use diff::{Diff, Observed, Op, Stamping};
use inputs::{Inputs, Overlay};
use schedule::{Action, Pass, Schedule};

/// Re-reads after a CAS miss within one pass before backing off.
pub const CAS_ATTEMPTS: usize = 5;
/// An instance defers to a newer plan this long at most, then writes anyway: after a
/// snapshot restore every recorded index looks newer than any index Consul now sends.
pub const DEFER_LIMIT: Duration = Duration::from_secs(5);
/// While deferring, look again this often (the catalog watch usually wakes us first).
pub const DEFER_RECHECK: Duration = Duration::from_secs(1);

/// Why a pass did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileError {
    /// Consul refused or failed a request.
    Consul(ConsulError),
    /// The entry changed under every one of our writes in this pass (another writer, or
    /// several instances racing).
    CasExhausted { key: EntryKey, attempts: usize },
    /// The daemon is shutting down: the pass stopped between two operations.
    Stopped,
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileError::Consul(err) => err.fmt(f),
            ReconcileError::CasExhausted { key, attempts } => write!(
                f,
                "{key} kept changing under us ({attempts} CAS misses in a row); retrying"
            ),
            ReconcileError::Stopped => f.write_str("shutting down"),
        }
    }
}

impl From<ConsulError> for ReconcileError {
    fn from(err: ConsulError) -> Self {
        ReconcileError::Consul(err)
    }
}

/// How long to wait before the next pass after `err` (the kube-rs `error_policy`).
pub fn error_policy(err: &ReconcileError, backoff: &mut Backoff) -> Action {
    match err {
        ReconcileError::Stopped => Action::AwaitChange,
        ReconcileError::Consul(_) | ReconcileError::CasExhausted { .. } => {
            Action::RequeueAfter(backoff.next_delay())
        }
    }
}

/// What applying a diff came to.
enum Applied {
    Done,
    /// Plan again: the world changed under a write (a CAS miss, counted against the
    /// budget) or we changed it (service-defaults created, not counted).
    Replan {
        cas_miss: Option<EntryKey>,
    },
}

/// What a change to a service's intentions came to.
enum Amended {
    Written,
    /// The entry changed between our read and our write: read it again.
    CasMiss,
    /// The entry as read no longer needs the change (someone made it, or another one
    /// meanwhile): plan again from it.
    Learnt,
}

/// One log per activity, so each problem is logged once per change of state.
struct Logs {
    writes: BTreeMap<Kind, ProblemLog>,
    register: ProblemLog,
    agent: ProblemLog,
}

impl Logs {
    fn new() -> Logs {
        Logs {
            writes: BTreeMap::new(),
            register: ProblemLog::new("register ingress service"),
            agent: ProblemLog::new("check ingress service at the agent"),
        }
    }

    fn write(&mut self, kind: Kind) -> &mut ProblemLog {
        self.writes.entry(kind).or_insert_with(|| {
            ProblemLog::new(match kind {
                Kind::ServiceDefaults => "create service-defaults",
                Kind::ServiceIntentions => "write service-intentions",
                Kind::IngressGateway => "write ingress-gateway entry",
                Kind::ApiGateway => "write api-gateway entry",
                Kind::HttpRoute => "write http-route entries",
            })
        })
    }
}

/// What /health shows, and the warnings logged once each.
struct Report {
    health: watch::Sender<HealthState>,
    /// Sorted, de-duplicated.
    warnings: Vec<Warning>,
    last_sync: Option<SystemTime>,
    /// Of the last plan: services exposed, and its warnings.
    exposed: usize,
}

impl Report {
    fn publish(&mut self, problem: Option<String>, synced: bool) {
        if synced {
            self.last_sync = Some(SystemTime::now());
        }
        let state = HealthState {
            problem,
            last_sync: self.last_sync,
            services_exposed: self.exposed,
            warnings: self.warnings.len(),
        };
        self.health.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            *current = state;
            true
        });
    }

    /// Logs new warnings and resolved ones, once each.
    fn warnings(&mut self, mut warnings: Vec<Warning>) {
        // Mostly sorted already (the plan's are), and mostly the same as last time:
        // thousands of standing warnings are compared, not collected into a set again.
        warnings.sort_unstable();
        warnings.dedup();
        if warnings == self.warnings {
            return;
        }
        let (new, old) = (&warnings, &self.warnings);
        for warning in new.iter().filter(|w| old.binary_search(w).is_err()) {
            tracing::warn!("{warning}");
        }
        for gone in old.iter().filter(|w| new.binary_search(w).is_err()) {
            tracing::info!("resolved: {gone}");
        }
        self.warnings = warnings;
    }
}

pub struct Reconciler {
    settings: Arc<PlanSettings>,
    connection: Connection,
    inputs: Inputs,
    overlay: Overlay,
    /// The registration the agent holds, as far as we know (None: register again).
    registered: Option<Registration>,
    /// Since when a write has waited for our catalog to catch up with the one an entry
    /// was planned from (see `model::CATALOG_INDEX_META`).
    deferring_since: Option<Instant>,
    /// When we last wrote each entry with a Status (API-gateway kinds): its Status is
    /// believed only some time after.
    last_written: BTreeMap<EntryKey, Instant>,
    /// The last pass applied its whole plan (nothing deferred, nothing failed).
    settled: bool,
    /// What the last plan derived from each service's tags.
    memo: plan::Memo,
    report: Report,
    logs: Logs,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
    /// The registry of `connection`'s client: passes, writes and reactions.
    metrics: Metrics,
}

impl Reconciler {
    pub fn new(
        settings: Arc<PlanSettings>,
        connection: Connection,
        inputs: Inputs,
        health: watch::Sender<HealthState>,
        stop: watch::Receiver<bool>,
    ) -> Reconciler {
        let metrics = connection.metrics().clone();
        Reconciler {
            metrics,
            settings,
            connection,
            inputs,
            overlay: Overlay::default(),
            registered: None,
            deferring_since: None,
            last_written: BTreeMap::new(),
            settled: false,
            memo: plan::Memo::default(),
            report: Report {
                health,
                warnings: Vec::new(),
                last_sync: None,
                exposed: 0,
            },
            logs: Logs::new(),
            backoff: Backoff::new(),
            stop,
        }
    }

    /// Runs passes as the schedule says until the daemon stops.
    pub async fn run(mut self) {
        while !self.inputs.all_read() {
            self.publish_waiting();
            tokio::select! {
                () = self.inputs.changed() => {}
                () = stopped(&mut self.stop) => return,
            }
        }
        let mut schedule = Schedule::new(Instant::now());
        let mut reaction = Reaction::default();
        loop {
            let trigger = schedule.pending_since();
            if let Some(pass) = schedule.due(Instant::now()) {
                reaction.started(trigger);
                let (outcome, wrote) = self.pass(pass).await;
                if let Some(took) = reaction.ended(Instant::now(), outcome.is_ok(), wrote) {
                    self.metrics.reaction(took);
                }
                let next = match outcome {
                    Ok(action) => {
                        self.backoff.reset();
                        action
                    }
                    Err(ReconcileError::Stopped) => return,
                    Err(err) => error_policy(&err, &mut self.backoff),
                };
                schedule.done(Instant::now(), next, wrote);
                continue;
            }
            tokio::select! {
                () = self.inputs.changed() => schedule.changed(Instant::now()),
                () = sleep_until(schedule.deadline()) => {}
                () = stopped(&mut self.stop) => return,
            }
        }
    }

    fn publish_waiting(&mut self) {
        let problem = self
            .inputs
            .problem()
            .unwrap_or_else(|| "starting: first read of Consul not complete".into());
        self.report.publish(Some(problem), false);
    }

    /// One pass: plan, then make Consul match; publishes the outcome. Returns it, and
    /// whether anything was written.
    async fn pass(&mut self, pass: Pass) -> (Result<Action, ReconcileError>, bool) {
        if pass.check_agent {
            self.check_agent().await;
        }
        if self.settled
            && self.registered.is_some()
            && self.inputs.unchanged_since_plan(&mut self.overlay)
        {
            tracing::debug!("nothing new but the echo of our own writes; not planning again");
            let problem = self.inputs.problem();
            self.report.publish(problem, true);
            return (Ok(Action::AwaitChange), false);
        }
        let mut wrote = false;
        let outcome = self.converge(&mut wrote).await;
        self.settled = matches!(outcome, Ok(Action::AwaitChange));
        if outcome.is_err() {
            // A deferral is only ever to the plan seen in this pass.
            self.deferring_since = None;
        }
        let problem = match &outcome {
            Err(ReconcileError::Stopped) => return (outcome, wrote),
            Err(err) => Some(err.to_string()),
            Ok(_) => self.inputs.problem(),
        };
        self.metrics.reconciled(outcome.is_ok());
        self.report.publish(problem, outcome.is_ok());
        (outcome, wrote)
    }

    /// Plans and applies until Consul holds the plan, within one CAS budget.
    async fn converge(&mut self, wrote: &mut bool) -> Result<Action, ReconcileError> {
        let mut misses = 0;
        loop {
            let (diff, status_recheck) = self.plan_and_diff();
            for newer in &diff.overridden {
                tracing::info!(
                    theirs = newer.theirs,
                    ours = newer.ours,
                    "the catalog index of {} stayed ahead of ours for {DEFER_LIMIT:?} (index reset?); writing our plan",
                    newer.key
                );
            }
            let action = match (self.deferral(&diff), status_recheck) {
                (Action::AwaitChange, Some(after)) => Action::RequeueAfter(after),
                (action, _) => action,
            };
            match self.apply(diff.ops, wrote).await? {
                Applied::Done => return Ok(action),
                Applied::Replan { cas_miss: None } => {}
                Applied::Replan {
                    cas_miss: Some(key),
                } => {
                    misses += 1;
                    if misses >= CAS_ATTEMPTS {
                        let kind = key.kind;
                        let err = ReconcileError::CasExhausted {
                            key,
                            attempts: misses,
                        };
                        self.logs.write(kind).failed(&err);
                        return Err(err);
                    }
                }
            }
        }
    }

    /// Keeps a deferral going (look again soon) or ends it.
    fn deferral(&mut self, diff: &Diff) -> Action {
        if diff.deferred.is_empty() {
            self.deferring_since = None;
            return Action::AwaitChange;
        }
        self.deferring_since.get_or_insert_with(Instant::now);
        for newer in &diff.deferred {
            tracing::debug!(
                theirs = newer.theirs,
                ours = newer.ours,
                "{} was planned from a newer catalog than ours; waiting for our catalog watch",
                newer.key
            );
        }
        Action::RequeueAfter(DEFER_RECHECK)
    }

    /// Plans from the latest state of every watch and what we know newer, and diffs the
    /// plan against the same view.
    fn plan_and_diff(&mut self) -> (Diff, Option<Duration>) {
        // A catalog watch that is failing will not catch up: keep deferring rather than
        // write an old view (its error is on /health meanwhile).
        let defer_to_newer = self
            .deferring_since
            .map_or(true, |since| since.elapsed() < DEFER_LIMIT)
            || self.inputs.catalog_failing();
        self.inputs.mark_planned();
        let protocols = {
            let watched = self.inputs.service_defaults.borrow();
            let proxy_default = self.inputs.proxy_default.borrow().value.clone().flatten();
            self.overlay.protocols(
                watched.value.as_ref().unwrap_or(&BTreeMap::new()),
                proxy_default,
            )
        };
        let catalog = self.inputs.catalog.borrow();
        let gateway = self.inputs.gateway.borrow();
        let routes = self.inputs.routes.as_ref().map(|routes| routes.borrow());
        let intentions = self.inputs.intentions.as_ref().map(|list| list.borrow());
        let mut watched = vec![(
            self.inputs.gateway_key.clone(),
            gateway.value.as_ref().and_then(Option::as_ref),
        )];
        if let Some(Some(list)) = routes.as_ref().map(|l| l.value.as_ref()) {
            watched.extend(list.iter().map(|(name, body)| {
                (EntryKey::new(Kind::HttpRoute, name.as_str()), Some(&**body))
            }));
        }
        let intentions_list = intentions.as_ref().and_then(|l| l.value.as_ref());
        let (entries, intentions_view) = self.overlay.views(&watched, intentions_list);
        let empty = Catalog::new();
        let snapshot = Snapshot {
            catalog: catalog.value.as_deref().unwrap_or(&empty),
            protocols: &protocols,
            entries: &entries,
            intentions: &intentions_view,
        };
        let mut desired = plan::plan_with(&snapshot, &self.settings, &mut self.memo);
        self.report.exposed = desired.exposed_services;
        let mut warnings = std::mem::take(&mut desired.warnings);
        let observed = Observed {
            entries: &entries,
            intentions: &intentions_view,
            registered: self.registered.as_ref(),
            gateway: &self.settings.gateway_name,
        };
        let stamping = Stamping {
            catalog_index: catalog.index,
            defer_to_newer,
        };
        let (standing, recheck) =
            status::status_warnings(&entries, &self.last_written, Instant::now());
        let diff = diff::diff(desired, &observed, stamping);
        warnings.extend(diff.warnings.iter().cloned());
        warnings.extend(standing);
        drop((catalog, gateway, routes, intentions));
        self.report.warnings(warnings);
        (diff, recheck)
    }

    /// Applies `ops` in order, stopping between two when the daemon shuts down.
    /// Applies `ops` in order, stopping between two when the daemon shuts down. A failed
    /// intentions write does not stop the others (the gateway's config and the
    /// registration are kept current whatever the token may do with intentions): the pass
    /// fails with it at the end.
    async fn apply(&mut self, ops: Vec<Op>, wrote: &mut bool) -> Result<Applied, ReconcileError> {
        let mut created_defaults = false;
        let mut deferred_error = None;
        for op in ops {
            if *self.stop.borrow() {
                return Err(ReconcileError::Stopped);
            }
            let creates_defaults =
                matches!(&op, Op::Put { key, .. } if key.kind == Kind::ServiceDefaults);
            if created_defaults && !creates_defaults {
                // The gateway's config is planned again with the new protocols.
                return Ok(Applied::Replan { cas_miss: None });
            }
            let isolated = op
                .key()
                .is_some_and(|key| key.kind == Kind::ServiceIntentions);
            let outcome = match op {
                Op::Put { key, body, cas } if key.kind == Kind::ServiceDefaults => {
                    created_defaults |= self.create_defaults(&key, &body, cas).await;
                    *wrote |= created_defaults;
                    continue;
                }
                Op::Put { key, body, cas } => self
                    .put(&key, body, cas)
                    .await
                    .map(|done| (!done).then_some(key)),
                Op::Delete { key, cas } => self
                    .delete(&key, cas)
                    .await
                    .map(|done| (!done).then_some(key)),
                Op::Refresh { key } => Ok(Some(key)),
                Op::Intentions { key, change, stamp } => {
                    match self.amend_intentions(&key, change, stamp).await {
                        Ok(Amended::Written) => Ok(None),
                        Ok(Amended::CasMiss) => Ok(Some(key)),
                        Ok(Amended::Learnt) => {
                            return Ok(Applied::Replan {
                                cas_miss: Some(key),
                            })
                        }
                        Err(err) => Err(err),
                    }
                }
                Op::Register(registration) => self.register(registration).await.map(|()| None),
            };
            match outcome {
                Ok(None) => *wrote = true,
                // A CAS miss, or an entry to learn the index of.
                Ok(Some(key)) => return self.refresh(key).await,
                Err(err) if isolated => {
                    deferred_error.get_or_insert(err);
                }
                Err(err) => return Err(err),
            }
        }
        if let Some(err) = deferred_error {
            return Err(err);
        }
        Ok(match created_defaults {
            true => Applied::Replan { cas_miss: None },
            false => Applied::Done,
        })
    }

    /// `PUT` with CAS: Ok(false) on a CAS miss.
    async fn put(&mut self, key: &EntryKey, body: Body, cas: u64) -> Result<bool, ReconcileError> {
        let watched = self.inputs.watched_index(key);
        let answer = api::put_entry(&mut self.connection, key, &body, cas).await;
        let kind = WriteKind::of_entry(key.kind);
        self.metrics.write(kind, WriteResult::of_cas(&answer));
        match answer {
            Ok(true) => {
                self.logs.write(key.kind).ok();
                tracing::info!(gateway = %self.settings.gateway_name, entry = %key.name, services = self.report.exposed, "wrote {} config entry", key.kind);
                self.learn(key, watched, Some(body));
                if matches!(key.kind, Kind::ApiGateway | Kind::HttpRoute) {
                    // Only these carry a Status (thousands of intentions would not).
                    self.last_written.insert(key.clone(), Instant::now());
                }
                Ok(true)
            }
            Ok(false) => {
                tracing::debug!(%key, cas, "entry changed since read (CAS miss); reading it again");
                Ok(false)
            }
            Err(err) => {
                self.logs.write(key.kind).failed(&err);
                Err(err.into())
            }
        }
    }

    /// `DELETE` with CAS: Ok(false) on a CAS miss.
    async fn delete(&mut self, key: &EntryKey, cas: u64) -> Result<bool, ReconcileError> {
        let watched = self.inputs.watched_index(key);
        let answer = api::delete_entry(&mut self.connection, key, cas).await;
        let kind = WriteKind::of_entry(key.kind);
        self.metrics.write(kind, WriteResult::of_cas(&answer));
        match answer {
            Ok(true) => {
                self.logs.write(key.kind).ok();
                tracing::info!(%key, "deleted config entry");
                self.learn(key, watched, None);
                self.last_written.remove(key);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(err) => {
                self.logs.write(key.kind).failed(&err);
                Err(err.into())
            }
        }
    }

    /// Reads `key` again into the overlay (after a CAS miss, or to learn its index).
    async fn refresh(&mut self, key: EntryKey) -> Result<Applied, ReconcileError> {
        let watched = self.inputs.watched_index(&key);
        let fresh = api::read_entry(&mut self.connection, &key)
            .await
            .inspect_err(|err| self.logs.write(key.kind).failed(err))?;
        self.learn(&key, watched, fresh);
        Ok(Applied::Replan {
            cas_miss: Some(key),
        })
    }

    /// Records what we now know of `key` in the overlay (of intentions, only what decides
    /// their plan).
    fn learn(&mut self, key: &EntryKey, watched: Option<u64>, body: Option<Body>) {
        if key.kind == Kind::ServiceIntentions {
            let gateway = self.settings.gateway_name.as_str();
            let known = body.map(|body| Intentions::of(&body, gateway));
            self.overlay
                .learn_intentions(key.name.clone(), watched, known);
        } else {
            self.overlay.learn(key.clone(), watched, body);
        }
    }

    /// Makes `change` to a service's intentions: a created entry is written as it is, an
    /// existing one is read first and written back with only our source changed, with
    /// CAS on what was read.
    async fn amend_intentions(
        &mut self,
        key: &EntryKey,
        change: Change,
        stamp: Option<u64>,
    ) -> Result<Amended, ReconcileError> {
        let gateway = self.settings.gateway_name.as_str();
        let (mut body, cas) = match change {
            Change::Create => (intentions::created(&key.name, gateway), 0),
            _ => {
                let watched = self.inputs.watched_index(key);
                let current = api::read_entry(&mut self.connection, key)
                    .await
                    .inspect_err(|err| self.logs.write(key.kind).failed(err))?;
                let amended = current.as_ref().and_then(|current| {
                    let cas = modify_index(current)?;
                    Some((intentions::amend(current, change, gateway)?, cas))
                });
                match amended {
                    Some(amended) => amended,
                    None => {
                        self.learn(key, watched, current);
                        return Ok(Amended::Learnt);
                    }
                }
            }
        };
        diff::add_stamp(&mut body, stamp);
        Ok(match self.put(key, body, cas).await? {
            true => Amended::Written,
            false => Amended::CasMiss,
        })
    }

    /// Creates a service-defaults entry (create-only). Returns whether it was created; a
    /// refusal or failure is not retried until the service-defaults watch changes.
    async fn create_defaults(&mut self, key: &EntryKey, body: &Body, cas: u64) -> bool {
        let name = key.name.as_str();
        if self.overlay.defaults_skipped(name) {
            return false;
        }
        let answer = api::put_entry(&mut self.connection, key, body, cas).await;
        let kind = WriteKind::of_entry(key.kind);
        self.metrics.write(kind, WriteResult::of_cas(&answer));
        let log = self.logs.write(Kind::ServiceDefaults);
        match answer {
            Ok(true) => {
                log.ok();
                tracing::info!(service = %name, "created service-defaults with Protocol = \"http\" (SETSERVICEDEFAULTS)");
                self.overlay.created_defaults(name, "http");
                true
            }
            Ok(false) => {
                // Someone created it meanwhile: its protocol comes through the watch.
                self.overlay.skip_defaults(name);
                false
            }
            Err(err) => {
                log.failed(&err);
                self.overlay.skip_defaults(name);
                false
            }
        }
    }

    async fn register(&mut self, desired: Registration) -> Result<(), ReconcileError> {
        let answer = api::register(&mut self.connection, &desired).await;
        let result = match answer {
            Ok(()) => WriteResult::Ok,
            Err(_) => WriteResult::Error,
        };
        self.metrics.write(WriteKind::Registration, result);
        match answer {
            Ok(()) => {
                self.logs.register.ok();
                tracing::info!(service_id = %desired.id, tags = desired.tags.len(), "registered ingress service");
                self.registered = Some(desired);
                Ok(())
            }
            Err(err) => {
                self.logs.register.failed(&err);
                Err(err.into())
            }
        }
    }

    /// Asks the agent whether it still holds our registration as we wrote it; if not,
    /// forgets it so the pass registers again.
    async fn check_agent(&mut self) {
        let Some(registered) = &self.registered else {
            return;
        };
        match api::agent_service(&mut self.connection, &registered.id).await {
            Ok(None) => {
                self.logs.agent.ok();
                tracing::warn!(service_id = %registered.id, "the agent no longer has the ingress service (agent restarted or reaped it); registering it again");
                self.registered = None;
            }
            Ok(Some(agent)) => {
                self.logs.agent.ok();
                if !api::matches_agent(registered, &agent) {
                    tracing::warn!(service_id = %registered.id, "the agent's copy of the ingress service differs from ours; registering it again");
                    self.registered = None;
                }
            }
            Err(err) => self.logs.agent.failed(&err),
        }
    }
}

/// Resolves once the daemon asks to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            // The daemon dropped its end without asking: keep going.
            std::future::pending::<()>().await;
        }
    }
}
