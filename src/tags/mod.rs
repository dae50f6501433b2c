//! Tag parsing, pure: which tags are selected, and which hosts a tag names.
//!
//! Traefik: every `Host(...)` argument of `traefik.http.routers.<router>.rule=<expr>`,
//! quoted with a backtick, `"` or `'`, across `||`, `&&` and parentheses; `HostRegexp`,
//! `HostSNI`, `PathPrefix`, negated `!Host(...)` and other matchers give no host.
//! Fabio: `urlprefix-<host>[:port]/<path> [options]` gives `<host>`; `urlprefix-/path` none.
//! Hosts come out lower-cased; the planner de-duplicates, sorts and validates them.
//!
//! A rule that does not parse gives no host at all: Traefik refuses such a router, so
//! no request for its hosts ever reaches the gateway. [`tag_hosts`] says why, so the
//! planner can warn.
//!
//! - [`traefik`]: the rule parser, giving alternatives in normal form ([`Rule`]).
//! - [`fabio`]: `urlprefix-` tags ([`FabioRoute`]).
//! - [`host`]: which host names Consul accepts.
//!
//! What those become on an http-route is [`crate::routes`].

pub mod fabio;
pub mod host;
pub mod traefik;

pub use fabio::{fabio_host, fabio_route, fabio_tag_without_strip, FabioRoute};
pub use host::{check_host, check_route_hostname, HostProblem};
pub use traefik::{parse_rule, parse_traefik_rule, Rule, RuleError, MAX_BRANCHES};

use crate::config::GatewayType;

/// The tag with the prefix removed, when the tag is selected by `prefix`
/// (`prefix` already ends in `-`, see [`crate::config::Config::tag_prefix`]).
/// A tag that is the prefix and nothing else is not selected: it names nothing.
pub fn strip_prefix<'a>(tag: &'a str, prefix: &str) -> Option<&'a str> {
    tag.strip_prefix(prefix).filter(|rest| !rest.is_empty())
}

/// The form a stripped tag takes on the ingress service: Traefik mode turns `'` into a
/// backtick (operators avoid backticks in HCL); Fabio mode leaves it as is.
pub fn ingress_tag(gateway: GatewayType, stripped: &str) -> String {
    match gateway {
        GatewayType::Traefik => stripped.replace('\'', "`"),
        GatewayType::Fabio => stripped.to_owned(),
    }
}

