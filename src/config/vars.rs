//! The table of variables (the single source of truth for `--help`, the parser and the
//! packaging tests) and the reader that collects one problem per variable.

use std::ffi::OsString;

use super::ConfigError;

/// One environment variable the daemon reads.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// Default as shown to users ("" when there is none / it is required).
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable the daemon reads, in the order `--help` lists them.
// One line per variable keeps the table readable as a table.
#[rustfmt::skip]
pub const VARIABLES: &[Var] = &[
    Var { name: "TYPEGATEWAY", default: "traefik", help: "outer proxy that reads the ingress service's tags: traefik or fabio" },
    Var { name: "CONSULGATEWAY", default: "ingress", help: "Consul gateway kind the daemon configures: ingress (ingress-gateway entry) or api (api-gateway entry and one http-route per service)" },
    Var { name: "TAGINGRESSSERVICE", default: "", help: "required; tag prefix selecting tags to expose, e.g. gw-us-east (a tag is selected when it starts with gw-us-east-)" },
    Var { name: "SERVICENAMEINGRESSGATEWAY", default: "", help: "required; the gateway's service name, also the name of its ingress-gateway or api-gateway config entry" },
    Var { name: "INGRESSSERVICENAME", default: "<SERVICENAMEINGRESSGATEWAY>-ingress", help: "name of the ingress service registered for the outer proxy" },
    Var { name: "INGRESSSERVICEID", default: "<INGRESSSERVICENAME>[-<NOMAD_ALLOC_ID>]", help: "agent service ID of the ingress service (unique per agent)" },
    Var { name: "NOMAD_ALLOC_ID", default: "", help: "set by Nomad; suffixes the default INGRESSSERVICEID so several gateways can share a node" },
    Var { name: "INGRESSPORT", default: "9997", help: "gateway HTTP listener port: the ingress service's port and the config entry's http listener" },
    Var { name: "INGRESSPORTHTTP2", default: "", help: "optional gateway listener port for services whose protocol is http2 (CONSULGATEWAY=ingress only)" },
    Var { name: "INGRESSPORTGRPC", default: "", help: "optional gateway listener port for services whose protocol is grpc (CONSULGATEWAY=ingress only)" },
    Var { name: "INGRESSHEALTHCHECKPORT", default: "8443", help: "gateway readiness port; the ingress service's check is GET http://<address>:<port>/ready" },
    Var { name: "INGRESSADDRESS", default: "", help: "address registered for the ingress service and used in its check URL (default: the agent's node address; the check uses 127.0.0.1)" },
    Var { name: "HEALTHPORT", default: "10000", help: "port of this daemon's /health endpoint (0: chosen by the OS, logged at start)" },
    Var { name: "CONSULHTTPURL", default: "$CONSUL_HTTP_ADDR, else http://127.0.0.1:8500", help: "agent address: http://host:port, https://host:port, host:port or unix:///path" },
    Var { name: "CONSUL_HTTP_ADDR", default: "", help: "fallback for CONSULHTTPURL (Consul's standard name)" },
    Var { name: "CONSUL_HTTP_SSL", default: "false", help: "with a bare host:port address, true selects https" },
    Var { name: "CONSULTOKEN", default: "$CONSUL_HTTP_TOKEN_FILE, else $CONSUL_HTTP_TOKEN, else $CONSUL_TOKEN", help: "ACL token (never logged)" },
    Var { name: "CONSUL_HTTP_TOKEN_FILE", default: "", help: "file holding the ACL token, read once at start (overrides CONSUL_HTTP_TOKEN)" },
    Var { name: "CONSUL_HTTP_TOKEN", default: "", help: "ACL token (Consul's standard name; Nomad 1.8+ sets it from a task's Consul workload identity)" },
    Var { name: "CONSUL_TOKEN", default: "", help: "ACL token as Nomad 1.7+ gives it to a task with a Consul workload identity (used last)" },
    Var { name: "CONSUL_HTTP_AUTH", default: "", help: "HTTP basic auth user[:password] for the agent" },
    Var { name: "CONSUL_CACERT", default: "", help: "PEM CA bundle to verify the agent's certificate (https)" },
    Var { name: "CONSUL_CAPATH", default: "", help: "directory of PEM CA certificates (https)" },
    Var { name: "CONSUL_CLIENT_CERT", default: "", help: "PEM client certificate for mutual TLS (with CONSUL_CLIENT_KEY)" },
    Var { name: "CONSUL_CLIENT_KEY", default: "", help: "PEM private key for mutual TLS (with CONSUL_CLIENT_CERT)" },
    Var { name: "CONSUL_TLS_SERVER_NAME", default: "", help: "name to verify the agent's certificate against (SNI); a :port suffix is ignored" },
    Var { name: "CONSUL_HTTP_SSL_VERIFY", default: "true", help: "false disables verification of the agent's certificate (not for production)" },
    Var { name: "CONSUL_NAMESPACE", default: "", help: "Consul Enterprise namespace sent with every request" },
    Var { name: "CONSUL_PARTITION", default: "", help: "Consul Enterprise admin partition sent with every request" },
    Var { name: "SETSERVICEDEFAULTS", default: "false", help: "true: create service-defaults Protocol=http (create-only) for exposed services that have none" },
    Var { name: "SETINTENTIONS", default: "false", help: "true: keep an allow intention from the gateway in the service-intentions entry of every exposed service (other sources kept)" },
    Var { name: "LOGFORMAT", default: "text", help: "log output: text or json" },
    Var { name: "RUST_LOG", default: "info", help: "log level filter, e.g. info or info,ingress_service_monitor=debug" },
];

