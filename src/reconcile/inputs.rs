//! The reconciler's inputs: the watches' latest answers, plus what the reconciler knows
//! that they do not show yet (its own writes, a fresh read after a CAS miss, the
//! service-defaults it created), merged into one view for the planner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::consul::api;
use crate::consul::client::ApiPath;
use crate::consul::retry::{Backoff, ProblemLog};
use crate::consul::watch::{run as watch_loop, spawn, Observed};
use crate::consul::Client;
use crate::consul::Response;
use crate::model::{modify_index, Body, Catalog, Entries, EntryKey, Kind, Protocols};
use crate::plan::PlanSettings;

/// The receiving ends of the watches, and one wake-up for all of them.
pub struct Inputs {
    changed: Arc<Notify>,
    pub catalog: watch::Receiver<Observed<Catalog>>,
    pub service_defaults: watch::Receiver<Observed<BTreeMap<String, String>>>,
    pub proxy_default: watch::Receiver<Observed<Option<String>>>,
    /// The gateway's own entry.
    pub gateway: watch::Receiver<Observed<Option<Body>>>,
    pub gateway_key: EntryKey,
    /// API gateway only: the http-routes that concern our gateway, by name.
    pub routes: Option<watch::Receiver<Observed<BTreeMap<String, Body>>>>,
    /// SETINTENTIONS only: every service-intentions entry, by destination.
    pub intentions: Option<watch::Receiver<Observed<BTreeMap<String, Body>>>>,
}

impl Inputs {
    /// Starts one watch task (one connection) per input.
    pub fn spawn(
        settings: &PlanSettings,
        client: &Client,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Inputs {
        let changed = Arc::new(Notify::new());
        let prefix = settings.prefix.clone();
        let gateway_key = settings.gateway_key();
        let intentions = settings.set_intentions.then(|| {
            keep(
                tasks,
                spawn(
                    client,
                    "watch service-intentions",
                    api::list_path(Kind::ServiceIntentions),
                    api::decode_intentions,
                    changed.clone(),
                ),
            )
        });
        let routes = (gateway_key.kind == Kind::ApiGateway).then(|| {
            let gateway = settings.gateway_name.clone();
            keep(
                tasks,
                spawn(
                    client,
                    "watch http-route entries",
                    api::list_path(Kind::HttpRoute),
                    move |r| api::decode_routes(r, &gateway),
                    changed.clone(),
                ),
            )
        });
        Inputs {
            catalog: keep(
                tasks,
                spawn_catalog(client, settings, prefix, changed.clone()),
            ),
            service_defaults: keep(
                tasks,
                spawn(
                    client,
                    "watch service-defaults",
                    api::SERVICE_DEFAULTS_PATH.into(),
                    api::decode_service_defaults,
                    changed.clone(),
                ),
            ),
            proxy_default: keep(
                tasks,
                spawn(
                    client,
                    "watch proxy-defaults",
                    api::PROXY_DEFAULTS_PATH.into(),
                    api::decode_proxy_defaults,
                    changed.clone(),
                ),
            ),
            gateway: keep(
                tasks,
                spawn(
                    client,
                    "watch ingress-gateway entry",
                    api::entry_path(&gateway_key),
                    api::decode_entry,
                    changed.clone(),
                ),
            ),
            gateway_key,
            routes,
            intentions,
            changed,
        }
    }

    /// Resolves when any watch published something new since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn all_read(&self) -> bool {
        self.catalog.borrow().value.is_some()
            && self.service_defaults.borrow().value.is_some()
            && self.proxy_default.borrow().value.is_some()
            && self.gateway.borrow().value.is_some()
            && [&self.routes, &self.intentions]
                .into_iter()
                .flatten()
                .all(|list| list.borrow().value.is_some())
    }

    /// The first problem any watch currently has.
    pub fn problem(&self) -> Option<String> {
        [
            self.catalog.borrow().problem.clone(),
            self.service_defaults.borrow().problem.clone(),
            self.proxy_default.borrow().problem.clone(),
            self.gateway.borrow().problem.clone(),
            self.routes
                .as_ref()
                .and_then(|routes| routes.borrow().problem.clone()),
            self.intentions
                .as_ref()
                .and_then(|list| list.borrow().problem.clone()),
        ]
        .into_iter()
        .flatten()
        .next()
    }

