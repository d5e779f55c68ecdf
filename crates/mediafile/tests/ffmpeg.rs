//! ffmpeg is the judge: it makes the inputs, its counts are the expected values, and it must
//! decode and seek in what the recorder writes. Without an ffmpeg binary these tests fail,
//! unless PEERLINK_SKIP_FFMPEG=1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use peerlink_mediafile::{Codec, MediaReader, Recorder, Sample, TrackInfo};
use webm_iterable::matroska_spec::{Master, MatroskaSpec};
use webm_iterable::WebmIterator;

const VIDEO: &str = "testsrc=size=320x240:rate=30:duration=2";
const AUDIO: &str = "sine=frequency=440:duration=2";

/// A fresh folder for one test, or `None` when ffmpeg is missing and the skip is asked for.
fn workdir(name: &str) -> Option<PathBuf> {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success())
        && Command::new("ffprobe").arg("-version").output().is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("PEERLINK_SKIP_FFMPEG").as_deref() == Ok("1") {
            eprintln!("ffmpeg not found; skipped because PEERLINK_SKIP_FFMPEG=1");
            return None;
        }
        panic!("ffmpeg/ffprobe not found on PATH: install ffmpeg, or set PEERLINK_SKIP_FFMPEG=1 to skip");
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mediafile").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Some(dir)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ffmpeg(args: &[&str]) {
    let mut all = vec!["-v", "error", "-y", "-nostdin"];
    all.extend_from_slice(args);
    run("ffmpeg", &all);
}

fn probe(file: &Path, stream: &str, entries: &str) -> String {
    run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            entries,
            "-of",
            "csv=p=0",
            file.to_str().unwrap(),
        ],
    )
}

/// Frames ffprobe decodes from a stream.
fn frame_count(file: &Path, stream: &str) -> usize {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            stream,
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            file.to_str().unwrap(),
        ],
    );
    out.trim().parse().unwrap_or_else(|_| panic!("nb_read_frames of {}: {out:?}", file.display()))
}

/// Indices of the packets ffprobe flags as key frames.
fn key_packets(file: &Path, stream: &str) -> Vec<usize> {
    probe(file, stream, "packet=flags")
        .lines()
        .enumerate()
        .filter(|(_, f)| f.starts_with('K'))
        .map(|(i, _)| i)
        .collect()
}

fn duration(file: &Path) -> f64 {
    let out = probe(file, "v:0", "format=duration");
    out.trim().parse().unwrap_or_else(|_| panic!("duration of {}: {out:?}", file.display()))
}

fn read_all(path: &Path) -> (Vec<TrackInfo>, Vec<Sample>) {
    let mut r = MediaReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let tracks = r.tracks().to_vec();
    let mut samples = Vec::new();
    while let Some(s) = r.next_sample().unwrap_or_else(|e| panic!("{e}")) {
        samples.push(s);
    }
    (tracks, samples)
}

fn keys(samples: &[Sample], track: usize) -> Vec<usize> {
    samples
        .iter()
        .filter(|s| s.track == track)
        .enumerate()
        .filter(|(_, s)| s.keyframe)
        .map(|(i, _)| i)
        .collect()
}

fn record(out: &Path, tracks: &[TrackInfo], samples: &[Sample]) -> peerlink_mediafile::RecordingStats {
    let mut rec = Recorder::create(out, tracks).unwrap();
    for s in samples {
        rec.write(s.track, s.time, s.keyframe, &s.data).unwrap();
    }
    rec.finish().unwrap()
}

/// ffmpeg decodes the whole recording without an error and can seek into it.
fn check_decodes_and_seeks(out: &Path, has_video: bool) {
    let o = out.to_str().unwrap();
    ffmpeg(&["-xerror", "-i", o, "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"]);
    if has_video {
        ffmpeg(&["-xerror", "-ss", "1", "-i", o, "-frames:v", "1", "-f", "null", "-"]);
    } else {
        ffmpeg(&["-xerror", "-ss", "1", "-i", o, "-frames:a", "1", "-f", "null", "-"]);
    }
}

