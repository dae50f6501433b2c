//! HTTP/1.1 client for the Consul agent over TCP, TLS (rustls, ring) or a Unix socket.
//!
//! A [`Client`] holds what every request shares (address, TLS settings, headers); each
//! long-lived user takes its own [`Connection`], one keep-alive HTTP/1.1 connection that
//! is opened on first use and re-opened after it closes or fails. Timeouts, body limits
//! and status mapping live here so callers only see [`Response`] or [`ConsulError`].

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{host_for_url, AgentAddress, ConsulConfig, TlsConfig};
use crate::consul::api::format_duration;
use crate::metrics::Metrics;

/// Largest response body accepted; a larger one is an error (logged with the endpoint),
/// so a runaway response cannot exhaust memory. The largest body the daemon reads is the
/// catalog's service list: 10,000 services with ten 60-byte tags each is about 6 MiB, so
/// this leaves five times that, while a hostile or broken agent costs at most this much.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Once the headers are in, the body must follow within this. A blocking query holds the
/// headers back while it waits, never the body, so a body that trickles in is a broken
/// agent or proxy, and must not hold a watch for the whole blocking timeout.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout for non-blocking requests (reads, writes, deregistration).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest Consul error text kept in [`ErrorKind::Status`]: enough for any real Consul
/// message, short enough that a misbehaving proxy's HTML page does not flood the log.
const MAX_MESSAGE_CHARS: usize = 512;

/// The most a connection's read buffer grows to (hyper's default is about 400 KiB, and
/// it keeps what it grew to). Answers of megabytes are collected into one buffer of
/// their size anyway, so a bigger read buffer only holds a second copy on each of the
/// daemon's connections; 64 KiB still reads them in a few dozen system calls.
const READ_BUFFER: usize = 64 * 1024;

const CONSUL_INDEX: &str = "x-consul-index";
const CONSUL_TOKEN: &str = "x-consul-token";

/// Connection parameters shared by every [`Connection`]; cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Where every request is counted (`ism_consul_requests_total`).
    metrics: Metrics,
}

/// A request path as [`crate::consul::api`] builds it: what is sent, and the template it
/// is counted under in `ism_consul_requests_total` (variable parts as placeholders, no
/// query: `/v1/config/{kind}/{name}`). The template is named where the path is built, so
/// a metric label never holds a service name, an ID or a query, however the path looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    template: &'static str,
    path_and_query: Cow<'static, str>,
}

impl ApiPath {
    /// A path with variable parts or a query, counted under `template`.
    pub fn new(template: &'static str, path_and_query: String) -> ApiPath {
        ApiPath {
            template,
            path_and_query: Cow::Owned(path_and_query),
        }
    }

    /// A fixed path, counted under `template`.
    pub const fn fixed(template: &'static str, path_and_query: &'static str) -> ApiPath {
        ApiPath {
            template,
            path_and_query: Cow::Borrowed(path_and_query),
        }
    }

    /// What metrics count this request under.
    pub fn template(&self) -> &'static str {
        self.template
    }

    /// What is sent (before the client adds its prefix and `ns`/`partition`).
    pub fn as_str(&self) -> &str {
        &self.path_and_query
    }
}

/// A literal path: counted under the literal without its query (a literal holds no
/// service name, and its query is dropped).
impl From<&'static str> for ApiPath {
    fn from(path_and_query: &'static str) -> ApiPath {
        let template = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(path, _)| path);
        ApiPath {
            template,
            path_and_query: Cow::Borrowed(path_and_query),
        }
    }
}

impl From<&ApiPath> for ApiPath {
    fn from(path: &ApiPath) -> ApiPath {
        path.clone()
    }
}

struct Shared {
    target: Target,
    /// Prepended to every path (`""` or `/prefix`).
    path_prefix: String,
    /// `ns=..&partition=..` (already encoded), or empty.
    extra_query: String,
    host: HeaderValue,
    user_agent: HeaderValue,
    /// Marked sensitive so hyper never shows it in its own debug output.
    token: Option<HeaderValue>,
    basic_auth: Option<HeaderValue>,
}

enum Target {
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
    },
    Unix {
        path: PathBuf,
    },
}

struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl Target {
    /// Where we connect, for error messages.
    fn describe(&self) -> String {
        match self {
            Target::Tcp { host, port, .. } => format!("{}:{port}", host_for_url(host)),
            Target::Unix { path } => format!("unix:{}", path.display()),
        }
    }
}

