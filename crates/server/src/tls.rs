//! TLS for TURN clients (RFC 8656 §3.1 "TURN over TLS"): a rustls server configuration from
//! PEM files, reloadable while the server runs.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Loads a certificate chain and its private key (PEM) into a TLS 1.2/1.3 server config.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad certificate PEM in {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not form a usable pair")?;
    Ok(Arc::new(config))
}

/// The DNS names (subject alternative names) of the first certificate in a PEM file, in order.
pub fn dns_names(cert: &Path) -> anyhow::Result<Vec<String>> {
    Ok(cert_info(cert)?.dns_names)
}

/// The names and validity of the first certificate in a PEM file.
pub fn cert_info(cert: &Path) -> anyhow::Result<CertInfo> {
    let first = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .next()
        .with_context(|| format!("no certificate in {}", cert.display()))?
        .with_context(|| format!("bad certificate PEM in {}", cert.display()))?;
    CertInfo::parse(&first)
}

/// What the server needs to know of a certificate: its names and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn parse(der: &CertificateDer<'_>) -> anyhow::Result<CertInfo> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der.as_ref()).context("bad X.509 certificate")?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(name) = name {
                    dns_names.push(name.to_ascii_lowercase());
                }
            }
        }
        let validity = cert.validity();
        Ok(CertInfo {
            dns_names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }
}
