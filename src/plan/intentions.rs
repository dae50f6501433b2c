//! Intentions (SETINTENTIONS): every exposed service allows its traffic from the gateway.
//!
//! A `service-intentions` entry is per destination and shared with operators, so only
//! our source in it is ours: `{Name: <gateway>, Action: allow, Description: "managed by
//! ingress-service-monitor"}` (sources carry no Meta; the Description marks it).
//! - Absent entry: created (`cas=0`) with our source and our Meta.
//! - Existing entry without a source for the gateway: our source is added, everything
//!   else kept as it was.
//! - A source for the gateway that is not ours: a plain `allow` already does the job and
//!   is left alone; a `deny`, or an `allow` with `Permissions`, is never overridden: a
//!   warning names the service.
//! - A service no longer exposed loses our source only. When ours was the last one (an
//!   entry without sources is invalid), the entry is deleted if its Meta is ours, and
//!   otherwise left as it is with a warning.
//!
//! The plan is made from what the daemon keeps of each entry ([`Intentions`]) and says
//! what to change; a change to an existing entry is made on the entry as Consul holds
//! it, read just before the write ([`amend`]), so every other source, permission and
//! field is written back as it was.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{PlanSettings, Warnings};
use crate::model::{
    is_our_source, sources, Body, GatewaySource, Intentions, IntentionsView, Kind,
    CONSUL_OWNED_KEYS, MANAGED_BY, SOURCE_DESCRIPTION,
};

/// What one service's `service-intentions` entry needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Absent: created (`cas=0`) with our source and our Meta.
    Create,
    /// No source for the gateway: ours added.
    Add,
    /// Ours, edited into something else: put back.
    Restore,
    /// Not exposed any more: ours removed, the others kept.
    Remove,
    /// Not exposed any more, ours the last source, the entry ours: deleted.
    Delete,
}

/// One change, by destination service. Sorted by service in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentionsChange {
    pub service: String,
    pub change: Change,
}

