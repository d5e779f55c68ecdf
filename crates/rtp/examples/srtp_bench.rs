//! SRTP per-packet cost of peerlink-rtp, in the same shape as `bench/srtp-ref/srtp_ref bench`
//! (libsrtp 2) so `bench/srtp.sh` can print them side by side: protect COUNT RTP packets of
//! SIZE bytes (header included) into a caller's buffer, then unprotect about as many
//! (passes over 2,048 protected packets, a fresh receiver each). Prints
//! `protect_ns=X unprotect_ns=Y` per packet.

use peerlink_rtp::{SrtpContext, SrtpProfile};
use std::time::Instant;

/// Protected packets kept for the unprotect passes (as `WORKING_SET` in srtp_ref.c).
const WORKING_SET: usize = 2048;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [profile, size, count] = &args[..] else { return Err("usage: srtp_bench PROFILE SIZE COUNT".into()) };
    // DTLS-SRTP profile ids (RFC 5764 §4.1.2, RFC 7714 §14.2), as the C side takes them.
    let profile = match profile.as_str() {
        "1" => SrtpProfile::Aes128CmHmacSha1_80,
        "2" => SrtpProfile::Aes128CmHmacSha1_32,
        "7" => SrtpProfile::AeadAes128Gcm,
        "8" => SrtpProfile::AeadAes256Gcm,
        p => return Err(format!("unknown profile {p}").into()),
    };
    let size: usize = size.parse()?;
    let count: usize = count.parse()?;
    if size < 12 {
        return Err("SIZE must hold an RTP header".into());
    }
    // The same master key bytes as the C side (their values do not matter for timing).
    let master: Vec<u8> = (0..64u32).map(|i| (i * 7 + 1) as u8).collect();
    let (key, salt) = (&master[..profile.key_len()], &master[profile.key_len()..][..profile.salt_len()]);
    let mut tx = SrtpContext::new(profile, key, salt)?;

    let mut plain = vec![0xab; size];
    plain[..2].copy_from_slice(&[0x80, 96]);
    plain[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let mut out = Vec::with_capacity(size + profile.rtp_tag_len());
    // Packets for the unprotect passes: few enough to stay in cache, as on the C side.
    let store: Vec<Vec<u8>> = (0..WORKING_SET)
        .map(|i| {
            plain[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let mut p = Vec::new();
            tx.protect_rtp(&plain, &mut p).map(|_| p)
        })
        .collect::<Result<_, _>>()?;

    let t0 = Instant::now();
    for i in WORKING_SET..WORKING_SET + count {
        plain[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        out.clear();
        tx.protect_rtp(&plain, &mut out)?;
    }
    let t1 = Instant::now();
    let passes = (count / WORKING_SET).max(1);
    for _ in 0..passes {
        // A fresh receiver per pass (each index is accepted once), set up inside the clock.
        let mut rx = SrtpContext::new(profile, key, salt)?;
        for packet in &store {
            out.clear();
            rx.unprotect_rtp(packet, &mut out)?;
        }
    }
    let t2 = Instant::now();
    let per = |d: std::time::Duration, n: usize| d.as_nanos() as f64 / n as f64;
    println!("protect_ns={:.1} unprotect_ns={:.1}", per(t1 - t0, count), per(t2 - t1, passes * WORKING_SET));
    Ok(())
}