/// The SeekHead points at Cues holding `expected` points.
fn check_cues(out: &Path, expected: usize) {
    let file = std::fs::File::open(out).unwrap();
    let tags =
        WebmIterator::new(file, &[MatroskaSpec::SeekHead(Master::Start), MatroskaSpec::Cues(Master::Start)]);
    let (mut seek_to_cues, mut points) = (false, None);
    for tag in tags {
        match tag.unwrap() {
            MatroskaSpec::SeekHead(Master::Full(seeks)) => {
                seek_to_cues = seeks.iter().any(|s| match s {
                    MatroskaSpec::Seek(Master::Full(f)) => {
                        f.contains(&MatroskaSpec::SeekID(vec![0x1c, 0x53, 0xbb, 0x6b]))
                    }
                    _ => false,
                })
            }
            MatroskaSpec::Cues(Master::Full(p)) => points = Some(p.len()),
            _ => {}
        }
    }
    assert!(seek_to_cues, "SeekHead has no entry for Cues");
    assert_eq!(points, Some(expected), "cue points");
}

/// Reads a one-video-track file, compares with ffprobe, records it and checks the recording.
fn video_round_trip(name: &str, input: &str, encode: &[&str], codec: Codec, out_ext: &str) {
    let Some(dir) = workdir(name) else { return };
    let src = dir.join(input);
    let mut args = vec!["-f", "lavfi", "-i", VIDEO, "-pix_fmt", "yuv420p"];
    args.extend_from_slice(encode);
    args.push(src.to_str().unwrap());
    ffmpeg(&args);

    let (tracks, samples) = read_all(&src);
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].codec, codec);
    assert_eq!((tracks[0].width, tracks[0].height), (Some(320), Some(240)));
    assert_eq!(samples.len(), frame_count(&src, "v:0"), "frames read vs ffprobe");
    let expected_keys = key_packets(&src, "v:0");
    assert_eq!(keys(&samples, 0), expected_keys, "key frames vs ffprobe");
    assert_eq!(expected_keys, [0, 30], "keyint 30 over 60 frames");
    assert_eq!(samples[30].time, Duration::from_secs(1));

    let out = dir.join(format!("out.{out_ext}"));
    let stats = record(&out, &tracks, &samples);
    assert_eq!(stats.frames, [60]);
    assert_eq!(stats.bytes, std::fs::metadata(&out).unwrap().len());
    check_decodes_and_seeks(&out, true);
    assert_eq!(frame_count(&out, "v:0"), samples.len(), "frames in the recording");
    assert_eq!(probe(&out, "v:0", "stream=width,height").trim(), "320,240");
    let d = duration(&out);
    assert!((d - 2.0).abs() < 0.1, "recording lasts {d} s");
    check_cues(&out, 2);

    // And our own reader gets the same frames back.
    let (tracks2, again) = read_all(&out);
    assert_eq!(tracks2[0].codec, codec);
    assert_eq!(again.len(), samples.len());
    for (a, b) in samples.iter().zip(&again) {
        // Matroska keeps milliseconds.
        assert!(a.time.abs_diff(b.time) < Duration::from_millis(1), "{:?} vs {:?}", a.time, b.time);
        assert_eq!(a.keyframe, b.keyframe);
        if codec != Codec::Av1 {
            assert_eq!(a.data, b.data);
        }
    }
}

#[test]
fn vp8_ivf() {
    let enc = ["-c:v", "libvpx", "-g", "30", "-deadline", "realtime", "-cpu-used", "8"];
    video_round_trip("vp8", "in.ivf", &enc, Codec::Vp8, "webm");
}

#[test]
fn vp9_ivf() {
    let enc = ["-c:v", "libvpx-vp9", "-g", "30", "-deadline", "realtime", "-cpu-used", "8"];
    video_round_trip("vp9", "in.ivf", &enc, Codec::Vp9, "webm");
}