/// `--help` text, generated from [`VARIABLES`].
pub fn help_text() -> String {
    let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Usage: ingress-service-monitor [--dry-run | --help | --version]\n\
         \n\
         Exposes Consul mesh services through a Consul Connect Envoy ingress or API gateway.\n\
         It watches the catalog for services tagged with the TAGINGRESSSERVICE prefix,\n\
         registers an ingress service on the gateway's port carrying those tags with the\n\
         prefix stripped (so Traefik or Fabio routes the hosts to the gateway), and writes the\n\
         gateway's config entries (ingress-gateway, or with CONSULGATEWAY=api an api-gateway\n\
         and http-routes) so Envoy routes each host to the right service. It serves /health\n\
         and deregisters the ingress service on SIGTERM or SIGINT. Configuration is read\n\
         from the environment only.\n\
         \n\
         Flags:\n  \
           --dry-run   read Consul once, print the planned registration and config entry as JSON, write nothing, exit\n  \
           --help      print this help and exit\n  \
           --version   print the version and exit\n\
         \n\
         Environment variables:\n",
    );
    for var in VARIABLES {
        let default = if var.default.is_empty() {
            String::new()
        } else {
            format!(" (default: {})", var.default)
        };
        text.push_str(&format!("  {:width$}  {}{}\n", var.name, var.help, default));
    }
    text
}

/// Where the variables come from: `main` passes `std::env::var_os`, tests a map. The
/// raw `OsString` reaches the parser, so a value that is not UTF-8 is reported naming its
/// variable instead of being silently altered.
pub type Source<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Reads variables and collects problems, at most one per variable (the first found:
/// later ones are usually consequences of it).
pub(super) struct Env<'a> {
    get: Source<'a>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Env<'a> {
    pub(super) fn new(get: Source<'a>) -> Env<'a> {
        Env {
            get,
            errors: Vec::new(),
        }
    }

    /// The variable's value; empty means unset. A value that is not UTF-8 is an error
    /// (and then counts as unset, so nothing else is derived from it).
    pub(super) fn value(&mut self, name: &'static str) -> Option<String> {
        debug_assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is read but not listed in VARIABLES"
        );
        match (self.get)(name)?.into_string() {
            Ok(v) => Some(v).filter(|v| !v.is_empty()),
            Err(_) => {
                // Not shown: the variable may hold a secret.
                self.error(
                    name,
                    "the value is not valid UTF-8 (not shown); expected text".into(),
                );
                None
            }
        }
    }

    pub(super) fn error(&mut self, variable: &'static str, message: String) {
        if !self.errors.iter().any(|e| e.variable == variable) {
            self.errors.push(ConfigError { variable, message });
        }
    }

    /// `Some` on success, `None` after recording the error.
    pub(super) fn check<T>(
        &mut self,
        variable: &'static str,
        result: Result<T, String>,
    ) -> Option<T> {
        result.map_err(|message| self.error(variable, message)).ok()
    }

    /// Required when `default` is `None`.
    pub(super) fn parse<T>(
        &mut self,
        name: &'static str,
        default: Option<T>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match (self.value(name), default) {
            (Some(v), _) => {
                let parsed = parse(&v);
                self.check(name, parsed)
            }
            (None, _) if self.has_error(name) => None,
            (None, Some(default)) => Some(default),
            (None, None) => {
                self.error(name, "is required but not set".into());
                None
            }
        }
    }

    /// `Some(None)` when unset, `None` after recording an error.
    pub(super) fn parse_optional<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        self.parse(name, Some(None), |v| parse(v).map(Some))
    }

    /// A boolean in Go's `strconv.ParseBool` forms, which Consul's own variables follow.
    pub(super) fn parse_bool(&mut self, name: &'static str, default: bool) -> Option<bool> {
        self.parse(name, Some(default), |v| {
            parse_bool(v).ok_or_else(|| {
                format!(
                    "{v:?} is not a boolean; expected true or false (or 1, t, T, TRUE, True, \
                     0, f, F, FALSE, False)"
                )
            })
        })
    }

    pub(super) fn has_error(&self, name: &str) -> bool {
        self.errors.iter().any(|e| e.variable == name)
    }
}

/// Go's `strconv.ParseBool`, which Consul's own variables follow.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
