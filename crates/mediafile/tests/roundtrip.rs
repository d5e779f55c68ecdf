//! Recorder → reader round trips with made-up frames for every codec, recordings that never
//! finished, and random or damaged input for every reader.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use peerlink_mediafile::{Codec, FileError, Format, MediaReader, Recorder, Sample, TrackInfo};

fn out_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mediafile-roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// A key frame and an inter frame of each video codec, as an encoder would shape them.
fn frame(codec: Codec, key: bool, n: u8) -> Vec<u8> {
    match codec {
        // RFC 6386 §9.1: frame tag bit 0 clear for key frames; start code and size follow.
        Codec::Vp8 if key => vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, n],
        Codec::Vp8 => vec![0x11, 0x02, 0x00, n, n],
        // VP9 §6.2: frame_marker 2, profile 0, show_existing_frame 0, frame_type.
        Codec::Vp9 => vec![if key { 0x82 } else { 0x86 }, 0x49, 0x83, 0x42, n],
        // Temporal delimiter, sequence header on key frames, then a frame OBU.
        Codec::Av1 if key => vec![0x12, 0x00, 0x0a, 0x04, 0x00, 0x00, 0x00, 0x40, 0x32, 0x02, 0x10, n],
        Codec::Av1 => vec![0x12, 0x00, 0x32, 0x02, 0x30, n],
        Codec::H264 if key => [
            &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x40][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 0, 1, 0x65, 0x88, 0x84, n, 0x80],
        ]
        .concat(),
        Codec::H264 => vec![0, 0, 0, 1, 0x41, 0x9a, 0x02, n, 0x80],
        _ => vec![0xfc, 0xff, n], // Opus CELT 20 ms
    }
}

/// 3 s of 30 fps video with a key frame every second, and 20 ms Opus packets, interleaved.
fn samples(video: Codec) -> Vec<Sample> {
    let mut out = Vec::new();
    for i in 0..90u32 {
        let time = Duration::from_millis(u64::from(i) * 100 / 3);
        out.push(Sample { track: 0, time, keyframe: i % 30 == 0, data: frame(video, i % 30 == 0, i as u8) });
    }
    for i in 0..150u32 {
        let time = Duration::from_millis(u64::from(i) * 20);
        out.push(Sample { track: 1, time, keyframe: true, data: frame(Codec::Opus, true, i as u8) });
    }
    out.sort_by_key(|s| (s.time, s.track));
    out
}

fn tracks(video: Codec) -> Vec<TrackInfo> {
    vec![TrackInfo::video(video, Some(320), Some(240)), TrackInfo::opus(2)]
}

fn read_all(r: &mut MediaReader) -> Result<Vec<Sample>, FileError> {
    let mut out = Vec::new();
    while let Some(s) = r.next_sample()? {
        out.push(s);
    }
    Ok(out)
}

/// What Matroska keeps of a frame: AV1 loses its temporal delimiter.
fn stored(codec: Codec, data: &[u8]) -> Vec<u8> {
    match (codec, data) {
        (Codec::Av1, [0x12, 0x00, rest @ ..]) => rest.to_vec(),
        _ => data.to_vec(),
    }
}

fn round_trip(video: Codec, ext: &str) {
    let path = out_path(&format!("{video:?}.{ext}"));
    let input = samples(video);
    let mut rec = Recorder::create(&path, &tracks(video)).unwrap();
    for s in &input {
        rec.write(s.track, s.time, s.keyframe, &s.data).unwrap();
    }
    let stats = rec.finish().unwrap();
    assert_eq!(stats.frames, [90, 150]);
    assert_eq!(stats.duration, Duration::from_millis(3000));
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());

    let mut r = MediaReader::open(&path).unwrap();
    assert_eq!(r.tracks(), tracks(video));
    let got = read_all(&mut r).unwrap();
    assert_eq!(got.len(), input.len());
    for (a, b) in input.iter().zip(&got) {
        assert_eq!((a.track, a.keyframe), (b.track, b.keyframe));
        assert!(a.time.abs_diff(b.time) < Duration::from_millis(1), "{:?} vs {:?}", a.time, b.time);
        assert_eq!(stored(video, &a.data), b.data);
    }
}

#[test]
fn vp8_and_opus_round_trip() {
    round_trip(Codec::Vp8, "webm");
}

#[test]
fn vp9_and_opus_round_trip() {
    round_trip(Codec::Vp9, "webm");
}

#[test]
fn av1_and_opus_round_trip() {
    round_trip(Codec::Av1, "webm");
}

#[test]
fn h264_and_opus_round_trip() {
    round_trip(Codec::H264, "mkv");
}

