//! TLS for the simulator: a rustls server configuration (ring provider, optional client
//! certificate verification) and a throw-away test PKI generated with rcgen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::TlsOptions;

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in PEM"));
    }
    Ok(certs)
}

/// The acceptor for `TlsOptions`: server certificate, and client verification against
/// `client_ca_pem` when set (connections without a valid client certificate fail the
/// handshake).
pub fn acceptor(options: &TlsOptions) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&options.cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(options.key_pem.as_bytes())
        .map_err(|e| format!("server key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &options.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca, "client CA")? {
                roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Paths of the generated files.
pub struct Files {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca_cert: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates the CA, server and client certificates and an unrelated CA under `dir`.
pub fn generate(dir: &Path) -> Result<Files, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let gen_err = |e: rcgen::Error| format!("certificate generation: {e}");
    let main_ca = ca("consul-sim test CA").map_err(gen_err)?;
    let other_ca = ca("consul-sim unrelated CA").map_err(gen_err)?;
    let (server_pem, server_key) = leaf(
        &main_ca,
        "server.dc1.consul",
        vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "server.dc1.consul".to_string(),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .map_err(gen_err)?;
    let (client_pem, client_key) = leaf(
        &main_ca,
        "client.dc1.consul",
        vec!["client.dc1.consul".to_string()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .map_err(gen_err)?;
    let files = Files {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        other_ca_cert: dir.join("other-ca.pem"),
    };
    let writes = [
        (&files.ca_cert, main_ca.pem()),
        (&files.server_cert, server_pem),
        (&files.server_key, server_key),
        (&files.client_cert, client_pem),
        (&files.client_key, client_key),
        (&files.other_ca_cert, other_ca.pem()),
    ];
    for (path, pem) in writes {
        std::fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(files)
}
