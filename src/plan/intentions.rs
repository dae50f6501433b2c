//! Intentions (SETINTENTIONS): every exposed service allows its traffic from the gateway.
//!
//! A `service-intentions` entry is per destination and shared with operators, so only
//! our source in it is ours: `{Name: <gateway>, Action: allow, Description: "managed by
//! ingress-service-monitor"}` (sources carry no Meta; the Description marks it).
//! - Absent entry: created (`cas=0`) with our source and our Meta.
//! - Existing entry without a source for the gateway: our source is added, everything
//!   else kept as it was (the entry is copied as Consul returned it, so its own fields,
//!   `Precedence` and `Type` included, never cause a write).
//! - A source for the gateway that is not ours: a plain `allow` already does the job and
//!   is left alone; a `deny`, or an `allow` with `Permissions`, is never overridden: a
//!   warning names the service.
//! - A service no longer exposed loses our source only. When ours was the last one (an
//!   entry without sources is invalid), the entry is deleted if its Meta is ours, and
//!   otherwise left as it is with a warning.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{DesiredEntry, PlanSettings, Warnings};
use crate::model::{managed_by_us, Body, Entries, EntryKey, Kind, MANAGED_BY};

/// The Description that marks our source.
pub const SOURCE_DESCRIPTION: &str = "managed by ingress-service-monitor";

/// What the intentions of one plan come to.
#[derive(Debug, Default)]
pub struct IntentionsPlan {
    pub entries: Vec<DesiredEntry>,
    /// Entries of ours left without a source: deleted.
    pub deletes: Vec<EntryKey>,
}

pub fn plan(
    settings: &PlanSettings,
    exposed: &BTreeSet<String>,
    entries: &Entries<'_>,
    warnings: &mut Warnings<'_>,
) -> IntentionsPlan {
    let mut out = IntentionsPlan::default();
    let gateway = settings.gateway_name.as_str();
    for service in exposed {
        let key = EntryKey::new(Kind::ServiceIntentions, service.as_str());
        match entries.get(&key).copied() {
            None => out
                .entries
                .push(DesiredEntry::new(key, created(service, gateway))),
            Some(current) => {
                if let Some(body) = with_our_source(service, gateway, current, warnings) {
                    out.entries.push(DesiredEntry::new(key, body));
                }
            }
        }
    }
    for (key, current) in entries {
        if key.kind != Kind::ServiceIntentions || exposed.contains(&key.name) {
            continue;
        }
        if !sources(current).iter().any(|s| is_ours(s, gateway)) {
            continue;
        }
        let mut body = (*current).clone();
        let kept: Vec<Value> = sources(current)
            .into_iter()
            .filter(|s| !is_ours(s, gateway))
            .cloned()
            .collect();
        if !kept.is_empty() {
            body.insert("Sources".into(), Value::Array(kept));
            out.entries.push(DesiredEntry::new(key.clone(), body));
        } else if managed_by_us(current) {
            out.deletes.push(key.clone());
        } else {
            warnings.add(
                &key.name,
                None,
                format!(
                    "no longer exposed, but the source for gateway {gateway:?} is the only one \
                     in its service-intentions, which this daemon did not create: left as it \
                     is (delete the entry or the source by hand)"
                ),
            );
        }
    }
    out
}

fn our_source(gateway: &str) -> Value {
    json!({"Name": gateway, "Action": "allow", "Description": SOURCE_DESCRIPTION})
}

fn created(service: &str, gateway: &str) -> Body {
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

fn sources(body: &Body) -> Vec<&Value> {
    match body.get("Sources") {
        Some(Value::Array(sources)) => sources.iter().collect(),
        _ => Vec::new(),
    }
}

/// A source for the gateway itself (not one of another peer, partition or sameness
/// group, which name other services).
fn for_gateway(source: &Value, gateway: &str) -> bool {
    let text = |key: &str| source.get(key).and_then(Value::as_str).unwrap_or("");
    text("Name") == gateway && text("Peer").is_empty() && text("SamenessGroup").is_empty()
}

fn is_ours(source: &Value, gateway: &str) -> bool {
    for_gateway(source, gateway)
        && source.get("Description").and_then(Value::as_str) == Some(SOURCE_DESCRIPTION)
}

/// The entry with our source in place, or None when it needs nothing from us.
fn with_our_source(
    service: &str,
    gateway: &str,
    current: &Body,
    warnings: &mut Warnings<'_>,
) -> Option<Body> {
    let existing = sources(current);
    let Some(source) = existing.iter().find(|s| for_gateway(s, gateway)) else {
        let mut body = current.clone();
        let mut all: Vec<Value> = existing.into_iter().cloned().collect();
        all.push(our_source(gateway));
        body.insert("Sources".into(), Value::Array(all));
        return Some(body);
    };
    let action = source.get("Action").and_then(Value::as_str).unwrap_or("");
    let permissions = source
        .get("Permissions")
        .is_some_and(|p| p.as_array().is_some_and(|p| !p.is_empty()));
    let ours = is_ours(source, gateway);
    if action.eq_ignore_ascii_case("allow") && !permissions {
        return None;
    }
    if ours {
        // Ours, but edited into something else: put it back.
        let mut body = current.clone();
        let fixed: Vec<Value> = existing
            .into_iter()
            .map(|s| match is_ours(s, gateway) {
                true => our_source(gateway),
                false => s.clone(),
            })
            .collect();
        body.insert("Sources".into(), Value::Array(fixed));
        return Some(body);
    }
    let what = match permissions {
        true => "an allow with Permissions",
        false => "a deny",
    };
    warnings.add(
        service,
        None,
        format!(
            "its service-intentions hold {what} for gateway {gateway:?} that this daemon did \
             not write; never overridden, so the gateway may not reach it"
        ),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_env;
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
            let key = EntryKey::new(Kind::ServiceIntentions, "web");
            let current = current.map(body);
            let entries: Entries<'_> = current.iter().map(|b| (key.clone(), b)).collect();
            let exposed: BTreeSet<String> =
                exposed.then(|| "web".to_string()).into_iter().collect();
            let mut warnings = Warnings::new("gw-");
            let planned = plan(&settings, &exposed, &entries, &mut warnings);
            let sources = planned.entries.first().map(|e| e.body["Sources"].clone());
            assert_eq!(sources, want_sources, "{name}");
            assert_eq!(planned.deletes == [key.clone()], want_delete, "{name}");
            assert_eq!(warnings.into_sorted().len(), want_warnings, "{name}");
        }
    }
}
