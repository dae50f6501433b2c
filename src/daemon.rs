//! The daemon's run loop: four watches feed one reconciler.
//!
//! ```text
//!  catalog/services ──┐
//!  service-defaults ──┤ watch tasks: decode, publish only real changes
//!  proxy-defaults ────┤   (tokio::sync::watch, latest value wins)
//!  our config entry ──┘
//!             │ debounce (100 ms quiet, 1 s at most)
//!             ▼
//!        reconciler: plan (pure) ─► create service-defaults ─► write entry (CAS)
//!             │                      ─► register ingress service ─► publish /health
//!             └─ every 10 s: is our registration still at the agent?
//! ```
//!
//! Each watch owns one connection and the reconciler owns one, so the daemon holds five
//! connections to the agent whatever the size of the catalog. The reconciler is never
//! told *why* it runs: it reads the latest state of every watch and makes Consul match.
//! Nothing is written when Consul already holds the desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use crate::config::Config;
use crate::consul::client::{
    percent_encode, Client, Connection, ConsulError, ErrorKind, Response, REQUEST_TIMEOUT,
};
use crate::consul::watch::{Backoff, BlockingWatch, ProblemLog};
use crate::consul::wire;
use crate::health::{self, HealthState};
use crate::plan::{self, Catalog, Plan, Protocols, Registration, Warning};
use crate::shutdown;

/// A change is acted on once the watches have been quiet this long...
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// ...or this long after the first change, whichever comes first.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// How often the agent is asked whether it still holds our registration (an agent
/// restarted in dev mode, or critical reaping, loses it silently).
pub const AGENT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Deregistration on shutdown gives up after this, so the process exits within 5 s.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_millis(4000);
/// Re-reads after a CAS miss within one reconcile before backing off.
const CAS_ATTEMPTS: usize = 5;
/// Meta key of the entry: the catalog index (`X-Consul-Index` of `/v1/catalog/services`)
/// the written entry was planned from. Several instances of the daemon (one per gateway
/// allocation) share the entry, and their watches see a change a few milliseconds
/// apart: an instance whose catalog is older than the one the entry was planned from
/// waits for its watch to catch up instead of writing its older view back (a flap that
/// would briefly undo a route for everyone).
pub const CATALOG_INDEX_META: &str = "ingress-service-monitor-catalog-index";
/// An instance defers to a newer plan this long at most, then writes anyway: after a
/// snapshot restore every recorded index looks newer than any index Consul now sends.
const DEFER_LIMIT: Duration = Duration::from_secs(5);
/// While deferring, look again this often (the catalog watch usually wakes us first).
const DEFER_RECHECK: Duration = Duration::from_secs(1);

const SERVICE_DEFAULTS_PATH: &str = "/v1/config/service-defaults";
const PROXY_DEFAULTS_PATH: &str = "/v1/config/proxy-defaults/global";

/// Exit statuses.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// Entry point after configuration: `--dry-run`, or the daemon until a signal.
pub async fn main(config: Config, dry_run: bool) -> u8 {
    let client = match Client::new(&config.consul) {
        Ok(client) => client,
        Err(message) => {
            tracing::error!("invalid TLS configuration: {message}");
            return EXIT_CONFIG;
        }
    };
    if dry_run {
        return self::dry_run(&config, &client).await;
    }
    let shutdown = match shutdown::install() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            tracing::error!("cannot install signal handlers: {err}");
            return EXIT_FAILURE;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.health_port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(
                "cannot listen for /health on port {} (HEALTHPORT): {err}",
                config.health_port
            );
            return EXIT_FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "serving /health"),
        Err(err) => tracing::warn!("serving /health on an unknown address: {err}"),
    }
    run(Arc::new(config), client, listener, shutdown).await
}

