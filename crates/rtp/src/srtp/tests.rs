use super::*;

const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo".
const SALT: &str = "517569642070726f2071756f";
const RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                         20646976 69736120 696e2070 61727465 73207472 6573";
const RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                          4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

/// A context around the RFC 7714 session key and salt (the vectors skip the KDF).
fn rfc7714_context(profile: SrtpProfile) -> SrtpContext {
    let key = hex(if profile == SrtpProfile::AeadAes128Gcm { KEY_128 } else { KEY_256 });
    let salt: [u8; 12] = hex(SALT).try_into().unwrap();
    let rtp = Transform::gcm(profile, &key, salt);
    let rtcp = Transform::gcm(profile, &key, salt);
    SrtpContext::from_transforms(profile, rtp, rtcp, SrtpConfig::default())
}

/// RFC 7714 §16.1.1 / §16.2.1 (encryption) and §16.1.2 / §16.2.2 (decryption).
#[test]
fn reproduces_the_rfc_7714_srtp_vectors() {
    let cases = [
        (
            SrtpProfile::AeadAes128Gcm,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f
             42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            SrtpProfile::AeadAes256Gcm,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238 9a58e2f3
             b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
    ];
    for (profile, expected) in cases {
        let mut out = Vec::new();
        rfc7714_context(profile).protect_rtp(&hex(RTP_PLAIN), &mut out).unwrap();
        assert_eq!(out, hex(expected), "{profile:?}");
        let mut plain = Vec::new();
        rfc7714_context(profile).unprotect_rtp(&out, &mut plain).unwrap();
        assert_eq!(plain, hex(RTP_PLAIN));
    }
}

/// RFC 7714 §17.1.1 / §17.2.1 (SRTCP encryption, index 0x5d4) and §17.1.3 / §17.2.3
/// (authenticated only, E = 0: decryption side).
#[test]
fn reproduces_the_rfc_7714_srtcp_vectors() {
    let cases = [
        (
            SrtpProfile::AeadAes128Gcm,
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1
             730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4",
            "841dd968 3dd78ec9 2ae58790 125f62b3 000005d4",
        ),
        (
            SrtpProfile::AeadAes256Gcm,
            "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50 a2eaa5c1
             110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4",
            "91db4afb feee5a97 8fab4393 ed2615fe 000005d4",
        ),
    ];
    for (profile, expected, clear_trailer) in cases {
        let mut ctx = rfc7714_context(profile);
        ctx.sending.insert(0x4d61_7273, SendStream { rtp: Unwrapper16::new(), rtcp: 0x5d4 });
        let mut out = Vec::new();
        ctx.protect_rtcp(&hex(RTCP_PLAIN), &mut out).unwrap();
        assert_eq!(out, hex(expected), "{profile:?}");
        let mut plain = Vec::new();
        rfc7714_context(profile).unprotect_rtcp(&out, &mut plain).unwrap();
        assert_eq!(plain, hex(RTCP_PLAIN));

        let mut clear = hex(RTCP_PLAIN);
        clear.extend(hex(clear_trailer));
        let mut plain = Vec::new();
        rfc7714_context(profile).unprotect_rtcp(&clear, &mut plain).unwrap();
        assert_eq!(plain, hex(RTCP_PLAIN));
        clear[9] ^= 1;
        assert_eq!(
            rfc7714_context(profile).unprotect_rtcp(&clear, &mut plain),
            Err(SrtpError::Authentication)
        );
    }
}

fn context(profile: SrtpProfile, fill: u8) -> SrtpContext {
    let key = vec![fill; profile.key_len()];
    let salt = vec![fill ^ 0x5a; profile.salt_len()];
    SrtpContext::new(profile, &key, &salt).unwrap()
}

fn rtp_packet(seq: u16, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let header = rtp::RtpHeader {
        payload_type: 96,
        sequence_number: seq.into(),
        timestamp: (u32::from(seq) * 3000).into(),
        ssrc: 0xCAFE_BABE,
        ..Default::default()
    };
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    header.encode(&[(1, b"m0")], &payload, 0, &mut out).unwrap();
    out
}

#[test]
fn every_profile_round_trips_rtp_and_rtcp() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = (context(profile, 1), context(profile, 1));
        for seq in [1u16, 2, 3] {
            let p = rtp_packet(seq, 100);
            let mut s = Vec::new();
            let n = tx.protect_rtp(&p, &mut s).unwrap();
            assert_eq!(n, p.len() + profile.rtp_tag_len());
            assert_ne!(&s[..p.len()], &p[..]);
            let mut back = Vec::new();
            assert_eq!(rx.unprotect_rtp(&s, &mut back), Ok(p.len()));
            assert_eq!(back, p);
        }
        let rtcp = hex(RTCP_PLAIN);
        let mut s = Vec::new();
        assert_eq!(tx.protect_rtcp(&rtcp, &mut s), Ok(rtcp.len() + profile.rtcp_overhead()));
        let mut back = Vec::new();
        rx.unprotect_rtcp(&s, &mut back).unwrap();
        assert_eq!(back, rtcp);
        assert_eq!(rx.unprotect_rtcp(&s, &mut back), Err(SrtpError::Replayed { index: 0 }));
        assert_eq!(rx.stats().unprotected, 4);
        assert_eq!(rx.stats().replayed, 1);
    }
}

