//! What the TURN tests over real sockets share: requests from the static user alice
//! (password `pw`), and reading the answers.
#![allow(dead_code)]

use peerlink_stun::{
    Attribute, AttributeType, Class, Key, Message, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub mod sfu;

pub const REALM: &str = "example.test";

/// A request with `attrs`; signed by alice when a `nonce` is given.
pub fn request(tid: u8, method: Method, nonce: Option<&str>, attrs: &[Attribute<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, TransactionId([tid; 12]));
    for a in attrs {
        w.attribute(a).unwrap();
    }
    if let Some(nonce) = nonce {
        w.attribute(&Attribute::Username("alice")).unwrap();
        w.attribute(&Attribute::Realm(REALM)).unwrap();
        w.attribute(&Attribute::Nonce(nonce)).unwrap();
        let key = Key::long_term(PasswordAlgorithm::Md5, "alice", REALM, "pw").unwrap();
        w.message_integrity(&key).unwrap();
    }
    w.finish();
    buf
}

/// The NONCE of a 401 answer.
pub fn nonce(response: &[u8]) -> String {
    let m = Message::parse(response).unwrap();
    let Some(Ok(Attribute::Nonce(nonce))) = m.get(AttributeType::NONCE) else { panic!("no nonce") };
    nonce.to_owned()
}

/// The XOR-RELAYED-ADDRESS of a successful Allocate.
pub fn relayed(response: &[u8]) -> SocketAddr {
    let m = Message::parse(response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.get(AttributeType::ERROR_CODE));
    let Some(Ok(Attribute::XorRelayedAddress(relay))) = m.get(AttributeType::XOR_RELAYED_ADDRESS) else {
        panic!("no relayed address")
    };
    relay
}

/// Accepts the tests' self-signed certificate: the relay is under test, not the PKI.
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn tls_client() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A file of the signaling tests' data (the self-signed certificate and its key).
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../signal/tests/data").join(name)
}
