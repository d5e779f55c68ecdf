//! SRTP and SRTCP (RFC 3711) with the DTLS-SRTP protection profiles WebRTC uses (RFC 5764
//! §4.1.2, RFC 7714 §14.2): AES_CM_128_HMAC_SHA1_80 and _32, AEAD_AES_128_GCM and
//! AEAD_AES_256_GCM. Key derivation rate zero, no MKI.
//!
//! An [`SrtpContext`] holds one sender's keys and, per SSRC, the state both ends keep: the
//! sender's packet index (and so its rollover counter) and SRTCP index, the receiver's
//! replay window and highest index. Only packets that authenticated touch the receiver's
//! state (RFC 3711 §3.3: the ROC and replay list are updated after authentication).
//! [`SrtpSession`] pairs the two directions of a DTLS-SRTP association (RFC 5764 §4.2).

mod cipher;
mod kdf;
mod replay;

use crate::rtp::{self, RtpError};
use cipher::{AuthFailed, Transform};
use peerlink_proto::Unwrapper16;
use replay::{Replay, ReplayWindow};
use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

pub use replay::DEFAULT_WINDOW;

/// A DTLS-SRTP protection profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// RFC 5764 §4.1.2 SRTP_AES128_CM_HMAC_SHA1_80 (0x0001).
    Aes128CmHmacSha1_80,
    /// RFC 5764 §4.1.2 SRTP_AES128_CM_HMAC_SHA1_32 (0x0002): 32-bit SRTP tag, 80-bit SRTCP.
    Aes128CmHmacSha1_32,
    /// RFC 7714 §14.2 SRTP_AEAD_AES_128_GCM (0x0007).
    AeadAes128Gcm,
    /// RFC 7714 §14.2 SRTP_AEAD_AES_256_GCM (0x0008).
    AeadAes256Gcm,
}

impl SrtpProfile {
    pub const ALL: [SrtpProfile; 4] = [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// From the profile's name as RFC 5764/7714 or OpenSSL spell it.
    pub fn from_name(name: &str) -> Option<SrtpProfile> {
        Some(match name {
            "SRTP_AES128_CM_HMAC_SHA1_80" | "SRTP_AES128_CM_SHA1_80" => SrtpProfile::Aes128CmHmacSha1_80,
            "SRTP_AES128_CM_HMAC_SHA1_32" | "SRTP_AES128_CM_SHA1_32" => SrtpProfile::Aes128CmHmacSha1_32,
            "SRTP_AEAD_AES_128_GCM" => SrtpProfile::AeadAes128Gcm,
            "SRTP_AEAD_AES_256_GCM" => SrtpProfile::AeadAes256Gcm,
            _ => return None,
        })
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes: 112 bits for AES-CM, 96 for GCM (RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Aes128CmHmacSha1_32 => 14,
            _ => 12,
        }
    }

    /// Bytes SRTP adds to an RTP packet.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 10,
            SrtpProfile::Aes128CmHmacSha1_32 => 4,
            _ => 16,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet (tag and the E || index word).
    pub fn rtcp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Aes128CmHmacSha1_32 => 10 + 4,
            _ => 16 + 4,
        }
    }
}

/// Why keys could not be set up (a caller mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("unknown srtp protection profile {0:?}")]
    UnknownProfile(String),
    #[error("{what} is {actual} bytes; the profile needs {expected}")]
    BadLength { what: &'static str, expected: usize, actual: usize },
}

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    #[error("not an rtp packet: {0}")]
    NotRtp(#[from] RtpError),
    #[error("{len} bytes is too short")]
    TooShort { len: usize },
    #[error("authentication failed")]
    Authentication,
    #[error("packet index {index} was already received")]
    Replayed { index: u64 },
    #[error("packet index {index} is older than the replay window")]
    TooOld { index: u64 },
    #[error("the srtcp index is used up: the keys must change")]
    IndexExhausted,
    #[error("more than {0} streams")]
    TooManyStreams(usize),
}

/// Counts of what a context did, for `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    pub protected: u64,
    pub unprotected: u64,
    pub malformed: u64,
    pub authentication_failures: u64,
    pub replayed: u64,
}

/// Tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpConfig {
    /// Replay window width in packets (rounded up to 64), for SRTP and SRTCP alike.
    pub replay_window: usize,
    /// Most SSRCs a context keeps state for, per direction.
    pub max_streams: usize,
}

impl Default for SrtpConfig {
    fn default() -> SrtpConfig {
        SrtpConfig { replay_window: DEFAULT_WINDOW, max_streams: 1024 }
    }
}

/// Per-SSRC maps are looked up on every packet: a multiplicative hash of the 32-bit SSRC
/// instead of SipHash. Only authenticated streams (or our own) are inserted, and at most
/// `max_streams` of them, so a peer cannot flood the map with colliding keys.
#[derive(Debug, Default, Clone, Copy)]
struct SsrcHasher(u64);

impl Hasher for SsrcHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SsrcMap<T> = HashMap<u32, T, BuildHasherDefault<SsrcHasher>>;

