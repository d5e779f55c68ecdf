// The browser app (served by `peerlink serve`) with native media peers, in headless Chromium
// with a fake camera and microphone. Run inside a network namespace (tests/e2e/web-media.sh).
//   play:    `peerlink play VIDEO AUDIO` (VP8 320x240 15 fps + Opus) in the page's room: the page
//            shows a tile named after the play peer whose <video> plays (videoWidth 320,
//            currentTime advancing), the page's inbound-rtp video framesDecoded > 80% of the
//            frames elapsed since the connection came up, and inbound audio has samples; once
//            the file ends, play exits 0 and its tile goes. With the camera on, and (no-camera)
//            with getUserMedia refused, where the app joins receive-only.
//   record:  `peerlink record` in the page's room, the page's camera on: the page shows the
//            record peer's tile, connected and without video; once the user clicks Leave,
//            record exits 0 and its file has a 320x240 or 640x480 video stream that decodes
//            with `ffmpeg -xerror`.
// Each in both join orders (the page first, the native peer first).
//
//   node web-media.mjs APP_URL WS_URL PATH/TO/peerlink IN.ivf IN.ogg WORKDIR
//   CASES="play:page-first play:native-first play:page-first:no-camera
//          play:native-first:no-camera record:page-first record:native-first" (the default)
//   FPS (15), CLIP (8): the play file's frame rate and length in seconds
//   SCREENSHOTS=DIR     save a screenshot of each case's page
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { launchChromium, keepPeerConnections } from './chromium.mjs';
import { report, sleep } from './report.mjs';

const [app, ws, peerlink, ivf, ogg, work] = process.argv.slice(2);
if (!work) {
  console.error('usage: node web-media.mjs APP_URL WS_URL PATH/TO/peerlink IN.ivf IN.ogg WORKDIR');
  process.exit(2);
}
const CASES = (process.env.CASES || 'play:page-first play:native-first play:page-first:no-camera '
  + 'play:native-first:no-camera record:page-first record:native-first')
  .split(/\s+/).filter(Boolean);
const FPS = Number(process.env.FPS || 15);
const CLIP = Number(process.env.CLIP || 8);
const SHOTS = process.env.SCREENSHOTS || '';
if (SHOTS) mkdirSync(SHOTS, { recursive: true });
const checks = report(85000);
const check = checks.check;

function native(args) {
  const child = spawn(peerlink, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { out: '', err: '', code: null, child };
  child.stdout.on('data', (d) => { run.out += d; });
  child.stderr.on('data', (d) => { run.err += d; });
  run.done = new Promise((resolve) => child.on('exit', (code, signal) => {
    run.code = code === null ? signal : code;
    resolve(run.code);
  }));
  return run;
}
const within = (p, ms) => Promise.race([p, sleep(Math.max(0, ms)).then(() => 'timeout')]);
/** Interrupts a native peer still running (killed if that does not end it within 3 s). */
async function stop(run) {
  if (!run || run.code !== null) return;
  run.child.kill('SIGINT');
  await within(run.done, 3000);
  if (run.code === null) run.child.kill('SIGKILL');
}
async function until(pred, ms, step = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v || Date.now() > end) return v;
    await sleep(step);
  }
}
const tail = (s, n = 4) => s.trim().split('\n').slice(-n).join(' / ');

