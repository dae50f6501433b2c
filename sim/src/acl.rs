//! ACL resolution with Consul's matching rules and its 403 texts (consul-api.md §4, §8).

use std::collections::HashMap;

use crate::{Access, Rule};

/// The anonymous token's secret in Consul; its rules come from `set_token("anonymous", ..)`.
pub const ANONYMOUS_SECRET: &str = "anonymous";
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

pub const ACL_NOT_FOUND: &str = "ACL not found";

/// A resource an endpoint needs access to.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    Service(&'a str),
    /// Intentions whose destination is this service (`service-intentions` entries).
    Intention(&'a str),
    Node(&'a str),
    Mesh,
    Operator,
}

/// What a request may do: everything (ACLs off) or what its token's rules grant.
#[derive(Debug, Clone)]
pub struct Authz {
    /// `None` when ACLs are disabled.
    rules: Option<Vec<Rule>>,
    anonymous: bool,
    accessor: String,
}

impl Authz {
    pub fn allow_all() -> Authz {
        Authz {
            rules: None,
            anonymous: false,
            accessor: String::new(),
        }
    }

    /// Resolves the request's secret. `Err` is the 403 body for an unknown token.
    pub fn resolve(
        acl_enabled: bool,
        secret: Option<&str>,
        tokens: &HashMap<String, Vec<Rule>>,
    ) -> Result<Authz, String> {
        if !acl_enabled {
            return Ok(Authz::allow_all());
        }
        match secret {
            None | Some(ANONYMOUS_SECRET) => Ok(Authz {
                rules: Some(tokens.get(ANONYMOUS_SECRET).cloned().unwrap_or_default()),
                anonymous: true,
                accessor: ANONYMOUS_ACCESSOR.to_string(),
            }),
            Some(secret) => match tokens.get(secret) {
                Some(rules) => Ok(Authz {
                    rules: Some(rules.clone()),
                    anonymous: false,
                    accessor: crate::util::uuid_from(secret),
                }),
                None => Err(ACL_NOT_FOUND.to_string()),
            },
        }
    }

    /// The access level the rules grant on `resource`.
    fn level(&self, resource: Resource<'_>) -> Access {
        let Some(rules) = &self.rules else {
            return Access::Write;
        };
        match resource {
            Resource::Service(name) => {
                let exact = rules.iter().rev().find_map(|r| match r {
                    Rule::Service(n, a) if n == name => Some(*a),
                    _ => None,
                });
                exact
                    .or_else(|| longest_prefix(rules, name, true))
                    .unwrap_or(Access::Deny)
            }
            Resource::Intention(name) => intention_level(rules, name),
            Resource::Node(name) => longest_prefix(rules, name, false).unwrap_or(Access::Deny),
            Resource::Mesh => {
                let mesh = rules.iter().rev().find_map(|r| match r {
                    Rule::Mesh(a) => Some(*a),
                    _ => None,
                });
                mesh.or_else(|| operator(rules)).unwrap_or(Access::Deny)
            }
            Resource::Operator => operator(rules).unwrap_or(Access::Deny),
        }
    }

    pub fn can_read(&self, resource: Resource<'_>) -> bool {
        matches!(self.level(resource), Access::Read | Access::Write)
    }

    pub fn can_write(&self, resource: Resource<'_>) -> bool {
        self.level(resource) == Access::Write
    }

    /// Checks `access` on `resource`; `Err` is Consul's 403 text.
    pub fn require(&self, resource: Resource<'_>, access: Access) -> Result<(), String> {
        let ok = match access {
            Access::Deny => true,
            Access::Read => self.can_read(resource),
            Access::Write => self.can_write(resource),
        };
        if ok {
            Ok(())
        } else {
            Err(self.denied(resource, access))
        }
    }

    /// `Permission denied: ...` in the shape of `acl.PermissionDeniedError`.
    pub fn denied(&self, resource: Resource<'_>, access: Access) -> String {
        let level = if access == Access::Write {
            "write"
        } else {
            "read"
        };
        let (perm, name) = match resource {
            Resource::Service(n) => (format!("service:{level}"), Some(n)),
            Resource::Intention(n) => (format!("intention:{level}"), Some(n)),
            Resource::Node(n) => (format!("node:{level}"), Some(n)),
            Resource::Mesh => (format!("mesh:{level}"), None),
            Resource::Operator => (format!("operator:{level}"), None),
        };
        let on = name
            .map(|n| format!(" on {}", crate::util::go_quote(n)))
            .unwrap_or_default();
        if self.anonymous {
            format!("Permission denied: anonymous token lacks permission '{perm}'{on}. The anonymous token is used implicitly when a request does not specify a token.")
        } else {
            format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{perm}'{on}",
                self.accessor
            )
        }
    }
}

