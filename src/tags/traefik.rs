//! Traefik router rules, parsed into disjunctive normal form.
//!
//! A rule (`Host(`a`) && (PathPrefix(`/x`) || Method(`GET`))`) becomes a [`Rule`]: an OR
//! of [`Branch`]es, each an AND of matchers sorted by kind (hosts, one path, methods,
//! headers, query parameters) plus the matchers no http-route can express
//! ([`Unsupported`]). `&&` binds tighter than `||`, as in Traefik (Go operator precedence).
//! Negation is pushed down with De Morgan, so `!!Host(`a`)` is `Host(`a`)` and
//! `!(A || B)` is `!A && !B`; a matcher left negated is unsupported.
//!
//! The parser is iterative (an operator stack, no recursion), so a hostile `((((...` or a
//! 100,000-matcher rule cannot exhaust the stack, and the expansion is capped at
//! [`MAX_BRANCHES`] alternatives, so `(A||B) && (C||D) && ...` cannot grow exponentially.
//! A rule past the cap keeps only its positive hosts ([`Rule::positive_hosts`]), which is
//! all the ingress backend needs.

use std::fmt;

/// Most alternatives a rule may expand to (after distributing `&&` over `||`). 64 is far
/// above any hand-written router (a rule naming 8 hosts, each with 8 paths, is 64 matches)
/// while bounding the expansion at 64 copies of the rule.
pub const MAX_BRANCHES: usize = 64;

/// The rule expression of a `traefik.http.routers.<router>.rule=<expr>` tag.
/// Traefik reads label keys case-insensitively, so the key is matched that way too.
pub(crate) fn router_rule(tag: &str) -> Option<&str> {
    router_setting(tag, "rule").map(|(_, rule)| rule)
}

/// `(router, value)` of a `traefik.http.routers.<router>.<setting>=<value>` tag, the key
/// matched case-insensitively as Traefik does.
pub(crate) fn router_setting<'t>(tag: &'t str, setting: &str) -> Option<(&'t str, &'t str)> {
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
        && is(fixed[4], setting))
    .then_some((fixed[3], value))
}

/// `(middleware, type)` of a `traefik.http.middlewares.<name>.<type>[.<option>]=...` tag
/// (type lower-cased).
pub(crate) fn middleware_type(tag: &str) -> Option<(&str, String)> {
    let (key, _) = tag.split_once('=')?;
    let mut parts = key.split('.');
    let is = |got: Option<&str>, want: &str| got.is_some_and(|g| g.eq_ignore_ascii_case(want));
    if !(is(parts.next(), "traefik") && is(parts.next(), "http") && is(parts.next(), "middlewares"))
    {
        return None;
    }
    let name = parts.next().filter(|n| !n.is_empty())?;
    let kind = parts.next().filter(|k| !k.is_empty())?;
    Some((name, kind.to_ascii_lowercase()))
}

/// Why a Traefik rule gives no host: it does not parse (Traefik would refuse the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Traefik rule does not parse ({})", self.0)
    }
}

/// A parsed rule: the alternatives it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// OR of these branches (at least one, at most [`MAX_BRANCHES`]).
    Branches(Vec<Branch>),
    /// The rule expands to more than [`MAX_BRANCHES`] alternatives; only the arguments of
    /// its non-negated `Host` matchers are kept, in order of appearance.
    TooManyBranches { positive_hosts: Vec<String> },
}

impl Rule {
    /// Arguments of the rule's non-negated `Host` matchers (lower-cased), in order of
    /// appearance, a matcher written twice counted twice: the hosts the ingress backend
    /// routes. A host AND-ed with another host or with any other matcher still counts,
    /// as it always has for ingress (an ingress entry only knows hosts).
    pub fn positive_hosts(&self) -> Vec<String> {
        match self {
            Rule::TooManyBranches { positive_hosts } => positive_hosts.clone(),
            Rule::Branches(branches) => {
                // Every matcher of the rule lands in at least one branch of the expansion,
                // possibly several: order by position in the rule and keep each once.
                let mut matchers: Vec<&HostMatcher> =
                    branches.iter().flat_map(|b| &b.hosts).collect();
                matchers.sort_by_key(|m| m.at);
                matchers.dedup_by_key(|m| m.at);
                matchers
                    .into_iter()
                    .flat_map(|m| m.names.iter().cloned())
                    .collect()
            }
        }
    }
}

