//! What the planner derived from each service's tags, kept from one plan to the next.
//!
//! A change touches one service, and every plan reads the hosts of all of them: at
//! 10,000 services (2,000 tagged) parsing the same Traefik rules again was a sixth of
//! what a change cost. [`Memo`] keeps, per service, a digest of the tags the hosts came
//! from and what came of them (hosts and warnings); a plan reuses that when the digest
//! matches and parses otherwise. The output is the same as without the memo (see the
//! tests): the memo is an optimisation, never an input.
//!
//! It holds no tags, only a 64-bit digest of them (SipHash with fixed keys), so it costs
//! a few hundred bytes per tagged service. Services absent from a plan are forgotten.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::registration::{service_hosts, Hosts};
use super::Warnings;
use crate::config::GatewayType;

/// Per-service results of [`service_hosts`] from earlier plans.
#[derive(Debug, Default)]
pub struct Memo {
    hosts: HashMap<String, Derived>,
    /// Flipped by every plan; an entry not marked with the current value was not used.
    generation: bool,
}

#[derive(Debug)]
struct Derived {
    digest: u64,
    /// Each host with the index (in the service's tags) of the first tag naming it.
    hosts: Box<[(Box<str>, u16)]>,
    /// Each warning with the index of its tag.
    warnings: Box<[(u16, Box<str>)]>,
    generation: bool,
}

impl Memo {
    /// Starts a plan: what the plan does not ask for is forgotten at [`Memo::finish`].
    pub fn start(&mut self) {
        self.generation = !self.generation;
    }

    /// Forgets the services the plan since [`Memo::start`] did not ask for.
    pub fn finish(&mut self) {
        let generation = self.generation;
        self.hosts
            .retain(|_, derived| derived.generation == generation);
    }

    /// [`service_hosts`] of `service`, from the memo when its tags are those of the last
    /// time, with the same warnings added.
    pub fn hosts<'t>(
        &mut self,
        gateway: GatewayType,
        service: &str,
        tags: &[&'t str],
        warnings: &mut Warnings<'_>,
    ) -> Hosts<'t> {
        let digest = digest(gateway, tags);
        let generation = self.generation;
        if let Some(derived) = self.hosts.get_mut(service) {
            let tag = |index: u16| tags.get(usize::from(index)).copied();
            // Every index names one of these tags, unless two tag lists share a digest.
            let fits = derived.hosts.iter().all(|(_, i)| tag(*i).is_some())
                && derived.warnings.iter().all(|(i, _)| tag(*i).is_some());
            if derived.digest == digest && fits {
                derived.generation = generation;
                for (index, message) in derived.warnings.iter() {
                    warnings.add(service, tag(*index), message.to_string());
                }
                return derived
                    .hosts
                    .iter()
                    .filter_map(|(host, index)| Some((host.to_string(), tag(*index)?)))
                    .collect();
            }
        }
        let (hosts, problems) = service_hosts(gateway, tags);
        for (tag, message) in &problems {
            warnings.add(service, Some(tag), message.clone());
        }
        // Tag indexes fit in u16 for any real service; a larger one is not memoised.
        let index_of = |tag: &str| {
            tags.iter()
                .position(|t| std::ptr::eq(*t, tag))
                .and_then(|i| u16::try_from(i).ok())
        };
        let memoised_hosts: Option<Vec<_>> = hosts
            .iter()
            .map(|(host, tag)| index_of(tag).map(|i| (Box::from(host.as_str()), i)))
            .collect();
        let memoised_warnings: Option<Vec<_>> = problems
            .into_iter()
            .map(|(tag, message)| index_of(tag).map(|i| (i, message.into_boxed_str())))
            .collect();
        match (memoised_hosts, memoised_warnings) {
            (Some(hosts), Some(warnings)) => {
                self.hosts.insert(
                    service.to_owned(),
                    Derived {
                        digest,
                        hosts: hosts.into_boxed_slice(),
                        warnings: warnings.into_boxed_slice(),
                        generation,
                    },
                );
            }
            _ => {
                self.hosts.remove(service);
            }
        }
        hosts
    }
}

fn digest(gateway: GatewayType, tags: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    (gateway == GatewayType::Traefik).hash(&mut hasher);
    tags.hash(&mut hasher);
    hasher.finish()
}
