//! The Consul agent connection: address, ACL token, basic auth, Enterprise names and TLS.
//!
//! TLS material is read and the rustls client configuration is built here, while
//! parsing, so an unreadable CA bundle, a key that is not a key or a key that does not
//! belong to its certificate is reported with the other configuration errors (exit 2)
//! and the client that uses it can no longer fail on TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::vars::Env;
use super::{is_hostname, parse_port, ConfigError};

#[derive(Debug)]
pub struct ConsulConfig {
    pub address: AgentAddress,
    pub token: Option<Token>,
    /// `user[:password]` for HTTP basic auth.
    pub basic_auth: Option<Token>,
    /// Built at start; `Some` exactly when the address is https.
    pub tls: Option<TlsConfig>,
    pub namespace: Option<String>,
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    Tcp {
        https: bool,
        /// Without brackets, also for IPv6 literals.
        host: String,
        port: u16,
        /// "" or "/prefix" (no trailing slash): requests go to `<prefix>/v1/...`.
        path_prefix: String,
    },
    Unix {
        path: PathBuf,
    },
}

/// TLS to the agent, ready to use: the rustls configuration (trust anchors, client
/// certificate, verification policy, ALPN) and the name verified and sent as SNI.
pub struct TlsConfig {
    pub client_config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    /// false only when CONSUL_HTTP_SSL_VERIFY says so.
    pub verify: bool,
    /// Trust anchors in use (0 when verification is off).
    pub roots: usize,
    /// Certificates of the CA bundle that rustls could not use (main logs a warning).
    pub ignored_roots: usize,
    /// Whether a client certificate is presented (mutual TLS).
    pub client_auth: bool,
}

/// The client certificate chain and its key (CONSUL_CLIENT_CERT / _KEY), loaded and
/// checked to belong together.
pub type ClientAuth = Arc<CertifiedKey>;

impl TlsConfig {
    /// Builds the rustls configuration. `roots` are ignored without verification. Errors
    /// name the variable to fix; the parser reports them with the others (the only one
    /// left once the parser checked the material: verification with no trust anchor).
    pub fn build(
        roots: RootCertStore,
        client_auth: Option<ClientAuth>,
        server_name: ServerName<'static>,
        verify: bool,
    ) -> Result<TlsConfig, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError {
                variable: "CONSULHTTPURL",
                message: format!("TLS setup failed: {e}"),
            })?;
        let root_count = if verify { roots.len() } else { 0 };
        let builder = if verify {
            if roots.is_empty() {
                return Err(ConfigError {
                    variable: "CONSUL_CACERT",
                    message: "no usable CA certificate (CONSUL_CACERT / CONSUL_CAPATH / system \
                              bundle)"
                        .into(),
                });
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        };
        let has_client_auth = client_auth.is_some();
        let mut config = match client_auth {
            Some(auth) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(auth))),
            None => builder.with_no_client_auth(),
        };
        // We only speak HTTP/1.1; saying so stops a server that prefers h2 from choosing it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            client_config: Arc::new(config),
            server_name,
            verify,
            roots: root_count,
            ignored_roots: 0,
            client_auth: has_client_auth,
        })
    }
}

/// rustls' own texts, without quoting key material (it never does).
fn client_key_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate in \
             CONSUL_CLIENT_CERT; expected the private key of that certificate"
            .into(),
        other => format!(
            "not a usable private key ({other}); expected a PEM PKCS#8, PKCS#1 or SEC1 RSA, \
             ECDSA or Ed25519 key"
        ),
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("roots", &self.roots)
            .field("ignored_roots", &self.ignored_roots)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
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