/// One alternative of a rule: every matcher in it must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branch {
    /// `Host` matchers, each true for any of its names; all must hold.
    pub hosts: Vec<HostMatcher>,
    /// The path matcher, if any (a second, different one is in `unsupported`).
    pub path: Option<PathMatcher>,
    /// `Method` matchers (one verb each after expansion), all must hold.
    pub methods: Vec<String>,
    /// `Header` (v3) / `Headers` (v2) matchers: the header equals the value.
    pub headers: Vec<HeaderMatcher>,
    /// `Query` matchers.
    pub query: Vec<QueryMatcher>,
    /// Matchers an http-route cannot express faithfully.
    pub unsupported: Vec<Unsupported>,
}

impl Branch {
    /// `self && other`.
    fn and(&mut self, other: &Branch) {
        self.hosts.extend(other.hosts.iter().cloned());
        match (&self.path, &other.path) {
            (_, None) => {}
            (None, Some(path)) => self.path = Some(path.clone()),
            (Some(mine), Some(theirs)) if mine == theirs => {}
            (Some(mine), Some(theirs)) => self.unsupported.push(Unsupported {
                matcher: format!("{mine} && {theirs}"),
                reason: Reason::TwoPaths,
            }),
        }
        self.methods.extend(other.methods.iter().cloned());
        self.headers.extend(other.headers.iter().cloned());
        self.query.extend(other.query.iter().cloned());
        self.unsupported.extend(other.unsupported.iter().cloned());
    }
}

/// A `Host(`a`, `b`)` matcher: true for any of `names` (lower-cased, as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatcher {
    pub names: Vec<String>,
    /// Position of the matcher in the rule (0 = first matcher written).
    at: usize,
}

/// How a path is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// `Path`: the whole path.
    Exact,
    /// `PathPrefix`: a plain string prefix (`/dev` matches `/deviate`), in Traefik as in
    /// Consul's http-route.
    Prefix,
}

/// `Path(`/p`)` or `PathPrefix(`/p`)`, value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatcher {
    pub kind: PathKind,
    pub value: String,
}

impl fmt::Display for PathMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            PathKind::Exact => "Path",
            PathKind::Prefix => "PathPrefix",
        };
        write!(f, "{name}(`{}`)", self.value)
    }
}

/// `Header(`name`, `value`)`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatcher {
    pub name: String,
    pub value: String,
}

/// `Query(`name`, `value`)` (v3), `Query(`name=value`)` (v2): the parameter has that
/// value; `Query(`name`)` (v3), `Query(`name=`)` (v2): the parameter is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatcher {
    pub name: String,
    /// `None`: present with any value.
    pub value: Option<String>,
}

/// A matcher no http-route match can express faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The matcher as written (arguments quoted with backticks), `!` included.
    pub matcher: String,
    pub reason: Reason,
}

/// Why a matcher is unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Negated,
    HostPattern,
    Regexp,
    ClientIp,
    TcpOnly,
    HostHeader,
    TwoPaths,
    HeaderArity,
    QueryForm,
    Unknown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Negated => "an http-route cannot negate a match",
            Reason::HostPattern => "http-route hostnames cannot be patterns or wildcards",
            Reason::Regexp => {
                "regular expressions are not carried over (Go's regexp and Envoy's RE2 differ)"
            }
            Reason::ClientIp => "an http-route cannot match on the client address",
            Reason::TcpOnly => "HostSNI belongs to TCP routers",
            Reason::HostHeader => "name the hosts with Host(...)",
            Reason::TwoPaths => "an http-route match holds one path",
            Reason::HeaderArity => "Header(...) takes a name and a value",
            Reason::QueryForm => {
                "Query(...) takes `name`, `name`, `value` (v3) or `name=value` strings (v2)"
            }
            Reason::Unknown => "not an HTTP matcher the daemon knows",
        })
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

/// An operand on the parser's stack: alternatives, or too many of them.
enum Dnf {
    Branches(Vec<Branch>),
    TooMany,
}

