//! What a service's tags become on an http-route (consul-api-gateway §2 and §6), pure.
//!
//! A tag gives zero or more [`RouteGroup`]s: a set of hostnames (empty = every host)
//! with the [`Match`]es served on them and an optional path rewrite. Hostnames live on
//! the route, not on a match, so matches served on different host sets become
//! different groups, hence different http-routes; matches sharing a host set are
//! several matches of one rule. The groups are a function of the (hostname, match,
//! rewrite) triples routed, whatever the spelling: each match goes to the group of
//! exactly the hosts that route it.
//!
//! Not carried over: Traefik's router priority. Consul orders the matches of all routes
//! on a hostname by longer path, then more headers, then more query parameters; Traefik
//! by rule length (or an explicit priority). Identical (hostname, match) pairs are what
//! the planner must refuse; overlapping ones resolve the Consul way. A group for every
//! host (a path without `Host`) serves only hosts no route names: Envoy picks the
//! virtual host first, so `a.com/y` finds no match if `a.com` has routes but none for
//! `/y`, where Traefik would fall back to the catch-all router (narrower, never wider).
//!
//! Everything here is canonical (sorted, de-duplicated, lower-cased where the protocol is
//! case-insensitive) so the planner can key conflicts by (hostname or [`ANY_HOST`],
//! match) and its output is deterministic. Everything emitted passes Consul's http-route
//! validation; what it would reject, and every matcher a route cannot express
//! faithfully, is a [`RouteWarning`] naming the service, the tag and the culprit, and is
//! left out. Leaving out never widens a route: an alternative is routed exactly or not
//! at all (a `Host` whose names are all dropped drops the alternative, it never becomes
//! every host).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value};

use crate::config::GatewayType;
use crate::tags::traefik::{self, Branch, Rule};
use crate::tags::{self, FabioRoute};

pub use crate::tags::traefik::PathKind;

/// The hostname key of a group without hostnames (it serves every host): a valid
/// hostname never contains `*`, so the key cannot collide with one.
pub const ANY_HOST: &str = "*";

/// Methods an http-route accepts (`Method contains an invalid method`).
const METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// A path condition. A match without a path matcher has prefix `/`, which is what
/// Consul normalises it to, so `Host(a)` and `Host(a) && PathPrefix(/)` key alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathMatch {
    pub kind: PathKind,
    pub value: String,
}

/// The request carries header `name` (lower-cased) with exactly `value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// The query parameter `name` has exactly `value`, or is present when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryMatch {
    pub name: String,
    pub value: Option<String>,
}

/// One entry of an http-route rule's `Matches`: every condition must hold.
/// `headers` and `query` are sorted and de-duplicated (canonical).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub path: PathMatch,
    /// One upper-case verb; `None` = every method.
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
}

impl Match {
    /// The match as Consul's http-route JSON (`{"Path": {...}, "Method": ..., ...}`),
    /// empty fields left out.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        let kind = match self.path.kind {
            PathKind::Exact => "exact",
            PathKind::Prefix => "prefix",
        };
        out.insert(
            "Path".into(),
            json!({"Match": kind, "Value": self.path.value}),
        );
        if let Some(method) = &self.method {
            out.insert("Method".into(), json!(method));
        }
        if !self.headers.is_empty() {
            let headers: Vec<Value> = self
                .headers
                .iter()
                .map(|h| json!({"Match": "exact", "Name": h.name, "Value": h.value}))
                .collect();
            out.insert("Headers".into(), Value::Array(headers));
        }
        if !self.query.is_empty() {
            let query: Vec<Value> = self
                .query
                .iter()
                .map(|q| match &q.value {
                    Some(value) => json!({"Match": "exact", "Name": q.name, "Value": value}),
                    None => json!({"Match": "present", "Name": q.name}),
                })
                .collect();
            out.insert("Query".into(), Value::Array(query));
        }
        Value::Object(out)
    }
}

/// Matches served on a set of hostnames, with an optional path rewrite: one entry of an
/// http-route's `Rules` on a route whose `Hostnames` are `hostnames`.
/// Ordered by hostnames, then rewrite, then matches; `matches` is sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteGroup {
    /// Lower-case DNS names, no wildcard; empty = every host.
    pub hostnames: BTreeSet<String>,
    /// `Filters.URLRewrite.Path`: replaces the matched prefix (Fabio `strip=`).
    pub rewrite: Option<String>,
    pub matches: Vec<Match>,
}

impl RouteGroup {
    /// The keys the planner resolves conflicts on: (hostname or [`ANY_HOST`], match).
    pub fn conflict_keys(&self) -> Vec<(&str, &Match)> {
        let hosts: Vec<&str> = if self.hostnames.is_empty() {
            vec![ANY_HOST]
        } else {
            self.hostnames.iter().map(String::as_str).collect()
        };
        hosts
            .into_iter()
            .flat_map(|host| self.matches.iter().map(move |m| (host, m)))
            .collect()
    }

    /// One entry of an http-route's `Rules`: these matches, the rewrite, to `service`.
    pub fn rule_json(&self, service: &str) -> Value {
        let mut rule = Map::new();
        if let Some(path) = &self.rewrite {
            rule.insert("Filters".into(), json!({"URLRewrite": {"Path": path}}));
        }
        let matches: Vec<Value> = self.matches.iter().map(Match::to_json).collect();
        rule.insert("Matches".into(), Value::Array(matches));
        rule.insert("Services".into(), json!([{"Name": service}]));
        Value::Object(rule)
    }
}

/// A tag (or part of one) left out, and why. `tag` is the stripped tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteWarning {
    pub service: String,
    pub tag: String,
    pub message: String,
}

impl fmt::Display for RouteWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {:?}, tag {:?}: {}",
            self.service, self.tag, self.message
        )
    }
}

/// Route groups and warnings, both sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub groups: Vec<RouteGroup>,
    pub warnings: Vec<RouteWarning>,
}

/// What one stripped tag of `service` gives on http-routes. Tags that name no HTTP route
/// (`traefik.enable=true`, a Fabio `proto=tcp` route) give nothing and no warning.
pub fn tag_routes(gateway: GatewayType, service: &str, tag: &str) -> Routes {
    let mut collect = Collect::new(service, tag);
    collect.tag(gateway);
    collect.finish()
}

