//! The shared model of the pure core: what the planner reads and writes and what the
//! Consul edge decodes into. Nothing here does I/O; both `plan` and `consul` import it,
//! and it imports neither.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Service name -> its selected tags, prefix already stripped (see `consul::wire`).
/// Only services with at least one selected tag are present.
pub type Catalog = BTreeMap<String, Vec<String>>;

/// A config entry's body as Consul returns it (or as we write it).
pub type Body = Map<String, Value>;

/// Value of `Meta.managed-by` on everything the daemon writes.
pub const MANAGED_BY: &str = "ingress-service-monitor";

/// Consul's limit on config-entry Meta pairs (consul-api §6.2).
pub const MAX_META: usize = 64;

/// Meta key of the entries we write: the catalog index (`X-Consul-Index` of
/// `/v1/catalog/services`) the written entry was planned from. Several instances of the
/// daemon (one per gateway allocation) share the entries, and their watches see a change
/// a few milliseconds apart: an instance whose catalog is older than the one an entry was
/// planned from waits for its watch to catch up instead of writing its older view back
/// (a flap that would briefly undo a route for everyone).
pub const CATALOG_INDEX_META: &str = "ingress-service-monitor-catalog-index";

/// Meta key naming the gateway a whole-owned entry (a route) belongs to.
pub const GATEWAY_META: &str = "ingress-service-monitor-gateway";

/// Keys Consul writes itself: never part of a desired entry, ignored when comparing.
pub const CONSUL_OWNED_KEYS: [&str; 4] = ["CreateIndex", "ModifyIndex", "Hash", "Status"];

/// What decides each service's effective protocol (consul-api §7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protocols {
    /// Every `service-defaults` entry: name -> its `Protocol` (possibly "").
    pub service_defaults: BTreeMap<String, String>,
    /// `proxy-defaults/global` `Config.protocol`, when set.
    pub proxy_default: Option<String>,
}

impl Protocols {
    /// Effective protocol, lower-cased: service-defaults' Protocol (empty means tcp),
    /// else proxy-defaults', else tcp.
    pub fn effective(&self, service: &str) -> String {
        match (self.service_defaults.get(service), &self.proxy_default) {
            (Some(protocol), _) if protocol.is_empty() => "tcp".to_owned(),
            (Some(protocol), _) => protocol.to_lowercase(),
            (None, Some(protocol)) if !protocol.is_empty() => protocol.to_lowercase(),
            (None, _) => "tcp".to_owned(),
        }
    }
}

/// The ingress service registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub port: u16,
    pub address: Option<String>,
    /// Sorted, de-duplicated.
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// `http://<INGRESSADDRESS or 127.0.0.1>:<INGRESSHEALTHCHECKPORT>/ready`
    pub check_url: String,
}

impl Registration {
    /// Whether going from `self` to `next` only drops tags (then the outer proxy should
    /// stop sending those hosts before Envoy forgets them: register first, write the
    /// gateway's config after).
    pub fn only_removes_tags(&self, next: &Registration) -> bool {
        let current: BTreeSet<&String> = self.tags.iter().collect();
        let desired: BTreeSet<&String> = next.tags.iter().collect();
        desired.len() < current.len() && desired.is_subset(&current)
    }
}

/// A warning about one service (and tag, when one tag is the cause).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub service: String,
    pub tag: Option<String>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(tag) => write!(
                f,
                "service {:?}, tag {:?}: {}",
                self.service, tag, self.message
            ),
            None => write!(f, "service {:?}: {}", self.service, self.message),
        }
    }
}

