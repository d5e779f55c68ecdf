//! Long-term credentials for TURN (RFC 8489 §9.2): static users, the TURN REST shared-secret
//! scheme (coturn's `use-auth-secret`), stateless nonces and a bounded 401 rate limiter.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use peerlink_stun::{Key, PasswordAlgorithm};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// RFC 8489 §9.2: a nonce starting with this cookie tells RFC 8489 clients which security
/// features the server supports; the four characters after it encode the feature bits.
const NONCE_COOKIE: &str = "obMatJos2";
/// Feature bit 0: password algorithms (base64 of 0x800000 is "gAAA").
const FEATURES_PASSWORD_ALGORITHMS: &str = "gAAA";

/// Credentials the server accepts.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Static users: name → password.
    users: HashMap<String, String>,
    /// TURN REST secrets, all accepted (rotation: add the new one, later drop the old one).
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print passwords or secrets.
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// Why a username was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    /// A REST username whose expiry time has passed.
    Expired,
}

impl Credentials {
    pub fn new() -> Credentials {
        Credentials::default()
    }

    pub fn add_user(&mut self, name: &str, password: &str) {
        self.users.insert(name.to_owned(), password.to_owned());
    }

    pub fn add_secret(&mut self, secret: &[u8]) {
        self.secrets.push(secret.to_vec());
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.secrets.is_empty()
    }

    /// The keys a username may have signed with: one for a static user, one per REST secret
    /// for a REST username (`expiry[:name]`, expiry in Unix seconds).
    pub fn keys(
        &self,
        username: &str,
        realm: &str,
        algorithm: PasswordAlgorithm,
        unix_now: u64,
    ) -> Result<Vec<Key>, Refusal> {
        if let Some(password) = self.users.get(username) {
            return Key::long_term(algorithm, username, realm, password)
                .map(|k| vec![k])
                .map_err(|_| Refusal::UnknownUser);
        }
        if self.secrets.is_empty() {
            return Err(Refusal::UnknownUser);
        }
        let expiry =
            username.split(':').next().and_then(|e| e.parse::<u64>().ok()).ok_or(Refusal::UnknownUser)?;
        if expiry < unix_now {
            return Err(Refusal::Expired);
        }
        Ok(self
            .secrets
            .iter()
            .filter_map(|secret| {
                Key::long_term(algorithm, username, realm, &rest_password(secret, username)).ok()
            })
            .collect())
    }
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Stateless nonces: `obMatJos2` + features + base64url(issued-at seconds ‖ HMAC-SHA256
/// over issued-at and the client's address, truncated to 12 bytes). Nothing is stored.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer").field("lifetime_secs", &self.lifetime_secs).finish_non_exhaustive()
    }
}

/// What a received nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but too old: answer 438.
    Stale,
    /// Not ours (or not for this client).
    Invalid,
}

const NONCE_MAC_LEN: usize = 12;

impl NonceIssuer {
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> NonceIssuer {
        NonceIssuer { secret, lifetime_secs }
    }

