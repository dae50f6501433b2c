//! A subset of HashiCorp's `go-bexpr`, the `filter=` language of Consul's HTTP API.
//!
//! Supported: `==`, `!=`, `in`, `not in`, `contains`, `not contains`, `is empty`,
//! `is not empty`, joined with `and`, `or`, `not` and parentheses. `matches` (regular
//! expressions) is rejected as unsupported. Expressions are compiled to postfix form by a
//! shunting-yard pass and evaluated against the JSON of each candidate row, so neither
//! step recurses.

use serde_json::Value;

/// The type of a selector, which decides the operators it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelType {
    Str,
    Int,
    Bool,
    /// A list of strings (`ServiceTags`).
    List,
    /// A string map (`ServiceMeta`); `Sel.<key>` selects one value as a string.
    Map,
}

/// The selectors one endpoint accepts (dotted paths into its JSON rows).
pub type Schema = &'static [(&'static str, SelType)];

pub const CATALOG_SERVICE_NODE: Schema = &[
    ("ID", SelType::Str),
    ("Node", SelType::Str),
    ("Address", SelType::Str),
    ("Datacenter", SelType::Str),
    ("TaggedAddresses", SelType::Map),
    ("NodeMeta", SelType::Map),
    ("ServiceKind", SelType::Str),
    ("ServiceID", SelType::Str),
    ("ServiceName", SelType::Str),
    ("ServiceTags", SelType::List),
    ("ServiceAddress", SelType::Str),
    ("ServiceTaggedAddresses", SelType::Map),
    ("ServiceWeights.Passing", SelType::Int),
    ("ServiceWeights.Warning", SelType::Int),
    ("ServiceMeta", SelType::Map),
    ("ServicePort", SelType::Int),
    ("ServiceEnableTagOverride", SelType::Bool),
    ("ServiceProxy.DestinationServiceName", SelType::Str),
    ("ServiceProxy.DestinationServiceID", SelType::Str),
    ("ServiceProxy.LocalServiceAddress", SelType::Str),
    ("ServiceProxy.LocalServicePort", SelType::Int),
    ("ServiceProxy.Mode", SelType::Str),
    ("ServiceConnect.Native", SelType::Bool),
];

pub const HEALTH_SERVICE_NODE: Schema = &[
    ("Node.ID", SelType::Str),
    ("Node.Node", SelType::Str),
    ("Node.Address", SelType::Str),
    ("Node.Datacenter", SelType::Str),
    ("Node.TaggedAddresses", SelType::Map),
    ("Node.Meta", SelType::Map),
    ("Service.Kind", SelType::Str),
    ("Service.ID", SelType::Str),
    ("Service.Service", SelType::Str),
    ("Service.Tags", SelType::List),
    ("Service.Address", SelType::Str),
    ("Service.Meta", SelType::Map),
    ("Service.Port", SelType::Int),
    ("Service.EnableTagOverride", SelType::Bool),
    ("Service.Connect.Native", SelType::Bool),
];

pub const AGENT_SERVICE: Schema = &[
    ("Kind", SelType::Str),
    ("ID", SelType::Str),
    ("Service", SelType::Str),
    ("Tags", SelType::List),
    ("Meta", SelType::Map),
    ("Port", SelType::Int),
    ("Address", SelType::Str),
    ("TaggedAddresses", SelType::Map),
    ("Weights.Passing", SelType::Int),
    ("Weights.Warning", SelType::Int),
    ("EnableTagOverride", SelType::Bool),
    ("Datacenter", SelType::Str),
    ("Connect.Native", SelType::Bool),
];

pub const AGENT_CHECK: Schema = &[
    ("Node", SelType::Str),
    ("CheckID", SelType::Str),
    ("Name", SelType::Str),
    ("Status", SelType::Str),
    ("Notes", SelType::Str),
    ("Output", SelType::Str),
    ("ServiceID", SelType::Str),
    ("ServiceName", SelType::Str),
    ("ServiceTags", SelType::List),
    ("Type", SelType::Str),
];

