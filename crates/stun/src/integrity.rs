//! Credentials (RFC 8489 §9): short-term and long-term keys, MD5 and SHA-256 password
//! algorithms, USERHASH, and OpaqueString preparation (RFC 8265 §4.2).

use sha2::Digest;
use std::borrow::Cow;
use std::fmt;
use unicode_normalization::{is_nfc, UnicodeNormalization};

/// RFC 8489 §14.7: the CRC-32 is XORed with this ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// RFC 8489 §18.5: password algorithm numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    pub fn code(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }

    pub fn from_code(code: u16) -> Option<PasswordAlgorithm> {
        match code {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// Why a string cannot be prepared with OpaqueString.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrepError {
    #[error("empty string")]
    Empty,
    #[error("disallowed code point U+{0:04X}")]
    Disallowed(u32),
}

/// An HMAC key for MESSAGE-INTEGRITY(-SHA256). Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    /// RFC 8489 §9.1.1: the short-term key is the OpaqueString-prepared password.
    pub fn short_term(password: &str) -> Result<Key, PrepError> {
        Ok(Key(opaque_string(password)?.as_bytes().to_vec()))
    }

    /// RFC 8489 §9.2.2: `H(username ":" OpaqueString(realm) ":" OpaqueString(password))`
    /// with H = MD5 (16-byte key) or SHA-256 (32-byte key).
    pub fn long_term(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Result<Key, PrepError> {
        let realm = opaque_string(realm)?;
        let password = opaque_string(password)?;
        let parts: [&[u8]; 5] = [username.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()];
        Ok(Key(match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut h = md5::Md5::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = sha2::Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
        }))
    }

    /// A key given as raw bytes (for instance one stored precomputed in a user database).
    pub fn from_bytes(bytes: &[u8]) -> Key {
        Key(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// RFC 8489 §14.4: USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
pub fn userhash(username: &str, realm: &str) -> Result<[u8; 32], PrepError> {
    let mut h = sha2::Sha256::new();
    h.update(opaque_string(username)?.as_bytes());
    h.update(b":");
    h.update(opaque_string(realm)?.as_bytes());
    Ok(h.finalize().into())
}

/// RFC 8265 §4.2 OpaqueString: non-ASCII spaces become U+0020, the result is NFC, and code
/// points the PRECIS FreeformClass disallows (controls, default-ignorables such as soft
/// hyphen and zero-width characters) are refused. Plain ASCII passes through borrowed.
///
/// RFC 5769's long-term vector predates RFC 8265: its password was prepared with SASLprep,
/// which drops soft hyphens and applies NFKC; OpaqueString refuses the soft hyphen instead.
pub fn opaque_string(input: &str) -> Result<Cow<'_, str>, PrepError> {
    if input.is_empty() {
        return Err(PrepError::Empty);
    }
    if input.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Ok(Cow::Borrowed(input));
    }
    if let Some(c) = input.chars().find(|&c| is_disallowed(c)) {
        return Err(PrepError::Disallowed(c as u32));
    }
    let has_wide_space = input.chars().any(|c| c != ' ' && c.is_whitespace() && !c.is_ascii());
    if !has_wide_space && is_nfc(input) {
        return Ok(Cow::Borrowed(input));
    }
    let mapped = input.chars().map(|c| if c.is_whitespace() && !c.is_ascii() { ' ' } else { c });
    Ok(Cow::Owned(mapped.nfc().collect()))
}

// RFC 8264 §9: FreeformClass disallows controls (Cc) and default-ignorable code points
// (IgnorableProperties), among others; these are the ones seen in practice.
fn is_disallowed(c: char) -> bool {
    let cp = c as u32;
    c.is_control()
        || matches!(
            cp,
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F..=0x1160
                | 0x17B4..=0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFF8
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_through_without_copy() {
        assert!(matches!(opaque_string("VOkJxbRl1RmTxUk/WvJxBt"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn maps_wide_spaces_and_normalizes_to_nfc() {
        assert_eq!(opaque_string("a\u{3000}b").unwrap(), "a b");
        // "e" + combining acute becomes the precomposed form.
        assert_eq!(opaque_string("caf\u{65}\u{301}").unwrap(), "caf\u{e9}");
        assert_eq!(opaque_string("マトリックス").unwrap(), "マトリックス");
    }

    #[test]
    fn refuses_empty_controls_and_ignorables() {
        assert_eq!(opaque_string(""), Err(PrepError::Empty));
        assert_eq!(opaque_string("a\u{7}"), Err(PrepError::Disallowed(7)));
        assert_eq!(opaque_string("The\u{AD}M\u{AA}tr\u{2168}"), Err(PrepError::Disallowed(0xAD)));
        assert_eq!(opaque_string("a\u{200B}b"), Err(PrepError::Disallowed(0x200B)));
    }

    #[test]
    fn long_term_keys_match_rfc_definitions() {
        // MD5("user:realm:pass") and SHA-256 of the same string.
        let md5 = Key::long_term(PasswordAlgorithm::Md5, "user", "realm", "pass").unwrap();
        assert_eq!(md5.as_bytes(), md5::Md5::digest(b"user:realm:pass").as_slice());
        let sha = Key::long_term(PasswordAlgorithm::Sha256, "user", "realm", "pass").unwrap();
        assert_eq!(sha.as_bytes(), sha2::Sha256::digest(b"user:realm:pass").as_slice());
        assert_eq!(format!("{md5:?}"), "Key(16 bytes)");
    }

    #[test]
    fn userhash_hashes_username_and_realm() {
        assert_eq!(userhash("u", "r").unwrap(), <[u8; 32]>::from(sha2::Sha256::digest(b"u:r")));
    }

    #[test]
    fn password_algorithm_codes_round_trip() {
        for a in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(PasswordAlgorithm::from_code(a.code()), Some(a));
        }
        assert_eq!(PasswordAlgorithm::from_code(0), None);
    }
}