#[derive(Debug)]
struct SendStream {
    rtp: Unwrapper16,
    /// Next SRTCP index (RFC 3711 §3.4: starts at zero).
    rtcp: u32,
}

#[derive(Debug)]
struct ReceiveStream {
    rtp: ReplayWindow,
    rtcp: ReplayWindow,
}

/// One sender's SRTP and SRTCP keys and per-SSRC state.
#[derive(Debug)]
pub struct SrtpContext {
    profile: SrtpProfile,
    config: SrtpConfig,
    rtp: Transform,
    rtcp: Transform,
    sending: SsrcMap<SendStream>,
    receiving: SsrcMap<ReceiveStream>,
    stats: SrtpStats,
}

impl SrtpContext {
    pub fn new(profile: SrtpProfile, master_key: &[u8], master_salt: &[u8]) -> Result<SrtpContext, KeyError> {
        SrtpContext::with_config(profile, master_key, master_salt, SrtpConfig::default())
    }

    pub fn with_config(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
        config: SrtpConfig,
    ) -> Result<SrtpContext, KeyError> {
        let check = |what, expected, actual| {
            (expected == actual).then_some(()).ok_or(KeyError::BadLength { what, expected, actual })
        };
        check("master key", profile.key_len(), master_key.len())?;
        check("master salt", profile.salt_len(), master_salt.len())?;
        Ok(SrtpContext::from_transforms(
            profile,
            Transform::new(profile, master_key, master_salt, false),
            Transform::new(profile, master_key, master_salt, true),
            config,
        ))
    }

    fn from_transforms(
        profile: SrtpProfile,
        rtp: Transform,
        rtcp: Transform,
        config: SrtpConfig,
    ) -> SrtpContext {
        SrtpContext {
            profile,
            config,
            rtp,
            rtcp,
            sending: SsrcMap::default(),
            receiving: SsrcMap::default(),
            stats: SrtpStats::default(),
        }
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    pub fn stats(&self) -> SrtpStats {
        self.stats
    }

    /// The rollover counter of a stream we received, if any packet of it authenticated.
    pub fn receive_roc(&self, ssrc: u32) -> Option<u32> {
        let h = self.receiving.get(&ssrc)?.rtp.highest()?;
        Some((h >> 16) as u32)
    }

    /// Protects the RTP packet `packet` and appends the SRTP packet to `out` (which is not
    /// cleared: several can be batched). Returns the appended length. Errors are the
    /// caller's: the packet is not RTP, or too many streams.
    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        let (header_len, _) = rtp::header_len(packet)?;
        let ssrc = rtp::read_u32(packet, 8);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let stream = self.send_stream(ssrc)?;
        // The sender's index: the sequence number extended by the wraps it has made.
        let index = stream.rtp.unwrap(seq.into());
        let start = out.len();
        out.reserve(packet.len() + self.rtp.tag_len());
        out.extend_from_slice(packet);
        self.rtp.protect_rtp(out, start, header_len, ssrc, index);
        self.stats.protected += 1;
        Ok(out.len() - start)
    }

