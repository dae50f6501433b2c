//! The pure diff: what to do to make Consul hold [`Desired`], given what it holds.
//!
//! Rules, by [`Ownership`]:
//! - `CreateOnly`: created with `cas=0` when absent, never touched once it exists;
//! - `Part` (a shared entry, ours in part): written with `cas=<ModifyIndex>` when it
//!   differs, created with `cas=0` when absent, never deleted;
//! - `Whole` (ours when its Meta says so): as `Part`, but a foreign entry under the name
//!   we want is left alone with a warning, and an entry we own that is no longer desired
//!   is deleted with `cas=<ModifyIndex>`.
//!
//! What Consul writes itself (indexes, `Hash`, `Status`) and our catalog-index stamp never
//! make a write (see `plan::compare`). Several instances share the entries: an entry
//! stamped from a newer catalog than ours is deferred (our watch is behind), unless the
//! caller says the deferral has gone on too long. An entry known without its
//! `ModifyIndex` (our own write, not yet echoed by the watch) is re-read before writing
//! rather than written blind.
//!
//! Order: a registration that only drops tags first (the outer proxy stops sending those
//! hosts before Envoy forgets them), then creates of `CreateOnly` entries, updates of
//! shared entries, upserts of whole entries, deletes, and the registration last; within
//! a phase, by key.

use serde_json::Value;

use crate::model::{
    managed_by_us, modify_index, stamp, Body, Entries, EntryKey, IntentionsView, Kind, Ownership,
    Registration, Warning, CATALOG_INDEX_META, GATEWAY_META, MAX_META,
};
use crate::plan::compare;
use crate::plan::intentions::{Change, IntentionsChange};
use crate::plan::{Desired, DesiredEntry};

/// One operation on Consul.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `PUT /v1/config?cas=<cas>` (0: create only).
    Put { key: EntryKey, body: Body, cas: u64 },
    /// `DELETE /v1/config/<kind>/<name>?cas=<cas>`.
    Delete { key: EntryKey, cas: u64 },
    /// Read the entry again before deciding: what we hold of it has no `ModifyIndex`.
    Refresh { key: EntryKey },
    /// Make `change` to a service's `service-intentions`: written with `cas=0` when
    /// created, otherwise on the entry read just before (see `plan::intentions::amend`),
    /// with its `ModifyIndex`. `stamp`: the catalog index to record.
    Intentions {
        key: EntryKey,
        change: Change,
        stamp: Option<u64>,
    },
    /// Register the ingress service.
    Register(Registration),
}

impl Op {
    pub fn key(&self) -> Option<&EntryKey> {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Refresh { key }
            | Op::Intentions { key, .. } => Some(key),
            Op::Register(_) => None,
        }
    }

    fn phase(&self, ownership: Ownership) -> u8 {
        match (self, ownership) {
            (Op::Put { .. } | Op::Refresh { .. }, Ownership::CreateOnly) => 1,
            (Op::Put { .. } | Op::Refresh { .. }, Ownership::Part) => 2,
            (Op::Put { .. } | Op::Refresh { .. }, Ownership::Whole) => 3,
            (Op::Intentions { .. }, _) => 2,
            (Op::Delete { .. }, _) => 4,
            (Op::Register(_), _) => 5,
        }
    }
}

/// What Consul holds, as far as we know.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Every entry of the kinds we watch (absent: it does not exist).
    pub entries: &'a Entries<'a>,
    /// What we keep of every `service-intentions` entry (SETINTENTIONS).
    pub intentions: &'a IntentionsView<'a>,
    /// The registration the agent holds (None: register).
    pub registered: Option<&'a Registration>,
    /// Our gateway's name, the owner of whole-owned entries.
    pub gateway: &'a str,
}

/// How to treat entries stamped from a newer catalog than ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamping {
    /// The catalog index our plan was made from (stamped into what we write).
    pub catalog_index: Option<u64>,
    /// Defer (true), or write anyway because the deferral went on too long (false).
    pub defer_to_newer: bool,
}

