//! The reconciler's inputs: the watches' latest answers, plus what the reconciler knows
//! that they do not show yet (its own writes, a fresh read after a CAS miss, the
//! service-defaults it created), merged into one view for the planner.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::consul::api;
use crate::consul::client::ApiPath;
use crate::consul::retry::{Backoff, ProblemLog};
use crate::consul::watch::{run as watch_loop, spawn, spawn_incremental, Observed};
use crate::consul::Client;
use crate::consul::Response;
use crate::model::{
    modify_index, Body, Catalog, Entries, EntryKey, EntryList, Intentions, IntentionsList,
    IntentionsNewer, IntentionsView, Kind, NewerIntentions, Protocols,
};
use crate::plan::compare;
use crate::plan::PlanSettings;

/// The receiving ends of the watches, and one wake-up for all of them.
pub struct Inputs {
    changed: Arc<Notify>,
    /// Shared with the catalog decoder's memo (see [`memoized`]).
    pub catalog: watch::Receiver<Observed<Arc<Catalog>>>,
    pub service_defaults: watch::Receiver<Observed<BTreeMap<String, String>>>,
    pub proxy_default: watch::Receiver<Observed<Option<String>>>,
    /// The gateway's own entry.
    pub gateway: watch::Receiver<Observed<Option<Body>>>,
    pub gateway_key: EntryKey,
    /// API gateway only: the http-routes that concern our gateway, by name.
    pub routes: Option<watch::Receiver<Observed<EntryList>>>,
    /// SETINTENTIONS only: what decides the plan of every service-intentions entry, by
    /// destination.
    pub intentions: Option<watch::Receiver<Observed<IntentionsList>>>,
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
            let gateway = settings.gateway_name.clone();
            keep(
                tasks,
                spawn(
                    client,
                    "watch service-intentions",
                    api::list_path(Kind::ServiceIntentions),
                    move |r| api::decode_intentions(r, &gateway),
                    changed.clone(),
                ),
            )
        });
        let routes = (gateway_key.kind == Kind::ApiGateway).then(|| {
            let gateway = settings.gateway_name.clone();
            keep(
                tasks,
                spawn_incremental(
                    client,
                    "watch http-route entries",
                    api::list_path(Kind::HttpRoute),
                    move |r, previous| api::decode_routes(r, &gateway, previous),
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
            gateway: keep(tasks, spawn_gateway(client, &gateway_key, changed.clone())),
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
            && self
                .routes
                .as_ref()
                .map_or(true, |list| list.borrow().value.is_some())
            && self
                .intentions
                .as_ref()
                .map_or(true, |list| list.borrow().value.is_some())
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
        match key.kind {
            Kind::HttpRoute => {
                let list = self.routes.as_ref()?.borrow();
                list.value
                    .as_ref()?
                    .get(&key.name)
                    .and_then(|b| modify_index(b))
            }
            Kind::ServiceIntentions => {
                let list = self.intentions.as_ref()?.borrow();
                list.value.as_ref()?.get(&key.name)?.modify_index
            }
            _ => None,
        }
    }

    pub fn catalog_failing(&self) -> bool {
        self.catalog.borrow().problem.is_some()
    }

    /// Marks what every watch shows now as what the plan is made from (see
    /// [`Inputs::unchanged_since_plan`]).
    pub fn mark_planned(&mut self) {
        self.catalog.mark_unchanged();
        self.service_defaults.mark_unchanged();
        self.proxy_default.mark_unchanged();
        self.gateway.mark_unchanged();
        if let Some(list) = &mut self.routes {
            list.mark_unchanged();
        }
        if let Some(list) = &mut self.intentions {
            list.mark_unchanged();
        }
    }

    /// Whether a plan now would start from what the last one (see
    /// [`Inputs::mark_planned`]) left Consul holding: no watch has published since,
    /// except the entry watch showing the echo of our own write (what we wrote, as the
    /// diff compares it; see [`Overlay::echoes`]). After a pass that applied its whole
    /// plan, planning again from that would give the same plan and an empty diff.
    ///
    /// At 10,000 services a plan is the bulk of what a change costs, and every write
    /// of ours comes back through the entry watch: this halves the cost of a change.
    pub fn unchanged_since_plan(&mut self, overlay: &mut Overlay) -> bool {
        let moved = |changed: Result<bool, _>| changed.unwrap_or(true);
        if moved(self.catalog.has_changed())
            || moved(self.service_defaults.has_changed())
            || moved(self.proxy_default.has_changed())
        {
            return false;
        }
        // The lists (routes, intentions) carry what Consul's controller writes (Status)
        // and others' entries: any news there is planned from.
        if self.routes.as_ref().is_some_and(|l| moved(l.has_changed()))
            || self
                .intentions
                .as_ref()
                .is_some_and(|l| moved(l.has_changed()))
        {
            return false;
        }
        if !moved(self.gateway.has_changed()) {
            return true;
        }
        let gateway = self.gateway.borrow();
        let watched = gateway.value.as_ref().and_then(Option::as_ref);
        let echoed = overlay.echoes(&[(&self.gateway_key, watched)]);
        drop(gateway);
        if echoed {
            self.gateway.mark_unchanged();
        }
        echoed
    }
}

/// `decode`, skipped when the body is the one decoded last: that value is returned
/// again, shared. The catalog's index moves with every registration, ours included,
/// so each change brings a second, identical catalog answer (about 1 MiB at 10,000
/// services): recognising it costs one pass over the bytes instead of a decode and a
/// deep comparison (an `Arc` compares equal to itself at once).
///
/// A body is recognised by its status, length and two 64-bit SipHash digests under
/// keys drawn at start: no one can craft a colliding body, and a chance collision
/// (2^-128) is not a concern.
fn memoized<T, D>(decode: D) -> impl Fn(&Response) -> Result<Arc<T>, String> + Send + Sync
where
    T: Send + Sync,
    D: Fn(&Response) -> Result<T, String> + Send + Sync,
{
    type Fingerprint = (u16, usize, u64, u64);
    let keys = (RandomState::new(), RandomState::new());
    let last: Mutex<Option<(Fingerprint, Arc<T>)>> = Mutex::new(None);
    move |response| {
        let body = &response.body[..];
        let seen = (
            response.status,
            body.len(),
            keys.0.hash_one(body),
            keys.1.hash_one(body),
        );
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((fingerprint, value)) = last.as_ref() {
            if *fingerprint == seen {
                return Ok(Arc::clone(value));
            }
        }
        let value = Arc::new(decode(response)?);
        *last = Some((seen, Arc::clone(&value)));
        Ok(value)
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
) -> (watch::Receiver<Observed<Arc<Catalog>>>, JoinHandle<()>) {
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
        type Decode = Box<dyn Fn(&Response) -> Result<Catalog, String> + Send + Sync>;
        let (path, decode): (ApiPath, Decode) = if honoured {
            let decode = move |r: &Response| api::decode_catalog(r, &prefix);
            (api::catalog_path(&own), Box::new(decode))
        } else {
            tracing::info!(
                path = api::UI_SERVICES_PATH,
                "this Consul ignores filter= on /v1/catalog/services (Consul 1.8 does): watching the service summary, which names each service's kind, so sidecar proxies, gateways and the ingress service itself still stay out"
            );
            let path = ApiPath::fixed(api::UI_SERVICES_PATH, api::UI_SERVICES_PATH);
            let decode = move |r: &Response| api::decode_ui_services(r, &prefix, &own);
            (path, Box::new(decode))
        };
        let decode = memoized(decode);
        watch_loop(
            connection,
            ACTIVITY,
            path,
            move |r, _| decode(r),
            tx,
            changed,
        )
        .await;
    });
    (rx, task)
}

/// The watch of the gateway's own entry (an api-gateway entry kept compact).
fn spawn_gateway(
    client: &Client,
    key: &EntryKey,
    changed: Arc<Notify>,
) -> (watch::Receiver<Observed<Option<Body>>>, JoinHandle<()>) {
    type Decode = fn(&Response) -> Result<Option<Body>, String>;
    let (activity, decode): (&'static str, Decode) = match key.kind {
        Kind::ApiGateway => ("watch api-gateway entry", api::decode_compact_entry),
        _ => ("watch ingress-gateway entry", api::decode_entry),
    };
    spawn(client, activity, api::entry_path(key), decode, changed)
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
    /// What we know of service-intentions entries, by destination service.
    intentions: IntentionsNewer,
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

    /// [`Overlay::learn`] for what decides the plan of a service's intentions.
    pub fn learn_intentions(
        &mut self,
        service: String,
        watched: Option<u64>,
        intentions: Option<Intentions>,
    ) {
        let known = NewerIntentions {
            watched,
            intentions,
        };
        self.intentions.insert(service, known);
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
        self.views(watched, None).0
    }

    /// [`Overlay::view`], and the same for intentions from their watch's list.
    pub fn views<'a>(
        &'a mut self,
        watched: &[(EntryKey, Option<&'a Body>)],
        intentions: Option<&'a IntentionsList>,
    ) -> (Entries<'a>, IntentionsView<'a>) {
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
        let shown_index = |service: &str| intentions?.get(service)?.modify_index;
        self.intentions
            .retain(|service, known| known.watched == shown_index(service));
        let this: &'a Overlay = self;
        let mut view = Entries::new();
        for (key, body) in watched {
            let body = match this.entries.get(key) {
                Some(known) => known.body.as_ref(),
                None => *body,
            };
            if let Some(body) = body {
                view.insert(key.clone(), body);
            }
        }
        for (key, known) in &this.entries {
            if !shown.contains(key) {
                if let Some(body) = &known.body {
                    view.insert(key.clone(), body);
                }
            }
        }
        (
            view,
            IntentionsView::with_newer(intentions, &this.intentions),
        )
    }

    /// Whether the watched entries show nothing but our own writes: every entry whose
    /// watch moved past what we knew of it now shows what we knew (our write, as
    /// [`entries_equal`] compares; absent after our delete). An entry we know nothing of
    /// counts as changed. When true, what the watches caught up with is dropped, as
    /// [`Overlay::view`] would.
    pub fn echoes(&mut self, watched: &[(&EntryKey, Option<&Body>)]) -> bool {
        for (key, body) in watched {
            let Some(known) = self.entries.get(*key) else {
                return false;
            };
            if known.watched == body.and_then(modify_index) {
                // Not echoed yet: the view still shows what we know.
                continue;
            }
            let same = match (&known.body, body) {
                // Consul writes Status on API-gateway entries after ours: news to report.
                (Some(ours), Some(theirs)) => {
                    key.kind != Kind::ApiGateway && compare::equal(key.kind, ours, theirs)
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                return false;
            }
        }
        for (key, body) in watched {
            self.prune(key, *body);
        }
        true
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
    use crate::model::{GatewaySource, Kind};
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
    fn what_we_know_of_intentions_wins_until_the_watch_moves() {
        let of = |modify_index, gateway| Intentions {
            modify_index,
            managed_by_us: false,
            stamp: None,
            gateway,
            ours: usize::from(gateway == GatewaySource::Ours),
            others: 1,
        };
        let list = |entries: &[(&str, Intentions)]| -> IntentionsList {
            entries
                .iter()
                .map(|(name, known)| (name.to_string(), known.clone()))
                .collect()
        };
        let before = list(&[
            ("web", of(Some(5), GatewaySource::Absent)),
            ("api", of(Some(6), GatewaySource::TheirAllow)),
        ]);
        let ours = of(None, GatewaySource::Ours);
        let mut overlay = Overlay::default();
        overlay.learn_intentions("web".into(), Some(5), Some(ours.clone()));
        overlay.learn_intentions("new".into(), None, Some(ours.clone()));
        let shown = |view: IntentionsView<'_>| -> BTreeMap<String, Intentions> {
            view.services()
                .map(|service| (service.to_owned(), view.get(service).cloned()))
                .filter_map(|(service, known)| Some((service, known?)))
                .collect()
        };
        let (_, view) = overlay.views(&[], Some(&before));
        assert_eq!(
            shown(view),
            list(&[
                ("api", before["api"].clone()),
                ("new", ours.clone()),
                ("web", ours.clone())
            ]),
            "our writes, not yet echoed, over the watch's"
        );
        assert_eq!(view.services().count(), 3, "each once");
        let echoed = list(&[
            ("web", of(Some(7), GatewaySource::Ours)),
            ("api", of(Some(6), GatewaySource::TheirAllow)),
            ("new", of(Some(8), GatewaySource::Ours)),
        ]);
        let (_, view) = overlay.views(&[], Some(&echoed));
        assert_eq!(shown(view), echoed, "the watch caught up");
        let (_, view) = overlay.views(&[], Some(&before));
        assert_eq!(shown(view), before, "and the overlay is gone");
        overlay.learn_intentions("api".into(), Some(6), None);
        let (_, view) = overlay.views(&[], Some(&before));
        assert_eq!(view.get("api"), None, "our delete hides it");
        assert_eq!(view.services().collect::<Vec<_>>(), ["web"]);
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
    fn only_the_echo_of_what_we_wrote_counts_as_no_change() {
        let key = EntryKey::new(Kind::IngressGateway, "edge");
        let old = body(json!({"Name": "edge", "ModifyIndex": 5}));
        let ours = body(json!({"Name": "edge", "Listeners": [{"Port": 1, "Protocol": "http"}]}));
        let echo = body(json!({"Name": "edge", "ModifyIndex": 6,
            "Listeners": [{"Port": 1, "Protocol": "HTTP"}]}));
        let other = body(json!({"Name": "edge", "ModifyIndex": 6,
            "Listeners": [{"Port": 2, "Protocol": "http"}]}));
        let cases: [(&str, Option<Option<Body>>, &Body, bool); 5] = [
            ("nothing known", None, &echo, false),
            ("not echoed yet", Some(Some(ours.clone())), &old, true),
            ("echoed as written", Some(Some(ours.clone())), &echo, true),
            (
                "someone else wrote after us",
                Some(Some(ours.clone())),
                &other,
                false,
            ),
            (
                "we deleted, it still exists newer",
                Some(None),
                &echo,
                false,
            ),
        ];
        for (name, known, watched, want) in cases {
            let mut overlay = Overlay::default();
            if let Some(known) = known.clone() {
                overlay.learn(key.clone(), modify_index(&old), known);
            }
            assert_eq!(overlay.echoes(&[(&key, Some(watched))]), want, "{name}");
            let view = overlay.view(&[(key.clone(), Some(watched))]);
            let shown = view.get(&key).copied();
            if name == "not echoed yet" {
                assert_eq!(shown, Some(&ours), "{name}: still ours");
            } else {
                assert_eq!(shown, Some(watched), "{name}: the watch's");
            }
        }
        let mut overlay = Overlay::default();
        overlay.learn(key.clone(), modify_index(&old), None);
        assert!(overlay.echoes(&[(&key, None)]), "our delete, echoed");
    }

    fn inputs() -> (Inputs, Senders) {
        let (catalog_tx, catalog) = watch::channel(Observed::default());
        let (defaults_tx, service_defaults) = watch::channel(Observed::default());
        let (proxy_tx, proxy_default) = watch::channel(Observed::default());
        let (gateway_tx, gateway) = watch::channel(Observed::default());
        let inputs = Inputs {
            changed: Arc::new(Notify::new()),
            catalog,
            service_defaults,
            proxy_default,
            gateway,
            gateway_key: EntryKey::new(Kind::IngressGateway, "edge"),
            routes: None,
            intentions: None,
        };
        (inputs, (catalog_tx, defaults_tx, proxy_tx, gateway_tx))
    }

    type Senders = (
        watch::Sender<Observed<Arc<Catalog>>>,
        watch::Sender<Observed<BTreeMap<String, String>>>,
        watch::Sender<Observed<Option<String>>>,
        watch::Sender<Observed<Option<Body>>>,
    );

    fn observed<T>(value: T) -> Observed<T> {
        Observed {
            value: Some(value),
            problem: None,
            index: Some(1),
        }
    }

    #[test]
    fn a_plan_is_needed_after_any_change_but_our_own_echo() {
        let key = EntryKey::new(Kind::IngressGateway, "edge");
        let old = body(json!({"Name": "edge", "ModifyIndex": 5}));
        let ours = body(json!({"Name": "edge", "Listeners": []}));
        let echo = body(json!({"Name": "edge", "ModifyIndex": 6}));
        let foreign = body(json!({"Name": "edge", "ModifyIndex": 7, "Meta": {"x": "y"}}));
        let (mut inputs, (catalog, defaults, proxy, gateway)) = inputs();
        gateway.send_replace(observed(Some(old.clone())));
        let mut overlay = Overlay::default();
        inputs.mark_planned();
        assert!(
            inputs.unchanged_since_plan(&mut overlay),
            "nothing published"
        );

        overlay.learn(key.clone(), modify_index(&old), Some(ours.clone()));
        gateway.send_replace(observed(Some(echo.clone())));
        assert!(inputs.unchanged_since_plan(&mut overlay), "our echo");
        assert!(
            inputs.unchanged_since_plan(&mut overlay),
            "and it stays seen"
        );
        gateway.send_replace(observed(Some(foreign)));
        assert!(
            !inputs.unchanged_since_plan(&mut overlay),
            "a write of someone else"
        );

        let mut check = |name: &str, change: &dyn Fn()| {
            inputs.mark_planned();
            assert!(inputs.unchanged_since_plan(&mut overlay), "{name}: before");
            change();
            assert!(!inputs.unchanged_since_plan(&mut overlay), "{name}: after");
        };
        check("catalog", &|| {
            catalog.send_replace(observed(Arc::new(Catalog::new())));
        });
        check("service-defaults", &|| {
            defaults.send_replace(observed(BTreeMap::new()));
        });
        check("proxy-defaults", &|| {
            proxy.send_replace(observed(None));
        });
    }

    #[test]
    fn an_identical_catalog_answer_is_not_decoded_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let decoded = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&decoded);
        let decode = memoized(move |r: &Response| {
            count.fetch_add(1, Ordering::Relaxed);
            api::decode_catalog(r, "gw-")
        });
        let answer = |status, body: &'static str| Response {
            status,
            index: Some(1),
            body: bytes::Bytes::from_static(body.as_bytes()),
        };
        let first = decode(&answer(200, r#"{"web":["gw-a"]}"#)).expect("decodes");
        let again = decode(&answer(200, r#"{"web":["gw-a"]}"#)).expect("decodes");
        assert!(Arc::ptr_eq(&first, &again), "the same value, shared");
        assert_eq!(decoded.load(Ordering::Relaxed), 1, "decoded once");

        // (status, body, decodes, decoded again)
        let cases = [
            (200, r#"{"web":["gw-b"]}"#, true, true),
            (200, r#"{"web":["gw-b"]"#, false, true),
            (500, r#"{"web":["gw-b"]}"#, false, true),
            (200, r#"{"web":["gw-b"]}"#, true, false),
        ];
        let mut calls = 1;
        for (status, body, ok, again) in cases {
            let got = decode(&answer(status, body));
            calls += usize::from(again);
            assert_eq!(got.is_ok(), ok, "{status} {body}");
            assert_eq!(
                decoded.load(Ordering::Relaxed),
                calls,
                "{status} {body}: decoded"
            );
        }
        let got = decode(&answer(200, r#"{"web":["gw-b"]}"#)).expect("decodes");
        assert_eq!(got.get("web"), Some(&vec!["b".to_string()]));
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
