//! The two packet transforms, each holding keys scheduled once per session:
//! AES-CM with HMAC-SHA1 (RFC 3711 §4.1.1, §4.2.1) and AES-GCM (RFC 7714 §8, §9).

use super::kdf;
use super::SrtpProfile;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use ring::aead;
use sha1::Sha1;

/// Length of the SRTCP E flag and index word (RFC 3711 §3.4).
pub(crate) const SRTCP_INDEX_LEN: usize = 4;

// Two per context, never moved on the data path: boxing the larger one would only add a
// pointer chase per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transform {
    Cm {
        aes: aes::Aes128Enc,
        salt: [u8; 14],
        /// HMAC-SHA1 keyed with the session authentication key; cloned per packet.
        mac: Hmac<Sha1>,
        tag_len: usize,
    },
    Gcm {
        key: aead::LessSafeKey,
        salt: [u8; 12],
    },
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transform::Cm { .. } => "Transform::Cm",
            Transform::Gcm { .. } => "Transform::Gcm",
        })
    }
}

/// The authentication failed (the packet was not changed).
#[derive(Debug)]
pub(crate) struct AuthFailed;

impl Transform {
    /// Session keys for SRTP (`rtcp` false) or SRTCP from the master key and salt, whose
    /// lengths the caller checked against `profile`.
    pub(crate) fn new(profile: SrtpProfile, master_key: &[u8], master_salt: &[u8], rtcp: bool) -> Transform {
        let (enc, auth, salt_label) = if rtcp {
            (kdf::SRTCP_ENCRYPTION, kdf::SRTCP_AUTHENTICATION, kdf::SRTCP_SALT)
        } else {
            (kdf::SRTP_ENCRYPTION, kdf::SRTP_AUTHENTICATION, kdf::SRTP_SALT)
        };
        match profile {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Aes128CmHmacSha1_32 => {
                let mut key = [0u8; 16];
                kdf::derive(master_key, master_salt, enc, &mut key);
                let mut salt = [0u8; 14];
                kdf::derive(master_key, master_salt, salt_label, &mut salt);
                // RFC 3711 §4.2.1: HMAC-SHA1 with a 160-bit session authentication key.
                let mut auth_key = [0u8; 20];
                kdf::derive(master_key, master_salt, auth, &mut auth_key);
                let tag_len = if rtcp { 10 } else { profile.rtp_tag_len() };
                Transform::Cm {
                    aes: aes::Aes128Enc::new(&key.into()),
                    salt,
                    mac: <Hmac<Sha1> as Mac>::new_from_slice(&auth_key)
                        .expect("HMAC takes keys of any length"),
                    tag_len,
                }
            }
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                let mut key = [0u8; 32];
                let key = &mut key[..profile.key_len()];
                kdf::derive(master_key, master_salt, enc, key);
                let mut salt = [0u8; 12];
                kdf::derive(master_key, master_salt, salt_label, &mut salt);
                Transform::gcm(profile, key, salt)
            }
        }
    }

    /// A GCM transform from session keys directly (the RFC 7714 vectors give those).
    pub(crate) fn gcm(profile: SrtpProfile, session_key: &[u8], session_salt: [u8; 12]) -> Transform {
        let alg = if profile == SrtpProfile::AeadAes256Gcm { &aead::AES_256_GCM } else { &aead::AES_128_GCM };
        let key = aead::UnboundKey::new(alg, session_key).expect("the profile fixes the key length");
        Transform::Gcm { key: aead::LessSafeKey::new(key), salt: session_salt }
    }

    pub(crate) fn tag_len(&self) -> usize {
        match self {
            Transform::Cm { tag_len, .. } => *tag_len,
            Transform::Gcm { .. } => 16,
        }
    }

    /// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), where `i` is the
    /// 48-bit SRTP packet index or the 31-bit SRTCP index.
    fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    fn cm_apply(aes: &aes::Aes128Enc, salt: &[u8; 14], ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = Transform::cm_iv(salt, ssrc, index);
        let core =
            ctr::CtrCore::<aes::Aes128Enc, ctr::flavors::Ctr128BE>::inner_iv_init(aes.clone(), &iv.into());
        ctr::Ctr128BE::from_core(core).apply_keystream(data);
    }

    /// RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR salt. §9.1 (SRTCP): 00 00 || SSRC ||
    /// 00 00 || 0 || 31-bit index, XOR salt. Both are the 48-bit index below the SSRC.
    fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[2..6].copy_from_slice(&ssrc.to_be_bytes());
        n[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (b, s) in n.iter_mut().zip(salt) {
            *b ^= s;
        }
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `packet[header_len..]` in place and appends the tag. `index` is the 48-bit
    /// SRTP packet index (ROC in the upper 32 bits).
    pub(crate) fn protect_rtp(
        &self,
        packet: &mut Vec<u8>,
        start: usize,
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) {
        let body = &mut packet[start..];
        match self {
            Transform::Cm { aes, salt, mac, tag_len } => {
                Transform::cm_apply(aes, salt, ssrc, index, &mut body[header_len..]);
                // RFC 3711 §4.2: the tag covers the authenticated portion and the ROC.
                let mut m = mac.clone();
                m.update(body);
                m.update(&((index >> 16) as u32).to_be_bytes());
                let tag = m.finalize().into_bytes();
                packet.extend_from_slice(&tag[..*tag_len]);
            }
            Transform::Gcm { key, salt } => {
                let (header, payload) = body.split_at_mut(header_len);
                let nonce = Transform::gcm_nonce(salt, ssrc, index);
                // RFC 7714 §8.2: the whole header is the associated data.
                let tag = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(&*header), payload)
                    .expect("an RTP packet is far below GCM's length limit");
                packet.extend_from_slice(tag.as_ref());
            }
        }
    }

    /// Authenticates `input` (header, encrypted payload, tag) and, if it holds, appends the
    /// plaintext packet to `out`. Nothing is appended on failure.
    pub(crate) fn unprotect_rtp(
        &self,
        input: &[u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), AuthFailed> {
        let (authenticated, tag) = input.split_at(input.len() - self.tag_len());
        match self {
            Transform::Cm { aes, salt, mac, .. } => {
                let mut m = mac.clone();
                m.update(authenticated);
                m.update(&((index >> 16) as u32).to_be_bytes());
                // Constant-time comparison of the truncated tag.
                m.verify_truncated_left(tag).map_err(|_| AuthFailed)?;
                let start = out.len();
                out.extend_from_slice(authenticated);
                Transform::cm_apply(aes, salt, ssrc, index, &mut out[start + header_len..]);
                Ok(())
            }
            Transform::Gcm { key, salt } => {
                let start = out.len();
                out.extend_from_slice(input);
                let nonce = Transform::gcm_nonce(salt, ssrc, index);
                let aad = aead::Aad::from(&input[..header_len]);
                let opened = key.open_in_place(nonce, aad, &mut out[start + header_len..]).map(|p| p.len());
                match opened {
                    Ok(n) => {
                        out.truncate(start + header_len + n);
                        Ok(())
                    }
                    Err(_) => {
                        out.truncate(start);
                        Err(AuthFailed)
                    }
                }
            }
        }
    }

    /// SRTCP (RFC 3711 §3.4, RFC 7714 §9): encrypts after the first 8 octets, appends
    /// E || index and the tag (CM), or tag then E || index (GCM, as its vectors show).
    pub(crate) fn protect_rtcp(&self, packet: &mut Vec<u8>, start: usize, ssrc: u32, index: u32) {
        let e_index = (0x8000_0000 | index).to_be_bytes();
        match self {
            Transform::Cm { aes, salt, mac, tag_len } => {
                Transform::cm_apply(aes, salt, ssrc, u64::from(index), &mut packet[start + 8..]);
                packet.extend_from_slice(&e_index);
                let mut m = mac.clone();
                m.update(&packet[start..]);
                let tag = m.finalize().into_bytes();
                packet.extend_from_slice(&tag[..*tag_len]);
            }
            Transform::Gcm { key, salt } => {
                let (header, payload) = packet[start..].split_at_mut(8);
                let aad = rtcp_aad(header, e_index);
                let nonce = Transform::gcm_nonce(salt, ssrc, u64::from(index));
                let tag = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad), payload)
                    .expect("an RTCP packet is far below GCM's length limit");
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&e_index);
            }
        }
    }

    /// Where the E || index word sits in a protected SRTCP packet of `len` bytes.
    pub(crate) fn rtcp_index_at(&self, len: usize) -> Option<usize> {
        let trailer = self.tag_len() + SRTCP_INDEX_LEN;
        // At least the RTCP header and sender SSRC before the trailer.
        len.checked_sub(trailer).filter(|&n| n >= 8).map(|n| match self {
            Transform::Cm { .. } => n,
            Transform::Gcm { .. } => n + self.tag_len(),
        })
    }

    /// Authenticates a protected SRTCP packet and appends the plaintext RTCP to `out`
    /// (decrypted if E is set; RFC 3711 §3.4 lets a sender leave it clear).
    pub(crate) fn unprotect_rtcp(
        &self,
        input: &[u8],
        ssrc: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), AuthFailed> {
        let Some(at) = self.rtcp_index_at(input.len()) else { return Err(AuthFailed) };
        let e_index: [u8; 4] = input[at..at + 4].try_into().map_err(|_| AuthFailed)?;
        let word = u32::from_be_bytes(e_index);
        let (encrypted, index) = (word & 0x8000_0000 != 0, u64::from(word & 0x7fff_ffff));
        match self {
            Transform::Cm { aes, salt, mac, .. } => {
                let (authenticated, tag) = input.split_at(at + 4);
                let mut m = mac.clone();
                m.update(authenticated);
                m.verify_truncated_left(tag).map_err(|_| AuthFailed)?;
                let start = out.len();
                out.extend_from_slice(&input[..at]);
                if encrypted {
                    Transform::cm_apply(aes, salt, ssrc, index, &mut out[start + 8..]);
                }
                Ok(())
            }
            Transform::Gcm { key, salt } => {
                let nonce = Transform::gcm_nonce(salt, ssrc, index);
                let start = out.len();
                let opened = if encrypted {
                    out.extend_from_slice(&input[..at]);
                    let aad = rtcp_aad(&input[..8], e_index);
                    key.open_in_place(nonce, aead::Aad::from(&aad), &mut out[start + 8..])
                        .map(|p| p.len() + 8)
                } else {
                    // RFC 7714 §9.2: unencrypted SRTCP authenticates everything as AAD.
                    let clear = at - 16;
                    out.extend_from_slice(&input[..clear]);
                    out.extend_from_slice(&e_index);
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(&input[clear..at]);
                    let (aad, _) = out[start..].split_at(clear + 4);
                    key.open_in_place(nonce, aead::Aad::from(aad), &mut tag).map(|_| clear)
                };
                match opened {
                    Ok(n) => {
                        out.truncate(start + n);
                        Ok(())
                    }
                    Err(_) => {
                        out.truncate(start);
                        Err(AuthFailed)
                    }
                }
            }
        }
    }
}

