//! Host-name checks of the ingress-gateway validation, written from the behaviour of
//! `miekg/dns.IsDomainName` (lenient: only length and empty-label limits, any bytes
//! allowed). Deliberately independent of the daemon's own checks: the simulator judges
//! what the daemon writes.

/// The maximum wire length of a name, as `IsDomainName` counts it.
const MAX_NAME_WIRE_LEN: usize = 256;
const MAX_LABEL_LEN: usize = 63;

/// `dns.IsDomainName(s)`'s `ok` result.
pub fn is_domain_name(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut name = s.as_bytes().to_vec();
    if name.last() != Some(&b'.') || ends_with_escaped_dot(&name) {
        name.push(b'.');
    }
    let mut wire_len = 0usize;
    let mut label_len = 0usize;
    let mut previous_was_dot = false;
    let mut i = 0usize;
    while i < name.len() {
        match name[i] {
            b'\\' => {
                if wire_len + 1 > MAX_NAME_WIRE_LEN {
                    return false;
                }
                // An escape (`\.` or `\DDD`) stands for one byte of the label.
                if is_ddd(&name[i + 1..]) {
                    i += 4;
                } else {
                    i += 2;
                }
                label_len += 1;
                previous_was_dot = false;
                continue;
            }
            b'.' => {
                if previous_was_dot {
                    return false;
                }
                previous_was_dot = true;
                if label_len > MAX_LABEL_LEN {
                    return false;
                }
                wire_len += 1 + label_len;
                if wire_len > MAX_NAME_WIRE_LEN {
                    return false;
                }
                label_len = 0;
            }
            _ => {
                label_len += 1;
                previous_was_dot = false;
            }
        }
        i += 1;
    }
    true
}

fn is_ddd(s: &[u8]) -> bool {
    s.len() >= 3 && s[..3].iter().all(u8::is_ascii_digit)
}

/// A trailing `\.` is an escaped dot inside the last label, not the root: the name still
/// needs its terminating dot (`dns.Fqdn` semantics).
fn ends_with_escaped_dot(name: &[u8]) -> bool {
    let mut backslashes = 0;
    for &b in name[..name.len().saturating_sub(1)].iter().rev() {
        if b == b'\\' {
            backslashes += 1;
        } else {
            break;
        }
    }
    backslashes % 2 == 1
}

/// The ingress-gateway host rules (#15-#17 of consul-api.md §6.2), in Consul's order.
pub fn validate_ingress_host(gateway_tls_enabled: bool, host: &str) -> Result<(), String> {
    if host == "*" {
        if gateway_tls_enabled {
            return Err("Host '*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN".to_string());
        }
        return Ok(());
    }
    if !is_domain_name(host) {
        return Err(format!(
            "Host {} must be a valid DNS hostname",
            crate::util::go_quote(host)
        ));
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Err(format!(
            "Host {} is not valid, a wildcard specifier is only allowed as the leftmost label",
            crate::util::go_quote(host)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_judged_leniently() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 25].join("."); // 250 bytes
        let too_long_name = vec!["abcdefghi"; 26].join(".");
        let cases: &[(&str, bool)] = &[
            ("shop.example.com", true),
            ("shop.example.com.", true),
            ("localhost", true),
            (".", true),
            ("*", true),
            ("*.example.com", true),
            ("under_score.example.com", true),
            ("with space.example", true),
            ("UPPER.Example.COM", true),
            ("", false),
            ("a..b", false),
            // The version Consul vendors has no leading-dot rule.
            (".leading", true),
            ("trailing..", false),
            (&long_label, true),
            (&too_long_label, false),
            (&long_name, true),
            (&too_long_name, false),
        ];
        for (name, want) in cases {
            assert_eq!(is_domain_name(name), *want, "name {name:?}");
        }
    }

    #[test]
    fn ingress_host_rules_use_consul_texts() {
        let cases: &[(bool, &str, Result<(), &str>)] = &[
            (false, "*", Ok(())),
            (
                true,
                "*",
                Err("Host '*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN"),
            ),
            (false, "*.example.com", Ok(())),
            (
                false,
                "example.*",
                Err("Host \"example.*\" is not valid, a wildcard specifier is only allowed as the leftmost label"),
            ),
            (
                false,
                "*-x.example.com",
                Err("Host \"*-x.example.com\" is not valid, a wildcard specifier is only allowed as the leftmost label"),
            ),
            (
                false,
                "a.*.b",
                Err("Host \"a.*.b\" is not valid, a wildcard specifier is only allowed as the leftmost label"),
            ),
            (false, "a..b", Err("Host \"a..b\" must be a valid DNS hostname")),
            (false, "", Err("Host \"\" must be a valid DNS hostname")),
        ];
        for (tls, host, want) in cases {
            assert_eq!(
                validate_ingress_host(*tls, host),
                want.map_err(str::to_string),
                "host {host:?} tls {tls}"
            );
        }
    }
}