    pub fn issue(&self, client: SocketAddr, unix_now: u64) -> String {
        let mut raw = [0u8; 8 + NONCE_MAC_LEN];
        raw[..8].copy_from_slice(&unix_now.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(client, unix_now)[..NONCE_MAC_LEN]);
        format!("{NONCE_COOKIE}{FEATURES_PASSWORD_ALGORITHMS}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    pub fn check(&self, nonce: &str, client: SocketAddr, unix_now: u64) -> NonceCheck {
        let Some(body) = nonce.strip_prefix(NONCE_COOKIE).and_then(|n| n.get(4..)) else {
            return NonceCheck::Invalid;
        };
        let mut raw = [0u8; 8 + NONCE_MAC_LEN];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut raw) {
            Ok(n) if n == raw.len() => {}
            _ => return NonceCheck::Invalid,
        }
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let expected = self.mac(client, issued);
        // Constant-time comparison of the tag.
        if !bool::from(expected[..NONCE_MAC_LEN].ct_eq(&raw[8..])) {
            return NonceCheck::Invalid;
        }
        if issued > unix_now + 5 || unix_now - issued.min(unix_now) > self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    /// Whether the nonce announces the password-algorithms feature (all ours do).
    pub fn announces_password_algorithms(nonce: &str) -> bool {
        nonce.strip_prefix(NONCE_COOKIE).is_some_and(|rest| rest.starts_with(FEATURES_PASSWORD_ALGORITHMS))
    }

    fn mac(&self, client: SocketAddr, issued: u64) -> [u8; 32] {
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.secret).expect("hmac takes any key length");
        mac.update(&issued.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A bounded per-IP token bucket for 401 answers: a fixed table indexed by a hash of the
/// address, so memory does not grow with the number of clients (colliding addresses share
/// a bucket).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    buckets: Vec<(u64, u32)>,
    per_second: u32,
    burst: u32,
    seed: u64,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32, seed: u64) -> RateLimiter {
        RateLimiter { buckets: vec![(0, burst); 4096], per_second, burst, seed }
    }

    /// Takes a token for `ip` at `now_ms`; false when the bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let index = (self.hash(ip) % self.buckets.len() as u64) as usize;
        let (last, tokens) = &mut self.buckets[index];
        let refill = now_ms.saturating_sub(*last) * u64::from(self.per_second) / 1000;
        if refill > 0 {
            *tokens = (u64::from(*tokens) + refill).min(u64::from(self.burst)) as u32;
            *last = now_ms;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    fn hash(&self, ip: IpAddr) -> u64 {
        // FNV-1a with a per-server seed, enough to spread addresses over buckets.
        let mut h = 0xcbf29ce484222325u64 ^ self.seed;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        match ip {
            IpAddr::V4(v4) => feed(&v4.octets()),
            IpAddr::V6(v6) => feed(&v6.octets()),
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "198.51.100.7:4000".parse().unwrap()
    }

    #[test]
    fn nonce_is_valid_for_its_client_until_it_goes_stale() {
        let issuer = NonceIssuer::new([7; 32], 600);
        let nonce = issuer.issue(client(), 1_000_000);
        assert!(nonce.starts_with("obMatJos2gAAA"));
        assert!(NonceIssuer::announces_password_algorithms(&nonce));
        assert_eq!(issuer.check(&nonce, client(), 1_000_100), NonceCheck::Valid);
        assert_eq!(issuer.check(&nonce, client(), 1_000_601), NonceCheck::Stale);
        assert_eq!(
            issuer.check(&nonce, "198.51.100.7:4001".parse().unwrap(), 1_000_100),
            NonceCheck::Invalid
        );
        let other = NonceIssuer::new([8; 32], 600);
        assert_eq!(other.check(&nonce, client(), 1_000_100), NonceCheck::Invalid);
        for junk in ["", "obMatJos2", "obMatJos2gAAA", "obMatJos2gAAA!!!!", "abc"] {
            assert_eq!(issuer.check(junk, client(), 1_000_100), NonceCheck::Invalid);
        }
        let mut tampered = nonce.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            issuer.check(std::str::from_utf8(&tampered).unwrap(), client(), 1_000_100),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        assert_eq!(rest_password(b"secret", "1700000000:alice"), "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn rest_usernames_expire_and_static_users_do_not() {
        let mut creds = Credentials::new();
        creds.add_secret(b"old");
        creds.add_secret(b"new");
        creds.add_user("bob", "pw");
        assert_eq!(creds.keys("100:alice", "r", PasswordAlgorithm::Md5, 50).unwrap().len(), 2);
        assert_eq!(creds.keys("100", "r", PasswordAlgorithm::Md5, 50).unwrap().len(), 2);
        assert_eq!(creds.keys("100:alice", "r", PasswordAlgorithm::Md5, 101), Err(Refusal::Expired));
        assert_eq!(creds.keys("alice", "r", PasswordAlgorithm::Md5, 50), Err(Refusal::UnknownUser));
        let bob = creds.keys("bob", "r", PasswordAlgorithm::Sha256, u64::MAX).unwrap();
        assert_eq!(bob, vec![Key::long_term(PasswordAlgorithm::Sha256, "bob", "r", "pw").unwrap()]);
        assert!(!format!("{creds:?}").contains("pw"));
    }

    #[test]
    fn rate_limiter_refills_over_time() {
        let mut limiter = RateLimiter::new(10, 3, 1);
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert!((0..3).all(|_| limiter.allow(ip, 1000)));
        assert!(!limiter.allow(ip, 1000));
        assert!(limiter.allow(ip, 1100));
        assert!(!limiter.allow(ip, 1100));
    }
}
