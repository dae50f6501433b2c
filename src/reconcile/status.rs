//! What Consul's gateway controller says of our API-gateway entries, pure.
//!
//! Consul writes `Status.Conditions` on the `api-gateway` and on each `http-route` some
//! milliseconds after a change, and has no observed-generation: a condition read right
//! after our own write may describe the entry before it. So a gateway or route that is
//! not `Accepted`, or a route not `Bound`, is reported only once it has stood for
//! [`STATUS_GRACE`] since our last write to it. Such an entry stays as planned (the
//! cause is usually outside the daemon's reach: a `service-resolver` someone else wrote,
//! a missing certificate) and is a warning, logged once per state change and counted on
//! /health; /health stays 200, since the daemon's own job succeeded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::model::{managed_by_us, Body, Entries, EntryKey, Kind, Warning};

/// How long a condition must stand after our last write before it is believed.
pub const STATUS_GRACE: Duration = Duration::from_secs(5);

/// Warnings for our entries that Consul does not accept or bind, and when to look again
/// for conditions still inside their grace period.
pub fn status_warnings(
    entries: &Entries<'_>,
    last_written: &BTreeMap<EntryKey, Instant>,
    now: Instant,
) -> (Vec<Warning>, Option<Duration>) {
    let mut warnings = Vec::new();
    let mut recheck: Option<Duration> = None;
    for (key, body) in entries {
        if !matches!(key.kind, Kind::ApiGateway | Kind::HttpRoute) || !managed_by_us(body) {
            continue;
        }
        let problems = problems(key.kind, body);
        if problems.is_empty() {
            continue;
        }
        if let Some(written) = last_written.get(key) {
            let age = now.saturating_duration_since(*written);
            if age < STATUS_GRACE {
                let left = STATUS_GRACE - age;
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
                continue;
            }
        }
        let service = match key.kind {
            Kind::HttpRoute => route_target(body).unwrap_or(&key.name).to_owned(),
            _ => key.name.clone(),
        };
        for problem in problems {
            warnings.push(Warning {
                service: service.clone(),
                tag: None,
                message: format!("{key}: {problem}"),
            });
        }
    }
    (warnings, recheck)
}

/// The conditions that say the entry does not work: `Accepted` (both kinds) or `Bound`
/// (routes) with Status `False`, as `Type=False (Reason): Message`.
fn problems(kind: Kind, body: &Body) -> Vec<String> {
    let Some(Value::Array(conditions)) = body.get("Status").and_then(|s| s.get("Conditions"))
    else {
        return Vec::new();
    };
    let text = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    conditions
        .iter()
        .filter(|c| {
            let typ = text(c, "Type");
            text(c, "Status") == "False"
                && (typ == "Accepted" || (typ == "Bound" && kind == Kind::HttpRoute))
        })
        .map(|c| {
            let verb = match text(c, "Type").as_str() {
                "Accepted" => "not accepted by Consul",
                _ => "not bound to the gateway",
            };
            format!("{verb} ({}): {}", text(c, "Reason"), text(c, "Message"))
        })
        .collect()
}

fn route_target(body: &Body) -> Option<&str> {
    body.get("Rules")?
        .get(0)?
        .get("Services")?
        .get(0)?
        .get("Name")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MANAGED_BY;
    use serde_json::json;

    fn route(conditions: Value, meta: Value) -> Body {
        match json!({"Kind": "http-route", "Name": "edge-web", "Meta": meta,
            "Rules": [{"Services": [{"Name": "web"}]}],
            "Status": {"Conditions": conditions}})
        {
            Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    fn accepted_false() -> Value {
        json!([{"Type": "Accepted", "Status": "False", "Reason": "InvalidDiscoveryChain",
                "Message": "no such resolver"},
               {"Type": "Bound", "Status": "True", "Reason": "Bound", "Message": "ok"}])
    }

    #[test]
    fn conditions_that_stand_past_the_grace_are_warnings() {
        let key = EntryKey::new(Kind::HttpRoute, "edge-web");
        let body = route(accepted_false(), json!({"managed-by": MANAGED_BY}));
        let entries: Entries<'_> = [(key.clone(), &body)].into_iter().collect();
        let now = Instant::now();

        let (warnings, recheck) = status_warnings(&entries, &BTreeMap::new(), now);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].service, "web");
        assert!(warnings[0]
            .message
            .contains("not accepted by Consul (InvalidDiscoveryChain): no such resolver"));
        assert_eq!(recheck, None);

        let written = BTreeMap::from([(key.clone(), now - Duration::from_secs(1))]);
        let (warnings, recheck) = status_warnings(&entries, &written, now);
        assert!(
            warnings.is_empty(),
            "inside the grace a condition may be stale"
        );
        assert_eq!(recheck, Some(STATUS_GRACE - Duration::from_secs(1)));
    }

    #[test]
    fn healthy_and_foreign_entries_say_nothing() {
        let key = EntryKey::new(Kind::HttpRoute, "edge-web");
        let healthy = route(
            json!([{"Type": "Accepted", "Status": "True"}, {"Type": "Bound", "Status": "True"}]),
            json!({"managed-by": MANAGED_BY}),
        );
        let foreign = route(accepted_false(), json!({"managed-by": "terraform"}));
        for body in [&healthy, &foreign] {
            let entries: Entries<'_> = [(key.clone(), body)].into_iter().collect();
            let (warnings, _) = status_warnings(&entries, &BTreeMap::new(), Instant::now());
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
}
