//! A peer's identity: a self-signed ECDSA P-256 certificate made per peer (RFC 8827 §6.5),
//! and certificate fingerprints as SDP carries them (RFC 8122 §5:
//! `a=fingerprint:sha-256 AB:CD:...`).

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509Ref, X509};
use std::fmt;
use std::str::FromStr;

/// Validity of a generated certificate (browsers use about a month; nothing checks it).
const VALID_DAYS: u32 = 30;

/// A certificate and its private key.
#[derive(Clone)]
pub struct Certificate {
    pub(crate) x509: X509,
    pub(crate) key: PKey<Private>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Certificate {
    /// A fresh self-signed ECDSA P-256 certificate with a random serial, valid from a day
    /// ago (clock skew) for a month.
    pub fn generate() -> Result<Certificate, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, "peerlink")?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (not_before, not_after) =
            (Asn1Time::from_unix(now - 86_400)?, Asn1Time::days_from_now(VALID_DAYS)?);
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.sign(&key, MessageDigest::sha256())?;
        let x509 = builder.build();
        let fingerprint = Fingerprint::of(&x509, HashAlgorithm::Sha256)?;
        Ok(Certificate { x509, key, fingerprint })
    }

    /// Loads a certificate and its key from PEM.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Certificate, openssl::error::ErrorStack> {
        let x509 = X509::from_pem(cert)?;
        let key = PKey::private_key_from_pem(key)?;
        let fingerprint = Fingerprint::of(&x509, HashAlgorithm::Sha256)?;
        Ok(Certificate { x509, key, fingerprint })
    }

    /// The SHA-256 fingerprint for `a=fingerprint`.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate in PEM (for tools such as `openssl s_server`).
    pub fn certificate_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.x509.to_pem()
    }

    /// The private key in PKCS#8 PEM. Secret.
    pub fn private_key_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }
}

/// Hash functions RFC 8122 names (the "hash-func" of `a=fingerprint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha-1",
            HashAlgorithm::Sha256 => "sha-256",
            HashAlgorithm::Sha384 => "sha-384",
            HashAlgorithm::Sha512 => "sha-512",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            HashAlgorithm::Sha1 => MessageDigest::sha1(),
            HashAlgorithm::Sha256 => MessageDigest::sha256(),
            HashAlgorithm::Sha384 => MessageDigest::sha384(),
            HashAlgorithm::Sha512 => MessageDigest::sha512(),
        }
    }

    fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// A certificate fingerprint: `sha-256 AB:CD:…` in SDP.
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub algorithm: HashAlgorithm,
    pub bytes: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of `cert` (a hash of its DER form) with `algorithm`.
    pub fn of(cert: &X509Ref, algorithm: HashAlgorithm) -> Result<Fingerprint, openssl::error::ErrorStack> {
        Ok(Fingerprint { algorithm, bytes: cert.digest(algorithm.digest())?.to_vec() })
    }

    /// Whether `cert` has this fingerprint.
    pub fn matches(&self, cert: &X509Ref) -> bool {
        Fingerprint::of(cert, self.algorithm).is_ok_and(|f| f.bytes == self.bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.algorithm.name())?;
        for (i, b) in self.bytes.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fingerprint: {0}")]
pub struct FingerprintError(&'static str);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// `sha-256 AB:CD:…` (the value of `a=fingerprint:`); the hash name is
    /// case-insensitive, and so are the hex digits.
    fn from_str(s: &str) -> Result<Fingerprint, FingerprintError> {
        let (name, hex) =
            s.trim().split_once(' ').ok_or(FingerprintError("expected `hash-func AB:CD:...`"))?;
        let algorithm = match name.to_ascii_lowercase().as_str() {
            "sha-1" => HashAlgorithm::Sha1,
            "sha-256" => HashAlgorithm::Sha256,
            "sha-384" => HashAlgorithm::Sha384,
            "sha-512" => HashAlgorithm::Sha512,
            _ => return Err(FingerprintError("unsupported hash function")),
        };
        let bytes = hex
            .trim()
            .split(':')
            .map(|pair| match pair.len() {
                2 => u8::from_str_radix(pair, 16).map_err(|_| FingerprintError("not hex")),
                _ => Err(FingerprintError("each byte is two hex digits")),
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if bytes.len() != algorithm.len() {
            return Err(FingerprintError("length does not match the hash function"));
        }
        Ok(Fingerprint { algorithm, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_their_sdp_form() {
        let cert = Certificate::generate().unwrap();
        let text = cert.fingerprint().to_string();
        assert!(text.starts_with("sha-256 ") && text.len() == "sha-256 ".len() + 32 * 3 - 1, "{text}");
        let parsed: Fingerprint = text.parse().unwrap();
        assert_eq!(&parsed, cert.fingerprint());
        assert!(parsed.matches(&cert.x509));
        // Browsers write upper case; lower case and SHA-256 in capitals are accepted too.
        let lower: Fingerprint = text.to_lowercase().replace("sha-256", "SHA-256").parse().unwrap();
        assert_eq!(&lower, cert.fingerprint());
        assert!(!parsed.matches(&Certificate::generate().unwrap().x509));
    }

    #[test]
    fn other_hashes_are_computed_with_their_own_function() {
        let cert = Certificate::generate().unwrap();
        for algorithm in [HashAlgorithm::Sha1, HashAlgorithm::Sha384, HashAlgorithm::Sha512] {
            let f = Fingerprint::of(&cert.x509, algorithm).unwrap();
            assert_eq!(f.bytes.len(), algorithm.len());
            assert_eq!(f.to_string().parse::<Fingerprint>().unwrap(), f);
            assert!(f.matches(&cert.x509));
        }
    }

    #[test]
    fn malformed_fingerprints_are_errors() {
        let good = Certificate::generate().unwrap().fingerprint().to_string();
        for bad in [
            "",
            "sha-256",
            "md5 AB:CD",
            "sha-256 AB:CD",
            &good[..good.len() - 1],
            &good.replace(':', ""),
            &format!("sha-256 GG{}", &good["sha-256 ".len() + 2..]),
            &format!("{good}:00"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pem_round_trip_keeps_the_identity() {
        let cert = Certificate::generate().unwrap();
        let again = Certificate::from_pem(&cert.certificate_pem().unwrap(), &cert.private_key_pem().unwrap())
            .unwrap();
        assert_eq!(again.fingerprint(), cert.fingerprint());
    }
}