impl Client {
    /// Builds the client from the parsed configuration, whose TLS settings are already
    /// built (so TLS cannot fail here). Fails only on a hand-made `ConsulConfig` that the
    /// parser would have refused (message names the variable).
    pub fn new(config: &ConsulConfig) -> Result<Client, String> {
        let (target, path_prefix, host) = match &config.address {
            AgentAddress::Tcp {
                https,
                host,
                port,
                path_prefix,
            } => {
                let host = unbracket(host).to_string();
                let tls = match (https, &config.tls) {
                    (true, Some(tls)) => Some(Tls::from(tls)),
                    (true, None) => {
                        return Err("CONSULHTTPURL: https address but no TLS settings".into())
                    }
                    (false, _) => None,
                };
                let host_header = format!("{}:{port}", host_for_url(&host));
                (
                    Target::Tcp {
                        host,
                        port: *port,
                        tls,
                    },
                    path_prefix.trim_end_matches('/').to_string(),
                    host_header,
                )
            }
            AgentAddress::Unix { path } => (
                Target::Unix { path: path.clone() },
                String::new(),
                "localhost".to_string(),
            ),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|_| format!("CONSULHTTPURL: host {host:?} is not valid in an HTTP header"))?;

        let mut extra = Vec::new();
        if let Some(ns) = config.namespace.as_deref().filter(|s| !s.is_empty()) {
            extra.push(format!("ns={}", percent_encode(ns)));
        }
        if let Some(p) = config.partition.as_deref().filter(|s| !s.is_empty()) {
            extra.push(format!("partition={}", percent_encode(p)));
        }

        let token = match &config.token {
            Some(t) if !t.secret().is_empty() => {
                // The message must not quote the token: it is a secret.
                let mut v = HeaderValue::from_str(t.secret()).map_err(|_| {
                    "CONSULTOKEN: the token contains characters not allowed in an HTTP header"
                        .to_string()
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        let basic_auth = match &config.basic_auth {
            Some(a) if !a.secret().is_empty() => {
                let encoded = base64(a.secret().as_bytes());
                let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| "CONSUL_HTTP_AUTH: not valid in an HTTP header".to_string())?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        let user_agent = HeaderValue::from_static(concat!(
            "ingress-service-monitor/",
            env!("CARGO_PKG_VERSION")
        ));

        Ok(Client {
            shared: Arc::new(Shared {
                target,
                path_prefix,
                extra_query: extra.join("&"),
                host,
                user_agent,
                token,
                basic_auth,
            }),
            // Counted but never served until the daemon hands over the one /metrics shows.
            metrics: Metrics::new(),
        })
    }

    /// The same client, counting its requests (and its watches' errors) into `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Client {
        Client { metrics, ..self }
    }

    /// The registry this client's requests are counted into; the watches and the
    /// reconciler count into it too.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A new lazily-opened connection; `purpose` names it in debug logs.
    pub fn connection(&self, purpose: &'static str) -> Connection {
        Connection {
            client: self.clone(),
            purpose,
            open: None,
            max_body: MAX_BODY,
        }
    }

    /// The URI sent on the wire: prefix + path + our extra query parameters.
    fn uri(&self, path_and_query: &str) -> String {
        let s = &self.shared;
        let mut uri = String::with_capacity(
            s.path_prefix.len() + path_and_query.len() + s.extra_query.len() + 1,
        );
        uri.push_str(&s.path_prefix);
        uri.push_str(path_and_query);
        if !s.extra_query.is_empty() {
            uri.push(if path_and_query.contains('?') {
                '&'
            } else {
                '?'
            });
            uri.push_str(&s.extra_query);
        }
        uri
    }

    async fn open(&self, purpose: &'static str) -> Result<Open, ErrorKind> {
        let where_ = self.shared.target.describe();
        let stream = match &self.shared.target {
            Target::Tcp { host, port, tls } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| ErrorKind::Connect(format!("{} ({where_})", describe_io(&e))))?;
                if let Err(e) = tcp.set_nodelay(true) {
                    // Only latency suffers (Nagle + delayed ACK), so carry on.
                    tracing::debug!(purpose, error = %e, "could not set TCP_NODELAY");
                }
                match tls {
                    None => Stream::Tcp(tcp),
                    Some(tls) => {
                        let s = tls
                            .connector
                            .connect(tls.server_name.clone(), tcp)
                            .await
                            .map_err(|e| {
                                ErrorKind::Connect(format!(
                                    "TLS handshake failed: {} ({where_})",
                                    describe_io(&e)
                                ))
                            })?;
                        Stream::Tls(Box::new(s))
                    }
                }
            }
            Target::Unix { path } => {
                let s = UnixStream::connect(path)
                    .await
                    .map_err(|e| ErrorKind::Connect(format!("{} ({where_})", describe_io(&e))))?;
                Stream::Unix(s)
            }
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ErrorKind::Connect(format!("{} ({where_})", error_chain(&e))))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(purpose, error = %error_chain(&e), "connection to the Consul agent ended");
            }
        });
        tracing::debug!(purpose, agent = %where_, "connected to the Consul agent");
        Ok(Open {
            sender,
            _driver: Driver(driver),
        })
    }
}

impl From<&TlsConfig> for Tls {
    fn from(tls: &TlsConfig) -> Tls {
        Tls {
            connector: TlsConnector::from(tls.client_config.clone()),
            server_name: tls.server_name.clone(),
        }
    }
}

/// The byte stream under hyper: plain TCP, TLS over TCP, or a Unix socket.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Aborts the connection's driver task when the connection is dropped or replaced, so a
/// pending blocking query is abandoned at once (at shutdown, or after a timeout).
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Open {
    sender: SendRequest<Full<Bytes>>,
    _driver: Driver,
}

/// One keep-alive connection to the agent, (re)opened on demand.
pub struct Connection {
    client: Client,
    purpose: &'static str,
    open: Option<Open>,
    /// [`MAX_BODY`], lowered by tests.
    max_body: usize,
}