/// The config-entry kinds the daemon reads or writes, in the order a pass writes them:
/// a service's protocol first (the gateway's config is validated against it), then the
/// gateway's own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ServiceDefaults,
    ServiceIntentions,
    IngressGateway,
    ApiGateway,
    HttpRoute,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceDefaults => "service-defaults",
            Kind::ServiceIntentions => "service-intentions",
            Kind::IngressGateway => "ingress-gateway",
            Kind::ApiGateway => "api-gateway",
            Kind::HttpRoute => "http-route",
        }
    }

    /// How much of an entry of this kind the daemon owns.
    pub fn ownership(self) -> Ownership {
        match self {
            Kind::ServiceDefaults => Ownership::CreateOnly,
            Kind::ServiceIntentions | Kind::IngressGateway | Kind::ApiGateway => Ownership::Part,
            Kind::HttpRoute => Ownership::Whole,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One config entry's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub kind: Kind,
    pub name: String,
}

impl EntryKey {
    pub fn new(kind: Kind, name: impl Into<String>) -> EntryKey {
        EntryKey {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// How much of an entry the daemon owns, which decides what the diff may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Ours when its Meta says so: created, replaced and deleted as a whole. A foreign
    /// entry under the same name is never touched.
    Whole,
    /// Shared: we own parts (our listeners); the rest is carried over as it is. Created
    /// when absent, updated with CAS, never deleted.
    Part,
    /// Created when absent (`cas=0`), never updated or deleted (service-defaults: once it
    /// exists it is the operator's).
    CreateOnly,
}

/// Entries as Consul holds them (the watches' latest view plus what we know newer),
/// borrowed: an entry can be megabytes, and planning must not copy it.
pub type Entries<'a> = BTreeMap<EntryKey, &'a Body>;

/// `ModifyIndex` of an entry as Consul returned it.
/// A list of config entries by name, as a list watch publishes it. Each entry is shared:
/// the next answer of the watch reuses every entry whose indexes did not move, so a
/// change to one route costs one route, not a second copy of the list.
pub type EntryList = BTreeMap<String, Arc<Body>>;

pub fn modify_index(body: &Body) -> Option<u64> {
    body.get("ModifyIndex").and_then(Value::as_u64)
}

/// The catalog index a daemon recorded in the entry's Meta when it wrote it.
pub fn stamp(body: &Body) -> Option<u64> {
    let meta = body.get("Meta")?;
    meta.get(CATALOG_INDEX_META)?.as_str()?.parse().ok()
}

/// Whether the entry's Meta says this daemon wrote it.
pub fn managed_by_us(body: &Body) -> bool {
    body.get("Meta")
        .and_then(|meta| meta.get("managed-by"))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
}

/// The Description that marks the daemon's source in a `service-intentions` entry
/// (sources carry no Meta).
pub const SOURCE_DESCRIPTION: &str = "managed by ingress-service-monitor";

/// What the daemon keeps of one `service-intentions` entry: what decides its plan, and
/// nothing more. The entry itself is the operator's (their sources and permissions,
/// fields of newer Consul versions): it is read whole just before the daemon changes
/// it, and never held. At thousands of exposed services this is a few dozen bytes an
/// entry where the decoded entry costs a kilobyte and a half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intentions {
    /// None: known from our own write, not echoed by the watch yet.
    pub modify_index: Option<u64>,
    /// Its Meta says this daemon created it.
    pub managed_by_us: bool,
    /// The catalog index a daemon planned its last write from (see [`stamp`]).
    pub stamp: Option<u64>,
    /// The (first) source for the gateway itself.
    pub gateway: GatewaySource,
    /// Sources that are ours (one, unless someone copied it).
    pub ours: usize,
    /// Sources that are not ours.
    pub others: usize,
}

/// What the source for the gateway in a `service-intentions` entry is to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewaySource {
    /// There is none.
    Absent,
    /// Ours, a plain allow as the daemon writes it.
    Ours,
    /// Ours by its Description, but edited into a deny or given Permissions.
    OursEdited,
    /// Someone else's plain allow: it does the job.
    TheirAllow,
    /// Someone else's deny: never overridden.
    TheirDeny,
    /// Someone else's allow with Permissions: never overridden.
    TheirPermissions,
}

/// `service-intentions` entries by destination service, as their watch publishes them.
pub type IntentionsList = BTreeMap<String, Intentions>;

/// What the daemon knows of one `service-intentions` entry newer than its watch (its own
/// write, a fresh read; None: deleted): valid while the watch still shows the
/// `ModifyIndex` it showed when the daemon learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewerIntentions {
    pub watched: Option<u64>,
    pub intentions: Option<Intentions>,
}

/// [`NewerIntentions`] by destination service.
pub type IntentionsNewer = BTreeMap<String, NewerIntentions>;

/// Intentions as Consul holds them: the watch's list, overridden where the daemon knows
/// newer. Borrowed as it is: planning every change must not copy thousands of entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntentionsView<'a> {
    watched: Option<&'a IntentionsList>,
    newer: Option<&'a IntentionsNewer>,
}

impl<'a> IntentionsView<'a> {
    /// The watch's list as it is.
    pub fn of(watched: &'a IntentionsList) -> IntentionsView<'a> {
        IntentionsView {
            watched: Some(watched),
            newer: None,
        }
    }

    /// The watch's list (None: not read), overridden by `newer`.
    pub fn with_newer(
        watched: Option<&'a IntentionsList>,
        newer: &'a IntentionsNewer,
    ) -> IntentionsView<'a> {
        IntentionsView {
            watched,
            newer: Some(newer),
        }
    }

    /// The entry of `service` (None: it does not exist).
    pub fn get(&self, service: &str) -> Option<&'a Intentions> {
        match self.newer.and_then(|newer| newer.get(service)) {
            Some(known) => known.intentions.as_ref(),
            None => self.watched?.get(service),
        }
    }

    /// Every service with an entry, once each.
    pub fn services(&self) -> impl Iterator<Item = &'a str> + 'a {
        let newer = self.newer;
        let watched = self
            .watched
            .into_iter()
            .flatten()
            .map(|(service, _)| service)
            .filter(move |service| !newer.is_some_and(|newer| newer.contains_key(*service)));
        let known = newer
            .into_iter()
            .flatten()
            .filter(|(_, known)| known.intentions.is_some())
            .map(|(service, _)| service);
        watched.chain(known).map(String::as_str)
    }
}

