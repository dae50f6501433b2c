//! Host names: which ones Consul accepts in an ingress-gateway entry ([`check_host`]) and
//! which ones an http-route may carry ([`check_route_hostname`]).

use std::fmt;

/// Why Consul would refuse a host in an ingress-gateway entry (or why we refuse it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProblem {
    /// `*` alone would catch every host; never written.
    CatchAll,
    /// Not a DNS name (Consul: `Host "<h>" must be a valid DNS hostname`).
    NotDnsName,
    /// `*` somewhere other than a leading `*.` label.
    MisplacedWildcard,
    /// A wildcard in an http-route hostname (Consul: `host "<h>" must not be a wildcard`).
    Wildcard,
    /// A trailing dot in an http-route hostname: Envoy compares domains literally, so
    /// `a.com.` would never match the `Host: a.com` clients send.
    TrailingDot,
}

impl fmt::Display for HostProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostProblem::CatchAll => "a bare '*' host would catch every request; name the hosts",
            HostProblem::NotDnsName => "not a valid DNS hostname",
            HostProblem::MisplacedWildcard => {
                "a wildcard is only allowed as the leftmost label (*.example.com)"
            }
            HostProblem::Wildcard => {
                "an http-route hostname cannot be a wildcard; name the hosts one by one"
            }
            HostProblem::TrailingDot => {
                "an http-route hostname with a trailing dot never matches; drop the dot"
            }
        })
    }
}

/// Longest name `dns.IsDomainName` accepts, not counting a trailing dot.
const MAX_NAME_LEN: usize = 255;
/// Longest label `dns.IsDomainName` accepts.
const MAX_LABEL_LEN: usize = 63;

/// Checks a host against Consul's ingress-gateway host rules (consul-api §6.2 rules 15-17,
/// `dns.IsDomainName` semantics) so a written entry is never rejected for a host.
///
/// Stricter than Consul on purpose: only ASCII letters, digits, `-` and `.` (plus a
/// leading `*.`) are accepted. Consul's lenient check lets through `_`, `:`, spaces or
/// non-ASCII, but no outer proxy routes such a name to the gateway, and Envoy would
/// list it as a certificate SAN. A single trailing dot is accepted, as Consul does.
pub fn check_host(host: &str) -> Result<(), HostProblem> {
    if host == "*" {
        return Err(HostProblem::CatchAll);
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(HostProblem::MisplacedWildcard);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && host.len() - usize::from(host.ends_with('.')) <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(HostProblem::NotDnsName)
    }
}

/// Checks a hostname for an http-route (consul-api-gateway §2): a valid DNS name as for
/// [`check_host`], and neither a wildcard (Consul refuses it on write) nor ending in a dot.
pub fn check_route_hostname(host: &str) -> Result<(), HostProblem> {
    if host.contains('*') {
        return Err(match check_host(host) {
            Err(HostProblem::NotDnsName) => HostProblem::NotDnsName,
            _ => HostProblem::Wildcard,
        });
    }
    check_host(host)?;
    if host.ends_with('.') {
        return Err(HostProblem::TrailingDot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_route_hostname_table() {
        let cases: &[(&str, Result<(), HostProblem>)] = &[
            ("example.com", Ok(())),
            ("a", Ok(())),
            ("xn--bcher-kva.example", Ok(())),
            ("*.example.com", Err(HostProblem::Wildcard)),
            ("*", Err(HostProblem::Wildcard)),
            ("a.*.com", Err(HostProblem::Wildcard)),
            ("*a b", Err(HostProblem::Wildcard)),
            ("*.a_b", Err(HostProblem::NotDnsName)),
            ("example.com.", Err(HostProblem::TrailingDot)),
            ("example.com..", Err(HostProblem::NotDnsName)),
            ("", Err(HostProblem::NotDnsName)),
            ("a_b.com", Err(HostProblem::NotDnsName)),
            ("a.com:80", Err(HostProblem::NotDnsName)),
        ];
        for (host, want) in cases {
            assert_eq!(&check_route_hostname(host), want, "host {host:?}");
        }
    }
}