/// What all stripped tags of `service` give, merged. A (hostname, match) that two tags
/// route with different rewrites is kept for the tag that comes first in `tags`, and
/// warned about for the other; the same (hostname, match, rewrite) twice is one.
///
/// Traefik: a router whose `middlewares` name a path-changing middleware defined on the
/// same service (`stripprefix`, `replacepath`, `addprefix`, their regexp forms) has its
/// alternatives with a path skipped, with a warning: the outer Traefik changes the path
/// before the gateway sees it, so the gateway's path match would never match.
pub fn service_routes(gateway: GatewayType, service: &str, tags: &[&str]) -> Routes {
    // (host key, match) → (rewrite, tag) of the first tag that routed it.
    let mut seen: BTreeMap<(String, Match), (Option<String>, &str)> = BTreeMap::new();
    let mut warnings = BTreeSet::new();
    let path_changers = match gateway {
        GatewayType::Traefik => path_changing_middlewares(tags),
        GatewayType::Fabio => BTreeMap::new(),
    };
    for &tag in tags {
        let mut collect = Collect::new(service, tag);
        if let Some((router, _)) = traefik::router_setting(tag, "rule") {
            collect.path_changed_by = path_changers.get(&router.to_ascii_lowercase()).cloned();
        }
        collect.tag(gateway);
        warnings.extend(collect.warnings);
        for (host, m, rewrite) in collect.routed {
            match seen.get(&(host.clone(), m.clone())) {
                None => {
                    seen.insert((host, m), (rewrite, tag));
                }
                Some((first_rewrite, _)) if *first_rewrite == rewrite => {}
                Some((_, first)) => {
                    warnings.insert(RouteWarning {
                        service: service.to_owned(),
                        tag: tag.to_owned(),
                        message: format!(
                            "{} on host {host} is also routed by tag {first:?} with another \
                             rewrite; that tag keeps it",
                            describe_match(&m)
                        ),
                    });
                }
            }
        }
    }
    Routes {
        groups: regroup(
            seen.into_iter()
                .map(|((host, m), (rewrite, _))| (host, m, rewrite)),
        ),
        warnings: warnings.into_iter().collect(),
    }
}

/// Middleware types that change the request path.
const PATH_MIDDLEWARES: [&str; 5] = [
    "stripprefix",
    "stripprefixregex",
    "replacepath",
    "replacepathregex",
    "addprefix",
];

/// For each router (lower-cased) of `tags` whose `middlewares` name a path-changing
/// middleware defined in `tags`: `"<middleware> (<type>)"` of the first one. Names with
/// another provider's `@suffix` are defined elsewhere and not known here.
fn path_changing_middlewares(tags: &[&str]) -> BTreeMap<String, String> {
    let defined: BTreeMap<String, String> = tags
        .iter()
        .filter_map(|tag| traefik::middleware_type(tag))
        .filter(|(_, kind)| PATH_MIDDLEWARES.contains(&kind.as_str()))
        .map(|(name, kind)| (name.to_ascii_lowercase(), kind))
        .collect();
    let mut out = BTreeMap::new();
    for tag in tags {
        let Some((router, list)) = traefik::router_setting(tag, "middlewares") else {
            continue;
        };
        let found = list.split(',').find_map(|name| {
            let name = name.trim();
            let name = name.strip_suffix("@consulcatalog").unwrap_or(name);
            let kind = defined.get(&name.to_ascii_lowercase())?;
            Some(format!("{name} ({kind})"))
        });
        if let Some(found) = found {
            out.entry(router.to_ascii_lowercase()).or_insert(found);
        }
    }
    out
}

/// The canonical groups of a set of (host key, match, rewrite): each match with its
/// rewrite goes to the group of exactly the hosts that route it, every host
/// ([`ANY_HOST`]) being a group of its own. So the groups depend only on what is routed,
/// not on how the tags spell it (`Host(a) || Host(a, b)` is the group {a, b}).
fn regroup(routed: impl IntoIterator<Item = (String, Match, Option<String>)>) -> Vec<RouteGroup> {
    let mut hosts_of: BTreeMap<(Match, Option<String>), (bool, BTreeSet<String>)> = BTreeMap::new();
    for (host, m, rewrite) in routed {
        let (any, hosts) = hosts_of.entry((m, rewrite)).or_default();
        if host == ANY_HOST {
            *any = true;
        } else {
            hosts.insert(host);
        }
    }
    let mut groups: BTreeMap<(BTreeSet<String>, Option<String>), Vec<Match>> = BTreeMap::new();
    for ((m, rewrite), (any, hosts)) in hosts_of {
        if any {
            groups
                .entry((BTreeSet::new(), rewrite.clone()))
                .or_default()
                .push(m.clone());
        }
        if !hosts.is_empty() {
            groups.entry((hosts, rewrite)).or_default().push(m);
        }
    }
    groups
        .into_iter()
        .map(|((hostnames, rewrite), mut matches)| {
            matches.sort();
            matches.dedup();
            RouteGroup {
                hostnames,
                rewrite,
                matches,
            }
        })
        .collect()
}

/// `prefix /x, GET, header a=1` for warnings.
pub fn describe_match(m: &Match) -> String {
    let kind = match m.path.kind {
        PathKind::Exact => "path",
        PathKind::Prefix => "prefix",
    };
    let mut parts = vec![format!("{kind} {}", m.path.value)];
    parts.extend(m.method.clone());
    parts.extend(
        m.headers
            .iter()
            .map(|h| format!("header {}={}", h.name, h.value)),
    );
    parts.extend(m.query.iter().map(|q| match &q.value {
        Some(v) => format!("query {}={v}", q.name),
        None => format!("query {}", q.name),
    }));
    parts.join(", ")
}

/// Accumulates what one tag routes, as (host key, match, rewrite), and its warnings.
struct Collect<'a> {
    service: &'a str,
    tag: &'a str,
    routed: BTreeSet<(String, Match, Option<String>)>,
    warnings: Vec<RouteWarning>,
    /// The Traefik router's path-changing middleware, if any.
    path_changed_by: Option<String>,
}