#[test]
fn a_tampered_packet_is_refused_and_leaves_no_trace() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = (context(profile, 2), context(profile, 2));
        let mut first = Vec::new();
        tx.protect_rtp(&rtp_packet(10, 40), &mut first).unwrap();
        let mut out = Vec::new();
        rx.unprotect_rtp(&first, &mut out).unwrap();
        let mut next = Vec::new();
        tx.protect_rtp(&rtp_packet(11, 40), &mut next).unwrap();
        // A forged packet far ahead (it would move the ROC) with a bad tag.
        let mut far = Vec::new();
        tx.protect_rtp(&rtp_packet(40_000, 40), &mut far).unwrap();
        for bit in [8, 8 * 13, 8 * far.len() - 1] {
            let mut bad = far.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            out.clear();
            let r = rx.unprotect_rtp(&bad, &mut out);
            assert!(r.is_err(), "{profile:?} bit {bit}");
            assert!(out.is_empty());
        }
        assert_eq!(rx.receive_roc(0xCAFE_BABE), Some(0));
        assert_eq!(rx.stats().authentication_failures, 3, "{profile:?}");
        // The window did not move: a packet just after the first still authenticates.
        assert!(rx.unprotect_rtp(&next, &mut out).is_ok());
        // Wrong keys fail too.
        assert_eq!(context(profile, 3).unprotect_rtp(&next, &mut out), Err(SrtpError::Authentication));
    }
}

#[test]
fn replays_reordering_and_old_packets() {
    let (mut tx, mut rx) = (context(SrtpProfile::AeadAes128Gcm, 4), context(SrtpProfile::AeadAes128Gcm, 4));
    let protected: Vec<Vec<u8>> = (0..2000u16)
        .map(|seq| {
            let mut s = Vec::new();
            tx.protect_rtp(&rtp_packet(seq, 20), &mut s).unwrap();
            s
        })
        .collect();
    let mut out = Vec::new();
    rx.unprotect_rtp(&protected[1500], &mut out).unwrap();
    // 600 behind the highest: inside a 1024-wide window.
    rx.unprotect_rtp(&protected[900], &mut out).unwrap();
    assert_eq!(rx.unprotect_rtp(&protected[900], &mut out), Err(SrtpError::Replayed { index: 900 }));
    assert_eq!(rx.unprotect_rtp(&protected[1500], &mut out), Err(SrtpError::Replayed { index: 1500 }));
    assert_eq!(rx.unprotect_rtp(&protected[400], &mut out), Err(SrtpError::TooOld { index: 400 }));
    rx.unprotect_rtp(&protected[1999], &mut out).unwrap();
}

#[test]
fn the_rollover_counter_follows_sequence_wraps() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = (context(profile, 5), context(profile, 5));
        let mut seq = 65_000u16;
        let mut out = Vec::new();
        for _ in 0..70_000u32 {
            let mut s = Vec::new();
            tx.protect_rtp(&rtp_packet(seq, 0), &mut s).unwrap();
            out.clear();
            rx.unprotect_rtp(&s, &mut out).unwrap();
            seq = seq.wrapping_add(1);
            if profile != SrtpProfile::Aes128CmHmacSha1_80 {
                // One profile walks the whole way; the others check the first wrap.
                if rx.receive_roc(0xCAFE_BABE) == Some(1) {
                    break;
                }
            }
        }
        let expected = if profile == SrtpProfile::Aes128CmHmacSha1_80 { 2 } else { 1 };
        assert_eq!(rx.receive_roc(0xCAFE_BABE), Some(expected), "{profile:?}");
    }
}