impl Connection {
    /// Sends one request and reads the whole response within `timeout`.
    /// `path` starts with `/v1/`; the client adds the address's path prefix,
    /// `ns`/`partition` when configured, and the token and basic-auth headers.
    /// A request that fails on a reused connection before any response byte arrived is
    /// retried once on a fresh connection.
    /// Ok for 2xx and 404; any other status is `ErrorKind::Status`.
    /// Counted once in the client's metrics under the path's template, with the answer's
    /// status (none when there was no answer).
    pub async fn request(
        &mut self,
        method: hyper::Method,
        path: impl Into<ApiPath>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, ConsulError> {
        let path = path.into();
        let result = self.send(method, path.as_str(), body, timeout).await;
        let code = match &result {
            Ok(response) => Some(response.status),
            Err(ConsulError {
                kind: ErrorKind::Status { code, .. },
                ..
            }) => Some(*code),
            Err(_) => None,
        };
        self.client.metrics.consul_request(path.template(), code);
        result
    }

    /// Returns the metrics handle of the client this connection belongs to.
    pub fn metrics(&self) -> &Metrics {
        &self.client.metrics
    }

    async fn send(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, ConsulError> {
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        let endpoint = format!("{method} {path}");
        let uri = self.client.uri(path_and_query);
        match tokio::time::timeout(timeout, self.exchange(&method, &uri, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(kind)) => Err(ConsulError { endpoint, kind }),
            Err(_) => {
                // The request may still be in flight: this connection is unusable.
                self.open = None;
                Err(ConsulError {
                    endpoint,
                    kind: ErrorKind::Timeout(timeout),
                })
            }
        }
    }

    pub async fn get(
        &mut self,
        path: impl Into<ApiPath>,
        timeout: Duration,
    ) -> Result<Response, ConsulError> {
        self.request(hyper::Method::GET, path, None, timeout).await
    }

    pub async fn put(
        &mut self,
        path: impl Into<ApiPath>,
        body: Bytes,
    ) -> Result<Response, ConsulError> {
        self.request(hyper::Method::PUT, path, Some(body), REQUEST_TIMEOUT)
            .await
    }

    async fn exchange(
        &mut self,
        method: &hyper::Method,
        uri: &str,
        body: Option<Bytes>,
    ) -> Result<Response, ErrorKind> {
        loop {
            let idle = match self.open.take() {
                // Fails when hyper already saw the agent close the connection.
                Some(mut open) => open.sender.ready().await.is_ok().then_some(open),
                None => None,
            };
            let (mut open, reused) = match idle {
                Some(open) => (open, true),
                None => (self.client.open(self.purpose).await?, false),
            };
            let request = self.build_request(method, uri, body.clone())?;
            let response = match open.sender.send_request(request).await {
                Ok(response) => response,
                Err(e) if reused && is_stale_connection(&e) => {
                    // The agent closed the idle keep-alive connection as we reused it;
                    // nothing was processed, so one try on a fresh connection is safe.
                    tracing::debug!(purpose = self.purpose, error = %error_chain(&e), "reused connection was closed; retrying on a new one");
                    continue;
                }
                Err(e) => return Err(ErrorKind::Io(error_chain(&e))),
            };
            let response =
                match tokio::time::timeout(BODY_TIMEOUT, read_response(response, self.max_body))
                    .await
                {
                    Ok(read) => read?,
                    Err(_) => {
                        return Err(ErrorKind::Io(format!(
                            "the response body did not arrive within {} of its headers",
                            format_duration(BODY_TIMEOUT)
                        )))
                    }
                };
            // The whole response was read, so the connection can carry the next request,
            // whatever the status.
            self.open = Some(open);
            return check_status(response);
        }
    }

    fn build_request(
        &self,
        method: &hyper::Method,
        uri: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Request<Full<Bytes>>, ErrorKind> {
        let s = &self.client.shared;
        let mut builder = hyper::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(hyper::header::HOST, s.host.clone())
            .header(hyper::header::USER_AGENT, s.user_agent.clone());
        if let Some(token) = &s.token {
            builder = builder.header(HeaderName::from_static(CONSUL_TOKEN), token.clone());
        }
        if let Some(auth) = &s.basic_auth {
            builder = builder.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let body = match body {
            Some(b) => {
                builder = builder.header(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Full::new(b)
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .map_err(|e| ErrorKind::Io(format!("invalid request {uri:?}: {e}")))
    }
}

async fn read_response(
    response: hyper::Response<hyper::body::Incoming>,
    max_body: usize,
) -> Result<Response, ErrorKind> {
    let status = response.status().as_u16();
    let headers = response.headers();
    let index = headers
        .get(CONSUL_INDEX)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(ErrorKind::BodyTooLarge { limit: max_body });
    }
    let mut incoming = response.into_body();
    // Sized once from Content-Length (already checked against the limit): grown by
    // doubling, a catalog answer of megabytes would reserve up to twice its size.
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            ErrorKind::Io(format!(
                "connection broke while reading the response: {}",
                error_chain(&e)
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max_body {
                return Err(ErrorKind::BodyTooLarge { limit: max_body });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Response {
        status,
        index,
        body: buf.freeze(),
    })
}

/// 2xx and 404 are answers; anything else is Consul refusing, with its message.
fn check_status(response: Response) -> Result<Response, ErrorKind> {
    if (200..300).contains(&response.status) || response.status == 404 {
        Ok(response)
    } else {
        Err(ErrorKind::Status {
            code: response.status,
            message: status_message(&response.body),
        })
    }
}

/// Consul's error text: lossy UTF-8, trimmed, cut to [`MAX_MESSAGE_CHARS`].
fn status_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut chars = text.char_indices();
    match chars.nth(MAX_MESSAGE_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Errors meaning the server had closed the connection before our request reached it.
fn is_stale_connection(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// `error: cause: cause` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Short lower-case description (`connection refused`), without `(os error N)`.
fn describe_io(e: &io::Error) -> String {
    let short = match e.kind() {
        io::ErrorKind::ConnectionRefused => Some("connection refused"),
        io::ErrorKind::ConnectionReset => Some("connection reset"),
        io::ErrorKind::NotFound => Some("no such file or directory"),
        io::ErrorKind::PermissionDenied => Some("permission denied"),
        io::ErrorKind::TimedOut => Some("connection timed out"),
        _ => None,
    };
    if let Some(s) = short {
        return s.to_string();
    }
    let text = match e.get_ref() {
        Some(inner) => error_chain(inner),
        None => e.to_string(),
    };
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Query-string encoding: everything but RFC 3986 unreserved characters is escaped.
/// Percent-encodes everything but RFC 3986's unreserved characters (query values).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `X-Consul-Index`, when present and numeric.
    pub index: Option<u64>,
    pub body: Bytes,
}

/// A failed request: which endpoint, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulError {
    /// `METHOD /path` without the query string (never contains the token).
    pub endpoint: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect (refused, unreachable, TLS handshake failed, ...).
    Connect(String),
    /// Connection broke during the exchange.
    Io(String),
    Timeout(Duration),
    /// Non-2xx, non-404 status with Consul's message (body text, trimmed).
    Status {
        code: u16,
        message: String,
    },
    BodyTooLarge {
        limit: usize,
    },
    /// The body is not what the endpoint returns (set by callers that decode).
    Decode(String),
}

impl ConsulError {
    /// What the operator can do about it, when we know: for 403 the missing permission
    /// (from Consul's text) and the README's ACL policy; for a 400 about namespaces or
    /// partitions on Consul CE, unsetting CONSUL_NAMESPACE / CONSUL_PARTITION; for 429,
    /// the agent's `http_max_conns_per_client`.
    pub fn hint(&self) -> Option<String> {
        let (code, message) = match &self.kind {
            ErrorKind::Status { code, message } => (*code, message.as_str()),
            ErrorKind::Connect(m) if m.starts_with("TLS handshake failed") => {
                return Some(
                    "check CONSUL_CACERT, CONSUL_TLS_SERVER_NAME and the client certificate".into(),
                )
            }
            _ => return None,
        };
        let lower = message.to_ascii_lowercase();
        match code {
            403 if message.contains("ACL not found") => Some(
                "the token is unknown to Consul: check CONSULTOKEN / CONSUL_HTTP_TOKEN(_FILE)"
                    .into(),
            ),
            403 if message.contains("Access is restricted") => Some(
                "the agent's http_config.allow_write_http_from does not include this host".into(),
            ),
            403 => match missing_permission(message) {
                Some(perm) => Some(format!(
                    "the token needs {perm}; see the ACL policy in the README"
                )),
                None if message.contains("Permission denied") => Some(
                    "the token lacks a permission this call needs; see the ACL policy in the README"
                        .into(),
                ),
                None => None,
            },
            400 if lower.contains("namespaces are a consul enterprise feature") => {
                Some("unset CONSUL_NAMESPACE: this agent is Consul CE".into())
            }
            400 if lower.contains("partitions are a consul enterprise feature") => {
                Some("unset CONSUL_PARTITION: this agent is Consul CE".into())
            }
            429 => Some(
                "the agent caps concurrent connections per client IP: raise its limits.http_max_conns_per_client"
                    .into(),
            ),
            500 if message.contains("does not match defined listener protocol") => Some(
                "give the service a service-defaults entry with the listener's Protocol (e.g. Protocol = \"http\"), or set SETSERVICEDEFAULTS=true"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// `lacks permission 'service:write' on "web"` -> `service:write on "web"`.
fn missing_permission(message: &str) -> Option<String> {
    const MARK: &str = "lacks permission '";
    let start = message.find(MARK)? + MARK.len();
    let rest = &message[start..];
    let end = rest.find('\'')?;
    let perm = &rest[..end];
    let after = &rest[end + 1..];
    // The resource name, when Consul gives one: ` on "<name>"`.
    let target = after
        .strip_prefix(" on \"")
        .and_then(|t| t.find('"').map(|e| &t[..e]));
    Some(match target {
        Some(name) => format!("{perm} on \"{name}\""),
        None => perm.to_string(),
    })
}

impl fmt::Display for ConsulError {
    /// `PUT /v1/config: 403 Permission denied: ... (hint: ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.endpoint)?;
        match &self.kind {
            ErrorKind::Connect(m) | ErrorKind::Io(m) => f.write_str(m)?,
            ErrorKind::Timeout(d) => write!(f, "timed out after {}", format_duration(*d))?,
            ErrorKind::Status { code, message } if message.is_empty() => {
                let reason = hyper::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("(empty body)");
                write!(f, "{code} {reason}")?
            }
            ErrorKind::Status { code, message } => write!(f, "{code} {message}")?,
            ErrorKind::BodyTooLarge { limit } => write!(
                f,
                "response body over the {} cap; not read",
                format_size(*limit)
            )?,
            ErrorKind::Decode(m) => write!(f, "unexpected response body: {m}")?,
        }
        if let Some(hint) = self.hint() {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConsulError {}

fn format_size(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// A scripted HTTP server on 127.0.0.1 for the client and watch tests.
#[cfg(test)]
pub(crate) mod test_server {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{HeaderMap, Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use crate::config::{AgentAddress, ConsulConfig};

    /// What the server does with the next request.
    #[derive(Debug, Clone)]
    pub(crate) enum Step {
        Reply {
            status: u16,
            index: Option<String>,
            body: String,
        },
        /// Never answer.
        Hang,
        /// Close the connection without answering.
        Close,
    }

    pub(crate) fn reply(status: u16, index: Option<u64>, body: &str) -> Step {
        Step::Reply {
            status,
            index: index.map(|i| i.to_string()),
            body: body.to_string(),
        }
    }

    #[derive(Debug)]
    pub(crate) struct Seen {
        pub method: String,
        pub uri: String,
        pub headers: HeaderMap,
        pub body: Bytes,
        /// Which TCP connection (0, 1, ...) carried it.
        pub connection: usize,
    }

    pub(crate) struct TestServer {
        pub addr: SocketAddr,
        pub seen: mpsc::UnboundedReceiver<Seen>,
        connections: Arc<AtomicUsize>,
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        /// Answers requests with `script` in order; when it runs out, 500 "script exhausted".
        pub(crate) async fn start(script: Vec<Step>) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let script = Arc::new(Mutex::new(VecDeque::from(script)));
            let connections = Arc::new(AtomicUsize::new(0));
            let (tx, seen) = mpsc::unbounded_channel();
            let counter = connections.clone();
            let task = tokio::spawn(async move {
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let connection = counter.fetch_add(1, Ordering::SeqCst);
                    let script = script.clone();
                    let tx = tx.clone();
                    let service =
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            let script = script.clone();
                            let tx = tx.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let _ = tx.send(Seen {
                                    method: parts.method.to_string(),
                                    uri: parts.uri.to_string(),
                                    headers: parts.headers,
                                    body,
                                    connection,
                                });
                                let step = script.lock().expect("lock").pop_front().unwrap_or(
                                    Step::Reply {
                                        status: 500,
                                        index: None,
                                        body: "script exhausted".into(),
                                    },
                                );
                                match step {
                                    Step::Reply {
                                        status,
                                        index,
                                        body,
                                    } => {
                                        let mut r = Response::new(Full::new(Bytes::from(body)));
                                        *r.status_mut() =
                                            hyper::StatusCode::from_u16(status).expect("status");
                                        if let Some(i) = index {
                                            r.headers_mut().insert(
                                                "X-Consul-Index",
                                                hyper::header::HeaderValue::from_str(&i)
                                                    .expect("index header"),
                                            );
                                        }
                                        Ok::<_, std::io::Error>(r)
                                    }
                                    Step::Hang => std::future::pending().await,
                                    Step::Close => Err(std::io::Error::other("scripted close")),
                                }
                            }
                        });
                    tasks.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            TestServer {
                addr,
                seen,
                connections,
                task,
            }
        }

        pub(crate) fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        /// Every request received so far.
        pub(crate) fn drain(&mut self) -> Vec<Seen> {
            let mut out = Vec::new();
            while let Ok(s) = self.seen.try_recv() {
                out.push(s);
            }
            out
        }
    }

    /// Plain-HTTP config pointing at `addr`.
    pub(crate) fn tcp_config(addr: SocketAddr) -> ConsulConfig {
        ConsulConfig {
            address: AgentAddress::Tcp {
                https: false,
                host: addr.ip().to_string(),
                port: addr.port(),
                path_prefix: String::new(),
            },
            token: None,
            basic_auth: None,
            tls: None,
            namespace: None,
            partition: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::test_server::{reply, tcp_config, Step, TestServer};
    use super::*;
    use crate::config::Token;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn status(code: u16, message: &str) -> ConsulError {
        ConsulError {
            endpoint: "PUT /v1/config".into(),
            kind: ErrorKind::Status {
                code,
                message: message.into(),
            },
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pass", "dXNlcjpwYXNz"),
            ("\u{ff}\u{fe}", "w7/Dvg=="),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        let cases = [
            ("default", "default"),
            ("team a", "team%20a"),
            ("a/b&c=d", "a%2Fb%26c%3Dd"),
            ("x-y_z.~", "x-y_z.~"),
            ("é", "%C3%A9"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_encode(input), want, "{input:?}");
        }
    }

    #[test]
    fn display_and_hints() {
        let cases: Vec<(ConsulError, &str)> = vec![
            (
                ConsulError {
                    endpoint: "GET /v1/catalog/services".into(),
                    kind: ErrorKind::Connect("connection refused (127.0.0.1:8500)".into()),
                },
                "GET /v1/catalog/services: connection refused (127.0.0.1:8500)",
            ),
            (
                ConsulError {
                    endpoint: "GET /v1/catalog/services".into(),
                    kind: ErrorKind::Timeout(Duration::from_secs(10)),
                },
                "GET /v1/catalog/services: timed out after 10s",
            ),
            (
                ConsulError {
                    endpoint: "GET /v1/catalog/services".into(),
                    kind: ErrorKind::Timeout(Duration::from_millis(1500)),
                },
                "GET /v1/catalog/services: timed out after 1500ms",
            ),
            (
                ConsulError {
                    endpoint: "GET /v1/catalog/services".into(),
                    kind: ErrorKind::BodyTooLarge { limit: MAX_BODY },
                },
                "GET /v1/catalog/services: response body over the 32 MiB cap; not read",
            ),
            (
                status(403, "Permission denied: token with AccessorID 'abc' lacks permission 'mesh:write'"),
                "PUT /v1/config: 403 Permission denied: token with AccessorID 'abc' lacks permission 'mesh:write' (hint: the token needs mesh:write; see the ACL policy in the README)",
            ),
            (
                status(403, "rpc error making call: Permission denied: anonymous token lacks permission 'service:write' on \"web\". The anonymous token is used implicitly when a request does not specify a token."),
                "PUT /v1/config: 403 rpc error making call: Permission denied: anonymous token lacks permission 'service:write' on \"web\". The anonymous token is used implicitly when a request does not specify a token. (hint: the token needs service:write on \"web\"; see the ACL policy in the README)",
            ),
            (
                status(403, "ACL not found"),
                "PUT /v1/config: 403 ACL not found (hint: the token is unknown to Consul: check CONSULTOKEN / CONSUL_HTTP_TOKEN(_FILE))",
            ),
            (
                status(403, "Permission denied"),
                "PUT /v1/config: 403 Permission denied (hint: the token lacks a permission this call needs; see the ACL policy in the README)",
            ),
            (
                status(400, "Bad request: Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature"),
                "PUT /v1/config: 400 Bad request: Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature (hint: unset CONSUL_NAMESPACE: this agent is Consul CE)",
            ),
            (
                status(400, "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature"),
                "PUT /v1/config: 400 Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature (hint: unset CONSUL_PARTITION: this agent is Consul CE)",
            ),
            (
                status(429, "Your IP is issuing too many concurrent connections, please rate limit your calls"),
                "PUT /v1/config: 429 Your IP is issuing too many concurrent connections, please rate limit your calls (hint: the agent caps concurrent connections per client IP: raise its limits.http_max_conns_per_client)",
            ),
            (
                status(500, "service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\""),
                "PUT /v1/config: 500 service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\" (hint: give the service a service-defaults entry with the listener's Protocol (e.g. Protocol = \"http\"), or set SETSERVICEDEFAULTS=true)",
            ),
            (status(500, "No cluster leader"), "PUT /v1/config: 500 No cluster leader"),
            (status(502, ""), "PUT /v1/config: 502 Bad Gateway"),
            (
                ConsulError {
                    endpoint: "GET /v1/catalog/services".into(),
                    kind: ErrorKind::Decode("expected value at line 1 column 1".into()),
                },
                "GET /v1/catalog/services: unexpected response body: expected value at line 1 column 1",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
        assert_eq!(status(500, "No cluster leader").hint(), None);
    }

    #[test]
    fn status_message_is_trimmed_lossy_and_capped() {
        assert_eq!(
            status_message(b"  Permission denied\n"),
            "Permission denied"
        );
        assert_eq!(status_message(b"bad \xff byte"), "bad \u{fffd} byte");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let got = status_message(long.as_bytes());
        assert_eq!(got.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(got.ends_with('…'));
        let exact = "a".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(status_message(exact.as_bytes()), exact);
    }

    #[test]
    fn sends_prefix_query_token_auth_and_json_headers() {
        rt().block_on(async {
            let mut server =
                TestServer::start(vec![reply(200, None, "true"), reply(200, Some(3), "{}")]).await;
            let mut config = tcp_config(server.addr);
            if let AgentAddress::Tcp { path_prefix, .. } = &mut config.address {
                *path_prefix = "/consul".into();
            }
            config.token = Some(Token::new("s3cr3t-token".into()));
            config.basic_auth = Some(Token::new("user:pass".into()));
            config.namespace = Some("team a".into());
            config.partition = Some("p/1".into());
            let client = Client::new(&config).expect("client");
            let mut conn = client.connection("test");

            let put = conn
                .put("/v1/config?cas=0", Bytes::from_static(b"{\"Kind\":\"x\"}"))
                .await
                .expect("put");
            assert_eq!(
                (put.status, put.index, &put.body[..]),
                (200, None, &b"true"[..])
            );
            let get = conn
                .get("/v1/agent/service/x", REQUEST_TIMEOUT)
                .await
                .expect("get");
            assert_eq!(get.index, Some(3));

            let seen = server.drain();
            assert_eq!(seen.len(), 2);
            let (p, g) = (&seen[0], &seen[1]);
            assert_eq!(p.method, "PUT");
            assert_eq!(p.uri, "/consul/v1/config?cas=0&ns=team%20a&partition=p%2F1");
            assert_eq!(&p.body[..], b"{\"Kind\":\"x\"}");
            assert_eq!(p.headers["x-consul-token"], "s3cr3t-token");
            assert_eq!(p.headers["authorization"], "Basic dXNlcjpwYXNz");
            assert_eq!(p.headers["content-type"], "application/json");
            assert_eq!(
                p.headers["user-agent"],
                concat!("ingress-service-monitor/", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(
                p.headers["host"],
                format!("127.0.0.1:{}", server.addr.port())
            );
            assert_eq!(g.method, "GET");
            assert_eq!(
                g.uri,
                "/consul/v1/agent/service/x?ns=team%20a&partition=p%2F1"
            );
            assert!(g.headers.get("content-type").is_none());
            // One keep-alive connection carried both.
            assert_eq!((p.connection, g.connection), (0, 0));
        });
    }

    /// (status, index, body) of an answer, or the error.
    type Expected = Result<(u16, Option<u64>, &'static str), ErrorKind>;

    #[test]
    fn statuses_map_to_responses_or_errors() {
        rt().block_on(async {
            let cases: Vec<(Step, Expected)> = vec![
                (
                    reply(200, Some(42), "{\"a\":[]}"),
                    Ok((200, Some(42), "{\"a\":[]}")),
                ),
                (
                    reply(404, Some(7), "Config entry not found"),
                    Ok((404, Some(7), "Config entry not found")),
                ),
                (
                    Step::Reply {
                        status: 200,
                        index: Some("abc".into()),
                        body: String::new(),
                    },
                    Ok((200, None, "")),
                ),
                (
                    reply(
                        403,
                        None,
                        "Permission denied: anonymous token lacks permission 'mesh:write'\n",
                    ),
                    Err(ErrorKind::Status {
                        code: 403,
                        message: "Permission denied: anonymous token lacks permission 'mesh:write'"
                            .into(),
                    }),
                ),
                (
                    reply(500, Some(9), " No cluster leader "),
                    Err(ErrorKind::Status {
                        code: 500,
                        message: "No cluster leader".into(),
                    }),
                ),
                (
                    reply(429, None, "slow down"),
                    Err(ErrorKind::Status {
                        code: 429,
                        message: "slow down".into(),
                    }),
                ),
            ];
            let (steps, wants): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
            let server = TestServer::start(steps).await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut conn = client.connection("test");
            for (i, want) in wants.into_iter().enumerate() {
                let got = conn
                    .get("/v1/config/ingress-gateway/gw?index=1", REQUEST_TIMEOUT)
                    .await;
                match (got, want) {
                    (Ok(r), Ok((status, index, body))) => {
                        assert_eq!(
                            (r.status, r.index, &r.body[..]),
                            (status, index, body.as_bytes()),
                            "case {i}"
                        )
                    }
                    (Err(e), Err(kind)) => {
                        assert_eq!(e.endpoint, "GET /v1/config/ingress-gateway/gw", "case {i}");
                        assert_eq!(e.kind, kind, "case {i}");
                    }
                    (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
                }
            }
            // Error statuses carry a complete response: the connection stays in use.
            assert_eq!(server.connections(), 1);
        });
    }

    #[test]
    fn stale_reused_connection_is_retried_once_on_a_fresh_one() {
        rt().block_on(async {
            let mut server = TestServer::start(vec![
                reply(200, Some(1), "first"),
                Step::Close,
                reply(200, Some(2), "second"),
            ])
            .await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut conn = client.connection("test");
            let first = conn.get("/v1/x", REQUEST_TIMEOUT).await.expect("first");
            assert_eq!(&first.body[..], b"first");
            let second = conn.get("/v1/x", REQUEST_TIMEOUT).await.expect("retried");
            assert_eq!(&second.body[..], b"second");
            let connections: Vec<usize> = server.drain().iter().map(|s| s.connection).collect();
            assert_eq!(connections, vec![0, 0, 1]);
        });
    }

    #[test]
    fn failure_on_a_fresh_connection_is_not_retried() {
        rt().block_on(async {
            let mut server =
                TestServer::start(vec![Step::Close, reply(200, Some(1), "late")]).await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut conn = client.connection("test");
            let err = conn
                .get("/v1/x", REQUEST_TIMEOUT)
                .await
                .expect_err("closed without answer");
            assert!(matches!(err.kind, ErrorKind::Io(_)), "{err:?}");
            assert_eq!(server.drain().len(), 1);
            // The next request opens a new connection and succeeds.
            let ok = conn.get("/v1/x", REQUEST_TIMEOUT).await.expect("second");
            assert_eq!(&ok.body[..], b"late");
            assert_eq!(server.connections(), 2);
        });
    }

    #[test]
    fn whole_exchange_is_bounded_by_the_timeout_and_the_connection_replaced() {
        rt().block_on(async {
            let server = TestServer::start(vec![Step::Hang, reply(200, Some(1), "ok")]).await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut conn = client.connection("test");
            let started = Instant::now();
            let err = conn
                .get(
                    "/v1/catalog/services?index=5&wait=300s",
                    Duration::from_millis(200),
                )
                .await
                .expect_err("times out");
            let took = started.elapsed();
            assert_eq!(err.kind, ErrorKind::Timeout(Duration::from_millis(200)));
            assert_eq!(
                err.to_string(),
                "GET /v1/catalog/services: timed out after 200ms"
            );
            assert!(
                took >= Duration::from_millis(200) && took < Duration::from_secs(5),
                "{took:?}"
            );
            let ok = conn
                .get("/v1/x", REQUEST_TIMEOUT)
                .await
                .expect("after timeout");
            assert_eq!(&ok.body[..], b"ok");
            assert_eq!(server.connections(), 2);
        });
    }

    #[test]
    fn every_request_is_counted_once_by_template_and_status() {
        use crate::metrics::Code;
        use std::collections::BTreeMap;
        rt().block_on(async {
            let server = TestServer::start(vec![
                reply(200, Some(1), "true"),
                reply(404, Some(1), "Config entry not found"),
                Step::Close,
                reply(500, None, "No cluster leader"),
            ])
            .await;
            let metrics = Metrics::new();
            let client = Client::new(&tcp_config(server.addr))
                .expect("client")
                .with_metrics(metrics.clone());
            let mut conn = client.connection("test");
            let entry = |name: &str| {
                ApiPath::new(
                    "/v1/config/{kind}/{name}",
                    format!("/v1/config/http-route/{name}?cas=7"),
                )
            };
            conn.get(entry("shop"), REQUEST_TIMEOUT).await.expect("200");
            conn.get(entry("cart"), REQUEST_TIMEOUT).await.expect("404");
            // A stale keep-alive connection retried on a new one is still one request.
            conn.get(
                "/v1/catalog/services?filter=ServiceName%20%3D%3D%20%22shop%22",
                REQUEST_TIMEOUT,
            )
            .await
            .expect_err("500");
            // No answer at all: refused.
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let closed = listener.local_addr().expect("addr");
            drop(listener);
            Client::new(&tcp_config(closed))
                .expect("client")
                .with_metrics(metrics.clone())
                .connection("test")
                .put(
                    ApiPath::new(
                        "/v1/agent/service/deregister/{id}",
                        "/v1/agent/service/deregister/shop-1".into(),
                    ),
                    Bytes::new(),
                )
                .await
                .expect_err("refused");
            let want = BTreeMap::from([
                (("/v1/config/{kind}/{name}", Code::Status(200)), 1),
                (("/v1/config/{kind}/{name}", Code::Status(404)), 1),
                (("/v1/catalog/services", Code::Status(500)), 1),
                (("/v1/agent/service/deregister/{id}", Code::Error), 1),
            ]);
            assert_eq!(metrics.snapshot().consul_requests, want);
        });
    }

    #[test]
    fn refused_connection_names_the_address() {
        rt().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            drop(listener);
            let client = Client::new(&tcp_config(addr)).expect("client");
            let err = client
                .connection("test")
                .get("/v1/catalog/services?index=1", REQUEST_TIMEOUT)
                .await
                .expect_err("refused");
            assert_eq!(
                err.to_string(),
                format!("GET /v1/catalog/services: connection refused ({addr})")
            );
        });
    }

    #[test]
    fn token_never_appears_in_errors() {
        rt().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            drop(listener);
            let mut config = tcp_config(addr);
            config.token = Some(Token::new("very-secret-token".into()));
            let client = Client::new(&config).expect("client");
            let err = client
                .connection("test")
                .get("/v1/agent/self", REQUEST_TIMEOUT)
                .await
                .expect_err("refused");
            assert!(!format!("{err} {err:?}").contains("very-secret-token"));

            config.token = Some(Token::new("bad\ntoken-secret".into()));
            let err = Client::new(&config).err().expect("rejected");
            assert!(
                err.contains("CONSULTOKEN") && !err.contains("token-secret"),
                "{err}"
            );
        });
    }

    /// A raw server answering every request on each connection with `head` and then
    /// `chunks` chunks of `chunk_size` bytes (chunked encoding).
    async fn raw_server(
        head: &'static str,
        chunks: usize,
        chunk_size: usize,
    ) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("{chunk_size:x}\r\n{}\r\n", "x".repeat(chunk_size));
                    for _ in 0..chunks {
                        if s.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        addr
    }

    #[test]
    fn oversized_bodies_are_rejected_by_length_or_while_streaming() {
        rt().block_on(async {
            // Content-Length above the cap: rejected before reading the body.
            let server = TestServer::start(vec![
                reply(200, Some(1), &"y".repeat(2000)),
                reply(200, Some(2), &"y".repeat(1024)),
            ])
            .await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut conn = client.connection("test");
            conn.max_body = 1024;
            let err = conn
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect_err("too large");
            assert_eq!(err.kind, ErrorKind::BodyTooLarge { limit: 1024 });
            assert_eq!(
                err.to_string(),
                "GET /v1/catalog/services: response body over the 1 KiB cap; not read"
            );
            let at_limit = conn
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect("at limit");
            assert_eq!(at_limit.body.len(), 1024);

            // Chunked, no length: 10 000 chunks of 512 bytes would be 5 MB; we stop at 4 KiB.
            let addr = raw_server(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 3\r\n\r\n",
                10_000,
                512,
            )
            .await;
            let client = Client::new(&tcp_config(addr)).expect("client");
            let mut conn = client.connection("test");
            conn.max_body = 4096;
            let err = conn
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect_err("too large");
            assert_eq!(err.kind, ErrorKind::BodyTooLarge { limit: 4096 });

            // The same stream within the cap is read whole.
            let addr = raw_server(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 3\r\n\r\n",
                8,
                512,
            )
            .await;
            let client = Client::new(&tcp_config(addr)).expect("client");
            let mut conn = client.connection("test");
            conn.max_body = 4096;
            let ok = conn
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect("fits");
            assert_eq!((ok.index, ok.body.len()), (Some(3), 4096));
        });
    }

    #[test]
    fn talks_http_over_a_unix_socket() {
        rt().block_on(async {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            let path =
                std::env::temp_dir().join(format!("ism-edge-{}-{nanos}.sock", std::process::id()));
            let listener = tokio::net::UnixListener::bind(&path).expect("bind unix");
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.expect("accept");
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                            "{} {host}",
                            req.uri()
                        ))));
                        r.headers_mut()
                            .insert("X-Consul-Index", HeaderValue::from_static("11"));
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            let config = ConsulConfig {
                address: AgentAddress::Unix { path: path.clone() },
                ..tcp_config("127.0.0.1:1".parse().expect("addr"))
            };
            let client = Client::new(&config).expect("client");
            let mut conn = client.connection("test");
            let r = conn
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect("unix get");
            assert_eq!(
                (r.index, &r.body[..]),
                (Some(11), &b"/v1/catalog/services localhost"[..])
            );
            drop(conn);
            server.abort();
            let _ = std::fs::remove_file(&path);
        });
    }

    /// An https config with TLS built as the parser builds it (no roots: verification off).
    fn tls_config(addr: std::net::SocketAddr, name: &str) -> ConsulConfig {
        let mut config = tcp_config(addr);
        if let AgentAddress::Tcp { https, .. } = &mut config.address {
            *https = true;
        }
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        let tls = TlsConfig::build(rustls::RootCertStore::empty(), None, name, false);
        config.tls = Some(tls.expect("TLS without verification"));
        config
    }

    #[test]
    fn https_needs_tls_settings_and_takes_them_built() {
        let addr: std::net::SocketAddr = "127.0.0.1:8501".parse().expect("addr");
        let mut no_tls = tls_config(addr, "localhost");
        no_tls.tls = None;
        let err = Client::new(&no_tls)
            .err()
            .expect("https without TLS settings");
        assert!(err.starts_with("CONSULHTTPURL"), "{err}");
        // An IP is a valid server name too.
        assert!(Client::new(&tls_config(addr, "127.0.0.1")).is_ok());
        assert!(Client::new(&tls_config(addr, "::1")).is_ok());
    }

    #[test]
    fn tls_to_a_plaintext_server_fails_without_falling_back() {
        rt().block_on(async {
            let mut server = TestServer::start(vec![reply(200, Some(1), "plaintext!")]).await;
            // Even with verification off, the handshake itself must succeed.
            let client = Client::new(&tls_config(server.addr, "localhost")).expect("client");
            let err = client
                .connection("test")
                .get("/v1/catalog/services", REQUEST_TIMEOUT)
                .await
                .expect_err("no TLS server there");
            match &err.kind {
                ErrorKind::Connect(m) => assert!(m.starts_with("TLS handshake failed"), "{m}"),
                other => panic!("{other:?}"),
            }
            assert!(err.hint().is_some_and(|h| h.contains("CONSUL_CACERT")));
            // No HTTP request reached the plaintext server.
            assert!(server.drain().is_empty());
        });
    }
}