/// Where a system CA bundle usually lives (Debian/Alpine, RHEL, BSD/macOS-like), tried in
/// order when an https agent is configured without CONSUL_CACERT or CONSUL_CAPATH.
pub(super) const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub(super) fn parse_consul(env: &mut Env<'_>, system_bundles: &[&Path]) -> Option<ConsulConfig> {
    let ssl = env.parse_bool("CONSUL_HTTP_SSL", false);
    // Bare, like the Go client's default, so CONSUL_HTTP_SSL=true alone selects https.
    let (address_var, raw) = match (env.value("CONSULHTTPURL"), env.value("CONSUL_HTTP_ADDR")) {
        (Some(v), _) => ("CONSULHTTPURL", Some(v)),
        (None, Some(v)) => ("CONSUL_HTTP_ADDR", Some(v)),
        // Unreadable (not UTF-8) is already an error; do not fall back to the default.
        (None, None) if env.has_error("CONSULHTTPURL") => ("CONSULHTTPURL", None),
        (None, None) => ("CONSULHTTPURL", Some("127.0.0.1:8500".to_owned())),
    };
    let address = match (ssl, raw) {
        (Some(ssl), Some(raw)) => {
            let parsed = parse_agent_address(&raw, ssl);
            env.check(address_var, parsed)
        }
        _ => None,
    };
    let token = parse_token(env);
    let basic_auth = parse_basic_auth(env);
    // TLS variables only matter for an https agent; otherwise they are not even read.
    let tls = match &address {
        Some(AgentAddress::Tcp {
            https: true, host, ..
        }) => load_tls(env, host, system_bundles).map(Some),
        _ => Some(None),
    };
    let namespace = env.parse_optional("CONSUL_NAMESPACE", |v| enterprise_name(v, "namespace"));
    let partition = env.parse_optional("CONSUL_PARTITION", |v| enterprise_name(v, "partition"));
    Some(ConsulConfig {
        address: address?,
        token: token?,
        basic_auth: basic_auth?,
        tls: tls?,
        namespace: namespace?,
        partition: partition?,
    })
}

fn enterprise_name(v: &str, what: &str) -> Result<String, String> {
    if is_name(v) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not a Consul {what} name; expected only letters, digits, '.', '_' and '-'"
        ))
    }
}

fn is_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const ADDRESS_FORMS: &str = "expected http://host[:port][/prefix], https://host[:port][/prefix], \
                             host:port or unix:///path/to/socket";

/// The agent address, in the forms the Go client accepts (consul-api §9). Unlike the Go
/// client, an explicit `http://` stays plain http even with CONSUL_HTTP_SSL=true: the
/// variable only chooses the scheme of a bare `host:port`.
fn parse_agent_address(v: &str, ssl: bool) -> Result<AgentAddress, String> {
    let (https, rest) = match v.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, rest),
            "https" => (true, rest),
            "unix" if rest.is_empty() => {
                return Err(format!("{v:?} names no socket; {ADDRESS_FORMS}"));
            }
            "unix" => {
                return Ok(AgentAddress::Unix {
                    path: PathBuf::from(rest),
                })
            }
            _ => {
                return Err(format!(
                    "unknown protocol scheme: {scheme} (in {v:?}); {ADDRESS_FORMS}"
                ))
            }
        },
        None => (ssl, v),
    };
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{v:?} contains a query, a fragment or whitespace; {ADDRESS_FORMS}"
        ));
    }
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) => (authority, prefix.trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{v:?} carries user information; put it in CONSUL_HTTP_AUTH instead"
        ));
    }
    let (host, port) =
        parse_host_port(authority).map_err(|why| format!("{v:?}: {why}; {ADDRESS_FORMS}"))?;
    Ok(AgentAddress::Tcp {
        https,
        host,
        port: port.unwrap_or(if https { 443 } else { 80 }),
        path_prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        },
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
fn parse_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| "'[' is not closed by ']'".to_owned())?;
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{inside:?} in brackets is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("unexpected {after:?} after ']'"))?,
                ),
            };
            (inside, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("an IPv6 address needs brackets, e.g. [::1]:8500".to_owned())
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if !is_hostname(host) {
                return Err(format!("{host:?} is not a host name or IP address"));
            }
            (host, port)
        }
    };
    let port = port.map(|p| parse_port(p, 1)).transpose()?;
    Ok((host.to_owned(), port))
}

/// Every variable a token comes from, in precedence order.
pub const TOKEN_VARIABLES: [&str; 4] = [
    "CONSULTOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_TOKEN",
];

const TOKEN_CHARSET: &str = "the token contains characters not allowed in an HTTP header \
                             (control characters, line breaks or non-ASCII); the value is not \
                             shown";

