//! Wiring: the watches, the reconciler and `/health` started together; one shutdown path.
//!
//! ```text
//!  catalog/services ──┐
//!  service-defaults ──┤ watch tasks (consul::watch): decode, publish only real changes
//!  proxy-defaults ────┤
//!  our config entry ──┘
//!             ▼
//!        reconciler (reconcile): plan ─► diff ─► apply ─► report ─► /health (health)
//! ```
//!
//! Each watch owns one connection and the reconciler owns one, so the daemon holds five
//! connections to the agent whatever the size of the catalog.
//!
//! Shutdown: the reconciler is asked to stop and finishes the operation in flight (a
//! registration already sent must not reach the agent after the deregistration), then
//! the ingress service is deregistered; the whole of it within [`DEREGISTER_TIMEOUT`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::consul::api;
use crate::consul::client::{Client, Connection, ConsulError};
use crate::health::{self, HealthState};
use crate::metrics::Metrics;
use crate::model::{Catalog, Entries, IntentionsView, Kind, Protocols};
use crate::plan::{self, PlanSettings, Snapshot};
use crate::reconcile::diff::{self, Observed, Op, Stamping};
use crate::reconcile::inputs::Inputs;
use crate::reconcile::Reconciler;
use crate::shutdown;

/// The whole shutdown (the in-flight operation finishing, then the deregistration) gives
/// up after this, so the process exits within 5 s.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_millis(4000);
/// Of [`DEREGISTER_TIMEOUT`], kept for the deregistration however long the in-flight
/// operation takes.
const DEREGISTER_SHARE: Duration = Duration::from_millis(1000);

/// Exit statuses.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// Entry point after configuration: `--dry-run`, or the daemon until a signal.
pub async fn main(config: Config, dry_run: bool) -> u8 {
    let client = match Client::new(&config.consul) {
        Ok(client) => client,
        Err(message) => {
            tracing::error!("invalid Consul client settings: {message}");
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

/// Runs until `shutdown` completes, then stops the reconciler and deregisters the
/// ingress service. Returns 0 when deregistration succeeded (or there was nothing to
/// deregister), 1 otherwise.
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
    let settings = Arc::new(PlanSettings::from_config(&config));
    // One registry: the client, its watches and the reconciler count, /metrics shows it.
    let metrics = Metrics::new();
    let client = client.with_metrics(metrics.clone());
    let (health_tx, health_rx) = watch::channel(HealthState::starting());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = TaskSet::default();
    let health_stop = stop_rx.clone();
    tasks.0.push(tokio::spawn(health::serve_with_metrics(
        listener,
        health_rx,
        metrics,
        async move {
            // /health answers until the process exits; a stopped daemon is not yet gone.
            let _held = health_stop;
            std::future::pending::<()>().await
        },
    )));
    let inputs = Inputs::spawn(&settings, &client, &mut tasks.0);
    let reconciler = Reconciler::new(
        settings,
        client.connection("writes"),
        inputs,
        health_tx,
        stop_rx,
    );
    let mut reconciling = tokio::spawn(reconciler.run());

    shutdown.await;
    let deadline = Instant::now() + DEREGISTER_TIMEOUT;
    // The reconciler stops between operations: the one in flight finishes first.
    if stop_tx.send(true).is_ok() {
        let finish_by = deadline - DEREGISTER_SHARE;
        if tokio::time::timeout_at(finish_by, &mut reconciling)
            .await
            .is_err()
        {
            tracing::warn!(
                "the agent did not answer the write in flight in time; deregistering anyway"
            );
            reconciling.abort();
        }
    }
    drop(tasks); // the watches and /health
    deregister(&client, &config.ingress_service_id, deadline).await
}

async fn deregister(client: &Client, id: &str, deadline: Instant) -> u8 {
    let mut connection = client.connection("deregister");
    let timeout = deadline.saturating_duration_since(Instant::now());
    match api::deregister(&mut connection, id, timeout).await {
        Ok(false) => {
            tracing::info!(
                service_id = id,
                "ingress service was not registered; nothing to deregister"
            );
            EXIT_OK
        }
        Ok(true) => {
            tracing::info!(
                service_id = id,
                "deregistered the ingress service; the gateway's config entries are left in place"
            );
            EXIT_OK
        }
        Err(err) => {
            tracing::error!(
                service_id = id,
                "could not deregister the ingress service: {err}"
            );
            EXIT_FAILURE
        }
    }
}

/// Background tasks, aborted when the set is dropped.
#[derive(Default)]
struct TaskSet(Vec<JoinHandle<()>>);

impl Drop for TaskSet {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// `--dry-run`: read Consul once, print the plan and what would be written, write
/// nothing.
async fn dry_run(config: &Config, client: &Client) -> u8 {
    let settings = PlanSettings::from_config(config);
    let mut connection = client.connection("dry-run");
    let (catalog, protocols, entry) = match read_once(&settings, &mut connection).await {
        Ok(read) => read,
        Err(err) => {
            tracing::error!("dry run: {err}");
            return EXIT_FAILURE;
        }
    };
    let key = settings.gateway_key();
    let mut entries = Entries::new();
    if let Some(entry) = &entry {
        entries.insert(key.clone(), entry);
    }
    let intentions = IntentionsView::default();
    let snapshot = Snapshot {
        catalog: &catalog,
        protocols: &protocols,
        entries: &entries,
        intentions: &intentions,
    };
    let desired = plan::plan(&snapshot, &settings);
    let output = json!({
        "registration": api::registration_json(&desired.registration),
        "config_entry": desired.entry(&key).map(|entry| &entry.body),
        "routes": desired
            .entries
            .iter()
            .filter(|entry| entry.key.kind == Kind::HttpRoute)
            .map(|entry| &entry.body)
            .collect::<Vec<_>>(),
        "create_service_defaults": desired.service_defaults_to_create().collect::<Vec<_>>(),
        "services_exposed": desired.exposed_services,
        "warnings": desired.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let observed = Observed {
        entries: &entries,
        intentions: &intentions,
        registered: None,
        gateway: &settings.gateway_name,
    };
    let stamping = Stamping {
        catalog_index: None,
        defer_to_newer: false,
    };
    let needs_write = diff::diff(desired, &observed, stamping)
        .ops
        .iter()
        .any(|op| op.key() == Some(&key) && !matches!(op, Op::Register(_)));
    let mut output = output;
    output["config_entry_needs_write"] = json!(needs_write);
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

async fn read_once(
    settings: &PlanSettings,
    connection: &mut Connection,
) -> Result<(Catalog, Protocols, Option<crate::model::Body>), ConsulError> {
    let prefix = settings.prefix.as_str();
    let catalog = api::read(
        connection,
        &api::catalog_path(&settings.ingress_service_name),
        |r| api::decode_catalog(r, prefix),
    )
    .await?;
    let service_defaults = api::read(
        connection,
        api::SERVICE_DEFAULTS_PATH,
        api::decode_service_defaults,
    )
    .await?;
    let proxy_default = api::read(
        connection,
        api::PROXY_DEFAULTS_PATH,
        api::decode_proxy_defaults,
    )
    .await?;
    let entry = api::read_entry(connection, &settings.gateway_key()).await?;
    Ok((
        catalog,
        Protocols {
            service_defaults,
            proxy_default,
        },
        entry,
    ))
}
