//! RTP, RTCP and SRTP for WebRTC, our own implementation, sans-IO: codecs and packet
//! transforms that own no sockets, clocks or threads, writing into buffers the caller owns.
//!
//! What it implements:
//! - [`rtp`]: the RTP header (RFC 3550 §5.1) with CSRCs, padding and header extensions
//!   (§5.3.1) as a checked view and a typed value; RTP/RTCP demultiplexing (RFC 5761 §4,
//!   RFC 7983 §7); [`PayloadPatch`], bytes of a payload a forwarder changes in each
//!   receiver's copy (no RFC: an SFU's rewrite of a codec's payload descriptor).
//! - [`ext`]: one- and two-byte header extension elements (RFC 8285 §4.2, §4.3) and the
//!   extensions WebRTC negotiates: mid (RFC 9143 §15), rid and repaired-rid (RFC 8852),
//!   abs-send-time, transport-wide sequence number
//!   (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2), audio level (RFC 6464), video
//!   orientation (3GPP TS 26.114 §7.4.5), playout delay, abs-capture-time; the AV1
//!   dependency descriptor passes through untouched.
//! - [`rtcp`]: compound (RFC 3550 §6.1) and reduced-size (RFC 5506) packets; SR, RR, SDES,
//!   BYE, APP (§6.4–§6.7); generic NACK and PLI (RFC 4585 §6.2.1, §6.3.1); FIR (RFC 5104
//!   §4.3.1); REMB; transport-wide congestion control feedback; XR with RRTR and DLRR
//!   (RFC 3611 §4.4, §4.5).
//! - [`srtp`]: SRTP and SRTCP (RFC 3711) with AES_CM_128_HMAC_SHA1_80/_32 and
//!   AEAD_AES_128_GCM/AEAD_AES_256_GCM (RFC 7714), key derivation (RFC 3711 §4.3), packet
//!   index and rollover counter estimation (§3.3.1), a replay window of 1,024 packets by
//!   default (§3.3.2), keys from DTLS-SRTP (RFC 5764 §4.2) for either role.
//! - Sequence numbers and timestamps are [`Serial16`] and [`Serial32`]; [`Unwrapper16`] and
//!   [`Unwrapper32`] extend them to 64 bits (the rollover counter of RFC 3711 §3.3.1 is the
//!   upper bits of an unwrapped sequence number).
//!
//! Out of scope: MKI and key derivation rates other than zero (DTLS-SRTP uses neither, RFC
//! 5764 §4.1.2), the NULL cipher and SRTP's f8 mode, encrypted header extensions (RFC 6904)
//! and cryptex (RFC 9335), sending unencrypted SRTCP (received E=0 packets are accepted),
//! RTCP report scheduling (§6.2) and statistics, jitter buffers, packetizers and bandwidth
//! estimation (the media layer on top).
//!
//! Crypto comes from well-kept crates: AES-GCM from `ring`, AES-CTR and HMAC-SHA1 from
//! RustCrypto (`aes`, `ctr`, `hmac`, `sha1`); every key is scheduled once per session.
//!
//! ```
//! use peerlink_rtp::{rtcp, DtlsRole, DtlsSrtpKeys, RtpHeader, RtpPacket, SrtpConfig, SrtpSession};
//!
//! # let (key, salt) = ([7u8; 16], [9u8; 12]);
//! // Once DTLS is connected: its exported keys, and which end of the handshake we were.
//! let keys = DtlsSrtpKeys {
//!     profile: "SRTP_AEAD_AES_128_GCM",
//!     client_key: &key, client_salt: &salt, server_key: &key, server_salt: &salt,
//! };
//! let mut srtp = SrtpSession::from_dtls(&keys, DtlsRole::Client, SrtpConfig::default())?;
//!
//! // Sending: write the RTP packet, protect it onto the datagram buffer.
//! let (mut packet, mut datagram) = (Vec::new(), Vec::new());
//! let header = RtpHeader { payload_type: 111, ssrc: 0x1234, ..Default::default() };
//! header.encode(&[(1, b"0")], b"opus frame", 0, &mut packet)?;
//! srtp.protect_rtp(&packet, &mut datagram)?;
//!
//! // Receiving (first byte 128..=191): RTCP or RTP, unprotect, parse. Errors are bad
//! // input from the network: drop the datagram (the context counts it in stats()).
//! # let mut srtp = SrtpSession::from_dtls(&keys, DtlsRole::Server, SrtpConfig::default())?;
//! let mut plain = Vec::new();
//! if peerlink_rtp::is_rtcp(&datagram) {
//!     if srtp.unprotect_rtcp(&datagram, &mut plain).is_ok() {
//!         for packet in rtcp::RtcpPacket::parse_all(&plain).flatten() { /* feedback */ }
//!     }
//! } else if srtp.unprotect_rtp(&datagram, &mut plain).is_ok() {
//!     let rtp = RtpPacket::parse(&plain)?;
//!     assert_eq!(rtp.payload(), b"opus frame");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ext;
pub mod rtcp;
pub mod rtp;
pub mod srtp;

pub use ext::{ExtensionMap, Extensions, HeaderExtensions};
pub use peerlink_proto::{Serial16, Serial32, Unwrapper16, Unwrapper32};
pub use rtcp::{RtcpError, RtcpPacket};
pub use rtp::{is_rtcp, is_rtp_or_rtcp, PayloadPatch, RtpError, RtpHeader, RtpPacket};
pub use srtp::{
    DtlsRole, DtlsSrtpKeys, KeyError, SrtpConfig, SrtpContext, SrtpError, SrtpProfile, SrtpSession, SrtpStats,
};

/// Deterministic pseudo-random bytes for garbage-input tests: `count` buffers of up to
/// `max_len` bytes.
#[cfg(test)]
pub(crate) fn garbage(mut seed: u32, count: usize, max_len: u32) -> impl Iterator<Item = Vec<u8>> {
    let mut next = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        seed >> 16
    };
    (0..count).map(move |_| {
        let len = next() % (max_len + 1);
        (0..len).map(|_| next() as u8).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_and_timestamps_unwrap_across_their_wrap() {
        let mut seq = Unwrapper16::new();
        let mut ts = Unwrapper32::new();
        let mut s = Serial16(65_530);
        let mut t = Serial32(u32::MAX - 3000);
        let (mut last_s, mut last_t) = (0, 0);
        for _ in 0..20 {
            let (us, ut) = (seq.unwrap(s), ts.unwrap(t));
            assert!(us > last_s && ut > last_t);
            (last_s, last_t) = (us, ut);
            s = s.wrapping_add(1);
            t = t.wrapping_add(960);
        }
        assert_eq!(last_s, 65_530 + 19);
        assert_eq!(last_t, u64::from(u32::MAX - 3000) + 19 * 960);
        // A packet from before the wrap, reordered, lands on the previous cycle.
        assert_eq!(seq.unwrap(Serial16(65_535)), 65_535);
    }
}
