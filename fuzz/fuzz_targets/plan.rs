//! The planner and the diff on whatever Consul sends: the input is split into a catalog
//! body and a current-entry body; whatever decodes is planned and diffed, and neither
//! panics, and planning is repeatable.
#![no_main]

use std::collections::HashMap;

use ingress_service_monitor::config::{from_env, Config};
use ingress_service_monitor::consul::wire;
use ingress_service_monitor::model::{Entries, IntentionsView, Protocols};
use ingress_service_monitor::plan::{self, PlanSettings, Snapshot};
use ingress_service_monitor::reconcile::diff::{diff, Observed, Stamping};
use libfuzzer_sys::fuzz_target;

fn config() -> Config {
    let vars: HashMap<&str, &str> = [
        ("TAGINGRESSSERVICE", "gw"),
        ("SERVICENAMEINGRESSGATEWAY", "edge"),
        ("INGRESSPORTGRPC", "9100"),
    ]
    .into_iter()
    .collect();
    match from_env(&|name| vars.get(name).map(|v| v.to_string())) {
        Ok(config) => config,
        Err(errors) => panic!("fuzz configuration: {errors:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (catalog, entry) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(catalog) = wire::decode_catalog(catalog, "gw-") else { return };
    let entry = entry.and_then(|e| wire::decode_entry(e).ok());
    let config = config();
    let protocols = Protocols {
        service_defaults: catalog.keys().map(|k| (k.clone(), "http".to_string())).collect(),
        proxy_default: None,
    };
    let settings = PlanSettings::from_config(&config);
    let mut entries = Entries::new();
    if let Some(entry) = &entry {
        entries.insert(settings.gateway_key(), entry);
    }
    let intentions = IntentionsView::default();
    let snapshot = Snapshot {
        catalog: &catalog,
        protocols: &protocols,
        entries: &entries,
        intentions: &intentions,
    };
    let first = plan::plan(&snapshot, &settings);
    assert_eq!(first, plan::plan(&snapshot, &settings), "planning twice differs");
    let observed = Observed {
        entries: &entries,
        intentions: &intentions,
        registered: None,
        gateway: &settings.gateway_name,
    };
    let stamping = Stamping {
        catalog_index: Some(1),
        defer_to_newer: true,
    };
    let _ = diff(first, &observed, stamping);
});