#[test]
fn av1_ivf() {
    let enc = ["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8", "-g", "30"];
    video_round_trip("av1", "in.ivf", &enc, Codec::Av1, "webm");
}

fn h264(profile: &str) {
    let enc = [
        "-c:v",
        "libx264",
        "-profile:v",
        profile,
        "-bf",
        "0",
        "-x264-params",
        "keyint=30",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
    ];
    video_round_trip(&format!("h264-{profile}"), "in.h264", &enc, Codec::H264, "mkv");
}

#[test]
fn h264_baseline_annexb() {
    h264("baseline");
}

#[test]
fn h264_high_annexb() {
    h264("high");
}

#[test]
fn opus_ogg() {
    let Some(dir) = workdir("opus") else { return };
    let src = dir.join("in.ogg");
    ffmpeg(&["-f", "lavfi", "-i", AUDIO, "-c:a", "libopus", src.to_str().unwrap()]);
    let (tracks, samples) = read_all(&src);
    assert_eq!(tracks, [TrackInfo::opus(1)]);
    assert_eq!(samples.len(), frame_count(&src, "a:0"));
    assert!(samples.iter().all(|s| s.keyframe));
    assert_eq!(samples[50].time, Duration::from_secs(1), "20 ms packets");

    let out = dir.join("out.webm");
    let stats = record(&out, &tracks, &samples);
    assert_eq!(stats.frames, [samples.len() as u64]);
    check_decodes_and_seeks(&out, false);
    assert_eq!(frame_count(&out, "a:0"), samples.len());
    let d: f64 = probe(&out, "a:0", "format=duration").trim().parse().unwrap();
    assert!((d - 2.0).abs() < 0.1, "recording lasts {d} s");
    let (_, again) = read_all(&out);
    assert_eq!(
        again.iter().map(|s| (s.time, &s.data)).collect::<Vec<_>>(),
        samples.iter().map(|s| (s.time, &s.data)).collect::<Vec<_>>()
    );
}

#[test]
fn webm_vp9_opus() {
    let Some(dir) = workdir("webm") else { return };
    let src = dir.join("in.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        VIDEO,
        "-f",
        "lavfi",
        "-i",
        AUDIO,
        "-c:v",
        "libvpx-vp9",
        "-g",
        "30",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-c:a",
        "libopus",
        src.to_str().unwrap(),
    ]);
    let (tracks, samples) = read_all(&src);
    assert_eq!(tracks.iter().map(|t| t.codec).collect::<Vec<_>>(), [Codec::Vp9, Codec::Opus]);
    let video = samples.iter().filter(|s| s.track == 0).count();
    let audio = samples.iter().filter(|s| s.track == 1).count();
    assert_eq!(video, frame_count(&src, "v:0"));
    assert_eq!(audio, frame_count(&src, "a:0"));
    assert_eq!(keys(&samples, 0), key_packets(&src, "v:0"));
    // Interleaved: audio shows up before the last video frame.
    let first_audio = samples.iter().position(|s| s.track == 1).unwrap();
    assert!(first_audio < 10, "audio first at {first_audio}");

    // Pipes work too.
    let file = std::fs::File::open(&src).unwrap();
    let mut piped =
        MediaReader::from_reader(Box::new(file), peerlink_mediafile::Format::Webm, "stdin").unwrap();
    let mut n = 0;
    while piped.next_sample().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, samples.len());

    let out = dir.join("out.webm");
    let stats = record(&out, &tracks, &samples);
    assert_eq!(stats.frames, [video as u64, audio as u64]);
    check_decodes_and_seeks(&out, true);
    assert_eq!(frame_count(&out, "v:0"), video);
    assert_eq!(frame_count(&out, "a:0"), audio);
    let d = duration(&out);
    assert!((d - 2.0).abs() < 0.1, "recording lasts {d} s");
    check_cues(&out, 2);
}
