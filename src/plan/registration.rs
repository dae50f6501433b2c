//! The ingress service registration and each service's hosts: shared by every backend,
//! since the outer proxy reads the same tags whatever the gateway.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use super::{PlanSettings, Warnings};
use crate::config::{GatewayKind, GatewayType};
use crate::model::{Catalog, Registration, MANAGED_BY};
use crate::tags;

/// (service, stripped tag) that set a Traefik key first.
type KeyOwner<'c> = (&'c str, &'c str);

/// The ingress service registration, and for each service the selected tags that made
/// it onto the registration (sorted, de-duplicated): only those give hosts, since a tag
/// left off the registration routes nothing to the gateway.
pub fn registration<'c>(
    settings: &PlanSettings,
    catalog: &'c Catalog,
    warnings: &mut Warnings<'_>,
) -> (Registration, BTreeMap<&'c str, Vec<&'c str>>) {
    let traefik = settings.outer == GatewayType::Traefik;
    // Collected, then sorted once: with thousands of tags sharing long prefixes
    // (`traefik.http.routers.`), keeping a sorted set while inserting costs several
    // times the comparisons (this ran several times per change at 10,000 services).
    let selected_tags: usize = catalog.values().map(Vec::len).sum();
    let mut tags: Vec<String> = Vec::with_capacity(selected_tags + 1);
    // Traefik key (lower-cased) -> its value and who set it first (`None`: this daemon).
    // Traefik picks one value at random when several services set one key, so the
    // service whose name sorts first wins, deterministically. Only looked up, never
    // iterated: a hash map, for the same reason as above.
    // Keys and values are borrowed from the catalog's tags where the tag already is
    // its ingress form with a lower-case key (nearly always): two allocations fewer per
    // tag, of thousands per change.
    let mut keys: HashMap<Cow<'c, str>, (Cow<'c, str>, Option<KeyOwner<'c>>)> =
        HashMap::with_capacity(if traefik { selected_tags + 1 } else { 0 });
    if traefik {
        tags.push("traefik.enable=true".into());
        keys.insert("traefik.enable".into(), ("true".into(), None));
    }
    let mut selected = BTreeMap::new();
    for (service, service_tags) in catalog {
        if *service == settings.ingress_service_name {
            warnings.add(
                service,
                None,
                "this is the ingress service itself; its tags are not selected again".into(),
            );
            continue;
        }
        let mut sorted: Vec<&str> = service_tags.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut kept = Vec::new();
        for tag in sorted {
            let mut ingress = tags::ingress_tag(settings.outer, tag);
            if settings.gateway_kind == GatewayKind::Api && !traefik {
                // The gateway's route does the stripping (URLRewrite): Fabio must not
                // strip first, or the route's prefix never matches.
                ingress = tags::fabio_tag_without_strip(&ingress);
            }
            if traefik {
                let (key, value) = traefik_key_value(tag, &ingress);
                match keys.entry(key) {
                    Entry::Occupied(first) if first.get().0 != value => {
                        let key = first.key();
                        let (_, first) = first.get();
                        let by = match first {
                            Some((other, other_tag)) => format!(
                                "service {other:?} (tag {:?}), whose name sorts first",
                                format!("{}{other_tag}", settings.prefix)
                            ),
                            None => "ingress-service-monitor itself".to_owned(),
                        };
                        warnings.add(
                            service,
                            Some(tag),
                            format!(
                                "Traefik key {key:?} is already set to a different value by {by}; \
                                 this tag is left off the ingress service"
                            ),
                        );
                        continue;
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(vacant) => {
                        vacant.insert((value, Some((service.as_str(), tag))));
                    }
                }
            }
            tags.push(ingress);
            kept.push(tag);
        }
        selected.insert(service.as_str(), kept);
    }
    tags.sort_unstable();
    tags.dedup();
    let registration = Registration {
        id: settings.ingress_service_id.clone(),
        name: settings.ingress_service_name.clone(),
        port: settings.ingress_port,
        address: settings.ingress_address.clone(),
        tags,
        meta: BTreeMap::from([("managed-by".to_owned(), MANAGED_BY.to_owned())]),
        check_url: settings.check_url.clone(),
    };
    (registration, selected)
}

/// A Traefik tag's key (lower-cased: Traefik reads keys case-insensitively) and value,
/// as on the ingress service (`ingress`, the ingress form of the stripped `tag`);
/// borrowed from `tag` when that form is the tag itself.
fn traefik_key_value<'c>(tag: &'c str, ingress: &str) -> (Cow<'c, str>, Cow<'c, str>) {
    let split = |text: &str| -> (usize, usize) {
        match text.find('=') {
            Some(at) => (at, at + 1),
            None => (text.len(), text.len()),
        }
    };
    if tag != ingress {
        let (end, start) = split(ingress);
        return (
            Cow::Owned(ingress[..end].to_ascii_lowercase()),
            Cow::Owned(ingress[start..].to_owned()),
        );
    }
    let (end, start) = split(tag);
    let (key, value) = (&tag[..end], &tag[start..]);
    let key = match key.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(key.to_ascii_lowercase()),
        false => Cow::Borrowed(key),
    };
    (key, Cow::Borrowed(value))
}

/// Valid hosts of one service (lower-cased), each with the first tag that named it.
pub type Hosts<'t> = BTreeMap<String, &'t str>;

/// What could not be taken from a service's tags: (tag, why).
pub type TagProblems<'t> = Vec<(&'t str, String)>;

/// The hosts of one service's (kept, stripped) tags, and the tags' problems.
pub fn service_hosts<'t>(gateway: GatewayType, tags: &[&'t str]) -> (Hosts<'t>, TagProblems<'t>) {
    let mut hosts = BTreeMap::new();
    let mut problems = Vec::new();
    for &tag in tags {
        match tags::tag_hosts(gateway, tag) {
            Err(err) => problems.push((tag, format!("{err}; no host taken from it"))),
            Ok(found) => {
                for host in found {
                    let host = host.to_lowercase();
                    match tags::check_host(&host) {
                        Ok(()) => {
                            hosts.entry(host).or_insert(tag);
                        }
                        Err(problem) => {
                            problems.push((tag, format!("host {host:?} dropped: {problem}")))
                        }
                    }
                }
            }
        }
    }
    (hosts, problems)
}