#[test]
fn recorder_never_overwrites() {
    let path = out_path("exists.webm");
    std::fs::write(&path, b"keep").unwrap();
    let e = Recorder::create(&path, &tracks(Codec::Vp8)).unwrap_err();
    assert!(e.to_string().contains("exists.webm"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
}

#[test]
fn recorder_rejects_caller_mistakes() {
    assert!(matches!(Recorder::create(&out_path("none.webm"), &[]), Err(FileError::NoTracks)));
    let mut rec = Recorder::create(&out_path("mistakes.webm"), &tracks(Codec::Vp8)).unwrap();
    assert!(matches!(
        rec.write(2, Duration::ZERO, true, &[1]),
        Err(FileError::NoSuchTrack { track: 2, count: 2 })
    ));
    assert!(matches!(rec.write(0, Duration::ZERO, true, &[]), Err(FileError::BadFrame { .. })));
}

#[test]
fn recorder_clamps_times_that_go_back() {
    let path = out_path("clamp.webm");
    let mut rec = Recorder::create(&path, &[TrackInfo::opus(1)]).unwrap();
    rec.write(0, Duration::from_millis(40), true, &frame(Codec::Opus, true, 0)).unwrap();
    rec.write(0, Duration::from_millis(20), true, &frame(Codec::Opus, true, 1)).unwrap();
    rec.finish().unwrap();
    let got = read_all(&mut MediaReader::open(&path).unwrap()).unwrap();
    assert_eq!(got.iter().map(|s| s.time).collect::<Vec<_>>(), [Duration::from_millis(40); 2]);
}

#[test]
fn h264_frames_before_parameter_sets_are_dropped_and_audio_kept() {
    let path = out_path("wait.mkv");
    let mut rec = Recorder::create(&path, &tracks(Codec::H264)).unwrap();
    rec.write(0, Duration::ZERO, false, &frame(Codec::H264, false, 1)).unwrap();
    rec.write(1, Duration::ZERO, true, &frame(Codec::Opus, true, 1)).unwrap();
    rec.write(0, Duration::from_millis(33), true, &frame(Codec::H264, true, 2)).unwrap();
    let stats = rec.finish().unwrap();
    assert_eq!(stats.frames, [1, 1]);
    let got = read_all(&mut MediaReader::open(&path).unwrap()).unwrap();
    assert_eq!(got.iter().map(|s| (s.track, s.keyframe)).collect::<Vec<_>>(), [(1, true), (0, true)]);
}

/// A recorder dropped without `finish` (the process stopped) leaves a readable file:
/// an unknown-size segment whose last cluster is unknown-size too.
#[test]
fn unfinished_recording_stays_readable() {
    let path = out_path("unfinished.webm");
    let input = samples(Codec::Vp8);
    let mut rec = Recorder::create(&path, &tracks(Codec::Vp8)).unwrap();
    for s in &input {
        rec.write(s.track, s.time, s.keyframe, &s.data).unwrap();
    }
    drop(rec);
    let got = read_all(&mut MediaReader::open(&path).unwrap()).unwrap();
    assert_eq!(got.len(), input.len());
}

/// xorshift64*: reproducible noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Reads everything; only an error or the end may stop it, never a panic.
fn drain(bytes: Vec<u8>, format: Format) {
    if let Ok(mut r) = MediaReader::from_reader(Box::new(Cursor::new(bytes)), format, "fuzz") {
        for _ in 0..10_000 {
            match r.next_sample() {
                Ok(Some(s)) => assert!(!s.data.is_empty()),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

fn valid_files() -> Vec<(Format, Vec<u8>)> {
    let mut out = Vec::new();
    for (codec, ext) in [(Codec::Vp9, "webm"), (Codec::H264, "mkv"), (Codec::Av1, "webm")] {
        let path = out_path(&format!("fuzz-seed-{codec:?}.{ext}"));
        let mut rec = Recorder::create(&path, &tracks(codec)).unwrap();
        for s in samples(codec).iter().take(40) {
            rec.write(s.track, s.time, s.keyframe, &s.data).unwrap();
        }
        rec.finish().unwrap();
        out.push((Format::Webm, std::fs::read(&path).unwrap()));
    }
    let mut ivf = b"DKIF\0\0\x20\0VP80\x40\x01\xf0\0\x1e\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec();
    for i in 0..5u8 {
        let f = frame(Codec::Vp8, i == 0, i);
        ivf.extend_from_slice(&(f.len() as u32).to_le_bytes());
        ivf.extend_from_slice(&u64::from(i).to_le_bytes());
        ivf.extend_from_slice(&f);
    }
    out.push((Format::Ivf, ivf));
    let h264: Vec<u8> = (0..5).flat_map(|i| frame(Codec::H264, i % 3 == 0, i)).collect();
    out.push((Format::H264, h264));
    let mut ogg = Vec::new();
    let mut w = ogg::writing::PacketWriter::new(&mut ogg);
    let head = b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0".to_vec();
    w.write_packet(head, 1, ogg::writing::PacketWriteEndInfo::EndPage, 0).unwrap();
    w.write_packet(b"OpusTags\0\0\0\0\0\0\0\0".to_vec(), 1, ogg::writing::PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    for i in 0..6u8 {
        let end = if i == 5 {
            ogg::writing::PacketWriteEndInfo::EndStream
        } else {
            ogg::writing::PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(frame(Codec::Opus, true, i), 1, end, 960 * u64::from(i + 1)).unwrap();
    }
    out.push((Format::Ogg, ogg));
    out
}

#[test]
fn random_and_damaged_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let formats = [Format::Ivf, Format::H264, Format::Ogg, Format::Webm];
    // Pure noise, with and without each format's magic in front.
    for _ in 0..500 {
        let len = rng.below(600);
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        for (format, magic) in
            formats.iter().zip([&b"DKIF"[..], &[0, 0, 0, 1], b"OggS\0", &[0x1a, 0x45, 0xdf, 0xa3]])
        {
            drain(noise.clone(), *format);
            drain([magic, &noise].concat(), *format);
        }
    }
    // Valid files with bytes changed, cut short, or both.
    for (format, file) in valid_files() {
        let mut seed = MediaReader::from_reader(Box::new(Cursor::new(file.clone())), format, "seed").unwrap();
        assert!(!read_all(&mut seed).unwrap().is_empty(), "{format:?} seed reads");
        for _ in 0..400 {
            let mut f = file.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(f.len());
                f[at] = rng.next() as u8;
            }
            if rng.below(3) == 0 {
                f.truncate(rng.below(f.len()));
            }
            drain(f, format);
        }
        for cut in 0..file.len().min(400) {
            drain(file[..cut].to_vec(), format);
        }
    }
}
