"""What the media end-to-end tests share to judge a run: a peer's JSON line, a log's tail, and
ffprobe/ffmpeg's verdict on a recording."""
import json
import subprocess


def first_json(path):
    """The first line of `path` as JSON ({} when missing or not JSON)."""
    try:
        with open(path) as f:
            return json.loads(f.readline())
    except Exception:
        return {}


def tail(path, n=3):
    """The last `n` lines of a log, joined with ' / '."""
    try:
        return " / ".join(open(path).read().strip().splitlines()[-n:])
    except Exception:
        return ""


def probe(path):
    """ffprobe's streams (frames counted by decoding) and format of a recording."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
        "stream=codec_type,codec_name,width,height,nb_read_frames,duration:format=duration",
        "-of", "json", path], capture_output=True, text=True)
    return json.loads(out.stdout or "{}")


def decodes(path):
    """Whether ffmpeg decodes the whole file with -xerror, and its last error line."""
    # -fps_mode and -enc_time_base are output options: Debian's ffmpeg 5.1 refuses them before -i.
    r = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", path, "-fps_mode", "passthrough",
        "-enc_time_base", "-1", "-f", "null", "-"], capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip().splitlines()[-1:] if r.stderr else []


def recording(folder):
    """The one recording in `folder`, judged: (problems, video stream, audio stream), where
    problems lists what is wrong with the file itself (not one file, or it does not decode);
    the streams are ffprobe's ({} when missing), None when there is not exactly one file. The
    audio stream's duration falls back to the file's."""
    import glob
    files = glob.glob(f"{folder}/*")
    if len(files) != 1:
        return [f"{len(files)} recordings: {[f.split('/')[-1] for f in files]}"], None, None
    p = probe(files[0])
    video = next((s for s in p.get('streams', []) if s.get('codec_type') == 'video'), {})
    audio = next((s for s in p.get('streams', []) if s.get('codec_type') == 'audio'), {})
    if not audio.get('duration'):
        audio['duration'] = p.get('format', {}).get('duration')
    ok, err = decodes(files[0])
    return ([] if ok else [f"ffmpeg -xerror: {err}"]), video, audio