    /// The watch's `ModifyIndex` of `key` now (None: absent or not watched).
    pub fn watched_index(&self, key: &EntryKey) -> Option<u64> {
        if *key == self.gateway_key {
            let gateway = self.gateway.borrow();
            return gateway
                .value
                .as_ref()
                .and_then(Option::as_ref)
                .and_then(modify_index);
        }
        let list = match key.kind {
            Kind::HttpRoute => self.routes.as_ref()?,
            Kind::ServiceIntentions => self.intentions.as_ref()?,
            _ => return None,
        };
        let list = list.borrow();
        list.value.as_ref()?.get(&key.name).and_then(modify_index)
    }

    pub fn catalog_failing(&self) -> bool {
        self.catalog.borrow().problem.is_some()
    }
}

/// The catalog watch. Consul before catalog filtering (1.8 among them) ignores `filter=`
/// and would send sidecar proxies (which copy their parent's tags), gateways and our own
/// ingress service: there the watch reads the UI's service summary, which names each
/// service's kind, instead (said once in the log).
fn spawn_catalog(
    client: &Client,
    settings: &PlanSettings,
    prefix: String,
    changed: Arc<Notify>,
) -> (watch::Receiver<Observed<Catalog>>, JoinHandle<()>) {
    const ACTIVITY: &str = "watch catalog services";
    let (tx, rx) = watch::channel(Observed::default());
    let mut connection = client.connection(ACTIVITY);
    let own = settings.ingress_service_name.clone();
    let task = tokio::spawn(async move {
        let mut backoff = Backoff::new();
        let mut log = ProblemLog::new(ACTIVITY);
        let honoured = loop {
            match api::catalog_filter_honoured(&mut connection).await {
                Ok(honoured) => break honoured,
                Err(err) => {
                    log.failed(&err);
                    let message = err.to_string();
                    tx.send_modify(|observed| observed.problem = Some(message));
                    changed.notify_one();
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        log.ok();
        if honoured {
            let path = api::catalog_path(&own);
            let decode = move |r: &Response| api::decode_catalog(r, &prefix);
            watch_loop(connection, ACTIVITY, path, decode, tx, changed).await;
        } else {
            tracing::info!(
                path = api::UI_SERVICES_PATH,
                "this Consul ignores filter= on /v1/catalog/services (Consul 1.8 does): watching the service summary, which names each service's kind, so sidecar proxies, gateways and the ingress service itself still stay out"
            );
            let path = ApiPath::fixed(api::UI_SERVICES_PATH, api::UI_SERVICES_PATH);
            let decode = move |r: &Response| api::decode_ui_services(r, &prefix, &own);
            watch_loop(connection, ACTIVITY, path, decode, tx, changed).await;
        }
    });
    (rx, task)
}

fn keep<T>(tasks: &mut Vec<JoinHandle<()>>, (rx, task): (T, JoinHandle<()>)) -> T {
    tasks.push(task);
    rx
}

/// An entry as we know it newer than its watch: valid while the watch still shows the
/// `ModifyIndex` it showed when we learnt it (None: absent).
#[derive(Debug, Clone, PartialEq)]
struct Known {
    watched: Option<u64>,
    body: Option<Body>,
}

/// What the reconciler knows that the watches have not shown yet.
#[derive(Debug, Default)]
pub struct Overlay {
    entries: BTreeMap<EntryKey, Known>,
    /// service-defaults we created, until the service-defaults watch shows them.
    created_defaults: BTreeMap<String, String>,
    /// service-defaults whose creation was refused or failed: not retried until the
    /// service-defaults watch changes.
    skipped_defaults: BTreeSet<String>,
    seen_defaults: Option<BTreeMap<String, String>>,
}

impl Overlay {
    /// Records what we now know of `key` (our write: `body` without `ModifyIndex`; a
    /// fresh read; `None` after a delete), given the watch's current view of it.
    pub fn learn(&mut self, key: EntryKey, watched: Option<u64>, body: Option<Body>) {
        self.entries.insert(key, Known { watched, body });
    }

    /// Drops what the watch has caught up with (its `ModifyIndex` moved).
    fn prune(&mut self, key: &EntryKey, watched: Option<&Body>) {
        let index = watched.and_then(modify_index);
        if self
            .entries
            .get(key)
            .is_some_and(|known| known.watched != index)
        {
            self.entries.remove(key);
        }
    }

    /// The entries view: the watches', overridden where we know newer (including entries
    /// we created that no watch shows yet).
    pub fn view<'a>(&'a mut self, watched: &[(EntryKey, Option<&'a Body>)]) -> Entries<'a> {
        for (key, body) in watched {
            self.prune(key, *body);
        }
        let shown: BTreeSet<&EntryKey> = watched.iter().map(|(key, _)| key).collect();
        let unseen: Vec<EntryKey> = self
            .entries
            .keys()
            .filter(|key| !shown.contains(key))
            .cloned()
            .collect();
        for key in &unseen {
            self.prune(key, None);
        }
        let mut view = Entries::new();
        for (key, body) in watched {
            let body = match self.entries.get(key) {
                Some(known) => known.body.as_ref(),
                None => *body,
            };
            if let Some(body) = body {
                view.insert(key.clone(), body);
            }
        }
        for (key, known) in &self.entries {
            if !shown.contains(key) {
                if let Some(body) = &known.body {
                    view.insert(key.clone(), body);
                }
            }
        }
        view
    }

    /// The protocols, with the service-defaults we created and the watch does not show
    /// yet. A change in the watch also makes refused creations worth trying again.
    pub fn protocols(
        &mut self,
        watched: &BTreeMap<String, String>,
        proxy_default: Option<String>,
    ) -> Protocols {
        if self.seen_defaults.as_ref() != Some(watched) {
            self.skipped_defaults.clear();
            self.created_defaults
                .retain(|name, _| !watched.contains_key(name));
            self.seen_defaults = Some(watched.clone());
        }
        let mut service_defaults = watched.clone();
        for (name, protocol) in &self.created_defaults {
            service_defaults
                .entry(name.clone())
                .or_insert_with(|| protocol.clone());
        }
        Protocols {
            service_defaults,
            proxy_default,
        }
    }

    pub fn created_defaults(&mut self, name: &str, protocol: &str) {
        self.created_defaults
            .insert(name.to_owned(), protocol.to_owned());
    }

    pub fn skip_defaults(&mut self, name: &str) {
        self.skipped_defaults.insert(name.to_owned());
    }

    pub fn defaults_skipped(&self, name: &str) -> bool {
        self.skipped_defaults.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Body {
        match value {
            serde_json::Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    #[test]
    fn what_we_know_wins_until_the_watch_moves() {
        let key = EntryKey::new(Kind::IngressGateway, "edge");
        let old = body(json!({"Name": "edge", "ModifyIndex": 5}));
        let ours = body(json!({"Name": "edge", "Listeners": []}));
        let mut overlay = Overlay::default();
        overlay.learn(key.clone(), modify_index(&old), Some(ours.clone()));
        let view = overlay.view(&[(key.clone(), Some(&old))]);
        assert_eq!(
            view.get(&key).copied(),
            Some(&ours),
            "our write, not yet echoed"
        );

        let echoed = body(json!({"Name": "edge", "Listeners": [], "ModifyIndex": 6}));
        let view = overlay.view(&[(key.clone(), Some(&echoed))]);
        assert_eq!(
            view.get(&key).copied(),
            Some(&echoed),
            "the watch caught up"
        );
        let view = overlay.view(&[(key.clone(), Some(&old))]);
        assert_eq!(
            view.get(&key).copied(),
            Some(&old),
            "and the overlay is gone"
        );
    }

    #[test]
    fn a_delete_we_made_hides_the_entry_until_the_watch_shows_it() {
        let key = EntryKey::new(Kind::HttpRoute, "r");
        let old = body(json!({"Name": "r", "ModifyIndex": 5}));
        let mut overlay = Overlay::default();
        overlay.learn(key.clone(), modify_index(&old), None);
        assert!(overlay.view(&[(key.clone(), Some(&old))]).is_empty());
        assert!(overlay.view(&[(key.clone(), None)]).is_empty());
    }

    #[test]
    fn created_defaults_count_until_the_watch_shows_them() {
        let mut overlay = Overlay::default();
        let empty = BTreeMap::new();
        overlay.protocols(&empty, None);
        overlay.created_defaults("web", "http");
        overlay.skip_defaults("db");
        let protocols = overlay.protocols(&empty, None);
        assert_eq!(protocols.effective("web"), "http");
        assert!(overlay.defaults_skipped("db"));
        let shown = BTreeMap::from([("web".to_string(), "grpc".to_string())]);
        let protocols = overlay.protocols(&shown, None);
        assert_eq!(protocols.effective("web"), "grpc", "the watch wins");
        assert!(
            !overlay.defaults_skipped("db"),
            "a change makes it worth a retry"
        );
    }
}