#[test]
fn dtls_keys_set_up_both_roles() {
    let (ck, cs, sk, ss) = ([1u8; 16], [2u8; 12], [3u8; 16], [4u8; 12]);
    let keys = DtlsSrtpKeys {
        profile: "SRTP_AEAD_AES_128_GCM",
        client_key: &ck,
        client_salt: &cs,
        server_key: &sk,
        server_salt: &ss,
    };
    let mut client = SrtpSession::from_dtls(&keys, DtlsRole::Client, SrtpConfig::default()).unwrap();
    let mut server = SrtpSession::from_dtls(&keys, DtlsRole::Server, SrtpConfig::default()).unwrap();
    let p = rtp_packet(7, 50);
    let (mut s, mut back) = (Vec::new(), Vec::new());
    client.protect_rtp(&p, &mut s).unwrap();
    server.unprotect_rtp(&s, &mut back).unwrap();
    assert_eq!(back, p);
    s.clear();
    back.clear();
    server.protect_rtcp(&hex(RTCP_PLAIN), &mut s).unwrap();
    client.unprotect_rtcp(&s, &mut back).unwrap();
    assert_eq!(back, hex(RTCP_PLAIN));
    // A client cannot read its own packets.
    assert!(client.unprotect_rtp(&s, &mut back).is_err());

    let bad = DtlsSrtpKeys { profile: "SRTP_NULL", ..keys };
    assert!(matches!(
        SrtpSession::from_dtls(&bad, DtlsRole::Client, SrtpConfig::default()),
        Err(KeyError::UnknownProfile(_))
    ));
    let short = DtlsSrtpKeys { client_salt: &cs[..10], ..keys };
    assert_eq!(
        SrtpSession::from_dtls(&short, DtlsRole::Client, SrtpConfig::default()).unwrap_err(),
        KeyError::BadLength { what: "master salt", expected: 12, actual: 10 }
    );
}

#[test]
fn empty_truncated_and_garbage_input_is_refused() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = (context(profile, 6), context(profile, 6));
        let mut out = Vec::new();
        assert!(rx.unprotect_rtp(&[], &mut out).is_err());
        assert!(rx.unprotect_rtcp(&[], &mut out).is_err());
        assert!(tx.protect_rtp(&[], &mut out).is_err());
        assert!(tx.protect_rtcp(&[0x80, 200], &mut out).is_err());
        let mut s = Vec::new();
        tx.protect_rtp(&rtp_packet(1, 30), &mut s).unwrap();
        let mut r = Vec::new();
        tx.protect_rtcp(&hex(RTCP_PLAIN), &mut r).unwrap();
        for n in 0..s.len() {
            assert!(rx.unprotect_rtp(&s[..n], &mut out).is_err());
        }
        for n in 0..r.len() {
            assert!(rx.unprotect_rtcp(&r[..n], &mut out).is_err());
        }
        assert!(out.is_empty());
        for mut buf in crate::garbage(1, 3000, 100) {
            buf.iter_mut().for_each(|b| *b |= 0x80);
            assert!(rx.unprotect_rtp(&buf, &mut out).is_err());
            assert!(rx.unprotect_rtcp(&buf, &mut out).is_err());
        }
        assert!(out.is_empty());
    }
}

#[test]
fn the_number_of_streams_is_bounded() {
    let config = SrtpConfig { max_streams: 2, ..SrtpConfig::default() };
    let mut tx = SrtpContext::with_config(SrtpProfile::AeadAes128Gcm, &[0; 16], &[0; 12], config).unwrap();
    let mut out = Vec::new();
    let mut p = rtp_packet(1, 1);
    for ssrc in 0..2u32 {
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        tx.protect_rtp(&p, &mut out).unwrap();
    }
    p[8..12].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(tx.protect_rtp(&p, &mut out), Err(SrtpError::TooManyStreams(2)));
}