// What the page shows of the participant `name` (its tile, <video>) and the figures of the
// connected RTCPeerConnection's getStats().
async function look(page, name) {
  return page.evaluate(async (who) => {
    const tile = [...document.querySelectorAll('#tiles .tile:not(.self)')]
      .find((t) => t.querySelector('.tile-name').textContent === who);
    const v = tile && tile.querySelector('video');
    const src = v && v.srcObject;
    const out = {
      now: Date.now(),
      tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => t.querySelector('.tile-name').textContent),
      tile: tile ? {
        state: tile.dataset.state,
        noVideo: tile.classList.contains('no-video'),
        emptyShown: getComputedStyle(tile.querySelector('.tile-empty')).display !== 'none',
        videoVisible: getComputedStyle(v).visibility !== 'hidden',
        unmuteOffered: !tile.querySelector('.unmute').hidden,
        net: tile.querySelector('.tile-net').textContent,
      } : null,
      video: v ? {
        width: v.videoWidth, height: v.videoHeight, currentTime: v.currentTime, paused: v.paused,
        muted: v.muted, readyState: v.readyState,
        tracks: src ? src.getTracks().map((t) => `${t.kind}:${t.readyState}`) : [],
      } : null,
      pc: null,
    };
    const pc = (window.__pcs || []).find((p) => p.connectionState === 'connected');
    if (pc) {
      const s = { connectedAt: pc.__connectedAt, inVideo: null, inAudio: null, outVideo: null };
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          s.inVideo = { framesDecoded: r.framesDecoded || 0, framesReceived: r.framesReceived || 0, width: r.frameWidth,
            height: r.frameHeight, freezeCount: r.freezeCount, packetsLost: r.packetsLost };
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          s.inAudio = { totalSamplesReceived: r.totalSamplesReceived || 0, concealedSamples: r.concealedSamples || 0,
            packetsReceived: r.packetsReceived || 0 };
        }
        if (r.type === 'outbound-rtp' && r.kind === 'video') {
          s.outVideo = { framesSent: r.framesSent || 0, width: r.frameWidth, height: r.frameHeight };
        }
      });
      out.pc = s;
    }
    return out;
  }, name);
}

// A user who refused the camera and microphone: the app joins receive-only.
function denyMedia() {
  navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
}

async function openPage(browser, room, label, camera = true) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  await page.addInitScript(keepPeerConnections);
  if (!camera) await page.addInitScript(denyMedia);
  return { context, page, log, go: () => page.goto(`${app}?room=${room}&name=${label}`, { timeout: 15000 }) };
}
const pageState = (page) => page.evaluate(() => window.peerlinkState).catch(() => null);

// The page and the native peer `args` join `room` in `order`; returns the page's first look
// at the native peer (named `name`) once connected with its tile shown, or null (a FAIL).
// run.native gets the native peer's process.
async function meet(p, order, run, args, name, want, tag, room) {
  const kind = args[0];
  if (order === 'page-first') {
    await p.go();
    const joined = await until(async () => {
      const s = await pageState(p.page);
      return s?.signaling === 'joined' && s.media !== 'pending' ? s : null;
    }, 15000);
    if (!check(joined && joined.media === want, `${tag}: the page joined ${room} with media ${joined?.media}`)) return null;
    run.native = native(args);
  } else {
    const n = native(args);
    run.native = n;
    const joined = await until(() => /joined room/.test(n.err) || n.code !== null, 15000);
    if (!check(joined && n.code === null, `${tag}: ${kind} joined ${room}`)) return null;
    await p.go();
  }
  const first = await until(async () => {
    const l = await look(p.page, name).catch(() => null);
    return l && l.pc && l.pc.connectedAt && l.tile ? l : null;
  }, 20000);
  if (!check(!!first, `${tag}: the page connected to the ${kind} peer and shows its tile`)) {
    console.log(JSON.stringify(await look(p.page, name).catch((e) => String(e))));
    return null;
  }
  if (order === 'native-first') {
    const media = (await pageState(p.page))?.media;
    if (!check(media === want, `${tag}: the page is in the call with media ${media}`)) return null;
  }
  return first;
}

