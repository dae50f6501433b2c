//! Wire types and decoding. Decoding keeps only what the daemon needs: the catalog
//! decoder drops unselected tags and services while parsing, so memory stays small
//! with large catalogs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{exact_map, Catalog};

/// `GET /v1/catalog/services` body -> services with at least one tag starting with
/// `prefix`, each with those tags stripped of the prefix (order kept, duplicates removed).
pub fn decode_catalog(body: &[u8], prefix: &str) -> Result<Catalog, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let catalog = CatalogSeed { prefix }.deserialize(&mut de)?;
    de.end()?;
    Ok(catalog)
}

/// `GET /v1/config/service-defaults` body (array) -> name -> Protocol.
pub fn decode_service_defaults(
    body: &[u8],
) -> Result<std::collections::BTreeMap<String, String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Protocol", default)]
        protocol: Option<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(body)?;
    Ok(entries
        .into_iter()
        .map(|e| (e.name, e.protocol.unwrap_or_default()))
        .collect())
}

/// `GET /v1/config/proxy-defaults/global` body -> `Config.protocol` when it is a non-empty string.
pub fn decode_proxy_defaults(body: &[u8]) -> Result<Option<String>, serde_json::Error> {
    // The entry is small; a map also rejects a non-object body (a derived struct
    // would accept an array).
    let entry: Map<String, Value> = serde_json::from_slice(body)?;
    let Some(Value::Object(config)) = entry.get("Config") else {
        return Ok(None);
    };
    // Consul reads this free-form map case-insensitively (mapstructure); the exact
    // key wins when both spellings are present.
    let value = config.get("protocol").or_else(|| {
        config
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("protocol"))
            .map(|(_, v)| v)
    });
    Ok(value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// A config entry body -> its JSON object, every object and list in it allocated at
/// its exact size (see [`ExactValue`]).
pub fn decode_entry(body: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let entry = ExactObject.deserialize(&mut de)?;
    de.end()?;
    Ok(entry)
}

/// Decodes any JSON value as `serde_json::Value` does, but collects each object's
/// members and each list's items first and allocates the map or list once at its size.
/// The entries Consul sends are thousands of small objects (an ingress service's
/// `{Name, Hosts}`, a route's matches, an intention's sources), held in several copies
/// while a change is handled: the slack of grown maps was a third of the daemon's heap.
struct ExactValue;

impl<'de> DeserializeSeed<'de> for ExactValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ExactValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ExactValue)? {
            items.push(item);
        }
        items.shrink_to_fit();
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ExactValue)?;
            pairs.push((key, value));
        }
        Ok(Value::Object(exact_map(pairs)))
    }
}

/// [`ExactValue`] that must be an object (a config entry).
struct ExactObject;

impl<'de> DeserializeSeed<'de> for ExactObject {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match ExactValue.deserialize(d)? {
            Value::Object(map) => Ok(map),
            other => Err(serde::de::Error::invalid_type(
                unexpected(&other),
                &"a config entry object",
            )),
        }
    }
}

fn unexpected(value: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("a number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// What [`decode_entry_list`] makes of one entry: its name and what is kept, or nothing.
pub type KeepEntry<'k, T> = dyn FnMut(Map<String, Value>) -> Option<(String, T)> + 'k;

/// A list of config entries (`GET /v1/config/<kind>`) -> what `keep` makes of each, by
/// name. Each entry is handed to `keep` as soon as it is parsed, so at most one entry is
/// held in full at a time: the list is never decoded whole before being cut down.
pub fn decode_entry_list<T>(
    body: &[u8],
    keep: &mut KeepEntry<'_, T>,
) -> Result<BTreeMap<String, T>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = EntryListSeed { keep }.deserialize(&mut de)?;
    de.end()?;
    Ok(entries)
}

struct EntryListSeed<'k, 'f, T> {
    keep: &'k mut KeepEntry<'f, T>,
}

impl<'de, T> DeserializeSeed<'de> for EntryListSeed<'_, '_, T> {
    type Value = BTreeMap<String, T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T> Visitor<'de> for EntryListSeed<'_, '_, T> {
    type Value = BTreeMap<String, T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of config entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = BTreeMap::new();
        while let Some(entry) = seq.next_element_seed(ExactObject)? {
            if let Some((name, entry)) = (self.keep)(entry) {
                kept.insert(name, entry);
            }
        }
        Ok(kept)
    }
}