fn operator(rules: &[Rule]) -> Option<Access> {
    rules.iter().rev().find_map(|r| match r {
        Rule::Operator(a) => Some(*a),
        _ => None,
    })
}

/// Consul's precedence when rules of the same name merge: deny, then write, then read.
fn stronger(a: Access, b: Access) -> Access {
    match (a, b) {
        (Access::Deny, _) | (_, Access::Deny) => Access::Deny,
        (Access::Write, _) | (_, Access::Write) => Access::Write,
        _ => Access::Read,
    }
}

/// Intention access on `name`: the exact rules of that name if any, else the rules of
/// the longest matching prefix. Within the chosen name, explicit `intentions` levels
/// merge, and without one the merged service policy gives read (read or write) or deny.
fn intention_level(rules: &[Rule], name: &str) -> Access {
    let exact = |r: &Rule| match r {
        Rule::Service(n, a) if n == name => Some((false, *a)),
        Rule::Intentions(n, a) if n == name => Some((true, *a)),
        _ => None,
    };
    let merge = |found: Vec<(bool, Access)>| -> Option<Access> {
        if found.is_empty() {
            return None;
        }
        let explicit = found
            .iter()
            .filter(|(e, _)| *e)
            .map(|(_, a)| *a)
            .reduce(stronger);
        let policy = found
            .iter()
            .filter(|(e, _)| !*e)
            .map(|(_, a)| *a)
            .reduce(stronger);
        Some(explicit.unwrap_or(match policy {
            Some(Access::Read | Access::Write) => Access::Read,
            _ => Access::Deny,
        }))
    };
    if let Some(level) = merge(rules.iter().filter_map(exact).collect()) {
        return level;
    }
    let prefix_of = |r: &Rule| match r {
        Rule::ServicePrefix(p, a) => Some((p.clone(), false, *a)),
        Rule::IntentionsPrefix(p, a) => Some((p.clone(), true, *a)),
        _ => None,
    };
    let matching: Vec<(String, bool, Access)> = rules
        .iter()
        .filter_map(prefix_of)
        .filter(|(p, _, _)| name.starts_with(p.as_str()))
        .collect();
    let Some(longest) = matching.iter().map(|(p, _, _)| p.len()).max() else {
        return Access::Deny;
    };
    merge(
        matching
            .into_iter()
            .filter(|(p, _, _)| p.len() == longest)
            .map(|(_, e, a)| (e, a))
            .collect(),
    )
    .unwrap_or(Access::Deny)
}

