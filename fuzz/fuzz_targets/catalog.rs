//! `GET /v1/catalog/services` bodies: any bytes decode to a catalog or an error, never
//! a panic; what is kept is only prefixed tags, stripped.
#![no_main]

use ingress_service_monitor::consul::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(catalog) = wire::decode_catalog(data, "gw-") {
        for tags in catalog.values() {
            assert!(!tags.is_empty(), "a service without selected tags is kept");
            assert!(tags.iter().all(|t| !t.is_empty()), "an empty selected tag");
        }
    }
});
