//! Differential test against libsrtp 2 (Cisco's reference implementation), driven through
//! `bench/srtp-ref/srtp_ref peer` over a pipe so libsrtp never becomes a dependency of the
//! library. For every profile: 10,000 random RTP packets (CSRCs, extensions, padding,
//! payloads up to 1,200 bytes) across a sequence-number wrap (the ROC goes 0 -> 1), and
//! 2,000 RTCP packets. Both sides protect the same packets and must produce the same bytes
//! (SRTP is deterministic) — so ours are what libsrtp unprotects and libsrtp's what we do;
//! then the same delivery — reordered within the replay window, with replays, packets older
//! than the window and tampered copies — goes to both receivers, which must agree on every
//! verdict and every recovered packet.
//!
//! Run with `scripts/srtp-libsrtp.sh` (it builds the C side and sets `LIBSRTP_PEER`).

use peerlink_rtp::{RtpHeader, SrtpConfig, SrtpContext, SrtpProfile};
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const RTP_PACKETS: usize = 10_000;
const RTCP_PACKETS: usize = 2_000;
const WINDOW: u16 = 1024;
/// libsrtp's SRTCP replay window is fixed at 128.
const RTCP_WINDOW: usize = 128;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `min..=max` random bytes.
    fn some_bytes(&mut self, min: usize, max: usize) -> Vec<u8> {
        let n = min + self.below((max - min + 1) as u64) as usize;
        self.bytes(n)
    }
}

struct Libsrtp {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Libsrtp {
    fn start() -> Libsrtp {
        let path = std::env::var("LIBSRTP_PEER").expect("LIBSRTP_PEER: path of bench/srtp-ref/srtp_ref");
        let mut child = Command::new(path)
            .arg("peer")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the libsrtp peer");
        let input = BufWriter::new(child.stdin.take().unwrap());
        let output = BufReader::new(child.stdout.take().unwrap());
        Libsrtp { child, input, output }
    }