/// Runs until `shutdown` completes, then deregisters the ingress service.
/// Returns 0 when deregistration succeeded (or there was nothing to deregister), 1 otherwise.
pub async fn run(
    config: Arc<Config>,
    client: Client,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> u8 {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        gateway = %config.gateway_name,
        service_id = %config.ingress_service_id,
        prefix = %config.tag_prefix,
        "starting"
    );
    let (health_tx, health_rx) = watch::channel(HealthState::starting());
    let mut tasks = TaskSet::default();
    tasks.push(tokio::spawn(health::serve(
        listener,
        health_rx,
        std::future::pending(),
    )));
    let inputs = Inputs::spawn(&config, &client, &mut tasks);
    let reconciler = Reconciler::new(
        config.clone(),
        client.connection("writes"),
        inputs,
        health_tx,
    );
    tasks.push(tokio::spawn(reconciler.run()));

    shutdown.await;
    drop(tasks); // stops the watches, the reconciler and /health
    deregister(&client, &config.ingress_service_id).await
}

async fn deregister(client: &Client, id: &str) -> u8 {
    let mut connection = client.connection("deregister");
    let path = format!("/v1/agent/service/deregister/{id}");
    let put = connection.request(hyper::Method::PUT, &path, None, DEREGISTER_TIMEOUT);
    match tokio::time::timeout(DEREGISTER_TIMEOUT, put).await {
        Ok(Ok(response)) if response.status == 404 => {
            tracing::info!(
                service_id = id,
                "ingress service was not registered; nothing to deregister"
            );
            EXIT_OK
        }
        Ok(Ok(_)) => {
            tracing::info!(service_id = id, "deregistered the ingress service; the ingress-gateway config entry is left in place");
            EXIT_OK
        }
        Ok(Err(err)) => {
            tracing::error!(
                service_id = id,
                "could not deregister the ingress service: {err}"
            );
            EXIT_FAILURE
        }
        Err(_) => {
            tracing::error!(
                service_id = id,
                "could not deregister the ingress service: the agent did not answer within {DEREGISTER_TIMEOUT:?}"
            );
            EXIT_FAILURE
        }
    }
}

/// Background tasks, aborted when the set is dropped.
#[derive(Default)]
struct TaskSet(Vec<JoinHandle<()>>);

impl TaskSet {
    fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What one watch has seen: the latest decoded value (None until the first read) and the
/// current problem reading it.
#[derive(Debug, Clone, PartialEq)]
struct Observed<T> {
    value: Option<T>,
    problem: Option<String>,
    /// `X-Consul-Index` of the answer `value` came from. Updated silently: a new index
    /// with the same value wakes no one.
    index: Option<u64>,
}

impl<T> Default for Observed<T> {
    fn default() -> Self {
        Observed {
            value: None,
            problem: None,
            index: None,
        }
    }
}

type Entry = Option<Map<String, Value>>;

/// The receiving ends of the four watches.
struct Inputs {
    catalog: watch::Receiver<Observed<Catalog>>,
    service_defaults: watch::Receiver<Observed<BTreeMap<String, String>>>,
    proxy_default: watch::Receiver<Observed<Option<String>>>,
    entry: watch::Receiver<Observed<Entry>>,
}

impl Inputs {
    fn spawn(config: &Config, client: &Client, tasks: &mut TaskSet) -> Inputs {
        let prefix = config.tag_prefix.clone();
        let entry_path = entry_path(config);
        Inputs {
            catalog: spawn_watch(
                tasks,
                client,
                "watch catalog services",
                catalog_path(config),
                move |r| decode_catalog(r, &prefix),
            ),
            service_defaults: spawn_watch(
                tasks,
                client,
                "watch service-defaults",
                SERVICE_DEFAULTS_PATH.into(),
                decode_service_defaults,
            ),
            proxy_default: spawn_watch(
                tasks,
                client,
                "watch proxy-defaults",
                PROXY_DEFAULTS_PATH.into(),
                decode_proxy_defaults,
            ),
            entry: spawn_watch(
                tasks,
                client,
                "watch ingress-gateway entry",
                entry_path,
                decode_entry,
            ),
        }
    }