pub const SERVICE_DEFAULTS: Schema = &[
    ("Kind", SelType::Str),
    ("Name", SelType::Str),
    ("Protocol", SelType::Str),
    ("Mode", SelType::Str),
    ("MutualTLSMode", SelType::Str),
    ("ExternalSNI", SelType::Str),
    ("MaxInboundConnections", SelType::Int),
    ("LocalConnectTimeoutMs", SelType::Int),
    ("LocalRequestTimeoutMs", SelType::Int),
    ("BalanceInboundConnections", SelType::Str),
    ("Meta", SelType::Map),
    ("MeshGateway.Mode", SelType::Str),
    ("TransparentProxy.OutboundListenerPort", SelType::Int),
    ("TransparentProxy.DialedDirectly", SelType::Bool),
    ("CreateIndex", SelType::Int),
    ("ModifyIndex", SelType::Int),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    /// `"v" in Sel` / `Sel contains "v"`.
    In,
    NotIn,
    Empty,
    NotEmpty,
}

impl Op {
    fn bexpr_name(self) -> &'static str {
        match self {
            Op::Eq => "Equal",
            Op::Ne => "Not Equal",
            Op::In => "In",
            Op::NotIn => "Not In",
            Op::Empty => "Is Empty",
            Op::NotEmpty => "Is Not Empty",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Coerced {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
struct Match {
    /// JSON path to the value.
    path: Vec<String>,
    sel_type: SelType,
    op: Op,
    value: Coerced,
}

#[derive(Debug, Clone)]
enum Node {
    Match(Match),
    And,
    Or,
    Not,
}

/// A compiled filter expression.
#[derive(Debug, Clone)]
pub struct Filter {
    postfix: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    EqEq,
    NotEq,
    /// A quoted string.
    Quoted(String),
    /// A bare word: selector, keyword or unquoted value.
    Word(String),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
}

fn syntax_error(expr: &str, offset: usize, expected: &str) -> String {
    let col = expr[..offset.min(expr.len())].chars().count() + 1;
    format!("1:{col} ({offset}): no match found, expected: {expected}")
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let bytes = expr.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::EqEq
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::NotEq
            }
            b'"' => {
                let mut out = Vec::new();
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < bytes.len() => {
                            out.push(match bytes[i + 1] {
                                b'n' => b'\n',
                                b't' => b'\t',
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        other => {
                            out.push(other);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(syntax_error(expr, expr.len(), "\"\\\"\""));
                }
                Tok::Quoted(String::from_utf8_lossy(&out).into_owned())
            }
            b'`' => {
                let rest = &expr[i + 1..];
                match rest.find('`') {
                    Some(end) => {
                        i += end + 2;
                        Tok::Quoted(rest[..end].to_string())
                    }
                    None => return Err(syntax_error(expr, expr.len(), "\"`\"")),
                }
            }
            c if is_word_byte(c) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                Tok::Word(expr[start..i].to_string())
            }
            _ => {
                return Err(syntax_error(
                    expr,
                    start,
                    "\"!=\", \"(\", \"==\", \"and\", \"contains\", \"in\", \"is\", \"not\", \"or\" or [ \\t\\r\\n]",
                ))
            }
        };
        tokens.push(Token { tok, offset: start });
    }
    tokens.push(Token {
        tok: Tok::End,
        offset: expr.len(),
    });
    Ok(tokens)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/' | b':' | b'+') || c >= 0x80
}

fn is_keyword(tok: &Tok, keyword: &str) -> bool {
    matches!(tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
}

/// Resolves a selector against the schema: its JSON path and type.
fn resolve_selector(selector: &str, schema: Schema) -> Result<(Vec<String>, SelType), String> {
    if let Some((_, t)) = schema.iter().find(|(name, _)| *name == selector) {
        return Ok((selector.split('.').map(str::to_string).collect(), *t));
    }
    // `Map.<key>`: the key may itself contain dots.
    for (name, t) in schema {
        if *t != SelType::Map {
            continue;
        }
        if let Some(key) = selector
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            if !key.is_empty() {
                let mut path: Vec<String> = name.split('.').map(str::to_string).collect();
                path.push(key.to_string());
                return Ok((path, SelType::Str));
            }
        }
    }
    Err(format!(
        "Selector {} is not valid",
        crate::util::go_quote(selector)
    ))
}

fn op_allowed(sel_type: SelType, op: Op) -> bool {
    match sel_type {
        SelType::Str => true,
        SelType::Int | SelType::Bool => matches!(op, Op::Eq | Op::Ne),
        SelType::List | SelType::Map => {
            matches!(op, Op::In | Op::NotIn | Op::Empty | Op::NotEmpty)
        }
    }
}

fn coerce(selector: &str, sel_type: SelType, op: Op, raw: &str) -> Result<Coerced, String> {
    let fail = || {
        format!(
            "Failed to coerce value {} for selector {}",
            crate::util::go_quote(raw),
            crate::util::go_quote(selector)
        )
    };
    match (sel_type, op) {
        (_, Op::Empty | Op::NotEmpty) => Ok(Coerced::None),
        (SelType::Int, _) => raw.parse::<i64>().map(Coerced::Int).map_err(|_| fail()),
        (SelType::Bool, _) => crate::util::parse_go_bool(raw)
            .map(Coerced::Bool)
            .ok_or_else(fail),
        _ => Ok(Coerced::Str(raw.to_string())),
    }
}

fn value_text(tok: &Tok) -> Option<String> {
    match tok {
        Tok::Quoted(s) | Tok::Word(s) => Some(s.clone()),
        _ => None,
    }
}

/// Parses one match expression starting at `tokens[*pos]`.
fn parse_match(
    expr: &str,
    tokens: &[Token],
    pos: &mut usize,
    schema: Schema,
) -> Result<Match, String> {
    let at = |i: usize| &tokens[i.min(tokens.len() - 1)];
    let first = at(*pos).clone();
    // `"value" [not] in Selector`
    let value_first = match &first.tok {
        Tok::Quoted(_) => true,
        Tok::Word(_) => {
            is_keyword(&at(*pos + 1).tok, "in")
                || (is_keyword(&at(*pos + 1).tok, "not") && is_keyword(&at(*pos + 2).tok, "in"))
        }
        _ => false,
    };
    if value_first {
        let raw = value_text(&first.tok).unwrap_or_default();
        let mut i = *pos + 1;
        let mut op = Op::In;
        if is_keyword(&at(i).tok, "not") {
            op = Op::NotIn;
            i += 1;
        }
        if !is_keyword(&at(i).tok, "in") {
            return Err(syntax_error(
                expr,
                at(i).offset,
                "\"in\", \"not\" or [ \\t\\r\\n]",
            ));
        }
        i += 1;
        let selector = match &at(i).tok {
            Tok::Word(w) => w.clone(),
            _ => {
                return Err(syntax_error(
                    expr,
                    at(i).offset,
                    "[A-Za-z_] or [ \\t\\r\\n]",
                ))
            }
        };
        *pos = i + 1;
        return build_match(&selector, op, &raw, schema);
    }
    let selector = match &first.tok {
        Tok::Word(w) => w.clone(),
        _ => {
            return Err(syntax_error(
                expr,
                first.offset,
                "\"(\", \"not\", [A-Za-z_], [\"`] or [ \\t\\r\\n]",
            ))
        }
    };
    let mut i = *pos + 1;
    let next = at(i).tok.clone();
    let (op, raw) = match next {
        Tok::EqEq | Tok::NotEq => {
            let op = if next == Tok::EqEq { Op::Eq } else { Op::Ne };
            let raw = value_text(&at(i + 1).tok).ok_or_else(|| {
                syntax_error(expr, at(i + 1).offset, "[\"`], [0-9] or [A-Za-z_]")
            })?;
            i += 2;
            (op, raw)
        }
        ref t if is_keyword(t, "is") => {
            let mut op = Op::Empty;
            i += 1;
            if is_keyword(&at(i).tok, "not") {
                op = Op::NotEmpty;
                i += 1;
            }
            if !is_keyword(&at(i).tok, "empty") {
                return Err(syntax_error(expr, at(i).offset, "\"empty\", \"not\" or [ \\t\\r\\n]"));
            }
            i += 1;
            (op, String::new())
        }
        ref t if is_keyword(t, "contains")
            || is_keyword(t, "matches")
            || (is_keyword(t, "not")
                && (is_keyword(&at(i + 1).tok, "contains")
                    || is_keyword(&at(i + 1).tok, "matches"))) =>
        {
            let mut negate = false;
            if is_keyword(t, "not") {
                negate = true;
                i += 1;
            }
            if is_keyword(&at(i).tok, "matches") {
                return Err("the \"matches\" operator is not supported by consul-sim".to_string());
            }
            i += 1;
            let raw = value_text(&at(i).tok).ok_or_else(|| {
                syntax_error(expr, at(i).offset, "[\"`], [0-9] or [A-Za-z_]")
            })?;
            i += 1;
            (if negate { Op::NotIn } else { Op::In }, raw)
        }
        _ => {
            return Err(syntax_error(
                expr,
                at(i).offset,
                "\"!=\", \".\", \"==\", \"contains\", \"in\", \"is\", \"matches\", \"not\" or [ \\t\\r\\n]",
            ))
        }
    };
    *pos = i;
    build_match(&selector, op, &raw, schema)
}

fn build_match(selector: &str, op: Op, raw: &str, schema: Schema) -> Result<Match, String> {
    let (path, sel_type) = resolve_selector(selector, schema)?;
    if !op_allowed(sel_type, op) {
        return Err(format!(
            "Invalid match operator {} for selector {}",
            crate::util::go_quote(op.bexpr_name()),
            crate::util::go_quote(selector)
        ));
    }
    let value = coerce(selector, sel_type, op, raw)?;
    Ok(Match {
        path,
        sel_type,
        op,
        value,
    })
}

fn precedence(node: &Node) -> u8 {
    match node {
        Node::Not => 3,
        Node::And => 2,
        Node::Or => 1,
        Node::Match(_) => 0,
    }
}

/// Compiles `expr` for rows described by `schema`. Errors are bexpr-like messages.
pub fn parse(expr: &str, schema: Schema) -> Result<Filter, String> {
    let tokens = tokenize(expr)?;
    // Operator stack entries: `None` marks an open parenthesis.
    let mut ops: Vec<Option<Node>> = Vec::new();
    let mut postfix: Vec<Node> = Vec::new();
    let mut pos = 0;
    let mut expect_operand = true;
    loop {
        let token = &tokens[pos];
        if expect_operand {
            match &token.tok {
                Tok::LParen => {
                    ops.push(None);
                    pos += 1;
                }
                t if is_keyword(t, "not") => {
                    ops.push(Some(Node::Not));
                    pos += 1;
                }
                Tok::End if tokens.len() == 1 => {
                    // An empty filter matches everything; callers skip it, but be safe.
                    return Ok(Filter { postfix });
                }
                _ => {
                    let m = parse_match(expr, &tokens, &mut pos, schema)?;
                    postfix.push(Node::Match(m));
                    expect_operand = false;
                }
            }
            continue;
        }
        match &token.tok {
            t if is_keyword(t, "and") || is_keyword(t, "or") => {
                let node = if is_keyword(t, "and") {
                    Node::And
                } else {
                    Node::Or
                };
                while let Some(Some(top)) = ops.last() {
                    if precedence(top) >= precedence(&node) {
                        if let Some(Some(n)) = ops.pop() {
                            postfix.push(n);
                        }
                    } else {
                        break;
                    }
                }
                ops.push(Some(node));
                pos += 1;
                expect_operand = true;
            }
            Tok::RParen => {
                let mut found = false;
                while let Some(entry) = ops.pop() {
                    match entry {
                        Some(n) => postfix.push(n),
                        None => {
                            found = true;
                            break;
                        }
                    }
                }
                if !found {
                    return Err(syntax_error(
                        expr,
                        token.offset,
                        "\"and\", \"or\" or [ \\t\\r\\n]",
                    ));
                }
                pos += 1;
                // A `not` applied to the parenthesised group.
                while let Some(Some(Node::Not)) = ops.last() {
                    ops.pop();
                    postfix.push(Node::Not);
                }
            }
            Tok::End => {
                while let Some(entry) = ops.pop() {
                    match entry {
                        Some(n) => postfix.push(n),
                        None => {
                            return Err(syntax_error(
                                expr,
                                token.offset,
                                "\")\", \"and\", \"or\" or [ \\t\\r\\n]",
                            ))
                        }
                    }
                }
                return Ok(Filter { postfix });
            }
            _ => {
                return Err(syntax_error(
                    expr,
                    token.offset,
                    "\"and\", \"or\", EOF or [ \\t\\r\\n]",
                ))
            }
        }
    }
}

/// Rows a filter can look into: the value at a selector path, if any.
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<Value>;
}

impl Fields for Value {
    fn field(&self, path: &[String]) -> Option<Value> {
        lookup(self, path).cloned()
    }
}

impl Filter {
    /// Whether `row` passes the filter.
    pub fn matches<R: Fields + ?Sized>(&self, row: &R) -> bool {
        let mut stack: Vec<bool> = Vec::new();
        for node in &self.postfix {
            match node {
                Node::Match(m) => stack.push(eval_match(m, row)),
                Node::Not => {
                    let v = stack.pop().unwrap_or(false);
                    stack.push(!v);
                }
                Node::And | Node::Or => {
                    let b = stack.pop().unwrap_or(false);
                    let a = stack.pop().unwrap_or(false);
                    stack.push(if matches!(node, Node::And) {
                        a && b
                    } else {
                        a || b
                    });
                }
            }
        }
        stack.pop().unwrap_or(true)
    }
}

pub fn lookup<'a>(row: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = row;
    for seg in path {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn as_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn eval_match<R: Fields + ?Sized>(m: &Match, row: &R) -> bool {
    let owned = row.field(&m.path);
    let v = owned.as_ref();
    match m.sel_type {
        SelType::Str => {
            let text = as_text(v);
            match (&m.op, &m.value) {
                (Op::Eq, Coerced::Str(want)) => &text == want,
                (Op::Ne, Coerced::Str(want)) => &text != want,
                (Op::In, Coerced::Str(want)) => text.contains(want.as_str()),
                (Op::NotIn, Coerced::Str(want)) => !text.contains(want.as_str()),
                (Op::Empty, _) => text.is_empty(),
                (Op::NotEmpty, _) => !text.is_empty(),
                _ => false,
            }
        }
        SelType::Int => {
            let got = v.and_then(Value::as_i64).unwrap_or(0);
            match (&m.op, &m.value) {
                (Op::Eq, Coerced::Int(want)) => got == *want,
                (Op::Ne, Coerced::Int(want)) => got != *want,
                _ => false,
            }
        }
        SelType::Bool => {
            let got = v.and_then(Value::as_bool).unwrap_or(false);
            match (&m.op, &m.value) {
                (Op::Eq, Coerced::Bool(want)) => got == *want,
                (Op::Ne, Coerced::Bool(want)) => got != *want,
                _ => false,
            }
        }
        SelType::List => {
            let items: Vec<String> = v
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| as_text(Some(x))).collect())
                .unwrap_or_default();
            match (&m.op, &m.value) {
                (Op::In, Coerced::Str(want)) => items.iter().any(|x| x == want),
                (Op::NotIn, Coerced::Str(want)) => !items.iter().any(|x| x == want),
                (Op::Empty, _) => items.is_empty(),
                (Op::NotEmpty, _) => !items.is_empty(),
                _ => false,
            }
        }
        SelType::Map => {
            let map = v.and_then(Value::as_object);
            let len = map.map(|m| m.len()).unwrap_or(0);
            match (&m.op, &m.value) {
                (Op::In, Coerced::Str(want)) => map.is_some_and(|m| m.contains_key(want)),
                (Op::NotIn, Coerced::Str(want)) => !map.is_some_and(|m| m.contains_key(want)),
                (Op::Empty, _) => len == 0,
                (Op::NotEmpty, _) => len != 0,
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(kind: &str, name: &str, tags: &[&str]) -> Value {
        json!({"ServiceKind": kind, "ServiceName": name, "ServiceTags": tags,
               "ServiceMeta": {"version": "2"}, "ServicePort": 8080})
    }

    #[test]
    fn expressions_select_the_expected_rows() {
        let web = row("", "web", &["ingress", "v1"]);
        let proxy = row("connect-proxy", "web-sidecar-proxy", &["ingress"]);
        let gateway = row("ingress-gateway", "edge", &[]);
        let cases: &[(&str, [bool; 3])] = &[
            ("ServiceKind == \"\"", [true, false, false]),
            ("ServiceKind != \"connect-proxy\"", [true, false, true]),
            ("ServiceKind == \"ingress-gateway\"", [false, false, true]),
            ("ServiceKind == ingress-gateway", [false, false, true]),
            ("ServiceName == \"web\"", [true, false, false]),
            ("ServiceName != \"web\"", [false, true, true]),
            ("\"ingress\" in ServiceTags", [true, true, false]),
            ("\"ingress\" not in ServiceTags", [false, false, true]),
            ("ServiceTags contains \"v1\"", [true, false, false]),
            ("ServiceTags is empty", [false, false, true]),
            ("ServiceTags is not empty", [true, true, false]),
            (
                "ServiceKind == \"\" and \"ingress\" in ServiceTags",
                [true, false, false],
            ),
            (
                "ServiceKind == \"connect-proxy\" or ServiceName == \"edge\"",
                [false, true, true],
            ),
            ("not ServiceKind == \"\"", [false, true, true]),
            (
                "not (ServiceKind == \"\" or ServiceName == \"edge\")",
                [false, true, false],
            ),
            (
                "not ServiceKind == \"\" and ServiceName == \"edge\"",
                [false, false, true],
            ),
            ("ServiceMeta.version == \"2\"", [true, true, true]),
            ("\"version\" in ServiceMeta", [true, true, true]),
            ("ServicePort == 8080", [true, true, true]),
            ("\"eb\" in ServiceName", [true, true, false]),
            ("ServiceName == `web`", [true, false, false]),
        ];
        for (expr, want) in cases {
            let filter = match parse(expr, CATALOG_SERVICE_NODE) {
                Ok(f) => f,
                Err(e) => panic!("{expr}: {e}"),
            };
            let got = [
                filter.matches(&web),
                filter.matches(&proxy),
                filter.matches(&gateway),
            ];
            assert_eq!(got, *want, "expression {expr}");
        }
    }

    #[test]
    fn bad_expressions_are_rejected_with_parser_messages() {
        let cases: &[(&str, &str)] = &[
            ("ServiceKind = \"\"", "1:13 (12): no match found"),
            ("ServiceKind ==", "no match found"),
            ("(ServiceKind == \"\"", "no match found"),
            ("ServiceKind == \"\" and", "no match found"),
            ("ServiceKind == \"\" \"x\"", "no match found"),
            ("Foo == \"x\"", "Selector \"Foo\" is not valid"),
            (
                "ServiceTags == \"x\"",
                "Invalid match operator \"Equal\" for selector \"ServiceTags\"",
            ),
            ("ServicePort == abc", "Failed to coerce value \"abc\""),
            ("ServiceName matches \"x\"", "not supported"),
            ("ServiceName == \"unterminated", "no match found"),
        ];
        for (expr, want) in cases {
            match parse(expr, CATALOG_SERVICE_NODE) {
                Ok(_) => panic!("{expr} parsed"),
                Err(e) => assert!(e.contains(want), "{expr}: got {e:?}, want {want:?}"),
            }
        }
    }
}