    fn call(&mut self, op: u8, data: &[u8]) -> Result<Vec<u8>, u8> {
        self.input.write_all(&[op]).unwrap();
        self.input.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        self.input.write_all(data).unwrap();
        self.input.flush().unwrap();
        let mut head = [0u8; 5];
        self.output.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut out = vec![0; len];
        self.output.read_exact(&mut out).unwrap();
        if head[0] == 0 {
            Ok(out)
        } else {
            Err(head[0])
        }
    }
}

impl Drop for Libsrtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn profile_id(p: SrtpProfile) -> u8 {
    match p {
        SrtpProfile::Aes128CmHmacSha1_80 => 1,
        SrtpProfile::Aes128CmHmacSha1_32 => 2,
        SrtpProfile::AeadAes128Gcm => 7,
        SrtpProfile::AeadAes256Gcm => 8,
    }
}

fn random_rtp(rng: &mut Rng, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut header = RtpHeader {
        marker: rng.below(2) == 0,
        payload_type: 96 + rng.below(32) as u8,
        sequence_number: seq.into(),
        timestamp: (rng.next() as u32).into(),
        ssrc,
        ..Default::default()
    };
    for _ in 0..rng.below(4) {
        header.csrcs.push(rng.next() as u32);
    }
    let ext_data: Vec<(u8, Vec<u8>)> = match rng.below(3) {
        0 => vec![],
        // One-byte elements.
        1 => (0..1 + rng.below(4)).map(|i| (1 + i as u8, rng.some_bytes(1, 16))).collect(),
        // Two-byte elements (an empty one forces the form).
        _ => vec![(1, vec![]), (20, rng.some_bytes(0, 40))],
    };
    let extensions: Vec<(u8, &[u8])> = ext_data.iter().map(|(id, d)| (*id, &d[..])).collect();
    let payload = rng.some_bytes(0, 1200);
    let padding = if rng.below(5) == 0 { 1 + rng.below(40) as u8 } else { 0 };
    let mut out = Vec::new();
    header.encode(&extensions, &payload, padding, &mut out).unwrap();
    out
}

fn random_rtcp(rng: &mut Rng, ssrc: u32) -> Vec<u8> {
    // A sender report with a random body length (multiple of 32 bits), then a PLI.
    let words = 6 + rng.below(60) as usize;
    let mut out = vec![0x80, 200];
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend(rng.bytes(4 * words - 4));
    out.extend_from_slice(&[0x81, 206, 0, 2]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    out
}

enum Delivery {
    Genuine(usize),
    Tampered(usize, usize),
}

/// The order the receivers see: mostly each packet once, shuffled within runs of `spread`;
/// some repeated (recent, so a replay, or old, past the window) and some tampered.
fn schedule(rng: &mut Rng, n: usize, spread: usize, old: usize) -> Vec<Delivery> {
    let mut order: Vec<usize> = (0..n).collect();
    for block in order.chunks_mut(spread) {
        for i in (1..block.len()).rev() {
            block.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let mut out = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        // A tampered copy goes first, so it is judged on its tag (not as a replay) and the
        // genuine packet after it shows it changed nothing.
        if rng.below(20) == 0 {
            out.push(Delivery::Tampered(i, rng.next() as usize));
        }
        out.push(Delivery::Genuine(i));
        match rng.below(40) {
            0 => out.push(Delivery::Genuine(order[k.saturating_sub(rng.below(spread as u64) as usize)])),
            1 if k > old + spread => out.push(Delivery::Genuine(order[k - old - spread])),
            _ => {}
        }
    }
    out
}

/// Flips one bit: half the time in the tag, else anywhere.
fn tamper(packet: &[u8], tag_len: usize, r: usize) -> Vec<u8> {
    let mut bad = packet.to_vec();
    let bit = if r % 2 == 0 {
        (packet.len() - tag_len) * 8 + (r / 2) % (tag_len * 8)
    } else {
        (r / 2) % (packet.len() * 8)
    };
    bad[bit / 8] ^= 1 << (bit % 8);
    bad
}

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    rejected: usize,
}

fn deliver(
    rtcp: bool,
    packet: &[u8],
    ours: &mut SrtpContext,
    theirs: &mut Libsrtp,
    expected: Option<&[u8]>,
    tally: &mut Tally,
) {
    let mut out = Vec::new();
    let ours_ok =
        if rtcp { ours.unprotect_rtcp(packet, &mut out) } else { ours.unprotect_rtp(packet, &mut out) };
    let theirs_ok = theirs.call(if rtcp { b'V' } else { b'U' }, packet);
    match (&ours_ok, &theirs_ok) {
        (Ok(_), Ok(plain)) => {
            assert_eq!(&out, plain, "both accepted, different plaintext");
            if let Some(e) = expected {
                assert_eq!(out, e, "accepted, but not the packet that was sent");
            }
            tally.accepted += 1;
        }
        (Err(_), Err(_)) => tally.rejected += 1,
        _ => panic!("verdicts differ: ours {ours_ok:?}, libsrtp {theirs_ok:?}"),
    }
}

fn run(profile: SrtpProfile, seed: u64) {
    let mut rng = Rng(seed);
    let mut master = rng.bytes(profile.key_len() + profile.salt_len());
    let config = SrtpConfig { replay_window: usize::from(WINDOW), ..SrtpConfig::default() };
    let (key, salt) = master.split_at(profile.key_len());
    let mut tx = SrtpContext::with_config(profile, key, salt, config).unwrap();
    let mut rx = SrtpContext::with_config(profile, key, salt, config).unwrap();
    let mut lib = Libsrtp::start();
    let mut init = vec![profile_id(profile)];
    init.extend_from_slice(&WINDOW.to_be_bytes());
    init.append(&mut master);
    lib.call(b'I', &init).expect("libsrtp accepts the policy");

    // RTP: start within 2,000 of the wrap so the ROC changes.
    let ssrc = rng.next() as u32;
    let first = (65_535 - rng.below(2_000)) as u16;
    let mut plain = Vec::new();
    let mut protected = Vec::new();
    for i in 0..RTP_PACKETS {
        let p = random_rtp(&mut rng, ssrc, first.wrapping_add(i as u16));
        let mut ours = Vec::new();
        tx.protect_rtp(&p, &mut ours).unwrap();
        let theirs = lib.call(b'P', &p).expect("libsrtp protects");
        assert_eq!(ours, theirs, "{profile:?}: packet {i} protected differently");
        plain.push(p);
        protected.push(ours);
    }
    let mut tally = Tally::default();
    let tag = profile.rtp_tag_len();
    for d in schedule(&mut rng, RTP_PACKETS, 64, usize::from(WINDOW) + 100) {
        match d {
            Delivery::Genuine(i) => {
                deliver(false, &protected[i], &mut rx, &mut lib, Some(&plain[i]), &mut tally)
            }
            Delivery::Tampered(i, r) => {
                let bad = tamper(&protected[i], tag, r);
                deliver(false, &bad, &mut rx, &mut lib, None, &mut tally)
            }
        }
    }
    assert_eq!(rx.receive_roc(ssrc), Some(1), "{profile:?}: the ROC moved with the wrap");
    let stats = rx.stats();
    println!(
        "{profile:?} RTP: {} accepted, {} rejected by both (ours: {} authentication, {} replay, {} malformed)",
        tally.accepted, tally.rejected, stats.authentication_failures, stats.replayed, stats.malformed
    );
    assert_eq!(tally.accepted, RTP_PACKETS, "every genuine packet got through once");

    // RTCP. RFC 3711 §3.4 has the first SRTCP index be zero (ours); libsrtp's first is one.
    // Both are read from the packet, so they interoperate; one packet of ours first aligns
    // the indices and the bytes must match from then on.
    tx.protect_rtcp(&random_rtcp(&mut rng, ssrc), &mut Vec::new()).unwrap();
    let mut plain = Vec::new();
    let mut protected = Vec::new();
    for i in 0..RTCP_PACKETS {
        let p = random_rtcp(&mut rng, ssrc);
        let mut ours = Vec::new();
        tx.protect_rtcp(&p, &mut ours).unwrap();
        let theirs = lib.call(b'Q', &p).expect("libsrtp protects rtcp");
        assert_eq!(ours, theirs, "{profile:?}: rtcp packet {i} protected differently");
        plain.push(p);
        protected.push(ours);
    }
    let mut tally = Tally::default();
    let tag = profile.rtcp_overhead() - 4;
    // Reordering and old repeats stay within libsrtp's fixed 128-packet SRTCP window's
    // reach: a never-seen packet between 128 and 1,024 behind would be a real difference.
    for d in schedule(&mut rng, RTCP_PACKETS, 32, 4 * RTCP_WINDOW) {
        match d {
            Delivery::Genuine(i) => {
                deliver(true, &protected[i], &mut rx, &mut lib, Some(&plain[i]), &mut tally)
            }
            Delivery::Tampered(i, r) => {
                let bad = tamper(&protected[i], tag, r);
                deliver(true, &bad, &mut rx, &mut lib, None, &mut tally)
            }
        }
    }
    println!("{profile:?} RTCP: {} accepted, {} rejected by both", tally.accepted, tally.rejected);
    assert_eq!(tally.accepted, RTCP_PACKETS);
}

#[test]
#[ignore = "needs libsrtp: run scripts/srtp-libsrtp.sh"]
fn agrees_with_libsrtp_on_every_profile() {
    for (k, profile) in SrtpProfile::ALL.into_iter().enumerate() {
        run(profile, 0x5EED_0000 + k as u64);
    }
}