/// CONSULTOKEN, else a non-empty CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN, else
/// CONSUL_TOKEN (what Nomad 1.7 gives a task from its Consul workload identity; 1.8 sets
/// CONSUL_HTTP_TOKEN to the same token). The secret never appears in an error message.
fn parse_token(env: &mut Env<'_>) -> Option<Option<Token>> {
    let from_env_var = |env: &mut Env<'_>| match env.value("CONSUL_HTTP_TOKEN") {
        Some(secret) => Some(("CONSUL_HTTP_TOKEN", secret)),
        None => env
            .value("CONSUL_TOKEN")
            .map(|secret| ("CONSUL_TOKEN", secret)),
    };
    let found = match env.value("CONSULTOKEN") {
        Some(secret) => Some(("CONSULTOKEN", secret)),
        None => match env.value("CONSUL_HTTP_TOKEN_FILE") {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => {
                    Some(("CONSUL_HTTP_TOKEN_FILE", text.trim().to_owned()))
                }
                Ok(_) => from_env_var(env),
                Err(err) => {
                    env.error(
                        "CONSUL_HTTP_TOKEN_FILE",
                        format!(
                            "cannot read the token file {path:?}: {err}; expected a readable \
                             file holding the ACL token"
                        ),
                    );
                    return None;
                }
            },
            None => from_env_var(env),
        },
    };
    if TOKEN_VARIABLES.iter().any(|v| env.has_error(v)) {
        return None;
    }
    let Some((variable, secret)) = found else {
        return Some(None);
    };
    if !is_header_value(&secret) {
        env.error(variable, TOKEN_CHARSET.to_owned());
        return None;
    }
    Some(Some(Token::new(secret)))
}

/// Checked here, not when the client builds its header, so it is a configuration error.
fn parse_basic_auth(env: &mut Env<'_>) -> Option<Option<Token>> {
    let value = env.value("CONSUL_HTTP_AUTH");
    if env.has_error("CONSUL_HTTP_AUTH") {
        return None;
    }
    match value {
        Some(v) if !is_header_value(&v) => {
            env.error(
                "CONSUL_HTTP_AUTH",
                "contains control characters, line breaks or non-ASCII, which an HTTP header \
                 cannot carry; the value is not shown"
                    .into(),
            );
            None
        }
        other => Some(other.map(Token::new)),
    }
}

/// What `http::HeaderValue::from_str` accepts: visible ASCII, space and tab.
fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn load_tls(env: &mut Env<'_>, host: &str, system_bundles: &[&Path]) -> Option<TlsConfig> {
    let verify = env.parse_bool("CONSUL_HTTP_SSL_VERIFY", true);
    let roots = load_roots(env, verify.unwrap_or(true), system_bundles);
    let client_auth = load_client_auth(env);
    let server_name = tls_server_name(env, host);
    let (roots, ignored) = roots?;
    let built = TlsConfig::build(roots, client_auth?, server_name?, verify?);
    match built {
        Ok(tls) => Some(TlsConfig {
            ignored_roots: ignored,
            ..tls
        }),
        Err(err) => {
            env.error(err.variable, err.message);
            None
        }
    }
}

/// CONSUL_CACERT wins over CONSUL_CAPATH, as in the Go client; the system bundle is the
/// fallback. Without verification the roots are unused, so a missing bundle is fine.
/// Returns the usable anchors and how many certificates rustls could not use; none usable
/// is an error naming the variable the bundle came from.
fn load_roots(
    env: &mut Env<'_>,
    verify: bool,
    system_bundles: &[&Path],
) -> Option<(RootCertStore, usize)> {
    let (variable, certs) = if let Some(file) = env.value("CONSUL_CACERT") {
        let certs = load_certs(Path::new(&file)).and_then(|certs| {
            non_empty(certs, || {
                format!("{file:?} contains no PEM certificate; expected a PEM CA bundle")
            })
        });
        ("CONSUL_CACERT", env.check("CONSUL_CACERT", certs)?)
    } else if let Some(dir) = env.value("CONSUL_CAPATH") {
        let certs = load_cert_dir(Path::new(&dir));
        ("CONSUL_CAPATH", env.check("CONSUL_CAPATH", certs)?)
    } else if ["CONSUL_CACERT", "CONSUL_CAPATH"]
        .iter()
        .any(|v| env.has_error(v))
    {
        return None;
    } else {
        let system = system_bundles
            .iter()
            .find_map(|bundle| load_certs(bundle).ok().filter(|certs| !certs.is_empty()));
        match system {
            Some(certs) => ("CONSUL_CACERT", certs),
            None if !verify => return Some((RootCertStore::empty(), 0)),
            None => {
                let tried: Vec<String> = system_bundles
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                env.error(
                    "CONSUL_CACERT",
                    format!(
                        "the agent address is https, which needs a CA bundle, and no system \
                         bundle was found (tried {}); set CONSUL_CACERT or CONSUL_CAPATH",
                        tried.join(", ")
                    ),
                );
                return None;
            }
        }
    };
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(certs);
    if store.is_empty() && verify {
        env.error(
            variable,
            format!(
                "none of its {ignored} certificate(s) is a usable CA certificate (rustls \
                 cannot parse them); expected PEM X.509 CA certificates"
            ),
        );
        return None;
    }
    Some((store, ignored))
}