/// A JSON string borrowed from the input when it has no escapes, owned otherwise, so
/// the thousands of tags we drop are never copied.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// The whole `{name: [tags]}` object.
struct CatalogSeed<'p> {
    prefix: &'p str,
}

impl<'de> DeserializeSeed<'de> for CatalogSeed<'_> {
    type Value = Catalog;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Catalog, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CatalogSeed<'_> {
    type Value = Catalog;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of service name -> tag list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Catalog, A::Error> {
        let mut catalog = BTreeMap::new();
        while let Some(name) = map.next_key::<Text<'de>>()? {
            let tags = map.next_value_seed(TagsSeed {
                prefix: self.prefix,
            })?;
            if tags.is_empty() {
                continue;
            }
            // Consul never repeats a name; if a proxy did, merge rather than lose tags.
            let kept: &mut Vec<String> = catalog.entry(name.0.into_owned()).or_default();
            for tag in tags {
                if !kept.contains(&tag) {
                    kept.push(tag);
                }
            }
        }
        Ok(catalog)
    }
}

/// One service's tag list -> the selected tags, stripped, deduplicated, in order.
struct TagsSeed<'p> {
    prefix: &'p str,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        // Consul sends `[]` for untagged services; `null` is accepted as the same.
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of tags")
    }

    fn visit_none<E>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut selected: Vec<String> = Vec::new();
        while let Some(tag) = seq.next_element::<Text<'de>>()? {
            if let Some(stripped) = crate::tags::strip_prefix(&tag.0, self.prefix) {
                if !selected.iter().any(|t| t == stripped) {
                    selected.push(stripped.to_string());
                }
            }
        }
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(pairs: &[(&str, &[&str])]) -> Catalog {
        pairs
            .iter()
            .map(|(n, t)| (n.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn catalog_keeps_only_prefixed_tags_stripped_in_order_without_duplicates() {
        let cases: &[(&str, &str, &str, Catalog)] = &[
            ("empty object", "{}", "gw-", catalog(&[])),
            (
                "untagged and unselected services are dropped",
                r#"{"consul":[],"db":["primary","v1"],"web":["gw-a","other"]}"#,
                "gw-",
                catalog(&[("web", &["a"])]),
            ),
            (
                "order kept, duplicates removed",
                r#"{"web":["gw-b","x","gw-a","gw-b"]}"#,
                "gw-",
                catalog(&[("web", &["b", "a"])]),
            ),
            (
                "prefix must match at the start; the bare prefix names nothing",
                r#"{"web":["x-gw-a","gw-","GW-b"]}"#,
                "gw-",
                catalog(&[]),
            ),
            (
                "escaped strings are decoded",
                r#"{"w\u0065b":["gw-traefik.http.routers.w.rule=Host(\"a.example.com\")","gw-\u0061"]}"#,
                "gw-",
                catalog(&[(
                    "web",
                    &["traefik.http.routers.w.rule=Host(\"a.example.com\")", "a"],
                )]),
            ),
            (
                "an escaped prefix still selects",
                r#"{"web":["\u0067w-x"]}"#,
                "gw-",
                catalog(&[("web", &["x"])]),
            ),
            (
                "null tag list is no tags",
                r#"{"web":null,"api":["gw-y"]}"#,
                "gw-",
                catalog(&[("api", &["y"])]),
            ),
            (
                "a repeated name merges",
                r#"{"web":["gw-a"],"web":["gw-b","gw-a"]}"#,
                "gw-",
                catalog(&[("web", &["a", "b"])]),
            ),
        ];
        for (name, body, prefix, want) in cases {
            let got =
                decode_catalog(body.as_bytes(), prefix).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_not_copied() {
        let borrowed: Text = serde_json::from_str(r#""gw-plain""#).expect("decodes");
        assert!(matches!(borrowed.0, Cow::Borrowed("gw-plain")));
        let escaped: Text = serde_json::from_str(r#""gw-\u0061""#).expect("decodes");
        assert!(matches!(escaped.0, Cow::Owned(ref s) if s == "gw-a"));
    }

    #[test]
    fn catalog_rejects_malformed_bodies() {
        let cases = [
            ("array", r#"["web"]"#),
            ("tag not a string", r#"{"web":[1]}"#),
            ("tags not a list", r#"{"web":"gw-a"}"#),
            ("truncated", r#"{"web":["gw-a""#),
            ("trailing garbage", r#"{"web":["gw-a"]} x"#),
            ("empty body", ""),
        ];
        for (name, body) in cases {
            assert!(
                decode_catalog(body.as_bytes(), "gw-").is_err(),
                "{name}: should fail"
            );
        }
    }

    #[test]
    fn catalog_of_ten_thousand_services_decodes_correctly() {
        let mut body = String::from("{");
        for i in 0..10_000 {
            if i > 0 {
                body.push(',');
            }
            // Every third service is selected, with two selected tags among many others.
            if i % 3 == 0 {
                body.push_str(&format!(
                    r#""svc-{i:05}":["a","gw-traefik.http.routers.r{i}.rule=Host(`s{i}.example.com`)","b","c","gw-traefik.enable=true","d"]"#
                ));
            } else {
                body.push_str(&format!(r#""svc-{i:05}":["a","b","v{i}","gw"]"#));
            }
        }
        body.push('}');
        let got = decode_catalog(body.as_bytes(), "gw-").expect("decodes");
        assert_eq!(got.len(), 3334);
        for (i, (name, tags)) in got.iter().enumerate() {
            let n = i * 3;
            assert_eq!(name, &format!("svc-{n:05}"));
            assert_eq!(
                tags,
                &vec![
                    format!("traefik.http.routers.r{n}.rule=Host(`s{n}.example.com`)"),
                    "traefik.enable=true".to_string(),
                ]
            );
        }
    }

    #[test]
    fn service_defaults_map_name_to_protocol() {
        let body = br#"[
            {"Kind":"service-defaults","Name":"web","Protocol":"http","MeshGateway":{},"CreateIndex":5,"ModifyIndex":5},
            {"Kind":"service-defaults","Name":"db","CreateIndex":6,"ModifyIndex":6},
            {"Kind":"service-defaults","Name":"grpc-api","Protocol":"GRPC","Expose":{"Paths":[]}}
        ]"#;
        let got = decode_service_defaults(body).expect("decodes");
        let want: BTreeMap<String, String> = [("web", "http"), ("db", ""), ("grpc-api", "GRPC")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            decode_service_defaults(b"[]").expect("decodes"),
            BTreeMap::new()
        );
        assert!(decode_service_defaults(b"{}").is_err());
        assert!(decode_service_defaults(br#"[{"Protocol":"http"}]"#).is_err());
    }

    #[test]
    fn proxy_defaults_protocol() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "set",
                r#"{"Kind":"proxy-defaults","Name":"global","Config":{"protocol":"http","x":1}}"#,
                Some("http"),
            ),
            (
                "other case",
                r#"{"Config":{"Protocol":"grpc"}}"#,
                Some("grpc"),
            ),
            ("empty string", r#"{"Config":{"protocol":""}}"#, None),
            ("not a string", r#"{"Config":{"protocol":7}}"#, None),
            (
                "no protocol",
                r#"{"Config":{"local_connect_timeout_ms":5}}"#,
                None,
            ),
            ("config null", r#"{"Config":null}"#, None),
            ("config not an object", r#"{"Config":"http"}"#, None),
            (
                "no config",
                r#"{"Kind":"proxy-defaults","Name":"global"}"#,
                None,
            ),
        ];
        for (name, body, want) in cases {
            let got =
                decode_proxy_defaults(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.as_deref(), *want, "{name}");
        }
        assert!(decode_proxy_defaults(b"[]").is_err());
        assert!(decode_proxy_defaults(b"not json").is_err());
    }

    #[test]
    fn entry_must_be_an_object() {
        let entry = decode_entry(br#"{"Kind":"ingress-gateway","Name":"gw","ModifyIndex":7}"#)
            .expect("decodes");
        assert_eq!(entry.get("Name"), Some(&Value::from("gw")));
        assert_eq!(entry.get("ModifyIndex"), Some(&Value::from(7)));
        for body in ["[]", "null", "\"x\"", "", "{"] {
            assert!(decode_entry(body.as_bytes()).is_err(), "{body:?}");
        }
    }
}