async function playCase(browser, order, camera) {
  const tag = `play ${order}${camera ? '' : ' no-camera'}`;
  const room = `wm-play-${randomBytes(3).toString('hex')}`;
  const p = await openPage(browser, room, 'Viewer', camera);
  const args = ['play', ivf, ogg, '--server', ws, '--room', room, '--name', 'player'];
  const want = camera ? 'audio+video' : 'none';
  const run = { native: null };
  try {
    const first = await meet(p, order, run, args, 'player', want, tag, room);
    const play = run.native;
    if (!first) return;
    const t0 = first.pc.connectedAt;
    // Samples every 500 ms while the file plays (it ends CLIP s after the connection).
    const samples = [];
    while (Date.now() < t0 + (CLIP - 0.4) * 1000 && play.code === null) {
      const l = await look(p.page, 'player').catch(() => null);
      if (l && l.pc) samples.push(l);
      await sleep(500);
    }
    if (SHOTS) await p.page.screenshot({ path: join(SHOTS, `play-${order}${camera ? '' : '-no-camera'}.png`) });
    const last = samples[samples.length - 1];
    const early = samples.find((s) => s.now - t0 >= 1500);
    if (!check(!!last && !!early && last.now - early.now >= 3000,
      `${tag}: sampled the page for ${last ? ((last.now - t0) / 1000).toFixed(1) : 0} s of the clip`)) {
      console.log(JSON.stringify(samples.slice(-2)));
      return;
    }
    const el = (last.now - t0) / 1000;
    const tl = samples.map((s) => `${((s.now - t0) / 1000).toFixed(1)}s:${s.pc.inVideo?.framesDecoded ?? '-'}`
      + `/${s.video?.currentTime?.toFixed(1) ?? '-'}`).join(' ');
    console.log(`# ${tag}: t:framesDecoded/currentTime ${tl}`);
    check(last.tile.state === 'connected' && !last.tile.noVideo && last.tile.videoVisible && !last.tile.emptyShown,
      `${tag}: tile "player" is ${last.tile.state}, its video shown (no-video ${last.tile.noVideo}; tiles: ${last.tiles.join(', ')}; ${last.tile.net})`);
    const v = last.video;
    check(v.width === 320 && v.height === 240 && !v.paused && v.readyState >= 2,
      `${tag}: its <video> plays at ${v.width}x${v.height} (paused ${v.paused}, readyState ${v.readyState}, tracks ${v.tracks.join(' ')})`);
    const dt = last.now - early.now;
    const adv = last.video.currentTime - early.video.currentTime;
    check(adv > 0.8 * dt / 1000, `${tag}: its currentTime went ${early.video.currentTime.toFixed(2)} -> ${v.currentTime.toFixed(2)} s in ${(dt / 1000).toFixed(1)} s`);
    const elapsedFrames = Math.min(CLIP * FPS, Math.floor(el * FPS));
    const dec = last.pc.inVideo?.framesDecoded ?? 0;
    check(dec > 0.8 * elapsedFrames,
      `${tag}: inbound video framesDecoded ${dec} of ${elapsedFrames} elapsed frames at ${el.toFixed(1)} s (${Math.round(100 * dec / elapsedFrames)}%, >80%;`
      + ` ${last.pc.inVideo?.width}x${last.pc.inVideo?.height}, freezes ${last.pc.inVideo?.freezeCount}, lost ${last.pc.inVideo?.packetsLost})`);
    const a = last.pc.inAudio;
    check(!!a && a.totalSamplesReceived > 0 && v.tracks.some((t) => t === 'audio:live'),
      `${tag}: audio received: ${a?.totalSamplesReceived ?? 0} samples (${a?.packetsReceived ?? 0} packets, `
      + `${a && a.totalSamplesReceived ? (100 * a.concealedSamples / a.totalSamplesReceived).toFixed(1) : '-'}% concealed), `
      + `played by the tile's <video> (${v.muted ? `muted${last.tile.unmuteOffered ? ', "Tap to hear" offered' : ''}` : 'unmuted'})`);
    // The file ends: play exits 0 and its tile goes.
    const code = await within(play.done, 8000);
    check(code === 0, `${tag}: play exited ${code} at the end of the file${code === 0 ? '' : `: ${tail(play.err)}`}`);
    const gone = await until(async () => !(await look(p.page, 'player').catch(() => ({ tile: 1 }))).tile, 6000, 200);
    check(gone, `${tag}: the tile of play is removed once it left`);
  } finally {
    await stop(run.native);
    if (checks.failed) {
      console.log(`# ${tag}: page console: ${p.log.slice(-8).join(' | ')}`);
      if (run.native) console.log(`# ${tag}: play stderr: ${tail(run.native.err, 8)}`);
    }
    await p.context.close().catch(() => {});
  }
}

function probe(file) {
  const r = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries',
    'stream=codec_type,codec_name,width,height,nb_read_frames:format=duration', '-of', 'json', file], { encoding: 'utf8' });
  try { return JSON.parse(r.stdout); } catch { return {}; }
}