fn non_empty<T>(items: Vec<T>, why: impl FnOnce() -> String) -> Result<Vec<T>, String> {
    if items.is_empty() {
        Err(why())
    } else {
        Ok(items)
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| pem_error(path, &err))
}

fn pem_error(path: &Path, err: &pem::Error) -> String {
    match err {
        pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        other => format!("{} is not valid PEM: {other}", path.display()),
    }
}

/// Every `*.pem` / `*.crt` file of the directory, in name order.
fn load_cert_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let cannot = |err: std::io::Error| format!("cannot read directory {}: {err}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let path = entry.map_err(cannot)?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt"));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut certs = Vec::new();
    for file in &files {
        certs.extend(load_certs(file)?);
    }
    non_empty(certs, || {
        format!(
            "{} holds no certificate in *.pem or *.crt files; expected a directory of PEM CA \
             certificates",
            dir.display()
        )
    })
}

fn load_client_auth(env: &mut Env<'_>) -> Option<Option<ClientAuth>> {
    const BOTH: &str = "both client cert and client key must be provided";
    match (
        env.value("CONSUL_CLIENT_CERT"),
        env.value("CONSUL_CLIENT_KEY"),
    ) {
        _ if env.has_error("CONSUL_CLIENT_CERT") || env.has_error("CONSUL_CLIENT_KEY") => None,
        (None, None) => Some(None),
        (Some(_), None) => {
            env.error(
                "CONSUL_CLIENT_KEY",
                format!("{BOTH}: CONSUL_CLIENT_CERT is set but CONSUL_CLIENT_KEY is not"),
            );
            None
        }
        (None, Some(_)) => {
            env.error(
                "CONSUL_CLIENT_CERT",
                format!("{BOTH}: CONSUL_CLIENT_KEY is set but CONSUL_CLIENT_CERT is not"),
            );
            None
        }
        (Some(cert), Some(key)) => {
            let chain = load_certs(Path::new(&cert)).and_then(|certs| {
                non_empty(certs, || {
                    format!("{cert:?} contains no PEM certificate; expected the client certificate")
                })
            });
            let chain = env.check("CONSUL_CLIENT_CERT", chain);
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|err| key_error(&key, &err));
            let key = env.check("CONSUL_CLIENT_KEY", key);
            let provider = rustls::crypto::ring::default_provider();
            // Checked here, not when the TLS config is built, so a key that does not
            // match is reported even when the CA bundle has its own problem.
            let certified =
                CertifiedKey::from_der(chain?, key?, &provider).map_err(|e| client_key_error(&e));
            env.check("CONSUL_CLIENT_KEY", certified.map(Arc::new))
                .map(Some)
        }
    }
}

/// Only I/O errors are detailed: a PEM parse error may quote lines of the key file.
fn key_error(path: &str, err: &pem::Error) -> String {
    match err {
        pem::Error::Io(io) => format!("cannot read {path:?}: {io}"),
        pem::Error::NoItemsFound => {
            format!("{path:?} contains no private key; expected a PEM PKCS#8, PKCS#1 or SEC1 key")
        }
        _ => format!("{path:?} is not valid PEM; expected a PEM PKCS#8, PKCS#1 or SEC1 key"),
    }
}

fn tls_server_name(env: &mut Env<'_>, host: &str) -> Option<ServerName<'static>> {
    let (name, why) = match env.value("CONSUL_TLS_SERVER_NAME") {
        Some(v) => {
            let name = strip_port(&v);
            let why = format!("{v:?} is not a valid TLS server name; expected a DNS name or IP");
            (name, why)
        }
        None if env.has_error("CONSUL_TLS_SERVER_NAME") => return None,
        None => (
            host.to_owned(),
            format!(
                "the agent host {host:?} is not a valid TLS server name; set \
                 CONSUL_TLS_SERVER_NAME to the name in the agent's certificate"
            ),
        ),
    };
    let name = ServerName::try_from(name).map_err(|_| why);
    env.check("CONSUL_TLS_SERVER_NAME", name)
}

/// `name:port` -> `name`, `[v6]:port` -> `v6`; a bare IPv6 literal is left alone.
fn strip_port(v: &str) -> String {
    if let Some((inside, _)) = v.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        return inside.to_owned();
    }
    match v.split_once(':') {
        Some((name, port)) if !port.contains(':') => name.to_owned(),
        _ => v.to_owned(),
    }
}

/// CONSUL_HTTP_SSL_VERIFY=false: any certificate is accepted, but the handshake
/// signatures are still checked, so the session is at least bound to the key the server
/// presented (and a broken server is still noticed).
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
