//! Wire types and decoding. Decoding keeps only what the daemon needs: the catalog
//! decoder drops unselected tags and services while parsing, so memory stays small
//! with large catalogs.

use serde_json::{Map, Value};

use crate::plan::{Catalog, Protocols};

/// `GET /v1/catalog/services` body -> services with at least one tag starting with
/// `prefix`, each with those tags stripped of the prefix (order kept, duplicates removed).
pub fn decode_catalog(body: &[u8], prefix: &str) -> Result<Catalog, serde_json::Error> {
    let _ = (body, prefix);
    todo!()
}

/// `GET /v1/config/service-defaults` body (array) -> name -> Protocol.
pub fn decode_service_defaults(
    body: &[u8],
) -> Result<std::collections::BTreeMap<String, String>, serde_json::Error> {
    let _ = body;
    todo!()
}

/// `GET /v1/config/proxy-defaults/global` body -> `Config.protocol` when it is a non-empty string.
pub fn decode_proxy_defaults(body: &[u8]) -> Result<Option<String>, serde_json::Error> {
    let _ = body;
    todo!()
}

/// A config entry body -> its JSON object.
pub fn decode_entry(body: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let _ = body;
    todo!()
}

/// Convenience for tests and dry-run: both protocol sources together.
pub fn protocols(
    service_defaults: std::collections::BTreeMap<String, String>,
    proxy_default: Option<String>,
) -> Protocols {
    Protocols {
        service_defaults,
        proxy_default,
    }
}