    /// Resolves when any watch published something new (marking it seen).
    async fn changed(&mut self) {
        tokio::select! {
            () = changed(&mut self.catalog) => {}
            () = changed(&mut self.service_defaults) => {}
            () = changed(&mut self.proxy_default) => {}
            () = changed(&mut self.entry) => {}
        }
    }

    fn all_read(&self) -> bool {
        self.catalog.borrow().value.is_some()
            && self.service_defaults.borrow().value.is_some()
            && self.proxy_default.borrow().value.is_some()
            && self.entry.borrow().value.is_some()
    }

    /// The first problem any watch currently has.
    fn problem(&self) -> Option<String> {
        [
            self.catalog.borrow().problem.clone(),
            self.service_defaults.borrow().problem.clone(),
            self.proxy_default.borrow().problem.clone(),
            self.entry.borrow().problem.clone(),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        // The watch task is gone (only at shutdown): nothing more will come from it.
        std::future::pending::<()>().await;
    }
}

fn spawn_watch<T, D>(
    tasks: &mut TaskSet,
    client: &Client,
    activity: &'static str,
    path: String,
    decode: D,
) -> watch::Receiver<Observed<T>>
where
    T: PartialEq + Send + Sync + 'static,
    D: Fn(&Response) -> Result<T, String> + Send + 'static,
{
    let (tx, rx) = watch::channel(Observed::default());
    let endpoint = format!("GET {}", path.split('?').next().unwrap_or(&path));
    let mut blocking = BlockingWatch::new(client.connection(activity), path);
    tasks.push(tokio::spawn(async move {
        let mut log = ProblemLog::new(activity);
        loop {
            let outcome = blocking.next().await.and_then(|response| {
                decode(&response)
                    .map(|value| (value, response.index))
                    .map_err(|message| ConsulError {
                        endpoint: endpoint.clone(),
                        kind: ErrorKind::Decode(message),
                    })
            });
            match outcome {
                Ok((value, index)) => {
                    log.ok();
                    tx.send_if_modified(|observed| {
                        observed.index = index;
                        let mut modified = observed.problem.take().is_some();
                        if observed.value.as_ref() != Some(&value) {
                            observed.value = Some(value);
                            modified = true;
                        }
                        modified
                    });
                }
                Err(err) => {
                    log.failed(&err);
                    let message = err.to_string();
                    tx.send_if_modified(|observed| {
                        if observed.problem.as_deref() == Some(message.as_str()) {
                            return false;
                        }
                        observed.problem = Some(message);
                        true
                    });
                }
            }
        }
    }));
    rx
}

/// The catalog watch: only typical services (sidecar proxies copy their parent's tags and
/// must never be exposed), and not our own ingress service, whose tags are every exposed
/// tag again (a third of the catalog's bytes at 10,000 services).
fn catalog_path(config: &Config) -> String {
    let filter = format!(
        "ServiceKind == \"\" and ServiceName != \"{}\"",
        config.ingress_service_name
    );
    format!("/v1/catalog/services?filter={}", percent_encode(&filter))
}

fn entry_path(config: &Config) -> String {
    format!("/v1/config/ingress-gateway/{}", config.gateway_name)
}

fn expect_200(response: &Response) -> Result<&[u8], String> {
    if response.status == 200 {
        Ok(&response.body)
    } else {
        Err(format!("unexpected status {}", response.status))
    }
}

fn decode_catalog(response: &Response, prefix: &str) -> Result<Catalog, String> {
    wire::decode_catalog(expect_200(response)?, prefix).map_err(|e| e.to_string())
}

fn decode_service_defaults(response: &Response) -> Result<BTreeMap<String, String>, String> {
    wire::decode_service_defaults(expect_200(response)?).map_err(|e| e.to_string())
}

fn decode_proxy_defaults(response: &Response) -> Result<Option<String>, String> {
    if response.status == 404 {
        return Ok(None);
    }
    wire::decode_proxy_defaults(expect_200(response)?).map_err(|e| e.to_string())
}

fn decode_entry(response: &Response) -> Result<Entry, String> {
    if response.status == 404 {
        return Ok(None);
    }
    wire::decode_entry(expect_200(response)?)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The catalog index a daemon recorded in the entry's Meta when it wrote it.
fn planned_from(entry: &Entry) -> Option<u64> {
    let meta = entry.as_ref()?.get("Meta")?;
    meta.get(CATALOG_INDEX_META)?.as_str()?.parse().ok()
}

/// The entry without our catalog-index stamp: the planner compares content, and a stamp
/// that differs is no reason to write.
fn without_stamp(mut entry: Entry) -> Entry {
    if let Some(Value::Object(meta)) = entry.as_mut().and_then(|e| e.get_mut("Meta")) {
        meta.remove(CATALOG_INDEX_META);
    }
    entry
}

fn modify_index(entry: &Entry) -> Option<u64> {
    entry
        .as_ref()
        .and_then(|e| e.get("ModifyIndex"))
        .and_then(Value::as_u64)
}

/// What we know about the entry that the watch has not shown yet: our own write, or a
/// fresh read after a CAS miss. Valid while the watch still shows `watched_index`.
struct LocalEntry {
    watched_index: Option<u64>,
    entry: Entry,
}

/// What the last plan was made from.
#[derive(Debug, Clone, Copy, Default)]
struct Basis {
    /// The entry's `ModifyIndex` (0: no entry): the write's `cas`, so that an entry that
    /// changed after planning (a hand edit during a slow service-defaults write, say)
    /// makes the write miss and the daemon plan again, instead of overwriting the edit.
    cas: u64,
    /// The entry's recorded catalog index ([`CATALOG_INDEX_META`]).
    stamp: Option<u64>,
    /// The catalog index the plan saw.
    catalog_index: Option<u64>,
}

struct Reconciler {
    config: Arc<Config>,
    connection: Connection,
    inputs: Inputs,
    health: watch::Sender<HealthState>,
    /// The registration the agent holds, as far as we know (None: register again).
    registered: Option<Registration>,
    local_entry: Option<LocalEntry>,
    /// service-defaults we created, until the service-defaults watch shows them.
    created_defaults: BTreeMap<String, String>,
    /// service-defaults whose creation was refused or failed: not retried until the
    /// service-defaults watch changes.
    skipped_defaults: BTreeSet<String>,
    seen_defaults: Option<BTreeMap<String, String>>,
    warnings: BTreeSet<Warning>,
    last_sync: Option<SystemTime>,
    /// Since when the entry's write has waited for our catalog to catch up with the
    /// one it was planned from (see [`CATALOG_INDEX_META`]).
    deferring_since: Option<Instant>,
    basis: Basis,
    backoff: Backoff,
    entry_log: ProblemLog,
    register_log: ProblemLog,
    defaults_log: ProblemLog,
    agent_log: ProblemLog,
}

/// Why a reconcile did not complete.
type Failure = ConsulError;

impl Reconciler {
    fn new(
        config: Arc<Config>,
        connection: Connection,
        inputs: Inputs,
        health: watch::Sender<HealthState>,
    ) -> Reconciler {
        Reconciler {
            config,
            connection,
            inputs,
            health,
            registered: None,
            local_entry: None,
            created_defaults: BTreeMap::new(),
            skipped_defaults: BTreeSet::new(),
            seen_defaults: None,
            warnings: BTreeSet::new(),
            last_sync: None,
            deferring_since: None,
            basis: Basis::default(),
            backoff: Backoff::new(),
            entry_log: ProblemLog::new("write ingress-gateway entry"),
            register_log: ProblemLog::new("register ingress service"),
            defaults_log: ProblemLog::new("create service-defaults"),
            agent_log: ProblemLog::new("check ingress service at the agent"),
        }
    }

    async fn run(mut self) {
        while !self.inputs.all_read() {
            self.publish_waiting();
            self.inputs.changed().await;
        }
        let mut next_agent_check = Instant::now() + AGENT_CHECK_INTERVAL;
        let mut check_agent = false;
        loop {
            let outcome = self.reconcile(check_agent).await;
            if check_agent {
                next_agent_check = Instant::now() + AGENT_CHECK_INTERVAL;
            }
            check_agent = false;
            let retry_at = match outcome {
                Ok(()) => {
                    self.backoff.reset();
                    // Deferring to a newer plan: look again soon, whatever wakes us.
                    self.deferring_since.map(|_| Instant::now() + DEFER_RECHECK)
                }
                Err(_) => Some(Instant::now() + self.backoff.next_delay()),
            };
            tokio::select! {
                () = self.inputs.changed() => self.debounce().await,
                () = sleep_until(next_agent_check) => check_agent = true,
                () = sleep_until(retry_at.unwrap_or(next_agent_check)), if retry_at.is_some() => {}
            }
        }
    }

    /// Lets a burst of changes settle into one reconcile.
    async fn debounce(&mut self) {
        let limit = Instant::now() + DEBOUNCE_MAX;
        loop {
            tokio::select! {
                () = self.inputs.changed() => {}
                () = sleep(DEBOUNCE) => return,
                () = sleep_until(limit) => return,
            }
        }
    }

    fn publish_waiting(&self) {
        let problem = self
            .inputs
            .problem()
            .unwrap_or_else(|| "starting: first read of Consul not complete".into());
        self.health.send_if_modified(|state| {
            if state.problem.as_deref() == Some(problem.as_str()) {
                return false;
            }
            state.problem = Some(problem);
            true
        });
    }

    /// One pass: plan, then make Consul match. Errors are logged (once per state) and
    /// published to /health; the caller retries with backoff.
    async fn reconcile(&mut self, check_agent: bool) -> Result<(), Failure> {
        if check_agent {
            self.check_agent().await;
        }
        // One plan per pass (planning is the daemon's main cost at 10,000 services); it
        // is made again only when the world it was made from changed under a write.
        let mut plan = self.plan();
        let outcome = self.apply(&mut plan).await;
        if outcome.is_err() {
            // A deferral is only ever to the plan seen in this pass.
            self.deferring_since = None;
        }
        self.log_warnings(&plan.warnings);
        let problem = match &outcome {
            Err(err) => Some(err.to_string()),
            Ok(()) => self.inputs.problem(),
        };
        if outcome.is_ok() {
            self.last_sync = Some(SystemTime::now());
        }
        let state = HealthState {
            problem,
            last_sync: self.last_sync,
            services_exposed: plan.exposed_services,
            warnings: plan.warnings.len(),
        };
        self.health.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            *current = state;
            true
        });
        outcome
    }