impl<'a> Collect<'a> {
    fn new(service: &'a str, tag: &'a str) -> Self {
        Collect {
            service,
            tag,
            routed: BTreeSet::new(),
            warnings: Vec::new(),
            path_changed_by: None,
        }
    }

    fn tag(&mut self, gateway: GatewayType) {
        match gateway {
            GatewayType::Traefik => {
                if let Some(rule) = traefik::router_rule(self.tag) {
                    self.traefik(rule);
                }
            }
            GatewayType::Fabio => {
                if let Some(route) = tags::fabio_route(self.tag) {
                    self.fabio(&route);
                }
            }
        }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(RouteWarning {
            service: self.service.to_owned(),
            tag: self.tag.to_owned(),
            message,
        });
    }

    fn add(&mut self, hostnames: &BTreeSet<String>, rewrite: Option<String>, m: Match) {
        if hostnames.is_empty() {
            self.routed.insert((ANY_HOST.to_owned(), m, rewrite));
            return;
        }
        for host in hostnames {
            self.routed
                .insert((host.clone(), m.clone(), rewrite.clone()));
        }
    }

    fn finish(mut self) -> Routes {
        self.warnings.sort();
        self.warnings.dedup();
        Routes {
            groups: regroup(self.routed),
            warnings: self.warnings,
        }
    }

    fn traefik(&mut self, rule: &str) {
        let branches = match traefik::parse_rule(rule) {
            Err(err) => return self.warn(format!("{err}; no route taken from it")),
            Ok(Rule::TooManyBranches { .. }) => {
                return self.warn(format!(
                    "the rule expands to more than {} alternatives (|| inside &&); no route \
                     taken from it: split it over several routers",
                    tags::MAX_BRANCHES
                ))
            }
            Ok(Rule::Branches(branches)) => branches,
        };
        for branch in &branches {
            if let Err(why) = self.traefik_branch(branch) {
                self.warn(format!(
                    "alternative {} skipped: {why}",
                    describe_branch(branch)
                ));
            }
        }
    }

    /// One alternative: added, or `Err(why it is skipped)`. Dropped hosts are warnings of
    /// their own; the alternative survives when at least one of its hosts does.
    fn traefik_branch(&mut self, branch: &Branch) -> Result<(), String> {
        if let Some(u) = branch.unsupported.first() {
            return Err(format!(
                "{} cannot be expressed by an http-route ({})",
                u.matcher, u.reason
            ));
        }
        if let (Some(path), Some(middleware)) = (&branch.path, &self.path_changed_by) {
            return Err(format!(
                "the outer Traefik changes the path with middleware {middleware} before the \
                 gateway sees it, so {path} at the gateway would never match; route the \
                 path without that middleware"
            ));
        }
        let hostnames = match branch.hosts.split_first() {
            None => BTreeSet::new(),
            Some((first, rest)) => {
                let mut common: BTreeSet<String> = first.names.iter().cloned().collect();
                for matcher in rest {
                    let names: BTreeSet<String> = matcher.names.iter().cloned().collect();
                    common = common.intersection(&names).cloned().collect();
                }
                if common.is_empty() {
                    return Err("its Host matchers share no host, so it never matches".into());
                }
                let valid = self.valid_hostnames(common);
                if valid.is_empty() {
                    return Err("none of its hosts is valid, and without them it would \
                                match every host"
                        .into());
                }
                valid
            }
        };
        let path = match &branch.path {
            None => PathMatch {
                kind: PathKind::Prefix,
                value: "/".into(),
            },
            Some(p) => {
                check_path(&p.value)?;
                PathMatch {
                    kind: p.kind,
                    value: p.value.clone(),
                }
            }
        };
        let method = branch_method(branch)?;
        let mut headers = BTreeSet::new();
        for h in &branch.headers {
            check_header(&h.name, &h.value)?;
            headers.insert(HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            });
        }
        let mut query = BTreeSet::new();
        for q in &branch.query {
            check_query(&q.name, q.value.as_deref())?;
            query.insert(QueryMatch {
                name: q.name.clone(),
                value: q.value.clone(),
            });
        }
        self.add(
            &hostnames,
            None,
            Match {
                path,
                method,
                headers: headers.into_iter().collect(),
                query: query.into_iter().collect(),
            },
        );
        Ok(())
    }

    fn valid_hostnames(&mut self, names: BTreeSet<String>) -> BTreeSet<String> {
        let mut valid = BTreeSet::new();
        for name in names {
            match tags::check_route_hostname(&name) {
                Ok(()) => {
                    valid.insert(name);
                }
                Err(problem) => self.warn(format!("host {name:?} dropped: {problem}")),
            }
        }
        valid
    }

    fn fabio(&mut self, route: &FabioRoute) {
        if let Err(why) = self.fabio_route(route) {
            self.warn(format!("{why}; no route taken from it"));
        }
    }

    fn fabio_route(&mut self, route: &FabioRoute) -> Result<(), String> {
        for (key, _) in &route.options {
            match key.as_str() {
                "redirect" => return Err("redirect= makes Fabio answer the request itself".into()),
                "host" => {
                    return Err(
                        "host= makes Fabio change the Host header the gateway routes on".into(),
                    )
                }
                _ => {}
            }
        }
        let hostnames = match route.host.as_deref() {
            None => BTreeSet::new(),
            Some("") => return Err("a port without a host".into()),
            Some(host) => {
                if let Err(problem) = tags::check_route_hostname(host) {
                    return Err(format!(
                        "host {host:?} dropped: {problem} (without it the route would \
                         match every host)"
                    ));
                }
                BTreeSet::from([host.to_owned()])
            }
        };
        check_path(&route.path)?;
        for (path, rewrite) in strip_rewrite(&route.path, route.strip.as_deref())? {
            self.add(
                &hostnames,
                rewrite,
                Match {
                    path,
                    method: None,
                    headers: Vec::new(),
                    query: Vec::new(),
                },
            );
        }
        Ok(())
    }
}

