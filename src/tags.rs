//! Tag parsing, pure: which tags are selected, and which hosts a tag names.
//!
//! Traefik: every `Host(...)` argument of `traefik.http.routers.<router>.rule=<expr>`,
//! quoted with a backtick, `"` or `'`, across `||`, `&&` and parentheses; `HostRegexp`,
//! `HostSNI`, `PathPrefix`, negated `!Host(...)` and other matchers give no host.
//! Fabio: `urlprefix-<host>[:port]/<path> [options]` gives `<host>`; `urlprefix-/path` none.
//! Hosts come out lower-cased; the planner de-duplicates, sorts and validates them.

use crate::config::GatewayType;

/// The tag with the prefix removed, when the tag is selected by `prefix`
/// (`prefix` already ends in `-`, see [`crate::config::Config::tag_prefix`]).
pub fn strip_prefix<'a>(tag: &'a str, prefix: &str) -> Option<&'a str> {
    let _ = (tag, prefix);
    todo!()
}

/// The form a stripped tag takes on the ingress service: Traefik mode turns `'` into a
/// backtick (operators avoid backticks in HCL); Fabio mode leaves it as is.
pub fn ingress_tag(gateway: GatewayType, stripped: &str) -> String {
    let _ = (gateway, stripped);
    todo!()
}

/// Hosts named by one stripped tag (lower-cased, in order of appearance, duplicates kept).
pub fn hosts(gateway: GatewayType, stripped: &str) -> Vec<String> {
    let _ = (gateway, stripped);
    todo!()
}

/// Hosts of a Traefik rule expression (`Host(`a`) || (Host("b") && PathPrefix(`/x`))`).
pub fn traefik_rule_hosts(rule: &str) -> Vec<String> {
    let _ = rule;
    todo!()
}

/// Host of a Fabio `urlprefix-` tag, if it names one.
pub fn fabio_host(tag: &str) -> Option<String> {
    let _ = tag;
    todo!()
}

/// Why Consul would refuse a host in an ingress-gateway entry (or why we refuse it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProblem {
    /// `*` alone would catch every host; never written.
    CatchAll,
    /// Not a DNS name (Consul: `Host "<h>" must be a valid DNS hostname`).
    NotDnsName,
    /// `*` somewhere other than a leading `*.` label.
    MisplacedWildcard,
}

impl std::fmt::Display for HostProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostProblem::CatchAll => "a bare '*' host would catch every request; name the hosts",
            HostProblem::NotDnsName => "not a valid DNS hostname",
            HostProblem::MisplacedWildcard => {
                "a wildcard is only allowed as the leftmost label (*.example.com)"
            }
        })
    }
}

/// Checks a host against Consul's ingress-gateway host rules (consul-api §6.2 rules 15-17,
/// `dns.IsDomainName` semantics) so a written entry is never rejected for a host.
pub fn check_host(host: &str) -> Result<(), HostProblem> {
    let _ = host;
    todo!()
}