/// The rule of the longest matching prefix; on equal length the later rule wins.
fn longest_prefix(rules: &[Rule], name: &str, service: bool) -> Option<Access> {
    let mut best: Option<(usize, Access)> = None;
    for rule in rules {
        let (prefix, access) = match (rule, service) {
            (Rule::ServicePrefix(p, a), true) | (Rule::NodePrefix(p, a), false) => (p, *a),
            _ => continue,
        };
        if name.starts_with(prefix.as_str()) && best.is_none_or(|(len, _)| prefix.len() >= len) {
            best = Some((prefix.len(), access));
        }
    }
    best.map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(rules: Vec<Rule>) -> Authz {
        let mut tokens = HashMap::new();
        tokens.insert("s3cret".to_string(), rules);
        match Authz::resolve(true, Some("s3cret"), &tokens) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn service_rules_match_like_consul() {
        let a = authz(vec![
            Rule::ServicePrefix(String::new(), Access::Read),
            Rule::ServicePrefix("web".into(), Access::Write),
            Rule::ServicePrefix("web-admin".into(), Access::Deny),
            Rule::Service("web-admin-ui".into(), Access::Write),
            Rule::Service("api".into(), Access::Deny),
        ]);
        let cases: &[(&str, bool, bool)] = &[
            // name, can read, can write
            ("db", true, false),
            ("web", true, true),
            ("webshop", true, true),
            ("web-admin", false, false),
            ("web-admin-x", false, false),
            ("web-admin-ui", true, true),
            ("api", false, false),
        ];
        for (name, read, write) in cases {
            assert_eq!(a.can_read(Resource::Service(name)), *read, "read {name}");
            assert_eq!(a.can_write(Resource::Service(name)), *write, "write {name}");
        }
    }

    #[test]
    fn intention_rules_default_from_the_service_policy_and_exact_beats_prefix() {
        let cases: Vec<(Vec<Rule>, &str, Access)> = vec![
            (vec![], "web", Access::Deny),
            (
                vec![Rule::ServicePrefix(String::new(), Access::Write)],
                "web",
                Access::Read,
            ),
            (
                vec![Rule::ServicePrefix(String::new(), Access::Deny)],
                "web",
                Access::Deny,
            ),
            (
                vec![
                    Rule::ServicePrefix(String::new(), Access::Read),
                    Rule::IntentionsPrefix(String::new(), Access::Write),
                ],
                "web",
                Access::Write,
            ),
            // Order does not matter within one name: the merge picks the stronger.
            (
                vec![
                    Rule::IntentionsPrefix(String::new(), Access::Write),
                    Rule::ServicePrefix(String::new(), Access::Read),
                ],
                "web",
                Access::Write,
            ),
            // The exact service rule without `intentions` leaves read only.
            (
                vec![
                    Rule::ServicePrefix(String::new(), Access::Read),
                    Rule::IntentionsPrefix(String::new(), Access::Write),
                    Rule::Service("web".into(), Access::Write),
                ],
                "web",
                Access::Read,
            ),
            (
                vec![
                    Rule::IntentionsPrefix(String::new(), Access::Write),
                    Rule::Service("web".into(), Access::Write),
                    Rule::Intentions("web".into(), Access::Write),
                ],
                "web",
                Access::Write,
            ),
            (
                vec![
                    Rule::IntentionsPrefix(String::new(), Access::Write),
                    Rule::IntentionsPrefix("we".into(), Access::Deny),
                ],
                "web",
                Access::Deny,
            ),
            (
                vec![Rule::IntentionsPrefix("api".into(), Access::Write)],
                "web",
                Access::Deny,
            ),
        ];
        for (rules, name, want) in cases {
            let a = authz(rules.clone());
            assert_eq!(a.level(Resource::Intention(name)), want, "rules {rules:?}");
        }
        let accessor = crate::util::uuid_from("s3cret");
        assert_eq!(
            authz(vec![]).denied(Resource::Intention("web"), Access::Write),
            format!("Permission denied: token with AccessorID '{accessor}' lacks permission 'intention:write' on \"web\"")
        );
    }

    #[test]
    fn mesh_falls_back_to_operator_only_without_a_mesh_rule() {
        let cases: Vec<(Vec<Rule>, bool)> = vec![
            (vec![], false),
            (vec![Rule::Operator(Access::Write)], true),
            (vec![Rule::Operator(Access::Read)], false),
            (vec![Rule::Mesh(Access::Write)], true),
            (
                vec![Rule::Mesh(Access::Read), Rule::Operator(Access::Write)],
                false,
            ),
        ];
        for (rules, want) in cases {
            let a = authz(rules.clone());
            assert_eq!(a.can_write(Resource::Mesh), want, "rules {rules:?}");
        }
    }

    #[test]
    fn denials_use_consul_texts() {
        let a = authz(vec![]);
        let accessor = crate::util::uuid_from("s3cret");
        assert_eq!(
            a.denied(Resource::Service("web"), Access::Write),
            format!("Permission denied: token with AccessorID '{accessor}' lacks permission 'service:write' on \"web\"")
        );
        assert_eq!(
            a.denied(Resource::Mesh, Access::Write),
            format!("Permission denied: token with AccessorID '{accessor}' lacks permission 'mesh:write'")
        );
        let anon = match Authz::resolve(true, None, &HashMap::new()) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            anon.denied(Resource::Service("web"), Access::Write),
            "Permission denied: anonymous token lacks permission 'service:write' on \"web\". The anonymous token is used implicitly when a request does not specify a token."
        );
        assert_eq!(
            Authz::resolve(true, Some("nope"), &HashMap::new()).err(),
            Some("ACL not found".to_string())
        );
        assert!(Authz::resolve(false, Some("nope"), &HashMap::new()).is_ok());
    }
}