/// The matches and rewrite that do what Fabio's `strip=` does on a route with prefix
/// `path`: Fabio cuts `strip` off a request path that starts with it and puts back a
/// leading `/` if none is left; Envoy replaces the matched prefix with the rewrite.
///
/// When the route path is the stripped prefix and does not end in `/`, one rewrite
/// cannot do it (`/api` → `/` turns `/api/x` into `//x`), so the route gets prefix
/// `/api/` → `/` and exact `/api` → `/` (consul-api-gateway §2). Requests that continue
/// the prefix without a slash (`/apix`) are then not routed: narrower, never broader.
fn strip_rewrite(
    path: &str,
    strip: Option<&str>,
) -> Result<Vec<(PathMatch, Option<String>)>, String> {
    let prefix = |value: &str| PathMatch {
        kind: PathKind::Prefix,
        value: value.to_owned(),
    };
    let strip = match strip {
        None | Some("") => return Ok(vec![(prefix(path), None)]),
        Some(strip) => strip,
    };
    if !strip.starts_with('/') {
        return Err(format!("strip={strip} does not begin with '/'"));
    }
    if let Some(rest) = path.strip_prefix(strip) {
        if !rest.is_empty() {
            let rewrite = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            };
            return Ok(vec![(prefix(path), Some(rewrite))]);
        }
        if strip.ends_with('/') {
            return Ok(vec![(prefix(path), Some("/".into()))]);
        }
        let exact = PathMatch {
            kind: PathKind::Exact,
            value: path.to_owned(),
        };
        return Ok(vec![
            (prefix(&format!("{path}/")), Some("/".into())),
            (exact, Some("/".into())),
        ]);
    }
    if strip.starts_with(path) {
        return Err(format!(
            "strip={strip} is longer than the route path {path}: Fabio strips it from only \
             some of the requests the route matches"
        ));
    }
    // Fabio never strips: no request of this route starts with `strip`.
    Ok(vec![(prefix(path), None)])
}

/// A path Consul accepts (`doesn't start with '/'`) and that Envoy compares the way the
/// outer proxy does: visible ASCII, no query or fragment (Envoy's prefix match sees the
/// query string), no `%` (Envoy matches the raw path, Traefik and Fabio the decoded one),
/// no braces (Traefik v2 reads them as a template).
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path {path:?} does not begin with '/' (Consul: prefix type match doesn't start \
             with '/')"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|&c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%' | '{' | '}'))
    {
        return Err(format!(
            "path {path:?} holds {c:?}, which an http-route cannot match as the outer proxy \
             does"
        ));
    }
    Ok(())
}

/// A header name that is an HTTP token (Consul: `missing required Name field` when
/// empty), and a value without control characters.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("header name {name:?} is not an HTTP header name"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "header {name} value {value:?} holds a control character"
        ));
    }
    Ok(())
}

/// A query name (required) and value made only of characters that need no percent
/// encoding: Envoy compares the raw query string, the outer proxy the decoded one.
fn check_query(name: &str, value: Option<&str>) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~!$'()*+,;:@/".contains(c);
    if name.is_empty() || !name.chars().all(plain) {
        return Err(format!(
            "query parameter name {name:?} is empty or needs percent-encoding"
        ));
    }
    if let Some(v) = value {
        if !v.chars().all(|c| plain(c) || c == '=' || c == '?') {
            return Err(format!(
                "query parameter {name} value {v:?} needs percent-encoding"
            ));
        }
    }
    Ok(())
}