    /// Makes Consul match `plan`; on return `plan` is the one last acted on (re-made
    /// after creating service-defaults or after a CAS miss).
    async fn apply(&mut self, plan: &mut Plan) -> Result<(), Failure> {
        if self.create_service_defaults(plan).await {
            *plan = self.plan();
        }
        let register_first = self
            .registered
            .as_ref()
            .is_some_and(|current| only_removes_tags(current, &plan.registration));
        if register_first {
            self.register(&plan.registration).await?;
        }
        self.write_entry(plan).await?;
        self.register(&plan.registration).await
    }

    fn entry_view(&mut self) -> Entry {
        let watched = self.inputs.entry.borrow().value.clone().flatten();
        match &self.local_entry {
            Some(local) if local.watched_index == modify_index(&watched) => local.entry.clone(),
            _ => {
                self.local_entry = None;
                watched
            }
        }
    }

    fn protocols(&mut self) -> Protocols {
        let watched = self
            .inputs
            .service_defaults
            .borrow()
            .value
            .clone()
            .unwrap_or_default();
        if self.seen_defaults.as_ref() != Some(&watched) {
            self.skipped_defaults.clear();
            self.created_defaults
                .retain(|name, _| !watched.contains_key(name));
            self.seen_defaults = Some(watched.clone());
        }
        let mut service_defaults = watched;
        for (name, protocol) in &self.created_defaults {
            service_defaults
                .entry(name.clone())
                .or_insert_with(|| protocol.clone());
        }
        let proxy_default = self.inputs.proxy_default.borrow().value.clone().flatten();
        Protocols {
            service_defaults,
            proxy_default,
        }
    }