/// A source for the gateway itself (not one of another peer or sameness group, which
/// name other services).
pub fn for_gateway(source: &Value, gateway: &str) -> bool {
    let text = |key: &str| source.get(key).and_then(Value::as_str).unwrap_or("");
    text("Name") == gateway && text("Peer").is_empty() && text("SamenessGroup").is_empty()
}

/// The source the daemon wrote for the gateway (recognised by its Description).
pub fn is_our_source(source: &Value, gateway: &str) -> bool {
    for_gateway(source, gateway)
        && source.get("Description").and_then(Value::as_str) == Some(SOURCE_DESCRIPTION)
}

/// The sources of a `service-intentions` entry (none when they are not a list).
pub fn sources(entry: &Body) -> &[Value] {
    match entry.get("Sources") {
        Some(Value::Array(sources)) => sources,
        _ => &[],
    }
}

impl Intentions {
    /// What decides the plan of `entry`, for the gateway named `gateway`.
    pub fn of(entry: &Body, gateway: &str) -> Intentions {
        let sources = sources(entry);
        let ours = sources
            .iter()
            .filter(|source| is_our_source(source, gateway))
            .count();
        let gateway_source = match sources.iter().find(|s| for_gateway(s, gateway)) {
            None => GatewaySource::Absent,
            Some(source) => {
                let allow = source
                    .get("Action")
                    .and_then(Value::as_str)
                    .is_some_and(|action| action.eq_ignore_ascii_case("allow"));
                let permissions = source
                    .get("Permissions")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty());
                match (is_our_source(source, gateway), allow && !permissions) {
                    (true, true) => GatewaySource::Ours,
                    (true, false) => GatewaySource::OursEdited,
                    (false, true) => GatewaySource::TheirAllow,
                    (false, false) if permissions => GatewaySource::TheirPermissions,
                    (false, false) => GatewaySource::TheirDeny,
                }
            }
        };
        Intentions {
            modify_index: modify_index(entry),
            managed_by_us: managed_by_us(entry),
            stamp: stamp(entry),
            gateway: gateway_source,
            ours,
            others: sources.len() - ours,
        }
    }
}

/// An object with room for exactly `pairs`. A JSON object does not say its size up
/// front, so a map filled while parsing (or by `json!`) keeps the slack of its last
/// growth; the entries Consul sends are thousands of two- and three-key objects.
pub fn exact_map(pairs: Vec<(String, Value)>) -> Body {
    let mut map = Body::with_capacity(pairs.len());
    map.extend(pairs);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Body {
        match value {
            Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    #[test]
    fn effective_protocol() {
        let protocols = Protocols {
            service_defaults: BTreeMap::from([
                ("a".into(), "HTTP".into()),
                ("b".into(), String::new()),
            ]),
            proxy_default: Some("grpc".into()),
        };
        let cases = [("a", "http"), ("b", "tcp"), ("c", "grpc")];
        for (service, want) in cases {
            assert_eq!(protocols.effective(service), want, "{service}");
        }
        assert_eq!(Protocols::default().effective("x"), "tcp");
    }

    #[test]
    fn entry_metadata() {
        let ours = body(json!({"ModifyIndex": 7, "Meta": {
            "managed-by": MANAGED_BY, CATALOG_INDEX_META: "42"}}));
        assert_eq!(modify_index(&ours), Some(7));
        assert_eq!(stamp(&ours), Some(42));
        assert!(managed_by_us(&ours));
        let foreign = body(json!({"Meta": {"managed-by": "terraform", CATALOG_INDEX_META: "x"}}));
        assert_eq!(modify_index(&foreign), None);
        assert_eq!(stamp(&foreign), None, "an unparsable stamp is no stamp");
        assert!(!managed_by_us(&foreign));
    }

    #[test]
    fn only_removes_tags() {
        let reg = |tags: &[&str]| Registration {
            id: "i".into(),
            name: "n".into(),
            port: 1,
            address: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            meta: BTreeMap::new(),
            check_url: String::new(),
        };
        let cases: [(&[&str], &[&str], bool); 4] = [
            (&["a", "b"], &["a"], true),
            (&["a", "b"], &["a", "c"], false),
            (&["a"], &["a"], false),
            (&["a"], &["a", "b"], false),
        ];
        for (from, to, want) in cases {
            assert_eq!(
                reg(from).only_removes_tags(&reg(to)),
                want,
                "{from:?} -> {to:?}"
            );
        }
    }
}