/// RFC 7714 §9.1: the AAD of encrypted SRTCP is the first 8 octets and E || index.
fn rtcp_aad(header: &[u8], e_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&header[..8]);
    aad[8..].copy_from_slice(&e_index);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::hex;

    /// RFC 3711 Appendix B.2: the AES-CM keystream for session key 2B7E..., salt F0F1...FD,
    /// SSRC 0, index 0: its first three and last three of 65282 blocks.
    #[test]
    fn reproduces_the_rfc_3711_b2_keystream() {
        let aes = aes::Aes128Enc::new(hex("2B7E151628AED2A6ABF7158809CF4F3C")[..].into());
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        assert_eq!(Transform::cm_iv(&salt, 0, 0).to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut keystream = vec![0u8; 65282 * 16];
        Transform::cm_apply(&aes, &salt, 0, 0, &mut keystream);
        let blocks = [
            (0, "E03EAD0935C95E80E166B16DD92B4EB4"),
            (1, "D23513162B02D0F72A43A2FE4A5F97AB"),
            (2, "41E95B3BB0A2E8DD477901E4FCA894C0"),
            (0xFEFF, "EC8CDF7398607CB0F2D21675EA9EA1E4"),
            (0xFF00, "362B7C3C6773516318A077D7FC5073AE"),
            (0xFF01, "6A2CC3787889374FBEB4C81B17BA6C44"),
        ];
        for (block, expected) in blocks {
            assert_eq!(keystream[block * 16..block * 16 + 16].to_vec(), hex(expected), "block {block:#x}");
        }
    }

    #[test]
    fn the_iv_mixes_ssrc_and_index_into_the_salt() {
        let iv = Transform::cm_iv(&[0; 14], 0x0102_0304, 0x0000_a0b0_c0d0_e0f0);
        assert_eq!(iv.to_vec(), hex("00000000 01020304 a0b0c0d0e0f0 0000"));
        let n = Transform::gcm_nonce(&[0; 12], 0x5501_a0b2, 0xf17b);
        assert_eq!(n.as_ref().to_vec(), hex("0000 5501a0b2 00000000f17b"));
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        // RFC 7714 §16.1 and §17.1 show these IVs.
        let n = Transform::gcm_nonce(&salt, 0x5501_a0b2, 0xf17b);
        assert_eq!(n.as_ref().to_vec(), hex("51753c6580c2726f20718414"));
        let n = Transform::gcm_nonce(&salt, 0x4d61_7273, 0x5d4);
        assert_eq!(n.as_ref().to_vec(), hex("517524055203726f207170bb"));
    }
}