    /// Plans from the latest state of every watch, and records in `self.basis` what the
    /// plan was made from, for the write that follows.
    fn plan(&mut self) -> Plan {
        let current = self.entry_view();
        let protocols = self.protocols();
        let catalog = self.inputs.catalog.borrow();
        self.basis = Basis {
            cas: modify_index(&current).unwrap_or(0),
            stamp: planned_from(&current),
            catalog_index: catalog.index,
        };
        let entry = without_stamp(current);
        let empty = Catalog::new();
        plan::plan(plan::Inputs {
            catalog: catalog.value.as_ref().unwrap_or(&empty),
            protocols: &protocols,
            current_entry: entry.as_ref(),
            config: &self.config,
        })
    }

    /// Creates the missing service-defaults (create-only). Returns whether any was created.
    async fn create_service_defaults(&mut self, plan: &Plan) -> bool {
        let mut created = false;
        for name in &plan.create_service_defaults {
            if self.skipped_defaults.contains(name) {
                continue;
            }
            let body = json!({
                "Kind": "service-defaults",
                "Name": name,
                "Protocol": "http",
                "Meta": { "managed-by": plan::MANAGED_BY },
            });
            match self.put_config(&body, 0).await {
                Ok(true) => {
                    self.defaults_log.ok();
                    tracing::info!(service = %name, "created service-defaults with Protocol = \"http\" (SETSERVICEDEFAULTS)");
                    self.created_defaults.insert(name.clone(), "http".into());
                    created = true;
                }
                Ok(false) => {
                    // Someone created it meanwhile: its protocol comes through the watch.
                    self.skipped_defaults.insert(name.clone());
                }
                Err(err) => {
                    self.defaults_log.failed(&err);
                    self.skipped_defaults.insert(name.clone());
                }
            }
        }
        created
    }