/// An entry planned from a newer catalog than ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newer {
    pub key: EntryKey,
    pub theirs: u64,
    pub ours: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// In the order to apply them.
    pub ops: Vec<Op>,
    /// Entries not written because they were planned from a newer catalog.
    pub deferred: Vec<Newer>,
    /// Entries written although planned from a newer catalog (`defer_to_newer` false).
    pub overridden: Vec<Newer>,
    pub warnings: Vec<Warning>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub fn diff(desired: Desired, observed: &Observed<'_>, stamping: Stamping) -> Diff {
    let mut out = Diff::default();
    let mut phased: Vec<(u8, Op)> = Vec::new();
    // Whole-owned entries come and go (routes): a delete leaves no stamp behind, so the
    // gateway's entry carries the stamp of the last change to the set, and an instance
    // behind it does not bring back what a newer one removed (or remove what it added).
    let gateway_key = EntryKey::new(Kind::ApiGateway, observed.gateway);
    let membership_newer = observed
        .entries
        .get(&gateway_key)
        .and_then(|gateway| newer(&gateway_key, gateway, stamping));
    let mut membership = MembershipOps::default();
    for (key, body) in observed.entries {
        let wanted = desired.entries.iter().any(|entry| entry.key == *key);
        if !wanted && key.kind.ownership() == Ownership::Whole && owned(body, observed.gateway) {
            let op = delete_or_refresh(key.clone(), modify_index(body));
            membership.push(op, &membership_newer, stamping, &mut out, &mut phased);
        }
    }
    for change in desired.intentions {
        if let Some(op) = intentions_op(change, observed, stamping, &mut out) {
            phased.push((op.phase(Ownership::Part), op));
        }
    }
    // Bodies move into the ops: at 10,000 services an entry is megabytes.
    let mut gateway = None;
    for entry in desired.entries {
        if entry.key == gateway_key {
            gateway = Some(entry);
            continue;
        }
        let ownership = entry.ownership;
        match entry_op(entry, observed, stamping, &mut out) {
            Some(op @ Op::Put { cas: 0, .. }) if ownership == Ownership::Whole => {
                membership.push(op, &membership_newer, stamping, &mut out, &mut phased);
            }
            Some(op) => phased.push((op.phase(ownership), op)),
            None => {}
        }
    }
    if let Some(entry) = gateway {
        let op = match entry_op(entry.clone(), observed, stamping, &mut out) {
            None if membership.changed => restamp(entry, observed, stamping),
            op => op,
        };
        if let Some(op) = op {
            phased.push((op.phase(Ownership::Part), op));
        }
    }
    let registration = desired.registration;
    if observed.registered != Some(&registration) {
        let first = observed
            .registered
            .is_some_and(|current| current.only_removes_tags(&registration));
        phased.push((if first { 0 } else { 5 }, Op::Register(registration)));
    }
    phased.sort_by(|(pa, a), (pb, b)| (pa, a.key()).cmp(&(pb, b.key())));
    out.ops = phased.into_iter().map(|(_, op)| op).collect();
    out
}

/// Creates and deletes of whole-owned entries: deferred while the gateway's entry was
/// stamped from a newer catalog; whether any goes ahead (the gateway is stamped then).
#[derive(Default)]
struct MembershipOps {
    changed: bool,
}

impl MembershipOps {
    fn push(
        &mut self,
        op: Op,
        newer: &Option<Newer>,
        stamping: Stamping,
        out: &mut Diff,
        phased: &mut Vec<(u8, Op)>,
    ) {
        if let Some(newer) = newer {
            if stamping.defer_to_newer {
                if !out.deferred.contains(newer) {
                    out.deferred.push(newer.clone());
                }
                return;
            }
        }
        self.changed |= !matches!(op, Op::Refresh { .. });
        phased.push((op.phase(Ownership::Whole), op));
    }
}

