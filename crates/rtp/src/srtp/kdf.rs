//! SRTP key derivation (RFC 3711 §4.3.1 with the AES-CM PRF of §4.3.3; AES-256 per RFC 6188
//! §7.1 for AEAD_AES_256_GCM, RFC 7714 §11). The key derivation rate is zero (RFC 5764 §4.1.2
//! requires it for DTLS-SRTP), so "index DIV kdr" is always zero and keys are derived once.

use aes::cipher::{KeyIvInit, StreamCipher};

// Labels (RFC 3711 §4.3.1, §4.3.2).
pub(crate) const SRTP_ENCRYPTION: u8 = 0x00;
pub(crate) const SRTP_AUTHENTICATION: u8 = 0x01;
pub(crate) const SRTP_SALT: u8 = 0x02;
pub(crate) const SRTCP_ENCRYPTION: u8 = 0x03;
pub(crate) const SRTCP_AUTHENTICATION: u8 = 0x04;
pub(crate) const SRTCP_SALT: u8 = 0x05;

/// Fills `out` with PRF_n(k_master, x) for `label`: AES in counter mode over the block
/// (master_salt XOR (label || 0^48)) * 2^16. A 96-bit (AEAD) master salt is padded with zeros
/// on the right to 112 bits, as RFC 7714 §11 keeps the RFC 3711 derivation unchanged.
pub(crate) fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    let n = master_salt.len().min(14);
    iv[..n].copy_from_slice(&master_salt[..n]);
    // RFC 3711 §4.3.1: key_id = label || (index DIV kdr), 7 + 48 bits, aligned to the right
    // of the 112-bit salt: the label lands in octet 7.
    iv[7] ^= label;
    out.fill(0);
    match master_key.len() {
        32 => ctr::Ctr128BE::<aes::Aes256>::new(master_key.into(), &iv.into()).apply_keystream(out),
        _ => ctr::Ctr128BE::<aes::Aes128>::new(master_key.into(), &iv.into()).apply_keystream(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::hex;

    /// RFC 3711 Appendix B.3.
    #[test]
    fn derives_the_rfc_3711_b3_session_keys() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0; 16];
        derive(&key, &salt, SRTP_ENCRYPTION, &mut cipher_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut cipher_salt = [0; 14];
        derive(&key, &salt, SRTP_SALT, &mut cipher_salt);
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // The RFC shows 94 octets of auth key; HMAC-SHA1 uses the first 20.
        let mut auth = [0; 94];
        derive(&key, &salt, SRTP_AUTHENTICATION, &mut auth);
        let expected = hex("CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2");
        assert_eq!(auth.to_vec(), expected);
    }
}