    async fn write_entry(&mut self, plan: &mut Plan) -> Result<(), Failure> {
        // Only the deferral below keeps a deferral going; every other way out ends it.
        let deferring_since = self.deferring_since.take();
        for _ in 0..CAS_ATTEMPTS {
            if !plan.entry_needs_write {
                self.entry_log.ok();
                return Ok(());
            }
            let Some(mut desired) = plan.desired_entry.take() else {
                return Ok(());
            };
            let watched_index = modify_index(&self.inputs.entry.borrow().value.clone().flatten());
            let Basis {
                cas,
                stamp,
                catalog_index: ours,
            } = self.basis;
            if let (Some(theirs), Some(ours)) = (stamp, ours) {
                if theirs > ours {
                    let since = deferring_since.unwrap_or_else(Instant::now);
                    // A catalog watch that is failing will not catch up: keep waiting
                    // rather than write an old view (its error is on /health meanwhile).
                    let watch_failing = self.inputs.catalog.borrow().problem.is_some();
                    if since.elapsed() < DEFER_LIMIT || watch_failing {
                        self.deferring_since = Some(since);
                        tracing::debug!(
                            theirs,
                            ours,
                            "the entry was planned from a newer catalog than ours; waiting for our catalog watch"
                        );
                        return Ok(());
                    }
                    tracing::info!(
                        theirs,
                        ours,
                        "the entry's catalog index stayed ahead of ours for {DEFER_LIMIT:?} (index reset?); writing our plan"
                    );
                }
            }
            if let (Some(ours), Some(Value::Object(meta))) = (ours, desired.get_mut("Meta")) {
                // Consul allows 64 Meta pairs; the stamp never takes the last place.
                if meta.len() < plan::MAX_META {
                    meta.insert(CATALOG_INDEX_META.into(), Value::String(ours.to_string()));
                }
            }
            match self.put_config(&desired, cas).await {
                Ok(true) => {
                    self.entry_log.ok();
                    tracing::info!(gateway = %self.config.gateway_name, services = plan.exposed_services, "wrote ingress-gateway config entry");
                    self.local_entry = Some(LocalEntry {
                        watched_index,
                        entry: desired.as_object().cloned(),
                    });
                    return Ok(());
                }
                Ok(false) => {
                    tracing::debug!(
                        cas,
                        "ingress-gateway entry changed since read (CAS miss); reading it again"
                    );
                    let fresh = self
                        .read_entry()
                        .await
                        .inspect_err(|err| self.entry_log.failed(err))?;
                    self.local_entry = Some(LocalEntry {
                        watched_index,
                        entry: fresh,
                    });
                    *plan = self.plan();
                }
                Err(err) => {
                    self.entry_log.failed(&err);
                    return Err(err);
                }
            }
        }
        let err = ConsulError {
            endpoint: "PUT /v1/config".into(),
            kind: ErrorKind::Status {
                code: 409,
                message: format!(
                    "entry kept changing under us ({CAS_ATTEMPTS} CAS misses in a row)"
                ),
            },
        };
        self.entry_log.failed(&err);
        Err(err)
    }

