//! A tiny HTTP client for the simulator's tests: tokio TCP (optionally rustls) and a
//! hyper HTTP/1.1 client connection, nothing else.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

/// Every await on the network in tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        match serde_json::from_str(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("not JSON ({e}): {:?}", self.body),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn index(&self) -> u64 {
        match self.header("x-consul-index").map(str::parse::<u64>) {
            Some(Ok(i)) => i,
            other => panic!("no X-Consul-Index: {other:?} in {:?}", self.headers),
        }
    }
}

/// TLS client material (PEM text).
#[derive(Clone, Default)]
pub struct TlsClient {
    pub ca_pem: String,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
}

fn connector(tls: &TlsClient) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.expect("client cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        _ => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One keep-alive connection to the simulator.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr, None).await.expect("connect")
    }

    pub async fn try_open(addr: SocketAddr, tls: Option<&TlsClient>) -> Result<Conn, String> {
        let stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let sender = match tls {
            None => handshake(stream).await?,
            Some(tls) => {
                let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
                let stream = tokio::time::timeout(LIMIT, connector(tls).connect(name, stream))
                    .await
                    .map_err(|_| "TLS timeout".to_string())?
                    .map_err(|e| e.to_string())?;
                handshake(stream).await?
            }
        };
        Ok(Conn { sender })
    }

    /// Sends a request and reads the whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Resp, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on a fresh connection, bounded by `LIMIT`.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: impl Into<String>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let path = path.into();
    let work = async {
        let mut conn = Conn::open(addr).await;
        conn.send(method, &path, headers, body).await
    };
    match tokio::time::timeout(LIMIT, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
        Err(_) => panic!("{method} {path}: no answer within {LIMIT:?}"),
    }
}

pub async fn get(addr: SocketAddr, path: impl Into<String>) -> Resp {
    call(addr, "GET", path, &[], None).await
}

pub async fn put(addr: SocketAddr, path: impl Into<String>, body: &str) -> Resp {
    call(addr, "PUT", path, &[], Some(body)).await
}

/// A simulator with short, jitter-free waits so blocking tests finish fast.
pub fn quick_options() -> consul_sim::SimOptions {
    consul_sim::SimOptions {
        jitter: false,
        default_wait: Duration::from_millis(400),
        max_wait: Duration::from_secs(20),
        ..consul_sim::SimOptions::default()
    }
}

/// Polls `cond` until it holds or `LIMIT` passes; bounded, for state the simulator
/// reaches asynchronously (connection counts, check results).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("condition not reached within {LIMIT:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