    /// Authenticates and decrypts the SRTP packet `packet`, appending the RTP packet to `out`.
    /// Returns the appended length. Every error is bad network input: drop the packet (it
    /// is counted in [`SrtpContext::stats`]).
    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        let r = self.unprotect_rtp_inner(packet, out);
        self.count(&r);
        r
    }

    fn unprotect_rtp_inner(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        let (header_len, _) = rtp::header_len(packet)?;
        let tag_len = self.rtp.tag_len();
        if packet.len() < header_len + tag_len {
            return Err(SrtpError::TooShort { len: packet.len() });
        }
        let ssrc = rtp::read_u32(packet, 8);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let stream = self.receiving.get(&ssrc);
        // RFC 3711 §3.3.1: estimate the index from the highest authenticated one.
        let index = stream.map_or(u64::from(seq), |s| s.rtp.estimate(seq));
        if let Some(s) = stream {
            replay_check(&s.rtp, index)?;
        }
        let start = out.len();
        self.rtp
            .unprotect_rtp(packet, header_len, ssrc, index, out)
            .map_err(|AuthFailed| SrtpError::Authentication)?;
        // Authenticated: now, and only now, the index and replay state move.
        match self.receive_stream(ssrc) {
            Ok(s) => s.rtp.accept(index),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(out.len() - start)
    }

    /// Protects the RTCP packet (or compound) `packet`, appending SRTCP to `out`.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        // RFC 3711 §3.4: the first 8 octets (header and sender SSRC) stay clear.
        if packet.len() < 8 {
            return Err(SrtpError::TooShort { len: packet.len() });
        }
        let ssrc = rtp::read_u32(packet, 4);
        let stream = self.send_stream(ssrc)?;
        // RFC 3711 §9.2: a 31-bit index must not repeat under one key.
        if stream.rtcp > 0x7fff_ffff {
            return Err(SrtpError::IndexExhausted);
        }
        let index = stream.rtcp;
        stream.rtcp += 1;
        let start = out.len();
        out.reserve(packet.len() + self.profile.rtcp_overhead());
        out.extend_from_slice(packet);
        self.rtcp.protect_rtcp(out, start, ssrc, index);
        self.stats.protected += 1;
        Ok(out.len() - start)
    }

    /// Authenticates and decrypts an SRTCP packet, appending the RTCP packet(s) to `out`.
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        let r = self.unprotect_rtcp_inner(packet, out);
        self.count(&r);
        r
    }

    fn unprotect_rtcp_inner(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        let Some(at) = self.rtcp.rtcp_index_at(packet.len()) else {
            return Err(SrtpError::TooShort { len: packet.len() });
        };
        let ssrc = rtp::read_u32(packet, 4);
        let index = u64::from(rtp::read_u32(packet, at) & 0x7fff_ffff);
        if let Some(s) = self.receiving.get(&ssrc) {
            replay_check(&s.rtcp, index)?;
        }
        let start = out.len();
        self.rtcp.unprotect_rtcp(packet, ssrc, out).map_err(|AuthFailed| SrtpError::Authentication)?;
        match self.receive_stream(ssrc) {
            Ok(s) => s.rtcp.accept(index),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(out.len() - start)
    }

    fn count<T>(&mut self, r: &Result<T, SrtpError>) {
        let s = &mut self.stats;
        match r {
            Ok(_) => s.unprotected += 1,
            Err(SrtpError::Authentication) => s.authentication_failures += 1,
            Err(SrtpError::Replayed { .. } | SrtpError::TooOld { .. }) => s.replayed += 1,
            Err(_) => s.malformed += 1,
        }
    }

    fn send_stream(&mut self, ssrc: u32) -> Result<&mut SendStream, SrtpError> {
        bounded_entry(&mut self.sending, ssrc, self.config.max_streams, || SendStream {
            rtp: Unwrapper16::new(),
            rtcp: 0,
        })
    }

    fn receive_stream(&mut self, ssrc: u32) -> Result<&mut ReceiveStream, SrtpError> {
        let width = self.config.replay_window;
        bounded_entry(&mut self.receiving, ssrc, self.config.max_streams, || ReceiveStream {
            rtp: ReplayWindow::new(width),
            rtcp: ReplayWindow::new(width),
        })
    }
}

/// The state of `ssrc`, made if there is room for one more stream.
fn bounded_entry<T>(
    map: &mut SsrcMap<T>,
    ssrc: u32,
    max: usize,
    make: impl FnOnce() -> T,
) -> Result<&mut T, SrtpError> {
    let full = map.len() >= max;
    match map.entry(ssrc) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(_) if full => Err(SrtpError::TooManyStreams(max)),
        Entry::Vacant(e) => Ok(e.insert(make())),
    }
}

fn replay_check(window: &ReplayWindow, index: u64) -> Result<(), SrtpError> {
    match window.check(index) {
        Replay::Fresh => Ok(()),
        Replay::Seen => Err(SrtpError::Replayed { index }),
        Replay::TooOld => Err(SrtpError::TooOld { index }),
    }
}

/// Keys exported by DTLS-SRTP (RFC 5764 §4.2), as `peerlink-dtls`'s `SrtpKeys` carries them.
#[derive(Clone, Copy)]
pub struct DtlsSrtpKeys<'a> {
    /// The negotiated profile's name, e.g. `SRTP_AEAD_AES_128_GCM`.
    pub profile: &'a str,
    pub client_key: &'a [u8],
    pub client_salt: &'a [u8],
    pub server_key: &'a [u8],
    pub server_salt: &'a [u8],
}

impl std::fmt::Debug for DtlsSrtpKeys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsSrtpKeys").field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// Our side of the DTLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    Client,
    Server,
}

/// Both directions of a DTLS-SRTP association: we protect with our keys and unprotect with
/// the peer's.
#[derive(Debug)]
pub struct SrtpSession {
    pub outbound: SrtpContext,
    pub inbound: SrtpContext,
}

impl SrtpSession {
    /// RFC 5764 §4.2: the client writes with the client key and salt, the server with the
    /// server's; each reads with the other's.
    pub fn from_dtls(
        keys: &DtlsSrtpKeys<'_>,
        role: DtlsRole,
        config: SrtpConfig,
    ) -> Result<SrtpSession, KeyError> {
        let profile = SrtpProfile::from_name(keys.profile)
            .ok_or_else(|| KeyError::UnknownProfile(keys.profile.to_owned()))?;
        let client = SrtpContext::with_config(profile, keys.client_key, keys.client_salt, config)?;
        let server = SrtpContext::with_config(profile, keys.server_key, keys.server_salt, config)?;
        Ok(match role {
            DtlsRole::Client => SrtpSession { outbound: client, inbound: server },
            DtlsRole::Server => SrtpSession { outbound: server, inbound: client },
        })
    }

    pub fn protect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        self.outbound.protect_rtp(packet, out)
    }

    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        self.outbound.protect_rtcp(packet, out)
    }

    pub fn unprotect_rtp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        self.inbound.unprotect_rtp(packet, out)
    }

    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<usize, SrtpError> {
        self.inbound.unprotect_rtcp(packet, out)
    }
}

#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

#[cfg(test)]
mod tests;