    async fn read_entry(&mut self) -> Result<Entry, ConsulError> {
        let path = entry_path(&self.config);
        let response = self.connection.get(&path, REQUEST_TIMEOUT).await?;
        decode_entry(&response).map_err(|message| ConsulError {
            endpoint: format!("GET {path}"),
            kind: ErrorKind::Decode(message),
        })
    }

    /// `PUT /v1/config?cas=N`: Ok(true) written (or already identical), Ok(false) CAS miss.
    async fn put_config(&mut self, body: &Value, cas: u64) -> Result<bool, ConsulError> {
        let path = format!("/v1/config?cas={cas}");
        let response = self
            .connection
            .put(&path, Bytes::from(body.to_string()))
            .await?;
        match serde_json::from_slice::<bool>(&response.body) {
            Ok(written) if response.status == 200 => Ok(written),
            _ => Err(ConsulError {
                endpoint: "PUT /v1/config".into(),
                kind: ErrorKind::Decode(format!(
                    "expected true or false, got status {} {:?}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                )),
            }),
        }
    }

    async fn register(&mut self, desired: &Registration) -> Result<(), Failure> {
        if self.registered.as_ref() == Some(desired) {
            return Ok(());
        }
        let body = Bytes::from(desired.to_json().to_string());
        match self
            .connection
            .put("/v1/agent/service/register?replace-existing-checks", body)
            .await
        {
            Ok(_) => {
                self.register_log.ok();
                tracing::info!(service_id = %desired.id, tags = desired.tags.len(), "registered ingress service");
                self.registered = Some(desired.clone());
                Ok(())
            }
            Err(err) => {
                self.register_log.failed(&err);
                Err(err)
            }
        }
    }

    /// Asks the agent whether it still holds our registration as we wrote it; if not,
    /// forgets it so the next step registers again.
    async fn check_agent(&mut self) {
        let Some(registered) = self.registered.clone() else {
            return;
        };
        let path = format!("/v1/agent/service/{}", registered.id);
        match self.connection.get(&path, REQUEST_TIMEOUT).await {
            Ok(response) if response.status == 404 => {
                self.agent_log.ok();
                tracing::warn!(service_id = %registered.id, "the agent no longer has the ingress service (agent restarted or reaped it); registering it again");
                self.registered = None;
            }
            Ok(response) => {
                self.agent_log.ok();
                let same = serde_json::from_slice::<Value>(&response.body)
                    .is_ok_and(|agent| registered.matches_agent(&agent));
                if !same {
                    tracing::warn!(service_id = %registered.id, "the agent's copy of the ingress service differs from ours; registering it again");
                    self.registered = None;
                }
            }
            Err(err) => self.agent_log.failed(&err),
        }
    }

    fn log_warnings(&mut self, warnings: &[Warning]) {
        let current: BTreeSet<Warning> = warnings.iter().cloned().collect();
        for warning in current.difference(&self.warnings) {
            tracing::warn!("{warning}");
        }
        for gone in self.warnings.difference(&current) {
            tracing::info!("resolved: {gone}");
        }
        self.warnings = current;
    }
}

/// Whether `desired` only drops tags from `current` (then the outer proxy should stop
/// sending those hosts before Envoy forgets them: register first, write the entry after).
fn only_removes_tags(current: &Registration, desired: &Registration) -> bool {
    let current_tags: BTreeSet<&String> = current.tags.iter().collect();
    let desired_tags: BTreeSet<&String> = desired.tags.iter().collect();
    desired_tags.len() < current_tags.len() && desired_tags.is_subset(&current_tags)
}

/// `--dry-run`: read Consul once, print the plan as JSON, write nothing.
async fn dry_run(config: &Config, client: &Client) -> u8 {
    let mut connection = client.connection("dry-run");
    match read_once(config, &mut connection).await {
        Ok((catalog, protocols, entry)) => {
            let plan = plan::plan(plan::Inputs {
                catalog: &catalog,
                protocols: &protocols,
                current_entry: entry.as_ref(),
                config,
            });
            let output = json!({
                "registration": plan.registration.to_json(),
                "config_entry": plan.desired_entry,
                "config_entry_needs_write": plan.entry_needs_write,
                "create_service_defaults": plan.create_service_defaults,
                "services_exposed": plan.exposed_services,
                "warnings": plan.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            match serde_json::to_string_pretty(&output) {
                Ok(text) => {
                    println!("{text}");
                    EXIT_OK
                }
                Err(err) => {
                    tracing::error!("cannot print the plan: {err}");
                    EXIT_FAILURE
                }
            }
        }
        Err(err) => {
            tracing::error!("dry run: {err}");
            EXIT_FAILURE
        }
    }
}

async fn read_once(
    config: &Config,
    connection: &mut Connection,
) -> Result<(Catalog, Protocols, Entry), ConsulError> {
    async fn read<T>(
        connection: &mut Connection,
        path: &str,
        decode: impl Fn(&Response) -> Result<T, String>,
    ) -> Result<T, ConsulError> {
        let response = connection.get(path, REQUEST_TIMEOUT).await?;
        let endpoint = format!("GET {}", path.split('?').next().unwrap_or(path));
        decode(&response).map_err(|message| ConsulError {
            endpoint,
            kind: ErrorKind::Decode(message),
        })
    }
    let catalog = read(connection, &catalog_path(config), |r| {
        decode_catalog(r, &config.tag_prefix)
    })
    .await?;
    let service_defaults = read(connection, SERVICE_DEFAULTS_PATH, decode_service_defaults).await?;
    let proxy_default = read(connection, PROXY_DEFAULTS_PATH, decode_proxy_defaults).await?;
    let entry = read(connection, &entry_path(config), decode_entry).await?;
    Ok((
        catalog,
        Protocols {
            service_defaults,
            proxy_default,
        },
        entry,
    ))
}