/// The gateway's entry written again as it is, to carry the stamp of a change to the
/// set of whole-owned entries.
fn restamp(entry: DesiredEntry, observed: &Observed<'_>, stamping: Stamping) -> Option<Op> {
    let current = observed.entries.get(&entry.key)?;
    if stamp(current).is_some() && stamp(current) == stamping.catalog_index {
        return None;
    }
    let Some(cas) = modify_index(current) else {
        return Some(Op::Refresh { key: entry.key });
    };
    let mut body = entry.body;
    add_stamp(&mut body, stamping.catalog_index);
    Some(Op::Put {
        key: entry.key,
        body,
        cas,
    })
}

/// The operation one change to a service's intentions needs, if any (a deferred one
/// needs none yet).
fn intentions_op(
    planned: IntentionsChange,
    observed: &Observed<'_>,
    stamping: Stamping,
    out: &mut Diff,
) -> Option<Op> {
    let key = EntryKey::new(Kind::ServiceIntentions, planned.service);
    let current = observed.intentions.get(key.name.as_str());
    let newer = current.and_then(|c| newer_stamp(&key, c.stamp, stamping));
    if waits_for_newer(newer, stamping, out) {
        return None;
    }
    Some(match planned.change {
        Change::Delete => delete_or_refresh(key, current?.modify_index),
        change => Op::Intentions {
            key,
            change,
            stamp: stamping.catalog_index,
        },
    })
}

/// Whether an operation on an entry planned from a newer catalog (`newer`) waits for our
/// watch, recorded as deferred; or goes ahead because the deferral went on too long,
/// recorded as overridden.
fn waits_for_newer(newer: Option<Newer>, stamping: Stamping, out: &mut Diff) -> bool {
    let Some(newer) = newer else {
        return false;
    };
    if stamping.defer_to_newer {
        out.deferred.push(newer);
        return true;
    }
    out.overridden.push(newer);
    false
}

/// A delete with CAS on `index`, or a re-read when we do not know it (our own write).
fn delete_or_refresh(key: EntryKey, index: Option<u64>) -> Op {
    match index {
        Some(cas) => Op::Delete { key, cas },
        None => Op::Refresh { key },
    }
}

/// The entry was planned from a newer catalog than ours.
fn newer(key: &EntryKey, body: &Body, stamping: Stamping) -> Option<Newer> {
    newer_stamp(key, stamp(body), stamping)
}

/// An entry stamped `theirs` was planned from a newer catalog than ours.
fn newer_stamp(key: &EntryKey, theirs: Option<u64>, stamping: Stamping) -> Option<Newer> {
    let (theirs, ours) = (theirs?, stamping.catalog_index?);
    (theirs > ours).then(|| Newer {
        key: key.clone(),
        theirs,
        ours,
    })
}

/// Whether a whole-owned entry is ours: our Meta, for our gateway.
fn owned(body: &Body, gateway: &str) -> bool {
    managed_by_us(body)
        && body
            .get("Meta")
            .and_then(|meta| meta.get(GATEWAY_META))
            .and_then(Value::as_str)
            == Some(gateway)
}

/// The operation one desired entry needs, if any.
fn entry_op(
    entry: DesiredEntry,
    observed: &Observed<'_>,
    stamping: Stamping,
    out: &mut Diff,
) -> Option<Op> {
    let DesiredEntry {
        key,
        mut body,
        ownership,
    } = entry;
    let Some(current) = observed.entries.get(&key).copied() else {
        if ownership != Ownership::CreateOnly {
            add_stamp(&mut body, stamping.catalog_index);
        }
        return Some(Op::Put { key, body, cas: 0 });
    };
    match ownership {
        Ownership::CreateOnly => return None,
        Ownership::Whole if !owned(current, observed.gateway) => {
            out.warnings.push(Warning {
                service: key.name.clone(),
                tag: None,
                message: format!(
                    "a {} named {:?} exists and was not written by this daemon for gateway {:?}; left alone",
                    key.kind, key.name, observed.gateway
                ),
            });
            return None;
        }
        Ownership::Whole | Ownership::Part => {}
    }
    if compare::equal(key.kind, &body, current) {
        return None;
    }
    let Some(cas) = modify_index(current) else {
        return Some(Op::Refresh { key });
    };
    if waits_for_newer(newer(&key, current, stamping), stamping, out) {
        return None;
    }
    add_stamp(&mut body, stamping.catalog_index);
    Some(Op::Put { key, body, cas })
}