/// What an entry needs, or what stands in the way.
enum Decision {
    Change(Change),
    Nothing,
    /// A warning naming the service: (exposed, what is wrong).
    Blocked(&'static str),
}

fn decide(exposed: bool, current: Option<&Intentions>) -> Decision {
    let Some(current) = current else {
        return match exposed {
            true => Decision::Change(Change::Create),
            false => Decision::Nothing,
        };
    };
    if exposed {
        return match current.gateway {
            GatewaySource::Absent => Decision::Change(Change::Add),
            GatewaySource::OursEdited => Decision::Change(Change::Restore),
            GatewaySource::Ours | GatewaySource::TheirAllow => Decision::Nothing,
            GatewaySource::TheirDeny => Decision::Blocked("a deny"),
            GatewaySource::TheirPermissions => Decision::Blocked("an allow with Permissions"),
        };
    }
    match (current.ours, current.others, current.managed_by_us) {
        (0, _, _) => Decision::Nothing,
        (_, 1.., _) => Decision::Change(Change::Remove),
        (_, 0, true) => Decision::Change(Change::Delete),
        (_, 0, false) => Decision::Blocked("the last source"),
    }
}

pub fn plan(
    settings: &PlanSettings,
    exposed: &BTreeSet<String>,
    view: &IntentionsView<'_>,
    warnings: &mut Warnings<'_>,
) -> Vec<IntentionsChange> {
    let gateway = settings.gateway_name.as_str();
    let mut changes = Vec::new();
    let exposed_now = exposed.iter().map(|service| (service.as_str(), true));
    let no_longer = view
        .services()
        .filter(|service| !exposed.contains(*service))
        .map(|service| (service, false));
    for (service, exposed) in exposed_now.chain(no_longer) {
        match decide(exposed, view.get(service)) {
            Decision::Change(change) => changes.push(IntentionsChange {
                service: service.to_owned(),
                change,
            }),
            Decision::Nothing => {}
            Decision::Blocked(what) if exposed => warnings.add(
                service,
                None,
                format!(
                    "its service-intentions hold {what} for gateway {gateway:?} that this \
                     daemon did not write; never overridden, so the gateway may not reach it"
                ),
            ),
            Decision::Blocked(_) => warnings.add(
                service,
                None,
                format!(
                    "no longer exposed, but the source for gateway {gateway:?} is the only one \
                     in its service-intentions, which this daemon did not create: left as it \
                     is (delete the entry or the source by hand)"
                ),
            ),
        }
    }
    changes.sort_by(|a, b| a.service.cmp(&b.service));
    changes
}

fn our_source(gateway: &str) -> Value {
    json!({"Name": gateway, "Action": "allow", "Description": SOURCE_DESCRIPTION})
}

/// The entry [`Change::Create`] writes.
pub fn created(service: &str, gateway: &str) -> Body {
    match json!({
        "Kind": Kind::ServiceIntentions.as_str(),
        "Name": service,
        "Sources": [our_source(gateway)],
        "Meta": {"managed-by": MANAGED_BY},
    }) {
        Value::Object(body) => body,
        _ => Body::new(),
    }
}

/// The entry `current` (as Consul holds it now) with `change` made, without what Consul
/// writes itself; None when `current` does not need that change any more (someone wrote
/// it meanwhile: plan again from it).
pub fn amend(current: &Body, change: Change, gateway: &str) -> Option<Body> {
    let exposed = matches!(change, Change::Add | Change::Restore);
    match decide(exposed, Some(&Intentions::of(current, gateway))) {
        Decision::Change(now) if now == change => {}
        _ => return None,
    }
    let existing = sources(current).iter();
    let sources: Vec<Value> = match change {
        Change::Add => existing.cloned().chain([our_source(gateway)]).collect(),
        Change::Restore => existing
            .map(|s| match is_our_source(s, gateway) {
                true => our_source(gateway),
                false => s.clone(),
            })
            .collect(),
        Change::Remove => existing
            .filter(|s| !is_our_source(s, gateway))
            .cloned()
            .collect(),
        Change::Create | Change::Delete => return None,
    };
    let mut body: Body = current
        .iter()
        .filter(|(key, _)| !CONSUL_OWNED_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    body.insert("Sources".into(), Value::Array(sources));
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_env;
    use crate::model::IntentionsList;
    use std::collections::HashMap;

    fn settings() -> PlanSettings {
        let vars: HashMap<&str, &str> = [
            ("TAGINGRESSSERVICE", "gw"),
            ("SERVICENAMEINGRESSGATEWAY", "edge"),
            ("SETINTENTIONS", "true"),
        ]
        .into_iter()
        .collect();
        let config = from_env(&|name| vars.get(name).map(|v| v.to_string())).expect("config");
        PlanSettings::from_config(&config)
    }

    fn body(value: Value) -> Body {
        match value {
            Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    fn ours() -> Value {
        json!({"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION,
               "Precedence": 9, "Type": "consul"})
    }

    /// (name, what Consul holds for "web", exposed?, expected sources after, deleted?,
    /// warnings)
    type Case = (
        &'static str,
        Option<Value>,
        bool,
        Option<Value>,
        bool,
        usize,
    );

    #[test]
    fn table() {
        let cases: Vec<Case> = vec![
            (
                "absent, exposed: created",
                None,
                true,
                Some(
                    json!([{"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION}]),
                ),
                false,
                0,
            ),
            (
                "foreign entry: ours added, theirs kept",
                Some(json!({"Sources": [{"Name": "api", "Action": "deny"}], "ModifyIndex": 3})),
                true,
                Some(
                    json!([{"Name": "api", "Action": "deny"}, {"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION}]),
                ),
                false,
                0,
            ),
            (
                "ours already there (as Consul renders it): nothing",
                Some(json!({"Sources": [ours()], "ModifyIndex": 3})),
                true,
                None,
                false,
                0,
            ),
            (
                "ours, edited into a deny: put back, the others kept",
                Some(json!({"Sources": [
                    {"Name": "edge", "Action": "deny", "Description": SOURCE_DESCRIPTION},
                    {"Name": "api", "Action": "allow"}], "ModifyIndex": 3})),
                true,
                Some(json!([
                    {"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION},
                    {"Name": "api", "Action": "allow"}])),
                false,
                0,
            ),
            (
                "a foreign plain allow for the gateway: nothing, silently",
                Some(json!({"Sources": [{"Name": "edge", "Action": "allow"}], "ModifyIndex": 3})),
                true,
                None,
                false,
                0,
            ),
            (
                "a foreign deny: nothing, warned",
                Some(json!({"Sources": [{"Name": "edge", "Action": "deny"}], "ModifyIndex": 3})),
                true,
                None,
                false,
                1,
            ),
            (
                "a foreign allow with Permissions: nothing, warned",
                Some(
                    json!({"Sources": [{"Name": "edge", "Permissions": [{"Action": "allow"}]}], "ModifyIndex": 3}),
                ),
                true,
                None,
                false,
                1,
            ),
            (
                "another peer's gateway of that name is not ours to judge",
                Some(
                    json!({"Sources": [{"Name": "edge", "Peer": "dc2", "Action": "deny"}], "ModifyIndex": 3}),
                ),
                true,
                Some(
                    json!([{"Name": "edge", "Peer": "dc2", "Action": "deny"}, {"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION}]),
                ),
                false,
                0,
            ),
            (
                "not exposed: ours removed, theirs kept",
                Some(
                    json!({"Sources": [{"Name": "api", "Action": "deny"}, ours()], "ModifyIndex": 3}),
                ),
                false,
                Some(json!([{"Name": "api", "Action": "deny"}])),
                false,
                0,
            ),
            (
                "not exposed, ours the last, entry ours: deleted",
                Some(
                    json!({"Sources": [ours()], "Meta": {"managed-by": MANAGED_BY}, "ModifyIndex": 3}),
                ),
                false,
                None,
                true,
                0,
            ),
            (
                "not exposed, ours the last, entry foreign: left, warned",
                Some(json!({"Sources": [ours()], "ModifyIndex": 3})),
                false,
                None,
                false,
                1,
            ),
            (
                "not exposed, no source of ours: nothing",
                Some(json!({"Sources": [{"Name": "edge", "Action": "allow"}], "ModifyIndex": 3})),
                false,
                None,
                false,
                0,
            ),
        ];
        let settings = settings();
        for (name, current, exposed, want_sources, want_delete, want_warnings) in cases {
            let current = current.map(body);
            let list: IntentionsList = current
                .iter()
                .map(|b| ("web".to_owned(), Intentions::of(b, "edge")))
                .collect();
            let view = IntentionsView::of(&list);
            let exposed: BTreeSet<String> =
                exposed.then(|| "web".to_string()).into_iter().collect();
            let mut warnings = Warnings::new("gw-");
            let planned = plan(&settings, &exposed, &view, &mut warnings);
            assert!(planned.iter().all(|c| c.service == "web"), "{name}");
            let change = planned.first().map(|c| c.change);
            let written = match (change, &current) {
                (Some(Change::Create), _) => Some(created("web", "edge")),
                (Some(Change::Delete) | None, _) => None,
                (Some(change), Some(current)) => {
                    let amended = amend(current, change, "edge");
                    assert!(amended.is_some(), "{name}: {change:?} applies to the entry");
                    amended
                }
                (Some(change), None) => panic!("{name}: {change:?} of an absent entry"),
            };
            let sources = written.as_ref().map(|e| e["Sources"].clone());
            assert_eq!(sources, want_sources, "{name}");
            assert_eq!(change == Some(Change::Delete), want_delete, "{name}");
            assert_eq!(warnings.into_sorted().len(), want_warnings, "{name}");
            if let Some(written) = &written {
                for key in CONSUL_OWNED_KEYS {
                    assert!(!written.contains_key(key), "{name}: {key} not written");
                }
            }
        }
    }

    #[test]
    fn an_amendment_someone_else_made_first_is_not_made_again() {
        let entry = |sources: Value| body(json!({"Sources": sources, "ModifyIndex": 4}));
        let cases = [
            ("ours added meanwhile", entry(json!([ours()])), Change::Add),
            (
                "a deny for the gateway added meanwhile",
                entry(json!([{"Name": "edge", "Action": "deny"}])),
                Change::Add,
            ),
            (
                "ours put back meanwhile",
                entry(json!([ours()])),
                Change::Restore,
            ),
            (
                "ours now the last source",
                entry(json!([ours()])),
                Change::Remove,
            ),
        ];
        for (name, current, change) in cases {
            assert_eq!(amend(&current, change, "edge"), None, "{name}");
        }
    }

    #[test]
    fn other_fields_and_sources_are_written_back_as_they_were() {
        let current = body(json!({
            "Kind": "service-intentions", "Name": "web",
            "Sources": [{"Name": "api", "Action": "deny", "Precedence": 9}],
            "Meta": {"team": "shop"}, "JWT": {"Providers": [{"Name": "okta"}]},
            "CreateIndex": 3, "ModifyIndex": 4, "Hash": 77,
        }));
        let amended = amend(&current, Change::Add, "edge").expect("needs our source");
        assert_eq!(
            Value::Object(amended),
            json!({
                "Kind": "service-intentions", "Name": "web",
                "Sources": [{"Name": "api", "Action": "deny", "Precedence": 9},
                            {"Name": "edge", "Action": "allow", "Description": SOURCE_DESCRIPTION}],
                "Meta": {"team": "shop"}, "JWT": {"Providers": [{"Name": "okta"}]},
            })
        );
    }
}
