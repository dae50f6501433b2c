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
//! planner can warn; [`hosts`] is the lenient form.

use std::fmt;

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

/// Hosts named by one stripped tag (lower-cased, in order of appearance, duplicates kept).
pub fn hosts(gateway: GatewayType, stripped: &str) -> Vec<String> {
    tag_hosts(gateway, stripped).unwrap_or_default()
}

/// Like [`hosts`], but a Traefik rule that does not parse is an error saying why.
pub fn tag_hosts(gateway: GatewayType, stripped: &str) -> Result<Vec<String>, RuleError> {
    match gateway {
        GatewayType::Traefik => match traefik_rule_of(stripped) {
            Some(rule) => parse_traefik_rule(rule),
            None => Ok(Vec::new()),
        },
        GatewayType::Fabio => Ok(fabio_host(stripped).into_iter().collect()),
    }
}

/// The rule expression of a `traefik.http.routers.<router>.rule=<expr>` tag.
/// Traefik reads label keys case-insensitively, so the key is matched that way too.
fn traefik_rule_of(tag: &str) -> Option<&str> {
    let (key, value) = tag.split_once('=')?;
    let mut parts = key.split('.');
    let fixed = [
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ];
    if parts.next().is_some() || fixed[3].is_empty() {
        return None;
    }
    let is = |got: &str, want: &str| got.eq_ignore_ascii_case(want);
    (is(fixed[0], "traefik")
        && is(fixed[1], "http")
        && is(fixed[2], "routers")
        && is(fixed[4], "rule"))
    .then_some(value)
}

/// Hosts of a Traefik rule expression (`Host(`a`) || (Host("b") && PathPrefix(`/x`))`).
pub fn traefik_rule_hosts(rule: &str) -> Vec<String> {
    parse_traefik_rule(rule).unwrap_or_default()
}

/// Why a Traefik rule gives no host: it does not parse (Traefik would refuse the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Traefik rule does not parse ({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    Or,
    And,
    Not,
}

fn tokenize(rule: &str) -> Result<Vec<Token>, RuleError> {
    let mut tokens = Vec::new();
    let mut chars = rule.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '!' => tokens.push(Token::Not),
            '|' | '&' => {
                if chars.next_if(|&(_, next)| next == c).is_none() {
                    return Err(RuleError(format!("lone {c:?} at byte {at}; use {c}{c}")));
                }
                tokens.push(if c == '|' { Token::Or } else { Token::And });
            }
            '`' | '"' | '\'' => {
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, s)) = chars.next() {
                    if s == c {
                        closed = true;
                        break;
                    }
                    // Only "..." strings are Go-interpreted; backtick and ' are raw.
                    if s == '\\' && c == '"' {
                        match chars.next() {
                            Some((_, escaped)) => text.push(escaped),
                            None => break,
                        }
                    } else {
                        text.push(s);
                    }
                }
                if !closed {
                    return Err(RuleError(format!("unterminated {c} string at byte {at}")));
                }
                tokens.push(Token::Str(text));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut ident = String::from(c);
                while let Some((_, next)) =
                    chars.next_if(|&(_, n)| n.is_ascii_alphanumeric() || n == '_')
                {
                    ident.push(next);
                }
                tokens.push(Token::Ident(ident));
            }
            other => return Err(RuleError(format!("unexpected {other:?} at byte {at}"))),
        }
    }
    Ok(tokens)
}

/// Parses a whole rule and returns the arguments of its non-negated `Host` matchers.
///
/// Iterative on purpose: a stack of open groups instead of recursive descent, so a
/// hostile `((((...` cannot exhaust the stack. Negation is tracked as parity, which
/// is exact for host extraction under De Morgan (`!(!Host(a))` still matches `a`).
pub fn parse_traefik_rule(rule: &str) -> Result<Vec<String>, RuleError> {
    let tokens = tokenize(rule)?;
    let mut hosts = Vec::new();
    // Negation parity of each open parenthesised group.
    let mut groups: Vec<bool> = Vec::new();
    let mut pending_not = false;
    let mut expect_operand = true;
    let mut iter = tokens.into_iter().peekable();
    while let Some(token) = iter.next() {
        let negated = groups.last().copied().unwrap_or(false);
        match (expect_operand, token) {
            (true, Token::Not) => pending_not = !pending_not,
            (true, Token::Open) => {
                groups.push(negated ^ pending_not);
                pending_not = false;
            }
            (true, Token::Ident(name)) => {
                if iter.next() != Some(Token::Open) {
                    return Err(RuleError(format!("matcher {name} needs (...)")));
                }
                let args = matcher_args(&mut iter, &name)?;
                if name.eq_ignore_ascii_case("host") && !(negated ^ pending_not) {
                    hosts.extend(args.iter().map(|a| a.to_lowercase()));
                }
                pending_not = false;
                expect_operand = false;
            }
            (false, Token::Or | Token::And) => expect_operand = true,
            (false, Token::Close) => {
                if groups.pop().is_none() {
                    return Err(RuleError("unbalanced ')'".into()));
                }
            }
            (true, token) => {
                return Err(RuleError(format!(
                    "expected a matcher, found {}",
                    describe(&token)
                )))
            }
            (false, token) => {
                return Err(RuleError(format!(
                    "expected || or &&, found {}",
                    describe(&token)
                )))
            }
        }
    }
    if expect_operand {
        return Err(RuleError(
            "the rule ends where a matcher is expected".into(),
        ));
    }
    if !groups.is_empty() {
        return Err(RuleError("unbalanced '('".into()));
    }
    Ok(hosts)
}

/// Arguments of a matcher after its `(`: one or more strings separated by `,`, then `)`.
fn matcher_args(
    iter: &mut impl Iterator<Item = Token>,
    name: &str,
) -> Result<Vec<String>, RuleError> {
    let mut args = Vec::new();
    loop {
        match iter.next() {
            Some(Token::Str(arg)) => args.push(arg),
            other => {
                return Err(RuleError(format!(
                    "{name}(...) expects quoted strings, found {}",
                    other.as_ref().map_or("the end of the rule", describe)
                )))
            }
        }
        match iter.next() {
            Some(Token::Comma) => {}
            Some(Token::Close) => return Ok(args),
            other => {
                return Err(RuleError(format!(
                    "{name}(...) is not closed, found {}",
                    other.as_ref().map_or("the end of the rule", describe)
                )))
            }
        }
    }
}

fn describe(token: &Token) -> &'static str {
    match token {
        Token::Ident(_) => "a matcher name",
        Token::Str(_) => "a string",
        Token::Open => "'('",
        Token::Close => "')'",
        Token::Comma => "','",
        Token::Or => "'||'",
        Token::And => "'&&'",
        Token::Not => "'!'",
    }
}

/// Host of a Fabio `urlprefix-` tag, if it names one.
///
/// Fabio needs a `/` after the host of an HTTP route (it ignores `urlprefix-host`), and
/// `proto=tcp...` routes are TCP/SNI routes that an HTTP listener cannot serve.
pub fn fabio_host(tag: &str) -> Option<String> {
    let spec = tag.strip_prefix("urlprefix-")?.trim_start();
    let mut fields = spec.split_whitespace();
    let route = fields.next()?;
    if fields.any(|opt| {
        opt.split_once('=')
            .is_some_and(|(k, v)| k == "proto" && v.starts_with("tcp"))
    }) {
        return None;
    }
    let (host_port, _path) = route.split_once('/')?;
    let host = host_port.split(':').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_lowercase())
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

#[cfg(test)]
mod tests {
    use super::*;

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