/// Records the catalog index in Meta. Consul allows 64 Meta pairs; the stamp never takes
/// the last place (it is informational, an operator's pair is not).
pub fn add_stamp(body: &mut Body, catalog_index: Option<u64>) {
    let (Some(index), Some(Value::Object(meta))) = (catalog_index, body.get_mut("Meta")) else {
        return;
    };
    if meta.contains_key(CATALOG_INDEX_META) || meta.len() < MAX_META {
        meta.insert(CATALOG_INDEX_META.into(), Value::String(index.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::model::{GatewaySource, Intentions, IntentionsList, Kind, MANAGED_BY};

    const GW: &str = "edge";

    fn body(value: Value) -> Body {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn registration(tags: &[&str]) -> Registration {
        Registration {
            id: "edge-ingress".into(),
            name: "edge-ingress".into(),
            port: 9997,
            address: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            meta: BTreeMap::new(),
            check_url: "http://127.0.0.1:8443/ready".into(),
        }
    }

    fn gateway(listeners: Value) -> Body {
        body(
            json!({"Kind": "ingress-gateway", "Name": GW, "Listeners": listeners,
                    "Meta": {"managed-by": MANAGED_BY}}),
        )
    }

    fn route(name: &str, meta: Value) -> Body {
        body(json!({"Kind": "http-route", "Name": name, "Meta": meta}))
    }

    fn ours() -> Value {
        json!({"managed-by": MANAGED_BY, GATEWAY_META: GW})
    }

    fn with(mut entry: Body, extra: Value) -> Body {
        entry.extend(body(extra));
        entry
    }

    fn known(modify_index: Option<u64>, stamp: Option<u64>) -> Intentions {
        Intentions {
            modify_index,
            managed_by_us: true,
            stamp,
            gateway: GatewaySource::Ours,
            ours: 1,
            others: 1,
        }
    }

    fn key(kind: Kind, name: &str) -> EntryKey {
        EntryKey::new(kind, name)
    }

    struct Case {
        name: &'static str,
        desired: Vec<(EntryKey, Body)>,
        observed: Vec<(EntryKey, Body)>,
        registered: Option<Registration>,
        wanted: Registration,
        catalog_index: Option<u64>,
        defer_to_newer: bool,
        /// (op, key name or "register", cas)
        ops: Vec<(&'static str, &'static str, u64)>,
        deferred: usize,
        warnings: usize,
        /// Changes the planner wants to services' intentions.
        intentions: Vec<(&'static str, Change)>,
        observed_intentions: Vec<(&'static str, Intentions)>,
    }

    fn case(name: &'static str) -> Case {
        Case {
            name,
            desired: vec![],
            observed: vec![],
            registered: Some(registration(&["a"])),
            wanted: registration(&["a"]),
            catalog_index: Some(10),
            defer_to_newer: true,
            ops: vec![],
            deferred: 0,
            warnings: 0,
            intentions: vec![],
            observed_intentions: vec![],
        }
    }

    fn run(case: &Case) -> Diff {
        let desired = Desired {
            registration: case.wanted.clone(),
            entries: case
                .desired
                .iter()
                .map(|(k, b)| DesiredEntry::new(k.clone(), b.clone()))
                .collect(),
            intentions: case
                .intentions
                .iter()
                .map(|(service, change)| IntentionsChange {
                    service: service.to_string(),
                    change: *change,
                })
                .collect(),
            exposed_services: 0,
            warnings: vec![],
        };
        let entries: Entries<'_> = case.observed.iter().map(|(k, b)| (k.clone(), b)).collect();
        let intentions: IntentionsList = case
            .observed_intentions
            .iter()
            .map(|(service, known)| (service.to_string(), known.clone()))
            .collect();
        let intentions = IntentionsView::of(&intentions);
        let observed = Observed {
            entries: &entries,
            intentions: &intentions,
            registered: case.registered.as_ref(),
            gateway: GW,
        };
        let stamping = Stamping {
            catalog_index: case.catalog_index,
            defer_to_newer: case.defer_to_newer,
        };
        diff(desired, &observed, stamping)
    }

    fn summary(diff: &Diff) -> Vec<(&'static str, String, u64)> {
        diff.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, cas, .. } => ("put", key.name.clone(), *cas),
                Op::Delete { key, cas } => ("delete", key.name.clone(), *cas),
                Op::Refresh { key } => ("refresh", key.name.clone(), 0),
                Op::Intentions { key, .. } => ("amend", key.name.clone(), 0),
                Op::Register(_) => ("register", "register".into(), 0),
            })
            .collect()
    }

    #[test]
    fn table() {
        let gw = key(Kind::IngressGateway, GW);
        let listener = json!([{"Port": 9997, "Protocol": "http", "Services": [{"Name": "web"}]}]);
        let other = json!([{"Port": 9997, "Protocol": "http", "Services": [{"Name": "api"}]}]);
        let cases = vec![
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                ops: vec![("put", GW, 0)],
                ..case("absent entry: created with cas=0")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(
                    gw.clone(),
                    with(gateway(other.clone()), json!({"ModifyIndex": 7})),
                )],
                ops: vec![("put", GW, 7)],
                ..case("changed entry (or re-read after a CAS miss): cas is its ModifyIndex")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(
                    gw.clone(),
                    with(
                        gateway(listener.clone()),
                        json!({
                    "ModifyIndex": 7, "CreateIndex": 3, "Hash": "x",
                    "Status": {"Conditions": [{"Type": "Accepted", "Status": "True"}]},
                    "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "9"}}),
                    ),
                )],
                ..case("equal but for what Consul writes and our stamp: nothing")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(gw.clone(), gateway(other.clone()))],
                ops: vec![("refresh", GW, 0)],
                ..case("known without ModifyIndex (our unechoed write): read it first")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(
                    gw.clone(),
                    with(
                        gateway(other.clone()),
                        json!({"ModifyIndex": 7,
                    "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "20"}}),
                    ),
                )],
                deferred: 1,
                ..case("planned from a newer catalog: deferred")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(
                    gw.clone(),
                    with(
                        gateway(other.clone()),
                        json!({"ModifyIndex": 7,
                    "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "20"}}),
                    ),
                )],
                defer_to_newer: false,
                ops: vec![("put", GW, 7)],
                ..case("deferred too long: written anyway")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                observed: vec![(
                    gw.clone(),
                    with(
                        gateway(other.clone()),
                        json!({"ModifyIndex": 7,
                    "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "5"}}),
                    ),
                )],
                ops: vec![("put", GW, 7)],
                ..case("planned from an older catalog: written")
            },
            Case {
                desired: vec![(
                    key(Kind::ServiceDefaults, "web"),
                    body(json!({"Kind": "service-defaults", "Name": "web"})),
                )],
                observed: vec![(
                    key(Kind::ServiceDefaults, "web"),
                    body(
                        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp", "ModifyIndex": 3}),
                    ),
                )],
                ..case("create-only entry that exists: never touched")
            },
            Case {
                desired: vec![(key(Kind::HttpRoute, "edge-web"), route("edge-web", ours()))],
                observed: vec![(
                    key(Kind::HttpRoute, "edge-web"),
                    with(
                        route("edge-web", json!({"managed-by": "terraform"})),
                        json!({"ModifyIndex": 4, "Hostnames": ["x"]}),
                    ),
                )],
                warnings: 1,
                ..case("a foreign entry under the name we want: left alone, warned about")
            },
            Case {
                desired: vec![(key(Kind::HttpRoute, "edge-web"), route("edge-web", ours()))],
                observed: vec![(
                    key(Kind::HttpRoute, "edge-web"),
                    with(
                        route(
                            "edge-web",
                            json!({"managed-by": MANAGED_BY, GATEWAY_META: "other-gw"}),
                        ),
                        json!({"ModifyIndex": 4}),
                    ),
                )],
                warnings: 1,
                ..case("ours for another gateway: foreign too")
            },
            Case {
                observed: vec![
                    (
                        key(Kind::HttpRoute, "edge-gone"),
                        with(route("edge-gone", ours()), json!({"ModifyIndex": 4})),
                    ),
                    (
                        key(Kind::HttpRoute, "theirs"),
                        with(route("theirs", json!({})), json!({"ModifyIndex": 5})),
                    ),
                    (
                        key(Kind::HttpRoute, "edge-other-gw"),
                        with(
                            route(
                                "edge-other-gw",
                                json!({"managed-by": MANAGED_BY, GATEWAY_META: "other"}),
                            ),
                            json!({"ModifyIndex": 6}),
                        ),
                    ),
                ],
                ops: vec![("delete", "edge-gone", 4)],
                ..case("owned and no longer desired: deleted with cas; foreign ones untouched")
            },
            Case {
                observed: vec![(
                    gw.clone(),
                    with(gateway(other.clone()), json!({"ModifyIndex": 7})),
                )],
                ..case("a shared entry not desired is never deleted")
            },
            Case {
                observed_intentions: vec![
                    ("web", known(Some(8), None)),
                    ("new", known(None, None)),
                ],
                intentions: vec![
                    ("web", Change::Delete),
                    ("gone", Change::Delete),
                    ("new", Change::Delete),
                ],
                ops: vec![("refresh", "new", 0), ("delete", "web", 8)],
                ..case("intentions deleted only when they exist, with their index (else re-read)")
            },
            Case {
                observed_intentions: vec![("web", known(Some(8), None))],
                intentions: vec![("web", Change::Add), ("api", Change::Create)],
                ops: vec![("amend", "api", 0), ("amend", "web", 0)],
                ..case("intentions created or amended, among the shared entries")
            },
            Case {
                observed_intentions: vec![
                    ("web", known(Some(8), Some(11))),
                    ("api", known(Some(9), Some(10))),
                ],
                intentions: vec![("web", Change::Remove), ("api", Change::Remove)],
                ops: vec![("amend", "api", 0)],
                deferred: 1,
                ..case("intentions planned from a newer catalog: deferred")
            },
            Case {
                observed_intentions: vec![("web", known(Some(8), Some(11)))],
                intentions: vec![("web", Change::Remove)],
                defer_to_newer: false,
                ops: vec![("amend", "web", 0)],
                ..case("intentions planned from a newer catalog, deferred too long: amended")
            },
            Case {
                desired: vec![
                    (
                        key(Kind::ApiGateway, GW),
                        body(
                            json!({"Kind": "api-gateway", "Name": GW, "Meta": {"managed-by": MANAGED_BY}}),
                        ),
                    ),
                    (key(Kind::HttpRoute, "edge-new"), route("edge-new", ours())),
                ],
                observed: vec![
                    (
                        key(Kind::ApiGateway, GW),
                        body(
                            json!({"Kind": "api-gateway", "Name": GW, "ModifyIndex": 3, "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "4"}}),
                        ),
                    ),
                    (
                        key(Kind::HttpRoute, "edge-gone"),
                        with(route("edge-gone", ours()), json!({"ModifyIndex": 4})),
                    ),
                ],
                ops: vec![
                    ("put", GW, 3),
                    ("put", "edge-new", 0),
                    ("delete", "edge-gone", 4),
                ],
                ..case("routes come and go: the gateway carries the stamp of the change")
            },
            Case {
                desired: vec![
                    (
                        key(Kind::ApiGateway, GW),
                        body(
                            json!({"Kind": "api-gateway", "Name": GW, "Meta": {"managed-by": MANAGED_BY}}),
                        ),
                    ),
                    (key(Kind::HttpRoute, "edge-new"), route("edge-new", ours())),
                ],
                observed: vec![
                    (
                        key(Kind::ApiGateway, GW),
                        body(
                            json!({"Kind": "api-gateway", "Name": GW, "ModifyIndex": 3, "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "20"}}),
                        ),
                    ),
                    (
                        key(Kind::HttpRoute, "edge-gone"),
                        with(route("edge-gone", ours()), json!({"ModifyIndex": 4})),
                    ),
                ],
                deferred: 1,
                ..case("a newer instance changed the set of routes: creates and deletes wait")
            },
            Case {
                desired: vec![(
                    key(Kind::ApiGateway, GW),
                    body(
                        json!({"Kind": "api-gateway", "Name": GW, "Meta": {"managed-by": MANAGED_BY}}),
                    ),
                )],
                observed: vec![(
                    key(Kind::ApiGateway, GW),
                    body(
                        json!({"Kind": "api-gateway", "Name": GW, "ModifyIndex": 3, "Meta": {"managed-by": MANAGED_BY, CATALOG_INDEX_META: "4"}}),
                    ),
                )],
                ..case("no change to the set of routes: the gateway is not rewritten for its stamp")
            },
            Case {
                registered: None,
                ops: vec![("register", "register", 0)],
                ..case("not registered: register")
            },
            Case {
                desired: vec![
                    (key(Kind::HttpRoute, "edge-b"), route("edge-b", ours())),
                    (gw.clone(), gateway(listener.clone())),
                    (
                        key(Kind::ServiceDefaults, "web"),
                        body(json!({"Kind": "service-defaults"})),
                    ),
                    (key(Kind::HttpRoute, "edge-a"), route("edge-a", ours())),
                ],
                observed: vec![(
                    key(Kind::HttpRoute, "edge-gone"),
                    with(route("edge-gone", ours()), json!({"ModifyIndex": 4})),
                )],
                registered: Some(registration(&["a"])),
                wanted: registration(&["a", "b"]),
                ops: vec![
                    ("put", "web", 0),
                    ("put", GW, 0),
                    ("put", "edge-a", 0),
                    ("put", "edge-b", 0),
                    ("delete", "edge-gone", 4),
                    ("register", "register", 0),
                ],
                ..case("order: protocols, gateway, routes, deletes, then the registration")
            },
            Case {
                desired: vec![(gw.clone(), gateway(listener.clone()))],
                registered: Some(registration(&["a", "b"])),
                wanted: registration(&["a"]),
                ops: vec![("register", "register", 0), ("put", GW, 0)],
                ..case("a registration that only drops tags goes first")
            },
        ];
        for case in &cases {
            let diff = run(case);
            let want: Vec<(&str, String, u64)> = case
                .ops
                .iter()
                .map(|(op, name, cas)| (*op, name.to_string(), *cas))
                .collect();
            assert_eq!(summary(&diff), want, "{}", case.name);
            assert_eq!(diff.deferred.len(), case.deferred, "{}", case.name);
            assert_eq!(
                diff.warnings.len(),
                case.warnings,
                "{}: {:?}",
                case.name,
                diff.warnings
            );
        }
    }

    #[test]
    fn writes_carry_our_catalog_index_and_keep_foreign_meta() {
        let gw = key(Kind::IngressGateway, GW);
        let mut desired = gateway(json!([]));
        desired.insert(
            "Meta".into(),
            json!({"managed-by": MANAGED_BY, "owner": "team-a"}),
        );
        let c = Case {
            desired: vec![(gw.clone(), desired)],
            ..case("stamp")
        };
        let diff = run(&c);
        let Some(Op::Put { body, .. }) = diff.ops.first() else {
            panic!("{:?}", diff.ops)
        };
        assert_eq!(body["Meta"][CATALOG_INDEX_META], "10");
        assert_eq!(body["Meta"]["owner"], "team-a");
    }

    #[test]
    fn the_stamp_never_takes_the_last_meta_place() {
        let mut meta = serde_json::Map::new();
        for i in 0..MAX_META {
            meta.insert(format!("k{i}"), json!("v"));
        }
        let mut entry = gateway(json!([]));
        entry.insert("Meta".into(), Value::Object(meta));
        add_stamp(&mut entry, Some(3));
        assert_eq!(entry["Meta"].as_object().map(|m| m.len()), Some(MAX_META));
        assert!(entry["Meta"].get(CATALOG_INDEX_META).is_none());
    }
}