/// An entry of the parser's operator stack.
#[derive(Clone, Copy)]
enum Op {
    Open,
    /// A binary operator: `tight` for `&&` as written (precedence), `and` for what it
    /// means once negation is pushed down (`&&` inside `!(...)` is an OR).
    Binary {
        tight: bool,
        and: bool,
    },
}

/// Parses a whole rule into its alternatives.
///
/// Iterative on purpose (shunting-yard): a stack of operators and open groups instead of
/// recursive descent. Negation is tracked as parity per open group (De Morgan).
pub fn parse_rule(rule: &str) -> Result<Rule, RuleError> {
    let tokens = tokenize(rule)?;
    let mut operands: Vec<Dnf> = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    // Negation parity of each open parenthesised group.
    let mut groups: Vec<bool> = Vec::new();
    let mut positive_hosts = Vec::new();
    let mut pending_not = false;
    let mut expect_operand = true;
    let mut matchers = 0;
    let mut iter = tokens.into_iter().peekable();
    while let Some(token) = iter.next() {
        let negated = groups.last().copied().unwrap_or(false);
        match (expect_operand, token) {
            (true, Token::Not) => pending_not = !pending_not,
            (true, Token::Open) => {
                groups.push(negated ^ pending_not);
                ops.push(Op::Open);
                pending_not = false;
            }
            (true, Token::Ident(name)) => {
                if iter.next() != Some(Token::Open) {
                    return Err(RuleError(format!("matcher {name} needs (...)")));
                }
                let args = matcher_args(&mut iter, &name)?;
                let negative = negated ^ pending_not;
                if name.eq_ignore_ascii_case("host") && !negative {
                    positive_hosts.extend(args.iter().map(|a| a.to_lowercase()));
                }
                operands.push(Dnf::Branches(matcher(&name, args, negative, matchers)));
                matchers += 1;
                pending_not = false;
                expect_operand = false;
            }
            (false, token @ (Token::Or | Token::And)) => {
                let tight = token == Token::And;
                reduce(&mut operands, &mut ops, tight)?;
                ops.push(Op::Binary {
                    tight,
                    and: tight ^ negated,
                });
                expect_operand = true;
            }
            (false, Token::Close) => {
                if groups.pop().is_none() {
                    return Err(RuleError("unbalanced ')'".into()));
                }
                reduce(&mut operands, &mut ops, false)?;
                ops.pop();
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
    reduce(&mut operands, &mut ops, false)?;
    match (operands.pop(), operands.is_empty()) {
        (Some(Dnf::Branches(branches)), true) => Ok(Rule::Branches(branches)),
        (Some(Dnf::TooMany), true) => Ok(Rule::TooManyBranches { positive_hosts }),
        _ => Err(RuleError("internal: operands left over".into())),
    }
}

/// Applies the operators on top of the stack down to the nearest open group: all of them
/// before a `||` or a `)` (`tight == false`), only the `&&`s before a `&&`
/// (left-associative, `&&` binding tighter than `||`).
fn reduce(operands: &mut Vec<Dnf>, ops: &mut Vec<Op>, tight: bool) -> Result<(), RuleError> {
    while let Some(&Op::Binary { tight: top, and }) = ops.last() {
        if tight && !top {
            break;
        }
        ops.pop();
        let (Some(right), Some(left)) = (operands.pop(), operands.pop()) else {
            return Err(RuleError("internal: operator without operands".into()));
        };
        operands.push(combine(left, right, and));
    }
    Ok(())
}

/// `left && right` or `left || right`, in normal form, capped at [`MAX_BRANCHES`].
fn combine(left: Dnf, right: Dnf, and: bool) -> Dnf {
    let (Dnf::Branches(mut left), Dnf::Branches(right)) = (left, right) else {
        return Dnf::TooMany;
    };
    if !and {
        if left.len() + right.len() > MAX_BRANCHES {
            return Dnf::TooMany;
        }
        left.extend(right);
        return Dnf::Branches(left);
    }
    if left.len().saturating_mul(right.len()) > MAX_BRANCHES {
        return Dnf::TooMany;
    }
    if let [only] = right.as_slice() {
        for branch in &mut left {
            branch.and(only);
        }
        return Dnf::Branches(left);
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut branch = l.clone();
            branch.and(r);
            out.push(branch);
        }
    }
    Dnf::Branches(out)
}

/// The alternatives of one matcher: one branch, or one per argument for the v2 forms
/// that OR their arguments (`Path(`/a`, `/b`)`, `PathPrefix`, `Method`).
fn matcher(name: &str, args: Vec<String>, negative: bool, at: usize) -> Vec<Branch> {
    let written = || {
        let quoted: Vec<String> = args.iter().map(|a| format!("`{a}`")).collect();
        let not = if negative { "!" } else { "" };
        format!("{not}{name}({})", quoted.join(", "))
    };
    let unsupported = |reason| {
        vec![Branch {
            unsupported: vec![Unsupported {
                matcher: written(),
                reason,
            }],
            ..Branch::default()
        }]
    };
    if negative {
        return unsupported(Reason::Negated);
    }
    let is = |want: &str| name.eq_ignore_ascii_case(want);
    let each = |make: &dyn Fn(&String) -> Branch| args.iter().map(make).collect();
    let path = |kind| {
        each(&|value: &String| Branch {
            path: Some(PathMatcher {
                kind,
                value: value.clone(),
            }),
            ..Branch::default()
        })
    };
    if is("host") {
        vec![Branch {
            hosts: vec![HostMatcher {
                names: args.iter().map(|a| a.to_lowercase()).collect(),
                at,
            }],
            ..Branch::default()
        }]
    } else if is("path") {
        path(PathKind::Exact)
    } else if is("pathprefix") {
        path(PathKind::Prefix)
    } else if is("method") {
        each(&|verb: &String| Branch {
            methods: vec![verb.clone()],
            ..Branch::default()
        })
    } else if is("header") || is("headers") {
        match args.as_slice() {
            [name, value] => vec![Branch {
                headers: vec![HeaderMatcher {
                    name: name.clone(),
                    value: value.clone(),
                }],
                ..Branch::default()
            }],
            _ => unsupported(Reason::HeaderArity),
        }
    } else if is("query") {
        match query_matchers(&args) {
            Some(query) => vec![Branch {
                query,
                ..Branch::default()
            }],
            None => unsupported(Reason::QueryForm),
        }
    } else if is("hostregexp") {
        unsupported(Reason::HostPattern)
    } else if ["pathregexp", "headerregexp", "headersregexp", "queryregexp"]
        .iter()
        .any(|n| is(n))
    {
        unsupported(Reason::Regexp)
    } else if is("clientip") {
        unsupported(Reason::ClientIp)
    } else if is("hostsni") || is("hostsniregexp") {
        unsupported(Reason::TcpOnly)
    } else if is("hostheader") {
        unsupported(Reason::HostHeader)
    } else {
        unsupported(Reason::Unknown)
    }
}

/// `Query` arguments: v2 `name=value` strings (all must hold; `name=` is presence, as
/// gorilla/mux reads an empty value), or v3 `name` / `name`, `value`.
fn query_matchers(args: &[String]) -> Option<Vec<QueryMatcher>> {
    if args.first().is_some_and(|a| a.contains('=')) {
        return args
            .iter()
            .map(|arg| {
                let (name, value) = arg.split_once('=')?;
                Some(QueryMatcher {
                    name: name.to_owned(),
                    value: (!value.is_empty()).then(|| value.to_owned()),
                })
            })
            .collect();
    }
    match args {
        [name] => Some(vec![QueryMatcher {
            name: name.clone(),
            value: None,
        }]),
        [name, value] => Some(vec![QueryMatcher {
            name: name.clone(),
            value: Some(value.clone()),
        }]),
        _ => None,
    }
}

/// Parses a whole rule and returns the arguments of its non-negated `Host` matchers,
/// lower-cased, in order of appearance (see [`Rule::positive_hosts`]): the hosts the
/// ingress backend routes.
pub fn parse_traefik_rule(rule: &str) -> Result<Vec<String>, RuleError> {
    parse_rule(rule).map(|rule| rule.positive_hosts())
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The host-only parser the normal form replaced, kept as the oracle for ingress:
    /// the arguments of the non-negated `Host` matchers.
    ///
    /// Iterative on purpose: a stack of open groups instead of recursive descent, so a
    /// hostile `((((...` cannot exhaust the stack. Negation is tracked as parity, which
    /// is exact for host extraction under De Morgan (`!(!Host(a))` still matches `a`).
    fn host_only_parser(rule: &str) -> Result<Vec<String>, RuleError> {
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

    fn branches(rule: &str) -> Vec<Branch> {
        match parse_rule(rule) {
            Ok(Rule::Branches(branches)) => branches,
            other => panic!("{rule:?}: {other:?}"),
        }
    }

    /// Each branch in a compact form: `host:a|b path:=/x method:GET ... !:<matcher>`.
    fn shape(rule: &str) -> Vec<String> {
        branches(rule)
            .iter()
            .map(|b| {
                let mut parts = Vec::new();
                for h in &b.hosts {
                    parts.push(format!("host:{}", h.names.join("|")));
                }
                if let Some(p) = &b.path {
                    let kind = if p.kind == PathKind::Exact { "=" } else { "^" };
                    parts.push(format!("path:{kind}{}", p.value));
                }
                for m in &b.methods {
                    parts.push(format!("method:{m}"));
                }
                for h in &b.headers {
                    parts.push(format!("header:{}={}", h.name, h.value));
                }
                for q in &b.query {
                    parts.push(format!(
                        "query:{}={}",
                        q.name,
                        q.value.as_deref().unwrap_or("*")
                    ));
                }
                for u in &b.unsupported {
                    parts.push(format!("!:{}", u.matcher));
                }
                parts.join(" ")
            })
            .collect()
    }

    #[test]
    fn rules_become_alternatives_table() {
        let cases: &[(&str, &[&str])] = &[
            ("Host(`A.com`)", &["host:a.com"]),
            ("Host(`a`, `b`)", &["host:a|b"]),
            ("Host(`a`) && PathPrefix(`/x`)", &["host:a path:^/x"]),
            ("Host(`a`) && Path(`/x`)", &["host:a path:=/x"]),
            ("Host(`a`) || Host(`b`)", &["host:a", "host:b"]),
            // && binds tighter than ||.
            (
                "Host(`a`) || Host(`b`) && Path(`/x`)",
                &["host:a", "host:b path:=/x"],
            ),
            (
                "(Host(`a`) || Host(`b`)) && Path(`/x`)",
                &["host:a path:=/x", "host:b path:=/x"],
            ),
            (
                "Host(`a`) && (PathPrefix(`/x`) || Method(`GET`))",
                &["host:a path:^/x", "host:a method:GET"],
            ),
            // v2 multi-argument forms OR their arguments.
            ("Path(`/a`, `/b`)", &["path:=/a", "path:=/b"]),
            ("PathPrefix(`/a`, `/b`)", &["path:^/a", "path:^/b"]),
            ("Method(`GET`, `post`)", &["method:GET", "method:post"]),
            ("Header(`X-A`, `1`)", &["header:X-A=1"]),
            ("Headers(`X-A`, `1`)", &["header:X-A=1"]),
            ("Query(`a`, `1`)", &["query:a=1"]),
            ("Query(`a`)", &["query:a=*"]),
            ("Query(`a=1`)", &["query:a=1"]),
            ("Query(`a=`)", &["query:a=*"]),
            ("Query(`a=1`, `b=2`)", &["query:a=1 query:b=2"]),
            ("Query(`a=1`, `b`)", &["!:Query(`a=1`, `b`)"]),
            ("Query(`a`, `b`, `c`)", &["!:Query(`a`, `b`, `c`)"]),
            ("Header(`X-A`)", &["!:Header(`X-A`)"]),
            // Two paths AND-ed are unsupported, the same one twice is one.
            (
                "Path(`/a`) && PathPrefix(`/b`)",
                &["path:=/a !:Path(`/a`) && PathPrefix(`/b`)"],
            ),
            ("PathPrefix(`/a`) && PathPrefix(`/a`)", &["path:^/a"]),
            ("Method(`GET`) && Method(`PUT`)", &["method:GET method:PUT"]),
            // Negation is pushed down (De Morgan); what stays negated is unsupported.
            ("!Host(`a`)", &["!:!Host(`a`)"]),
            ("!!Host(`a`)", &["host:a"]),
            ("!(!Host(`a`))", &["host:a"]),
            (
                "!(Host(`a`) || Path(`/x`))",
                &["!:!Host(`a`) !:!Path(`/x`)"],
            ),
            (
                "!(Host(`a`) && Path(`/x`))",
                &["!:!Host(`a`)", "!:!Path(`/x`)"],
            ),
            (
                "Host(`c`) && !(Host(`a`) && !Path(`/x`))",
                &["host:c !:!Host(`a`)", "host:c path:=/x"],
            ),
            (
                "HostRegexp(`{s:[a-z]+}.a.com`)",
                &["!:HostRegexp(`{s:[a-z]+}.a.com`)"],
            ),
            ("PathRegexp(`^/x`)", &["!:PathRegexp(`^/x`)"]),
            ("HeaderRegexp(`k`, `v.*`)", &["!:HeaderRegexp(`k`, `v.*`)"]),
            ("QueryRegexp(`k`, `v.*`)", &["!:QueryRegexp(`k`, `v.*`)"]),
            ("ClientIP(`10.0.0.0/8`)", &["!:ClientIP(`10.0.0.0/8`)"]),
            ("HostSNI(`a`)", &["!:HostSNI(`a`)"]),
            ("HostHeader(`a`)", &["!:HostHeader(`a`)"]),
            ("Nope(`a`)", &["!:Nope(`a`)"]),
            ("host(`a`) && pathprefix(`/x`)", &["host:a path:^/x"]),
        ];
        for &(rule, want) in cases {
            assert_eq!(shape(rule), want, "rule {rule:?}");
        }
    }

    #[test]
    fn unsupported_matchers_say_why() {
        let cases: &[(&str, Reason)] = &[
            ("!Host(`a`)", Reason::Negated),
            ("HostRegexp(`a`)", Reason::HostPattern),
            ("PathRegexp(`a`)", Reason::Regexp),
            ("ClientIP(`a`)", Reason::ClientIp),
            ("HostSNI(`a`)", Reason::TcpOnly),
            ("HostHeader(`a`)", Reason::HostHeader),
            ("Path(`/a`) && Path(`/b`)", Reason::TwoPaths),
            ("Header(`a`)", Reason::HeaderArity),
            ("Query(`a`, `b`, `c`)", Reason::QueryForm),
            ("Nope(`a`)", Reason::Unknown),
        ];
        for &(rule, want) in cases {
            let got: Vec<Reason> = branches(rule)
                .iter()
                .flat_map(|b| b.unsupported.iter().map(|u| u.reason))
                .collect();
            assert_eq!(got, [want], "rule {rule:?}");
        }
    }

    #[test]
    fn expansion_is_capped() {
        // 2^6 = 64 alternatives: at the cap.
        let six = ["(Host(`a`) || Host(`b`))"; 6].join(" && ");
        assert_eq!(branches(&six).len(), MAX_BRANCHES);
        // 2^7: past it, the positive hosts survive (in order, as written).
        let seven = ["(Host(`a`) || Host(`b`))"; 7].join(" && ");
        let rule = parse_rule(&seven).expect("parses");
        let Rule::TooManyBranches { positive_hosts } = &rule else {
            panic!("{rule:?}")
        };
        assert_eq!(positive_hosts.len(), 14);
        assert_eq!(
            rule.positive_hosts(),
            parse_traefik_rule(&seven).expect("old")
        );
        let wide = vec!["Host(`a`)"; MAX_BRANCHES + 1].join(" || ");
        assert!(matches!(
            parse_rule(&wide),
            Ok(Rule::TooManyBranches { .. })
        ));
        // A huge rule of one branch is fine, and fast.
        let long = vec!["Host(`a`)"; 100_000].join(" && ");
        assert_eq!(branches(&long).len(), 1);
        let deep = format!("{}Host(`a`){}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(branches(&deep).len(), 1);
        let hostile = "(!".repeat(100_000);
        assert!(parse_rule(&hostile).is_err());
    }

    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "Host(`a`)",
            "Host(`B`, \"c\")",
            "host('d')",
            "Path(`/x`, `/y`)",
            "PathPrefix(`/p`)",
            "Method(`GET`, `PUT`)",
            "Header(`k`, `v`)",
            "Query(`q=1`)",
            "HostRegexp(`r`)",
            "ClientIP(`1.2.3.4`)",
            "(",
            ")",
            "!",
            "&&",
            "||",
            " ",
            "&",
            "|",
            "`",
            "Host(`e`",
            "Host()",
            "Host",
            ",",
            "Host(`f`,)",
            "@",
        ])
    }

    /// A well-formed rule from a small grammar (terms up to 4 deep).
    fn well_formed() -> impl Strategy<Value = String> {
        let leaf = prop::sample::select(vec![
            "Host(`a`)",
            "Host(`b`, `c`)",
            "Host(`A`)",
            "Path(`/x`)",
            "PathPrefix(`/p`, `/q`)",
            "Method(`GET`)",
            "HostRegexp(`r`)",
            "Query(`q`)",
        ])
        .prop_map(str::to_owned);
        leaf.prop_recursive(4, 32, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} || {b}")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.prop_map(|a| format!("!{a}")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Ingress keeps its semantics: the positive hosts of the normal form are exactly
        /// what the host-only parser extracted (order and repeats included), and both
        /// refuse the same rules with the same reason.
        #[test]
        fn positive_hosts_equal_the_host_only_parser(
            rule in prop_oneof![
                well_formed(),
                prop::collection::vec(fragment(), 0..24).prop_map(|f| f.concat()),
                prop::collection::vec(well_formed(), 1..9).prop_map(|r| r.join(" && ")),
            ]
        ) {
            let old = host_only_parser(&rule);
            let new = parse_rule(&rule).map(|r| r.positive_hosts());
            prop_assert_eq!(new, old, "rule {}", rule);
        }
    }

    /// Test oracle: evaluates a rule of `Header(`kN`, `v`)` atoms directly, by recursive
    /// descent with Go's precedence, `true` atoms given by `on` (bit N).
    fn evaluate(tokens: &[Token], on: u32) -> bool {
        fn or(t: &[Token], i: &mut usize, on: u32) -> bool {
            let mut value = and(t, i, on);
            while t.get(*i) == Some(&Token::Or) {
                *i += 1;
                value |= and(t, i, on);
            }
            value
        }
        fn and(t: &[Token], i: &mut usize, on: u32) -> bool {
            let mut value = unary(t, i, on);
            while t.get(*i) == Some(&Token::And) {
                *i += 1;
                value &= unary(t, i, on);
            }
            value
        }
        fn unary(t: &[Token], i: &mut usize, on: u32) -> bool {
            *i += 1;
            match &t[*i - 1] {
                Token::Not => !unary(t, i, on),
                Token::Open => {
                    let value = or(t, i, on);
                    *i += 1;
                    value
                }
                Token::Ident(_) => {
                    let Token::Str(key) = &t[*i + 1] else {
                        panic!("atom")
                    };
                    *i += 5; // ( `kN` , `v` )
                    let n: u32 = key[1..].parse().expect("kN");
                    on & (1 << n) != 0
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut i = 0;
        or(tokens, &mut i, on)
    }

    fn holds(branch: &Branch, on: u32) -> bool {
        let bit = |key: &str| on & (1 << key[1..].parse::<u32>().expect("kN")) != 0;
        branch.headers.iter().all(|h| bit(&h.name))
            && branch.unsupported.iter().all(|u| {
                let key = u.matcher.trim_start_matches("!Header(`");
                !bit(&key[..2])
            })
    }

    /// A rule over four independent atoms, parenthesised or not (so precedence matters).
    fn boolean_rule() -> impl Strategy<Value = String> {
        let atom = (0..4u32).prop_map(|n| format!("Header(`k{n}`, `v`)"));
        atom.prop_recursive(5, 40, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} || {b}")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.prop_map(|a| format!("!{a}")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// The normal form matches exactly the requests the rule matches (precedence,
        /// De Morgan and the distribution of && over || are right).
        #[test]
        fn alternatives_match_what_the_rule_matches(rule in boolean_rule()) {
            let tokens = tokenize(&rule).expect("tokens");
            if let Ok(Rule::Branches(branches)) = parse_rule(&rule) {
                for on in 0..16 {
                    let want = evaluate(&tokens, on);
                    let got = branches.iter().any(|b| holds(b, on));
                    prop_assert_eq!(got, want, "rule {} with atoms {:04b}", rule, on);
                }
            }
        }
    }
}
