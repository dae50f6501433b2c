//! Configuration: environment variables in, a valid [`Config`] out, once, at start.
//!
//! The table [`VARIABLES`] is the single source of truth: `--help` is generated from it,
//! the parser reads only names listed in it, and the Nomad job test checks the job's
//! `env` block against it. Every problem is collected (one [`ConfigError`] per variable)
//! so an operator fixes all of them in one go; `main` prints them and exits with 2.

use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One environment variable the daemon reads.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// Default as shown to users ("" when there is none / it is required).
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable the daemon reads, in the order `--help` lists them.
pub const VARIABLES: &[Var] = &[
    Var { name: "TYPEGATEWAY", default: "traefik", help: "outer proxy that reads the ingress service's tags: traefik or fabio" },
    Var { name: "TAGINGRESSSERVICE", default: "", help: "required; tag prefix selecting tags to expose, e.g. gw-us-east (a tag is selected when it starts with gw-us-east-)" },
    Var { name: "SERVICENAMEINGRESSGATEWAY", default: "", help: "required; the ingress gateway's service name, also the name of the ingress-gateway config entry" },
    Var { name: "INGRESSSERVICENAME", default: "<SERVICENAMEINGRESSGATEWAY>-ingress", help: "name of the ingress service registered for the outer proxy" },
    Var { name: "INGRESSSERVICEID", default: "<INGRESSSERVICENAME>[-<NOMAD_ALLOC_ID>]", help: "agent service ID of the ingress service (unique per agent)" },
    Var { name: "NOMAD_ALLOC_ID", default: "", help: "set by Nomad; suffixes the default INGRESSSERVICEID so several gateways can share a node" },
    Var { name: "INGRESSPORT", default: "9997", help: "gateway HTTP listener port: the ingress service's port and the config entry's http listener" },
    Var { name: "INGRESSPORTHTTP2", default: "", help: "optional gateway listener port for services whose protocol is http2" },
    Var { name: "INGRESSPORTGRPC", default: "", help: "optional gateway listener port for services whose protocol is grpc" },
    Var { name: "INGRESSHEALTHCHECKPORT", default: "8443", help: "gateway readiness port; the ingress service's check is GET http://<address>:<port>/ready" },
    Var { name: "INGRESSADDRESS", default: "", help: "address registered for the ingress service and used in its check URL (default: the agent's node address; the check uses 127.0.0.1)" },
    Var { name: "HEALTHPORT", default: "10000", help: "port of this daemon's /health endpoint (0: chosen by the OS, logged at start)" },
    Var { name: "CONSULHTTPURL", default: "$CONSUL_HTTP_ADDR, else http://127.0.0.1:8500", help: "agent address: http://host:port, https://host:port, host:port or unix:///path" },
    Var { name: "CONSUL_HTTP_ADDR", default: "", help: "fallback for CONSULHTTPURL (Consul's standard name)" },
    Var { name: "CONSUL_HTTP_SSL", default: "false", help: "with a bare host:port address, true selects https" },
    Var { name: "CONSULTOKEN", default: "$CONSUL_HTTP_TOKEN_FILE, else $CONSUL_HTTP_TOKEN", help: "ACL token (never logged)" },
    Var { name: "CONSUL_HTTP_TOKEN_FILE", default: "", help: "file holding the ACL token, read once at start (overrides CONSUL_HTTP_TOKEN)" },
    Var { name: "CONSUL_HTTP_TOKEN", default: "", help: "ACL token (Consul's standard name)" },
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
    Var { name: "LOGFORMAT", default: "text", help: "log output: text or json" },
    Var { name: "RUST_LOG", default: "info", help: "log level filter, e.g. info or info,ingress_service_monitor=debug" },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayType {
    Traefik,
    Fabio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration. Once it exists, it is valid.
#[derive(Debug)]
pub struct Config {
    pub gateway_type: GatewayType,
    /// Tag prefix including its trailing `-` (`gw-us-east-`).
    pub tag_prefix: String,
    pub gateway_name: String,
    pub ingress_service_name: String,
    pub ingress_service_id: String,
    pub ingress_port: u16,
    pub ingress_port_http2: Option<u16>,
    pub ingress_port_grpc: Option<u16>,
    pub health_check_port: u16,
    pub ingress_address: Option<String>,
    /// 0 means "let the OS choose" (the bound port is logged).
    pub health_port: u16,
    pub consul: ConsulConfig,
    pub set_service_defaults: bool,
    pub log_format: LogFormat,
    /// RUST_LOG, already parsed.
    pub log_filter: tracing_subscriber::filter::Targets,
}

#[derive(Debug)]
pub struct ConsulConfig {
    pub address: AgentAddress,
    pub token: Option<Token>,
    /// `user[:password]` for HTTP basic auth.
    pub basic_auth: Option<Token>,
    /// TLS material, loaded and parsed at start; `Some` exactly when the address is https.
    pub tls: Option<TlsConfig>,
    pub namespace: Option<String>,
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    Tcp {
        https: bool,
        host: String,
        port: u16,
        /// "" or "/prefix" (no trailing slash): requests go to `<prefix>/v1/...`.
        path_prefix: String,
    },
    Unix {
        path: PathBuf,
    },
}

/// TLS to the agent, loaded from files at start.
#[derive(Debug)]
pub struct TlsConfig {
    /// Trust anchors: CONSUL_CACERT / CONSUL_CAPATH, else the system bundle.
    pub roots: Vec<CertificateDer<'static>>,
    pub client_auth: Option<ClientAuth>,
    /// Name verified and sent as SNI; defaults to the address's host.
    pub server_name: String,
    /// false only when CONSUL_HTTP_SSL_VERIFY says so.
    pub verify: bool,
}

#[derive(Debug)]
pub struct ClientAuth {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A secret: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Token {
        Token(secret)
    }
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// `--help` text, generated from [`VARIABLES`].
pub fn help_text() -> String {
    todo!()
}

/// Parses and validates every variable; all problems are returned together.
/// `get` reads one variable (tests pass a map; `main` passes `std::env::var`).
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    let _ = get;
    todo!()
}