async function recordCase(browser, order) {
  const tag = `record ${order}`;
  const room = `wm-rec-${randomBytes(3).toString('hex')}`;
  const out = join(work, `rec-${order}`);
  const p = await openPage(browser, room, 'Camera');
  const args = ['record', '--out', out, '--server', ws, '--room', room, '--name', 'recorder'];
  const run = { native: null };
  let sent = null;
  try {
    if (!await meet(p, order, run, args, 'recorder', 'audio+video', tag, room)) return;
    await sleep(6000);
    const l = await look(p.page, 'recorder');
    const s = await pageState(p.page);
    if (SHOTS) await p.page.screenshot({ path: join(SHOTS, `record-${order}.png`) });
    check(l.tile.state === 'connected' && l.tile.noVideo && l.tile.emptyShown && !l.tile.videoVisible,
      `${tag}: tile "recorder" is ${l.tile.state}, shown without video (no-video ${l.tile.noVideo}, "No video" shown ${l.tile.emptyShown};`
      + ` tracks ${l.video.tracks.join(' ') || 'none'}; tiles: ${l.tiles.join(', ')}; ${l.tile.net})`);
    sent = l.pc.outVideo;
    check(s?.media === 'audio+video' && sent && sent.framesSent > 0,
      `${tag}: the page sends its camera to it: ${sent?.framesSent ?? 0} frames at ${sent?.width}x${sent?.height}`);
  } finally {
    // The user leaves (the app's Leave button): the room empties, record finalises its file
    // and exits 0.
    const left = Date.now();
    await p.page.click('#leave-btn', { timeout: 3000 }).catch((e) => console.log(`# ${tag}: Leave: ${e.message}`));
    const rec = run.native;
    if (rec) {
      const code = await within(rec.done, 8000);
      console.log(`# ${tag}: record ended ${Date.now() - left} ms after Leave was clicked`);
      await stop(rec);
      check(code === 0, `${tag}: record exited ${code} once the room emptied${code === 0 ? '' : `: ${tail(rec.err)}`}`);
    }
    await p.context.close().catch(() => {});
  }
  let files = [];
  try { files = readdirSync(out).map((f) => join(out, f)); } catch { /* none */ }
  if (!check(files.length === 1, `${tag}: record wrote ${files.length} file(s): ${files.map((f) => f.split('/').pop()).join(', ')}`)) return;
  const pr = probe(files[0]);
  const vs = (pr.streams || []).find((x) => x.codec_type === 'video');
  const as = (pr.streams || []).find((x) => x.codec_type === 'audio');
  const res = vs ? `${vs.width}x${vs.height}` : 'none';
  const frames = Number(vs?.nb_read_frames || 0);
  check(!!vs && ['320x240', '640x480'].includes(res) && frames > 0,
    `${tag}: ffprobe finds a ${vs?.codec_name} ${res} video stream, ${frames} frames`
    + ` (${sent?.framesSent ? Math.round(100 * frames / sent.framesSent) : '-'}% of the ${sent?.framesSent} the page had sent when last sampled);`
    + ` audio ${as ? as.codec_name : 'none'}, ${Number(pr.format?.duration || 0).toFixed(1)} s`);
  // -fps_mode and -enc_time_base are output options: after -i.
  const d = spawnSync('ffmpeg', ['-v', 'error', '-xerror', '-i', files[0], '-fps_mode', 'passthrough', '-enc_time_base', '-1',
    '-f', 'null', '-'], { encoding: 'utf8' });
  check(d.status === 0, `${tag}: the recording decodes with ffmpeg -xerror${d.status === 0 ? '' : `: ${tail(d.stderr || '', 2)}`}`);
}

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
try {
  for (const c of CASES) {
    const [kind, order, extra] = c.split(':');
    if (!['page-first', 'native-first'].includes(order)) throw new Error(`bad case ${c}`);
    const t = Date.now();
    if (kind === 'play') await playCase(browser, order, extra !== 'no-camera');
    else if (kind === 'record') await recordCase(browser, order);
    else throw new Error(`bad case ${c}`);
    console.log(`# ${c}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
} catch (e) {
  check(false, `${e.stack || e}`);
} finally {
  await browser.close();
}
checks.finish();