/// Hosts named by one stripped tag (lower-cased, in order of appearance, duplicates
/// kept); a Traefik rule that does not parse is an error saying why.
pub fn tag_hosts(gateway: GatewayType, stripped: &str) -> Result<Vec<String>, RuleError> {
    match gateway {
        GatewayType::Traefik => match traefik::router_rule(stripped) {
            Some(rule) => parse_traefik_rule(rule),
            None => Ok(Vec::new()),
        },
        GatewayType::Fabio => Ok(fabio_host(stripped).into_iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lenient forms the tables read best with: no host when the rule does not parse.
    fn hosts(gateway: GatewayType, stripped: &str) -> Vec<String> {
        tag_hosts(gateway, stripped).unwrap_or_default()
    }

    fn traefik_rule_hosts(rule: &str) -> Vec<String> {
        parse_traefik_rule(rule).unwrap_or_default()
    }

    #[test]
    fn strip_prefix_selects_only_prefixed_tags() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "gw-us-east-traefik.enable=true",
                "gw-us-east-",
                Some("traefik.enable=true"),
            ),
            (
                "gw-us-east-urlprefix-a.com/",
                "gw-us-east-",
                Some("urlprefix-a.com/"),
            ),
            ("gw-us-eastern-x", "gw-us-east-", None),
            ("gw-us-east", "gw-us-east-", None),
            ("gw-us-east-", "gw-us-east-", None),
            ("GW-US-EAST-x", "gw-us-east-", None),
            ("traefik.enable=true", "gw-", None),
            ("gw--x", "gw-", Some("-x")),
        ];
        for &(tag, prefix, want) in cases {
            assert_eq!(strip_prefix(tag, prefix), want, "{tag:?} with {prefix:?}");
        }
    }

    #[test]
    fn ingress_tag_converts_quotes_only_for_traefik() {
        let rule = "traefik.http.routers.a.rule=Host('a.com') || Host(\"b.com\")";
        assert_eq!(
            ingress_tag(GatewayType::Traefik, rule),
            "traefik.http.routers.a.rule=Host(`a.com`) || Host(\"b.com\")"
        );
        assert_eq!(
            ingress_tag(GatewayType::Fabio, "urlprefix-a.com/ x='y'"),
            "urlprefix-a.com/ x='y'"
        );
    }

    #[test]
    fn traefik_rule_hosts_table() {
        let cases: &[(&str, &[&str])] = &[
            ("Host(`a.com`)", &["a.com"]),
            ("Host(`A.Com`)", &["a.com"]),
            ("host(`a.com`)", &["a.com"]),
            ("HOST(`a.com`)", &["a.com"]),
            ("Host(`a`) || Host(\"b\")", &["a", "b"]),
            ("Host('a')", &["a"]),
            ("Host(`a`,`b`)", &["a", "b"]),
            ("Host(`a`, \"b\" , 'c')", &["a", "b", "c"]),
            ("(Host('a') && PathPrefix(`/x`)) || Host(`c`)", &["a", "c"]),
            ("Host(`a`) && Host(`a`)", &["a", "a"]),
            ("  Host ( `a` )  ", &["a"]),
            ("((Host(`deep`)))", &["deep"]),
            ("HostRegexp(`{sub:[a-z]+}.a.com`)", &[]),
            ("HostSNI(`a.com`)", &[]),
            ("HostHeader(`a.com`)", &[]),
            ("PathPrefix(`/x`)", &[]),
            ("Path(`/x`) || Method(`GET`)", &[]),
            ("Header(`X-A`, `b`) && Host(`a`)", &["a"]),
            ("!Host(`a`)", &[]),
            ("!Host(`a`) && Host(`b`)", &["b"]),
            ("!(Host(`a`) || Host(`b`)) || Host(`c`)", &["c"]),
            ("!!Host(`a`)", &["a"]),
            ("!(!Host(`a`))", &["a"]),
            ("Host(\"a\\\"b\")", &["a\"b"]),
            // Malformed: Traefik refuses the router, so no host at all.
            ("Host(`a`) || Host(`b`", &[]),
            ("Host(`a`) || Host(`b", &[]),
            ("Host(`a`))", &[]),
            ("(Host(`a`)", &[]),
            ("Host(`a`) | Host(`b`)", &[]),
            ("Host(`a`) ||", &[]),
            ("Host(`a`) Host(`b`)", &[]),
            ("Host()", &[]),
            ("Host(a)", &[]),
            ("Host", &[]),
            ("Host(`a`,)", &[]),
            ("", &[]),
            ("`a`", &[]),
            ("Host(`a`) @", &[]),
            ("\"", &[]),
            ("Host(\"a\\", &[]),
        ];
        for &(rule, want) in cases {
            assert_eq!(traefik_rule_hosts(rule), want, "rule {rule:?}");
        }
    }

    #[test]
    fn malformed_rules_say_why() {
        let cases: &[(&str, &str)] = &[
            ("Host(`a`", "not closed"),
            ("Host(`a`))", "unbalanced ')'"),
            ("(Host(`a`)", "unbalanced '('"),
            ("Host(`a", "unterminated"),
            ("Host(`a`) & Host(`b`)", "lone '&'"),
            ("Host(`a`) ||", "ends where a matcher"),
        ];
        for &(rule, want) in cases {
            let err = parse_traefik_rule(rule).expect_err(rule).to_string();
            assert!(err.contains(want), "rule {rule:?}: {err}");
        }
    }

    #[test]
    fn deeply_nested_rule_does_not_overflow() {
        let rule = format!("{}Host(`a`){}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(traefik_rule_hosts(&rule), ["a"]);
        let unbalanced = "(!".repeat(100_000);
        assert!(traefik_rule_hosts(&unbalanced).is_empty());
    }

    #[test]
    fn hosts_come_only_from_router_rule_tags() {
        let cases: &[(&str, &[&str])] = &[
            (
                "traefik.http.routers.shop.rule=Host(`shop.example.com`)",
                &["shop.example.com"],
            ),
            (
                "traefik.http.routers.shop.rule=Host('a') || Host('b')",
                &["a", "b"],
            ),
            ("Traefik.HTTP.Routers.Shop.Rule=Host(`a`)", &["a"]),
            ("traefik.http.routers.shop.rule=Host(`a=b`)", &["a=b"]),
            ("traefik.http.routers.shop.tls=true", &[]),
            ("traefik.http.routers.shop.rule", &[]),
            ("traefik.http.routers..rule=Host(`a`)", &[]),
            ("traefik.http.routers.a.b.rule=Host(`a`)", &[]),
            ("traefik.tcp.routers.shop.rule=HostSNI(`a`)", &[]),
            ("traefik.http.services.shop.rule=Host(`a`)", &[]),
            ("traefik.enable=true", &[]),
            ("urlprefix-a.com/", &[]),
        ];
        for &(tag, want) in cases {
            assert_eq!(hosts(GatewayType::Traefik, tag), want, "tag {tag:?}");
        }
        assert!(tag_hosts(GatewayType::Traefik, "traefik.http.routers.x.rule=Host(`a`").is_err());
        assert!(hosts(GatewayType::Traefik, "traefik.http.routers.x.rule=Host(`a`").is_empty());
    }

    #[test]
    fn fabio_hosts_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("urlprefix-shop.example.com/", Some("shop.example.com")),
            ("urlprefix-Shop.Example.COM/api", Some("shop.example.com")),
            ("urlprefix-a.com:8080/x", Some("a.com")),
            ("urlprefix-a.com/x strip=/x", Some("a.com")),
            (
                "urlprefix-a.com/ proto=https tlsskipverify=true",
                Some("a.com"),
            ),
            ("urlprefix-*.a.com/", Some("*.a.com")),
            ("urlprefix-/p", None),
            ("urlprefix-/", None),
            ("urlprefix-:3306 proto=tcp", None),
            ("urlprefix-a.com:443 proto=tcp+sni", None),
            ("urlprefix-a.com/ proto=tcp", None),
            ("urlprefix-a.com", None),
            ("urlprefix-", None),
            ("urlprefix-:80/", None),
            ("traefik.http.routers.a.rule=Host(`a`)", None),
            ("prefix-a.com/", None),
        ];
        for &(tag, want) in cases {
            assert_eq!(fabio_host(tag).as_deref(), want, "tag {tag:?}");
            let want_vec: Vec<String> = want.iter().map(|h| h.to_string()).collect();
            assert_eq!(hosts(GatewayType::Fabio, tag), want_vec, "tag {tag:?}");
        }
    }

    #[test]
    fn check_host_table() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        // 4 labels of 63 + 3 dots = 255 characters: the longest name.
        let longest = [long_label.as_str(); 4].join(".");
        let too_long = format!("a.{longest}");
        let cases: Vec<(&str, Result<(), HostProblem>)> = vec![
            ("example.com", Ok(())),
            ("a", Ok(())),
            ("shop-1.example.com", Ok(())),
            ("xn--bcher-kva.example", Ok(())),
            ("example.com.", Ok(())),
            ("*.example.com", Ok(())),
            ("*.com", Ok(())),
            ("EXAMPLE.com", Ok(())),
            (long_label.as_str(), Ok(())),
            (longest.as_str(), Ok(())),
            ("*", Err(HostProblem::CatchAll)),
            ("example.*", Err(HostProblem::MisplacedWildcard)),
            ("*-x.example.com", Err(HostProblem::MisplacedWildcard)),
            ("a.*.b", Err(HostProblem::MisplacedWildcard)),
            ("*.*.b", Err(HostProblem::MisplacedWildcard)),
            ("**.b", Err(HostProblem::MisplacedWildcard)),
            ("*.", Err(HostProblem::NotDnsName)),
            ("", Err(HostProblem::NotDnsName)),
            (".", Err(HostProblem::NotDnsName)),
            (".example.com", Err(HostProblem::NotDnsName)),
            ("a..b", Err(HostProblem::NotDnsName)),
            ("example.com..", Err(HostProblem::NotDnsName)),
            (too_long_label.as_str(), Err(HostProblem::NotDnsName)),
            (too_long.as_str(), Err(HostProblem::NotDnsName)),
            ("a b.com", Err(HostProblem::NotDnsName)),
            ("a.com/x", Err(HostProblem::NotDnsName)),
            ("a.com:8080", Err(HostProblem::NotDnsName)),
            ("my_host.com", Err(HostProblem::NotDnsName)),
            ("bücher.example", Err(HostProblem::NotDnsName)),
            ("a\\.b", Err(HostProblem::NotDnsName)),
        ];
        for (host, want) in cases {
            assert_eq!(check_host(host), want, "host {host:?}");
        }
        // A trailing dot does not count towards the length limit.
        assert_eq!(check_host(&format!("{longest}.")), Ok(()));
    }
}