/// An alternative as Traefik syntax, for warnings.
fn describe_branch(branch: &Branch) -> String {
    let quote = |args: &[&str]| {
        args.iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    for h in &branch.hosts {
        let names: Vec<&str> = h.names.iter().map(String::as_str).collect();
        parts.push(format!("Host({})", quote(&names)));
    }
    if let Some(p) = &branch.path {
        parts.push(p.to_string());
    }
    for m in &branch.methods {
        parts.push(format!("Method({})", quote(&[m])));
    }
    for h in &branch.headers {
        parts.push(format!("Header({})", quote(&[&h.name, &h.value])));
    }
    for q in &branch.query {
        match &q.value {
            Some(v) => parts.push(format!("Query({})", quote(&[&q.name, v]))),
            None => parts.push(format!("Query({})", quote(&[&q.name]))),
        }
    }
    for u in &branch.unsupported {
        parts.push(u.matcher.clone());
    }
    parts.join(" && ")
}

/// The one method a branch requires, if any: several AND-ed never all hold.
fn branch_method(branch: &Branch) -> Result<Option<String>, String> {
    let methods: BTreeSet<String> = branch
        .methods
        .iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if methods.len() > 1 {
        let all: Vec<&str> = methods.iter().map(String::as_str).collect();
        return Err(format!(
            "methods {} AND-ed never all hold",
            all.join(" && ")
        ));
    }
    let method = methods.into_iter().next();
    if let Some(m) = &method {
        if !METHODS.contains(&m.as_str()) {
            return Err(format!(
                "method {m:?} is not one an http-route accepts ({})",
                METHODS.join(" ")
            ));
        }
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: GatewayType = GatewayType::Traefik;
    const F: GatewayType = GatewayType::Fabio;

    /// A group as `hosts -> match; match [=> rewrite]`, `*` for every host; a match as
    /// `^/p` (prefix) or `=/p` (exact), then method, `h:name=value`, `q:name[=value]`.
    fn group(g: &RouteGroup) -> String {
        let hosts = if g.hostnames.is_empty() {
            "*".to_owned()
        } else {
            g.hostnames.iter().cloned().collect::<Vec<_>>().join(",")
        };
        let matches: Vec<String> = g
            .matches
            .iter()
            .map(|m| {
                let kind = if m.path.kind == PathKind::Exact {
                    "="
                } else {
                    "^"
                };
                let mut parts = vec![format!("{kind}{}", m.path.value)];
                parts.extend(m.method.clone());
                parts.extend(
                    m.headers
                        .iter()
                        .map(|h| format!("h:{}={}", h.name, h.value)),
                );
                parts.extend(m.query.iter().map(|q| match &q.value {
                    Some(v) => format!("q:{}={v}", q.name),
                    None => format!("q:{}", q.name),
                }));
                parts.join(" ")
            })
            .collect();
        let rewrite = g
            .rewrite
            .as_ref()
            .map(|r| format!(" => {r}"))
            .unwrap_or_default();
        format!("{hosts} -> {}{rewrite}", matches.join("; "))
    }

    fn rule(r: &str) -> String {
        format!("traefik.http.routers.r.rule={r}")
    }

    /// Each row: a rule, the groups it gives, and a piece of each warning.
    #[test]
    fn traefik_mapping_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            // Host, one or several arguments → Hostnames (lower-cased); no path → prefix /.
            ("Host(`A.com`)", &["a.com -> ^/"], &[]),
            ("Host(`a.com`, `b.com`)", &["a.com,b.com -> ^/"], &[]),
            // PathPrefix → prefix, Path → exact.
            ("Host(`a.com`) && PathPrefix(`/api`)", &["a.com -> ^/api"], &[]),
            ("Host(`a.com`) && Path(`/api`)", &["a.com -> =/api"], &[]),
            // A path and no Host: every host.
            ("PathPrefix(`/api`)", &["* -> ^/api"], &[]),
            // Method (upper-cased), several methods → several matches.
            ("Host(`a.com`) && Method(`get`)", &["a.com -> ^/ GET"], &[]),
            ("Host(`a.com`) && Method(`GET`, `POST`)", &["a.com -> ^/ GET; ^/ POST"], &[]),
            // Header / Headers → exact header match (name lower-cased).
            ("Host(`a.com`) && Header(`X-Env`, `blue`)", &["a.com -> ^/ h:x-env=blue"], &[]),
            ("Host(`a.com`) && Headers(`X-Env`, `blue`)", &["a.com -> ^/ h:x-env=blue"], &[]),
            // Query: v3 name/value, v3 name only (present), v2 name=value, v2 several.
            ("Host(`a.com`) && Query(`v`, `2`)", &["a.com -> ^/ q:v=2"], &[]),
            ("Host(`a.com`) && Query(`debug`)", &["a.com -> ^/ q:debug"], &[]),
            ("Host(`a.com`) && Query(`v=2`)", &["a.com -> ^/ q:v=2"], &[]),
            ("Host(`a.com`) && Query(`v=2`, `w=`)", &["a.com -> ^/ q:v=2 q:w"], &[]),
            // && → one match holding everything.
            (
                "Host(`a.com`) && PathPrefix(`/x`) && Method(`PUT`) && Header(`K`, `v`)",
                &["a.com -> ^/x PUT h:k=v"],
                &[],
            ),
            // || → several matches; different host sets → several groups.
            (
                "Host(`a.com`) && (PathPrefix(`/x`) || PathPrefix(`/y`))",
                &["a.com -> ^/x; ^/y"],
                &[],
            ),
            (
                "(Host(`a.com`) && PathPrefix(`/x`)) || (Host(`b.com`) && PathPrefix(`/y`))",
                &["a.com -> ^/x", "b.com -> ^/y"],
                &[],
            ),
            ("Host(`a.com`) || PathPrefix(`/y`)", &["* -> ^/y", "a.com -> ^/"], &[]),
            // Hosts AND-ed: what they share.
            ("Host(`a.com`, `b.com`) && Host(`b.com`, `c.com`)", &["b.com -> ^/"], &[]),
            (
                "Host(`a.com`) && Host(`b.com`)",
                &[],
                &["alternative Host(`a.com`) && Host(`b.com`) skipped: its Host matchers share no host"],
            ),
            // Same alternative twice: one match; groups follow what is routed, not spelling.
            ("Host(`a.com`) || Host(`a.com`)", &["a.com -> ^/"], &[]),
            ("Host(`a.com`) || Host(`a.com`, `b.com`)", &["a.com,b.com -> ^/"], &[]),
            (
                "Host(`a.com`) && PathPrefix(`/x`) || Host(`b.com`) && PathPrefix(`/x`) || Host(`b.com`) && PathPrefix(`/y`)",
                &["a.com,b.com -> ^/x", "b.com -> ^/y"],
                &[],
            ),
            // Refused matchers: the alternative is skipped, naming the matcher; others stay.
            (
                "HostRegexp(`{s:[a-z]+}.a.com`)",
                &[],
                &["HostRegexp(`{s:[a-z]+}.a.com`) cannot be expressed by an http-route (http-route hostnames cannot be patterns"],
            ),
            (
                "Host(`a.com`) && PathRegexp(`^/x`)",
                &[],
                &["PathRegexp(`^/x`) cannot be expressed by an http-route (regular expressions"],
            ),
            ("Host(`a.com`) && HeaderRegexp(`k`, `v.*`)", &[], &["HeaderRegexp(`k`, `v.*`) cannot"]),
            ("Host(`a.com`) && QueryRegexp(`k`, `v.*`)", &[], &["QueryRegexp(`k`, `v.*`) cannot"]),
            ("Host(`a.com`) && ClientIP(`10.0.0.0/8`)", &[], &["ClientIP(`10.0.0.0/8`) cannot be expressed by an http-route (an http-route cannot match on the client address)"]),
            ("Host(`a.com`) && !Path(`/admin`)", &[], &["!Path(`/admin`) cannot be expressed by an http-route (an http-route cannot negate a match)"]),
            ("!Host(`a.com`)", &[], &["!Host(`a.com`) cannot"]),
            ("HostSNI(`a.com`)", &[], &["HostSNI(`a.com`) cannot be expressed by an http-route (HostSNI belongs to TCP routers)"]),
            ("HostHeader(`a.com`)", &[], &["HostHeader(`a.com`) cannot be expressed by an http-route (name the hosts with Host(...))"]),
            (
                "Host(`a.com`) && Path(`/x`) && PathPrefix(`/y`)",
                &[],
                &["Path(`/x`) && PathPrefix(`/y`) cannot be expressed by an http-route (an http-route match holds one path)"],
            ),
            ("Host(`a.com`) && Method(`GET`) && Method(`PUT`)", &[], &["methods GET && PUT AND-ed never all hold"]),
            ("Host(`a.com`) && Method(`BREW`)", &[], &["method \"BREW\" is not one an http-route accepts"]),
            (
                "(Host(`a.com`) && ClientIP(`10.0.0.1`)) || (Host(`a.com`) && PathPrefix(`/pub`))",
                &["a.com -> ^/pub"],
                &["alternative Host(`a.com`) && ClientIP(`10.0.0.1`) skipped"],
            ),
            // Values an http-route would refuse or match differently.
            ("Host(`a.com`) && PathPrefix(`api`)", &[], &["path \"api\" does not begin with '/' (Consul: prefix type match doesn't start with '/')"]),
            ("Host(`a.com`) && Path(`/p/{id:[0-9]+}`)", &[], &["path \"/p/{id:[0-9]+}\" holds '{'"]),
            ("Host(`a.com`) && PathPrefix(`/a?b`)", &[], &["holds '?'"]),
            ("Host(`a.com`) && PathPrefix(`/caf%C3%A9`)", &[], &["holds '%'"]),
            ("Host(`a.com`) && PathPrefix(`/a b`)", &[], &["holds ' '"]),
            ("Host(`a.com`) && Header(`X A`, `v`)", &[], &["header name \"X A\" is not an HTTP header name"]),
            ("Host(`a.com`) && Header(``, `v`)", &[], &["header name \"\" is not"]),
            ("Host(`a.com`) && Header(`K`, `a\nb`)", &[], &["holds a control character"]),
            ("Host(`a.com`) && Query(``, `v`)", &[], &["query parameter name \"\" is empty"]),
            ("Host(`a.com`) && Query(`q`, `a b`)", &[], &["value \"a b\" needs percent-encoding"]),
            ("Host(`a.com`) && Header(`K`)", &[], &["Header(`K`) cannot be expressed by an http-route (Header(...) takes a name and a value)"]),
            // Hosts: a wildcard or not a DNS name is dropped; none left → skipped.
            (
                "Host(`*.a.com`, `b.com`) && PathPrefix(`/x`)",
                &["b.com -> ^/x"],
                &["host \"*.a.com\" dropped: an http-route hostname cannot be a wildcard"],
            ),
            (
                "Host(`a_b.com`) && PathPrefix(`/x`)",
                &[],
                &[
                    "host \"a_b.com\" dropped: not a valid DNS hostname",
                    "none of its hosts is valid",
                ],
            ),
            ("Host(`a.com.`)", &[], &["host \"a.com.\" dropped: an http-route hostname with a trailing dot", "none of its hosts"]),
            ("Host(`a.com:8080`)", &[], &["host \"a.com:8080\" dropped: not a valid DNS hostname", "none of its hosts"]),
            // Rules that do not parse or expand too far: nothing, with the reason.
            ("Host(`a.com`", &[], &["the Traefik rule does not parse (Host(...) is not closed, found the end of the rule); no route taken from it"]),
        ];
        for &(r, want_groups, want_warnings) in cases {
            let tag = rule(r);
            let got = tag_routes(T, "web", &tag);
            let groups: Vec<String> = got.groups.iter().map(group).collect();
            assert_eq!(
                groups, want_groups,
                "rule {r:?}, warnings {:?}",
                got.warnings
            );
            for w in &got.warnings {
                assert_eq!((w.service.as_str(), w.tag.as_str()), ("web", tag.as_str()));
            }
            let messages: Vec<&str> = got.warnings.iter().map(|w| w.message.as_str()).collect();
            assert_eq!(
                messages.len(),
                want_warnings.len(),
                "rule {r:?}: {messages:#?}"
            );
            for want in want_warnings {
                assert!(
                    messages.iter().any(|m| m.contains(want)),
                    "rule {r:?}: no warning with {want:?} in {messages:#?}"
                );
            }
        }
    }

    #[test]
    fn non_route_tags_give_nothing() {
        for tag in [
            "traefik.enable=true",
            "traefik.http.routers.r.tls=true",
            "traefik.tcp.routers.r.rule=HostSNI(`*`)",
            "urlprefix-a.com/",
        ] {
            assert_eq!(tag_routes(T, "web", tag), Routes::default(), "{tag:?}");
        }
        for tag in [
            "urlprefix-:3306 proto=tcp",
            "urlprefix-a.com",
            "traefik.enable=true",
        ] {
            assert_eq!(tag_routes(F, "web", tag), Routes::default(), "{tag:?}");
        }
    }

    #[test]
    fn too_many_alternatives_is_one_warning() {
        let tag = rule(&["(Host(`a.com`) || Host(`b.com`))"; 7].join(" && "));
        let got = tag_routes(T, "web", &tag);
        assert!(got.groups.is_empty());
        assert_eq!(got.warnings.len(), 1);
        assert!(got.warnings[0]
            .message
            .contains("more than 64 alternatives"));
    }

    #[test]
    fn fabio_mapping_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("urlprefix-a.com/", &["a.com -> ^/"], &[]),
            ("urlprefix-A.com/api", &["a.com -> ^/api"], &[]),
            ("urlprefix-/api", &["* -> ^/api"], &[]),
            ("urlprefix-a.com:8080/api", &["a.com -> ^/api"], &[]),
            // strip: the trailing-slash caveat.
            ("urlprefix-a.com/api strip=/api", &["a.com -> =/api; ^/api/ => /"], &[]),
            ("urlprefix-a.com/api/ strip=/api/", &["a.com -> ^/api/ => /"], &[]),
            ("urlprefix-a.com/api/v1 strip=/api", &["a.com -> ^/api/v1 => /v1"], &[]),
            ("urlprefix-a.com/apiv1 strip=/api", &["a.com -> ^/apiv1 => /v1"], &[]),
            ("urlprefix-a.com/ strip=/", &["a.com -> ^/ => /"], &[]),
            ("urlprefix-a.com/x strip=/api", &["a.com -> ^/x"], &[]),
            ("urlprefix-a.com/x strip=", &["a.com -> ^/x"], &[]),
            ("urlprefix-/api strip=/api", &["* -> =/api; ^/api/ => /"], &[]),
            (
                "urlprefix-a.com/api strip=/api/v1",
                &[],
                &["strip=/api/v1 is longer than the route path /api: Fabio strips it from only some of the requests the route matches; no route taken from it"],
            ),
            ("urlprefix-a.com/api strip=api", &[], &["strip=api does not begin with '/'"]),
            // Options that only change what Fabio itself does are kept silently.
            (
                "urlprefix-a.com/ proto=https tlsskipverify=true weight=0.5",
                &["a.com -> ^/"],
                &[],
            ),
            // Options that change what reaches the gateway are refused.
            (
                "urlprefix-a.com/ redirect=301,https://b.com$path",
                &[],
                &["redirect= makes Fabio answer the request itself; no route taken from it"],
            ),
            ("urlprefix-a.com/ host=dst", &[], &["host= makes Fabio change the Host header"]),
            // Hosts: wildcard, not a DNS name, or a port alone: refused, never every host.
            (
                "urlprefix-*.a.com/",
                &[],
                &["host \"*.a.com\" dropped: an http-route hostname cannot be a wildcard; name the hosts one by one (without it the route would match every host); no route taken from it"],
            ),
            ("urlprefix-a_b.com/", &[], &["host \"a_b.com\" dropped: not a valid DNS hostname"]),
            ("urlprefix-:80/", &[], &["a port without a host"]),
            ("urlprefix-a.com/a?b", &[], &["holds '?'"]),
        ];
        for &(tag, want_groups, want_warnings) in cases {
            let got = tag_routes(F, "web", tag);
            let groups: Vec<String> = got.groups.iter().map(group).collect();
            assert_eq!(
                groups, want_groups,
                "tag {tag:?}, warnings {:?}",
                got.warnings
            );
            let messages: Vec<&str> = got.warnings.iter().map(|w| w.message.as_str()).collect();
            assert_eq!(
                messages.len(),
                want_warnings.len(),
                "tag {tag:?}: {messages:#?}"
            );
            for want in want_warnings {
                assert!(
                    messages.iter().any(|m| m.contains(want)),
                    "tag {tag:?}: no warning with {want:?} in {messages:#?}"
                );
            }
        }
    }

    #[test]
    fn warnings_name_service_and_tag() {
        let tag = rule("Host(`a.com`) && ClientIP(`10.0.0.1`)");
        let got = tag_routes(T, "billing", &tag);
        assert_eq!(
            got.warnings[0].to_string(),
            format!(
                "service \"billing\", tag {tag:?}: alternative Host(`a.com`) && \
                 ClientIP(`10.0.0.1`) skipped: ClientIP(`10.0.0.1`) cannot be expressed by an \
                 http-route (an http-route cannot match on the client address)"
            )
        );
    }

    #[test]
    fn service_routes_merge_tags_by_host_set() {
        let tags = [
            "traefik.http.routers.a.rule=Host(`a.com`) && PathPrefix(`/x`)",
            "traefik.http.routers.b.rule=Host(`a.com`) && PathPrefix(`/y`)",
            "traefik.http.routers.c.rule=Host(`b.com`)",
            "traefik.http.routers.d.rule=Host(`a.com`) && PathPrefix(`/x`)",
            "traefik.http.routers.e.rule=Host(`c.com`) && PathPrefix(`/y`)",
        ];
        let got = service_routes(T, "web", &tags);
        let groups: Vec<String> = got.groups.iter().map(group).collect();
        assert_eq!(
            groups,
            ["a.com -> ^/x", "a.com,c.com -> ^/y", "b.com -> ^/"]
        );
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
    }

    #[test]
    fn service_routes_keep_the_first_rewrite_of_a_match() {
        let tags = [
            "urlprefix-a.com/x strip=/x",
            "urlprefix-a.com/x/",
            "urlprefix-b.com/",
        ];
        let got = service_routes(F, "web", &tags);
        let groups: Vec<String> = got.groups.iter().map(group).collect();
        // `/x/` is routed by the first tag with a rewrite: the second one loses it.
        assert_eq!(groups, ["a.com -> =/x; ^/x/ => /", "b.com -> ^/"]);
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert_eq!(got.warnings[0].tag, "urlprefix-a.com/x/");
        assert!(got.warnings[0].message.contains(
            "prefix /x/ on host a.com is also routed by tag \"urlprefix-a.com/x strip=/x\""
        ));
    }

    #[test]
    fn path_changing_middlewares_skip_path_alternatives() {
        let tags = [
            "traefik.http.routers.api.rule=Host(`a.com`) && PathPrefix(`/api`) || Host(`b.com`)",
            "traefik.http.routers.api.middlewares=auth, strip@consulcatalog",
            "traefik.http.middlewares.strip.stripPrefix.prefixes=/api",
            "traefik.http.middlewares.auth.basicauth.users=u:p",
            "traefik.http.routers.web.rule=Host(`a.com`) && PathPrefix(`/web`)",
            "traefik.http.routers.web.middlewares=auth",
            "traefik.http.routers.other.rule=Host(`a.com`) && PathPrefix(`/o`)",
            "traefik.http.routers.other.middlewares=strip@file",
        ];
        let got = service_routes(T, "web", &tags);
        let groups: Vec<String> = got.groups.iter().map(group).collect();
        // The host-only alternative still routes (prefix / sees every path).
        assert_eq!(groups, ["a.com -> ^/o; ^/web", "b.com -> ^/"]);
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
        assert_eq!(got.warnings[0].tag, tags[0]);
        assert!(got.warnings[0].message.contains(
            "the outer Traefik changes the path with middleware strip (stripprefix) before the \
             gateway sees it, so PathPrefix(`/api`) at the gateway would never match"
        ));
        // One tag alone cannot know about the middleware.
        assert_eq!(tag_routes(T, "web", tags[0]).groups.len(), 2);
        for kind in [
            "stripprefixregex",
            "replacepath",
            "ReplacePathRegex",
            "addPrefix",
        ] {
            let tags = [
                "traefik.http.routers.r.rule=PathPrefix(`/x`)".to_owned(),
                "traefik.http.routers.r.middlewares=m".to_owned(),
                format!("traefik.http.middlewares.m.{kind}.x=y"),
            ];
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let got = service_routes(T, "web", &tags);
            assert!(got.groups.is_empty(), "{kind}: {:?}", got.groups);
        }
    }

    #[test]
    fn groups_are_canonical() {
        let a = tag_routes(
            T,
            "web",
            &rule("Host(`B.com`, `a.com`) && Header(`Y`, `2`) && Header(`x`, `1`) || Host(`a.com`, `b.com`) && Header(`X`, `1`) && Header(`y`, `2`)"),
        );
        assert_eq!(
            a.groups.iter().map(group).collect::<Vec<_>>(),
            ["a.com,b.com -> ^/ h:x=1 h:y=2"]
        );
    }

    #[test]
    fn conflict_keys_use_any_host_for_no_hostnames() {
        let got = tag_routes(
            T,
            "web",
            &rule("PathPrefix(`/x`) || Host(`a.com`, `b.com`) && Path(`/y`)"),
        );
        let keys: Vec<(String, String)> = got
            .groups
            .iter()
            .flat_map(|g| g.conflict_keys())
            .map(|(h, m)| (h.to_owned(), m.path.value.clone()))
            .collect();
        let want = [("*", "/x"), ("a.com", "/y"), ("b.com", "/y")]
            .map(|(h, p)| (h.to_owned(), p.to_owned()));
        assert_eq!(keys, want);
    }

    #[test]
    fn json_is_what_consul_reads() {
        let got = tag_routes(
            T,
            "web",
            &rule("Host(`a.com`) && Path(`/x`) && Method(`GET`) && Header(`K`, `v`) && Query(`q`) && Query(`r`, `1`)"),
        );
        assert_eq!(
            got.groups[0].rule_json("web"),
            json!({
                "Matches": [{
                    "Path": {"Match": "exact", "Value": "/x"},
                    "Method": "GET",
                    "Headers": [{"Match": "exact", "Name": "k", "Value": "v"}],
                    "Query": [
                        {"Match": "present", "Name": "q"},
                        {"Match": "exact", "Name": "r", "Value": "1"}
                    ]
                }],
                "Services": [{"Name": "web"}]
            })
        );
        let strip = tag_routes(F, "web", "urlprefix-/api/ strip=/api/");
        assert_eq!(
            strip.groups[0].rule_json("web"),
            json!({
                "Filters": {"URLRewrite": {"Path": "/"}},
                "Matches": [{"Path": {"Match": "prefix", "Value": "/api/"}}],
                "Services": [{"Name": "web"}]
            })
        );
    }

    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::sample::select(vec![
            "a.com", "B.com", "*.a.com", "a_b", "", "/x", "/x/", "x", "/a?b", "/{id}", "GET",
            "get", "BREW", "k", "v=1", "a b", "/%41", "\u{e9}", "q=",
        ])
        .prop_map(str::to_owned)
    }

    fn any_rule() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = (
            proptest::sample::select(vec![
                "Host",
                "Path",
                "PathPrefix",
                "Method",
                "Header",
                "Query",
                "HostRegexp",
                "ClientIP",
            ]),
            proptest::collection::vec(value(), 1..3),
        )
            .prop_map(|(name, args)| {
                let args: Vec<String> = args.iter().map(|a| format!("`{a}`")).collect();
                format!("{name}({})", args.join(", "))
            });
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || {b}")),
                inner.prop_map(|a| format!("!({a})")),
            ]
        })
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Whatever the tag, what comes out passes Consul's http-route validation, is
        /// canonical, and is every host only where an alternative names no host.
        #[test]
        fn routes_are_valid_canonical_and_never_wider(
            rule_text in any_rule(),
            fabio in (proptest::option::of(value()), value(), proptest::option::of(value())),
        ) {
            let (host, path, strip) = fabio;
            let fabio_tag = format!(
                "urlprefix-{}{}{}",
                host.unwrap_or_default(),
                path,
                strip.map(|s| format!(" strip={s}")).unwrap_or_default()
            );
            for (gateway, tag) in [(T, rule(&rule_text)), (F, fabio_tag)] {
                let got = tag_routes(gateway, "web", &tag);
                prop_assert!(got.groups.windows(2).all(|w| w[0] < w[1]), "{:?}", got.groups);
                // Canonical: a (host, match) is in one group only.
                let keys: Vec<_> = got.groups.iter().flat_map(|g| g.conflict_keys()).collect();
                let unique: BTreeSet<_> = keys.iter().collect();
                prop_assert_eq!(unique.len(), keys.len(), "{:?}", got.groups);
                for g in &got.groups {
                    prop_assert!(!g.matches.is_empty());
                    prop_assert!(g.matches.windows(2).all(|w| w[0] < w[1]), "{:?}", g);
                    for h in &g.hostnames {
                        prop_assert!(tags::check_route_hostname(h).is_ok(), "host {}", h);
                        prop_assert_eq!(h.to_lowercase(), h.clone());
                    }
                    if let Some(r) = &g.rewrite {
                        prop_assert!(r.starts_with('/'), "rewrite {}", r);
                    }
                    for m in &g.matches {
                        prop_assert!(check_path(&m.path.value).is_ok(), "{:?}", m);
                        if let Some(method) = &m.method {
                            prop_assert!(METHODS.contains(&method.as_str()), "{}", method);
                        }
                        prop_assert!(m.headers.windows(2).all(|w| w[0] < w[1]));
                        prop_assert!(m.query.windows(2).all(|w| w[0] < w[1]));
                        prop_assert!(m.headers.iter().all(|h| !h.name.is_empty()));
                        prop_assert!(m.query.iter().all(|q| !q.name.is_empty()));
                    }
                }
                if gateway == T && got.groups.iter().any(|g| g.hostnames.is_empty()) {
                    let Ok(Rule::Branches(branches)) = traefik::parse_rule(&rule_text) else {
                        panic!("groups from a rule that did not parse: {rule_text}")
                    };
                    prop_assert!(
                        branches.iter().any(|b| b.hosts.is_empty()),
                        "every-host group from {}",
                        rule_text
                    );
                }
                if gateway == F && got.groups.iter().any(|g| g.hostnames.is_empty()) {
                    prop_assert!(tag.starts_with("urlprefix-/"), "every-host group from {}", tag);
                }
            }
        }
    }
}
