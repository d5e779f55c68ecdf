// The browser app in rooms through the server (`peerlink serve --room-mode ...`), in headless
// Chromium (one browser, one context per page, fake camera at 320x240 10 fps). Run inside a
// network namespace (tests/e2e/web-sfu.sh).
//   sfu:   `--room-mode sfu`, 4 app pages: each shows 3 remote tiles whose <video> plays
//          (videoWidth > 0, currentTime advancing) over exactly one RTCPeerConnection; chat
//          through the server arrives under the sender's name (SFU_CHAT=0 skips it, for a
//          server without the relay); a file sent through the server reaches the 3 others,
//          each verifying its SHA-256, and its sender hears it was confirmed; one leaves.
//   auto:  `--room-mode auto --mesh-max N` (MESH_MAX, default 3): N pages in a mesh (N-1
//          connections each), 2 more join one after the other (the first makes the room
//          switch to the server: mode sfu, 1 connection each), both leave (back to a mesh). At each switch, per remote tile and page, the longest
//          stretch without a new frame shown (requestVideoFrameCallback on the tile's
//          <video>: presentation times and presented-frame counts from the compositor) is
//          printed and must be at most MAX_FREEZE_MS.
//
//   control: the steps of auto with `--room-mode sfu` (no switch at all): what the joins and
//          leaves alone cost the tiles in this one shared browser; printed, not checked.
//
//   With PEERLINK_BIN and WS_URL (the binary, the server's ws:// URL), the sfu case also
//   runs native peers in the room: `peerlink recv` is one more receiver of p1's file (4 of
//   4), and `peerlink send` sends a file the 3 pages receive through the server.
//
//   node web-sfu.mjs APP_URL CASE      CASE: sfu | auto | control
//   MAX_FREEZE_MS (1000)   WAIT_MS: bound on each step (30000)   SFU_CHAT=0: no chat check
//   FREEZE_STATS=1: also print the stretches by getStats framesDecoded of the track each tile
//   shows, sampled every 100 ms (their clock stalls with the page's getStats calls)
import { launchChromium, keepPeerConnections } from './chromium.mjs';
import { report, sleep } from './report.mjs';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [app, which] = process.argv.slice(2);
if (!which || !['sfu', 'auto', 'control'].includes(which)) {
  console.error('usage: node web-sfu.mjs APP_URL sfu|auto|control');
  process.exit(2);
}
const MAX_FREEZE_MS = Number(process.env.MAX_FREEZE_MS || 1000);
const WAIT = Number(process.env.WAIT_MS || 30000);
const FREEZE_STATS = process.env.FREEZE_STATS === '1';
// The room's --mesh-max (auto): that many pages make the mesh.
const N = Number(process.env.MESH_MAX || 3);
if (!Number.isInteger(N) || N < 2) {
  console.error(`MESH_MAX must be an integer of at least 2 (got ${process.env.MESH_MAX})`);
  process.exit(2);
}
const checks = report(which === 'sfu' ? 125000 : 110000);
if (which === 'control') console.log('# control: the auto steps with --room-mode sfu, no switch');
const check = checks.check;
const room = `${which}-${process.pid}`;

// In the page before the app (after keepPeerConnections): makes the fake camera small (a
// 2-core machine decodes up to 30 streams here), and follows each remote tile's frames.
function instrument() {
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => gum(c && c.video
    ? { ...c, video: { width: { exact: 320 }, height: { exact: 240 }, frameRate: { max: 10 } } } : c);
  // Per participant id (the tile's data-peer), two clocks: `decoded`, the last time the video
  // track the tile shows had a new decoded frame (getStats inbound-rtp framesDecoded, sampled
  // every 100 ms), and `shown`, the last frame the tile's <video> presented
  // (requestVideoFrameCallback); each with the longest gap since the last reset.
  const decoded = {};
  const frames = {};
  // A second window opens when the page is told of a mode switch (`{"type":"mode"}`): the
  // switch itself, without what the browser shared by every page did for the join or leave
  // that caused it.
  const clock = (at) => ({ last: null, since: at, maxGap: 0, maxAt: 0, count: 0, seen: {}, swSince: null, swGap: 0 });
  // `frames` > 1: that many frames were presented since the last call (its callback came late,
  // e.g. the page's main thread was busy while the compositor went on showing video).
  const tick = (f, now, frames = 1) => {
    const gap = f.last === null ? 0 : (now - Math.max(f.last, f.since)) / frames;
    if (gap > f.maxGap) {
      f.maxGap = gap;
      f.maxAt = now - f.since; // when that stretch ended, after the reset
    }
    if (f.swSince !== null && f.last !== null) f.swGap = Math.max(f.swGap, (now - Math.max(f.last, f.swSince)) / frames);
    f.last = now;
    f.count++;
  };
  window.__resetGaps = () => {
    window.__resetAt = Date.now();
    const now = performance.now();
    window.__modeAt = null;
    for (const f of [...Object.values(frames), ...Object.values(decoded)]) {
      f.maxGap = 0;
      f.since = now;
      f.swSince = null;
      f.swGap = 0;
    }
  };
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data !== 'string' || !ev.data.includes('"type":"mode"') || !window.__resetAt || window.__modeAt) return;
        window.__modeAt = Date.now();
        const now = performance.now();
        for (const f of Object.values(frames)) {
          f.swSince = now;
          f.swGap = 0;
        }
      });
    }
  };
  window.__gaps = () => {
    const now = performance.now();
    // A stretch still open counts too.
    const gap = (f) => (f ? Math.round(Math.max(f.maxGap, f.last === null ? 0 : now - Math.max(f.last, f.since))) : null);
    const out = {};
    for (const id of new Set([...Object.keys(frames), ...Object.keys(decoded)])) {
      const f = frames[id];
      const switched = !f || f.swSince === null ? null
        : Math.round(Math.max(f.swGap, f.last === null ? 0 : now - Math.max(f.last, f.swSince)));
      out[id] = { decoded: gap(decoded[id]), shown: gap(f), shownEnd: Math.round(f?.maxAt ?? 0), switched };
    }
    return out;
  };
  let sampling = false;
  if (window.__freezeStats) setInterval(async () => {
    if (sampling) return;
    sampling = true;
    try {
      const want = new Map(); // video track id -> tile's participant id
      for (const t of document.querySelectorAll('#tiles .tile:not(.self)')) {
        const track = t.querySelector('video').srcObject?.getVideoTracks()[0];
        if (track) want.set(track.id, t.dataset.peer);
      }
      const counts = new Map();
      for (const pc of window.__pcs) {
        if (pc.signalingState === 'closed') continue;
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video' && want.has(r.trackIdentifier)) counts.set(r.trackIdentifier, r.framesDecoded || 0);
        });
      }
      const now = performance.now();
      for (const [track, id] of want) {
        const n = counts.get(track);
        if (n === undefined) continue;
        const d = (decoded[id] ??= clock(now));
        const prev = d.seen[track];
        d.seen[track] = n;
        if (prev !== undefined && n > prev) tick(d, now);
      }
    } finally {
      sampling = false;
    }
  }, 100);
  const hooked = new WeakSet();
  setInterval(() => {
    for (const tile of document.querySelectorAll('#tiles .tile:not(.self)')) {
      const v = tile.querySelector('video');
      const id = tile.dataset.peer;
      if (!v || hooked.has(v)) continue;
      hooked.add(v);
      frames[id] ??= clock(performance.now());
      // Times from the compositor (when each frame was presented), not of the callback.
      let presented = null;
      const onFrame = (now, meta) => {
        if (!v.isConnected) return;
        const n = meta.presentedFrames;
        tick(frames[id], meta.presentationTime, presented === null ? 1 : Math.max(1, n - presented));
        presented = n;
        v.requestVideoFrameCallback(onFrame);
      };
      v.requestVideoFrameCallback(onFrame);
    }
  }, 50);
}

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);

async function openPage(name, later = false) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const log = [];
  const t0 = Date.now();
  page.on('console', (m) => {
    if (m.type() === 'warning' || m.type() === 'error') log.push(`${((Date.now() - t0) / 1000).toFixed(1)} ${m.text()}`);
  });
  page.on('pageerror', (e) => log.push(`page error: ${e.message}`));
  await page.addInitScript(keepPeerConnections);
  if (FREEZE_STATS) await page.addInitScript(() => { window.__freezeStats = true; });
  await page.addInitScript(instrument);
  if (!later) {
    await page.goto(`${app}?room=${room}&name=${name}`, { timeout: 15000 });
    return { name, context, page, log };
  }
  // Loaded now, joined later through the form: the measured stretch holds the join, not the
  // page load (all pages share one browser here, unlike people on their own machines).
  await page.goto(`${app}?room=${room}`, { timeout: 15000 });
  const join = async () => {
    await page.fill('#name-input', name);
    await page.click('#join-button');
  };
  return { name, context, page, log, join };
}

// What a page shows: its mode, open connections, and each remote tile's <video>.
function look(p) {
  return p.page.evaluate(() => {
    const s = window.peerlinkState;
    const open = window.__pcs.filter((pc) => pc.signalingState !== 'closed').length;
    const tiles = [...document.querySelectorAll('#tiles .tile:not(.self)')].map((t) => {
      const v = t.querySelector('video');
      return { id: t.dataset.peer, name: t.querySelector('.tile-name').textContent, source: t.dataset.source,
        width: v.videoWidth, time: v.currentTime, paused: v.paused };
    });
    const sw = s.switches.at(-1);
    const connected = sw ? window.__pcs.filter((pc) => pc.__connectedAt >= sw.wall).map((pc) => pc.__connectedAt - sw.wall) : [];
    return { id: s.selfId, mode: s.mode, connected, began: sw && window.__resetAt ? sw.wall - window.__resetAt : null, switching: s.switching, switches: s.switches, open, made: window.__pcs.length,
      tiles, sfu: s.sfu, chatReceived: s.chatReceived, banner: document.getElementById('error').hidden ? null
        : document.getElementById('error-text').textContent };
  }).catch((e) => ({ error: String(e), tiles: [] }));
}

/** Waits until every page is in `mode`, done switching, with `pcs` open connections and a
 * playing tile (videoWidth > 0, currentTime advancing) for each of the others. */
async function settled(pages, mode, pcs, label) {
  const started = Date.now();
  let problems = [];
  let before = await Promise.all(pages.map(look));
  while (Date.now() - started < WAIT) {
    await sleep(700);
    const now = await Promise.all(pages.map(look));
    const ids = now.map((l) => l.id);
    problems = [];
    now.forEach((l, i) => {
      const who = pages[i].name;
      if (l.error) problems.push(`${who}: ${l.error}`);
      if (l.mode !== mode || l.switching) problems.push(`${who}: mode ${l.mode}${l.switching ? ` switching to ${l.switching}` : ''}`);
      if (l.open !== pcs(l)) problems.push(`${who}: ${l.open} connections`);
      const others = ids.filter((id) => id !== l.id);
      if (l.tiles.length !== others.length) problems.push(`${who}: ${l.tiles.length} tiles`);
      for (const id of others) {
        const t = l.tiles.find((x) => x.id === id);
        const t0 = before[i].tiles.find((x) => x.id === id);
        if (!t || !t0 || !(t.width > 0 && t.time > t0.time)) {
          problems.push(`${who}<-${pages[ids.indexOf(id)].name} ${t ? `w${t.width} t${t.time.toFixed(1)} ${t.source}` : 'no tile'}`);
        }
      }
    });
    before = now;
    if (!problems.length) {
      console.log(`# ${label}: settled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return now;
    }
  }
  check(false, `${label}: not settled after ${WAIT / 1000} s: ${problems.join('; ')}`);
  for (const p of pages) if (p.log.length) console.log(`# ${p.name} log: ${p.log.slice(-5).join(' | ')}`);
  return null;
}

async function resetGaps(pages) {
  await Promise.all(pages.map((p) => p.page.evaluate(() => window.__resetGaps())));
}

/** Prints and checks the longest stretch without a shown frame per page and remote tile,
 * for the participants present before and after the switch. */
async function freezes(pages, keep, label, { quiet = false, event = 'leave' } = {}) {
  const names = Object.fromEntries(await Promise.all(pages.map(async (p) => [await p.page.evaluate(() => window.peerlinkState.selfId), p.name])));
  const worst = { decoded: 0, shown: 0, switched: null };
  const rows = [];
  for (const p of pages) {
    const gaps = await p.page.evaluate(() => window.__gaps());
    const parts = [];
    for (const [id, g] of Object.entries(gaps)) {
      if (!keep.has(id)) continue;
      worst.decoded = Math.max(worst.decoded, g.decoded ?? 0);
      worst.shown = Math.max(worst.shown, g.shown ?? Infinity);
      if (g.switched !== null) worst.switched = Math.max(worst.switched ?? 0, g.switched);
      parts.push(`${names[id] ?? id.slice(0, 6)} ${g.shown}${g.switched === null ? '' : `/${g.switched}`}`
        + `${g.decoded === null ? '' : ` (getStats ${g.decoded})`} (to ${g.shownEnd})`);
    }
    rows.push(`${p.name}: ${parts.join(', ')}`);
  }
  console.log(`# ${label}, longest stretch without a new frame per tile (ms): since the event/since the `
    + `mode message (and when the first ended, ms after the event): ${rows.join(' | ')}`);
  // The getStats clock stalls with the page's getStats calls (every tile of a page shows the
  // same gap then): the check is on what the <video> shows, from the mode message on when
  // there was one.
  const judged = worst.switched ?? worst.shown;
  if (!quiet) {
    check(judged <= MAX_FREEZE_MS, `${label}: no tile's <video> went without a new frame for more than `
      + `${MAX_FREEZE_MS} ms ${worst.switched === null ? '' : 'from the mode message on '}(worst ${judged} ms; `
      + `from the ${event} click on: ${worst.shown} ms)`);
  }
  return worst;
}

// Per page: when its new connections came up and each tile moved, in ms after the switch.
// Returns how many old connections closed on both ends' word ({"moved"} signals) and how
// many pages ended their switch on every other participant's word.
function switchTimes(looks) {
  const out = { early: 0, heard: 0 };
  for (const l of looks) {
    const sw = l.switches.at(-1);
    if (!sw) continue;
    out.early += sw.early || 0;
    out.heard += sw.heard ? 1 : 0;
    console.log(`#   ${l.id.slice(0, 6)} to ${sw.to} (${l.began} ms after the event): connected at ${l.connected.join(', ')}; tiles moved at `
      + `${Object.entries(sw.at).map(([id, ms]) => `${id} ${ms}`).join(', ')}; old connections closed at ${sw.ms}`
      + `${sw.forced ? ` (${sw.forced} tiles had not moved)` : ''}`
      + `${sw.to === 'sfu' ? `; ${sw.early} closed on both ends' word` : `; ${sw.heard ? 'ended on every peer\'s word' : 'ended at the margin or the bound'}`}`);
  }
  return out;
}

// Leaves through the app's button; the page's context (and its share of the one browser)
// goes later, after the measurement, as a person's own machine would.
const gone = [];
async function leave(p) {
  await p.page.click('#leave-btn').catch(() => {});
  gone.push(p);
}
async function closeGone() {
  await Promise.all(gone.splice(0).map((p) => p.context.close().catch(() => {})));
}

// `peerlink recv` (and later `peerlink send`) in this room, run from PEERLINK_BIN.
function nativePeers() {
  const dir = mkdtempSync(join(tmpdir(), 'web-sfu-native-'));
  const meet = ['--server', process.env.WS_URL, '--room', room];
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  let recvErr = '';
  const recv = spawn(process.env.PEERLINK_BIN, ['recv', '--keep-going', '--out', join(dir, 'in'), ...meet, '--name', 'native-recv'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] });
  recv.stderr.on('data', (d) => { recvErr += d; });
  const stopAt = setTimeout(() => recv.kill('SIGINT'), 90000);
  return {
    recvLog: () => recvErr,
    async recvConnected(ms) {
      const end = Date.now() + ms;
      while (Date.now() < end && !/connection Connected/.test(recvErr)) await sleep(100);
      return /connection Connected/.test(recvErr);
    },
    received(name) {
      const path = join(dir, 'in', name);
      return existsSync(path) && /received, SHA-256/.test(recvErr) ? readFileSync(path) : null;
    },
    send(name, bytes, ms) {
      const path = join(dir, name);
      writeFileSync(path, bytes);
      let log = '';
      const send = spawn(process.env.PEERLINK_BIN, ['send', path, ...meet, '--name', 'native-send'],
        { env, stdio: ['ignore', 'ignore', 'pipe'] });
      send.stderr.on('data', (d) => { log += d; });
      const kill = setTimeout(() => send.kill('SIGKILL'), ms);
      return new Promise((resolve) => send.on('exit', (code) => {
        clearTimeout(kill);
        if (code !== 0) console.log(`# peerlink send: ${log.split('\n').slice(-5).join(' | ')}`);
        resolve({ code, log });
      }));
    },
    stop() {
      clearTimeout(stopAt);
      recv.kill('SIGINT');
      if (!/received, SHA-256/.test(recvErr)) console.log(`# peerlink recv: ${recvErr.split('\n').slice(-5).join(' | ')}`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

if (which === 'sfu') {
  const pages = [];
  for (let i = 1; i <= 4; i++) pages.push(await openPage(`p${i}`));
  const s = await settled(pages, 'sfu', () => 1, '4 pages through the server');
  if (s) {
    check(true, '4 pages in an SFU room: each shows 3 remote tiles that play, over exactly one peer connection');
    check(s.every((l) => l.made === 1), `each page made one RTCPeerConnection in all (${s.map((l) => l.made)})`);
  }
  // Chat through the server.
  const [a, ...rest] = pages;
  if (process.env.SFU_CHAT === '0') {
    // For a server from before its chat relay (9d1b9ad): its connection opens a "chat"
    // channel, but nothing comes back on it.
    console.log('SKIP chat through the server (SFU_CHAT=0)');
  } else {
    const text = `hello through the server ${process.pid}`;
    await a.page.fill('#chat-input', text);
    await a.page.click('#chat-send');
    const end = Date.now() + 8000;
    let got = [];
    while (Date.now() < end) {
      got = await Promise.all(rest.map(async (p) => (await look(p)).chatReceived.some((m) => m.text === text && m.name === a.name)));
      if (got.every(Boolean)) break;
      await sleep(200);
    }
    check(got.every(Boolean), `chat through the server: p1's message shows under "p1" on ${got.filter(Boolean).length}/3 pages`);
  }
  // Active speaker: p2 alone with its microphone on; every page outlines p2's tile (its own
  // on p2), from the server's {"speaker"} news.
  const talker = pages[1];
  const talkerId = (await look(talker)).id;
  for (const p of pages) if (p !== talker) await p.page.click('#mute-btn');
  const until = Date.now() + 10000;
  let outlined = [];
  const right = (o, i) => o.length === 1 && o[0] === (pages[i] === talker ? 'self' : talkerId);
  while (Date.now() < until) {
    outlined = await Promise.all(pages.map((p) => p.page.evaluate(
      () => [...document.querySelectorAll('#tiles .tile.speaking')].map((t) => t.dataset.peer))));
    if (outlined.every(right)) break;
    await sleep(200);
  }
  check(outlined.every(right), `active speaker: p2's tile is outlined on ${outlined.filter(right).length}/4 pages (${JSON.stringify(outlined)})`);
  for (const p of pages) if (p !== talker) await p.page.click('#mute-btn');
  // Native peers (PEERLINK_BIN): a `peerlink recv` in the room, connected before p1 sends.
  const native = process.env.PEERLINK_BIN && process.env.WS_URL ? nativePeers() : null;
  if (native) check(await native.recvConnected(20000), 'peerlink recv joined the room through the server');
  const others = native ? 4 : 3;
  // A file through the server: fanned out to the others, each checking its SHA-256; the
  // sender is told it was confirmed once all of them were.
  {
    const bytes = randomBytes(6 * 1024 * 1024 + 17);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const fromId = (await look(a)).id;
    await a.page.setInputFiles('#file-input', { name: 'through-server.bin', mimeType: 'application/octet-stream', buffer: bytes });
    const end = Date.now() + 30000;
    let got = [];
    let sent = null;
    while (Date.now() < end) {
      const states = await Promise.all(pages.map((p) => p.page.evaluate(() => window.peerlinkState).catch(() => null)));
      sent = states[0]?.filesSent.find((t) => t.name === 'through-server.bin') ?? null;
      got = states.slice(1).map((st) => st?.filesReceived.find((t) => t.name === 'through-server.bin') ?? null);
      if (sent && ['confirmed', 'failed'].includes(sent.status) && got.every(Boolean)) break;
      await sleep(300);
    }
    const right = got.filter((t) => t && t.sha256 === digest && t.size === bytes.length && t.peerId === fromId);
    check(right.length === 3, `a file through the server reaches the 3 others, each verified by SHA-256 and shown as from p1 (${right.length}/3: ${JSON.stringify(got.map((t) => t && [t.status, t.peerName, t.sha256?.slice(0, 8)]))})`);
    if (native) {
      const end = Date.now() + 10000;
      while (Date.now() < end && !native.received('through-server.bin')) await sleep(200);
      const file = native.received('through-server.bin');
      const sha = file ? createHash('sha256').update(file).digest('hex') : 'nothing';
      check(sha === digest && /from p1 \(.*\) through the server/.test(native.recvLog()),
        `peerlink recv got p1's file through the server, SHA-256 equal, shown as from p1 (${sha.slice(0, 8)})`);
    }
    check(sent?.status === 'confirmed' && sent.confirmed === others && sent.receivers === others,
      `the sender is told the file was confirmed by ${others} of ${others} (${sent?.status} ${sent?.confirmed} of ${sent?.receivers} ${sent?.reason ?? ''})`);
  }
  // `peerlink send` through the server to the 4 pages and the native receiver.
  if (native) {
    const bytes = randomBytes(1024 * 1024 + 3);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const { code, log } = await native.send('from-native.bin', bytes, 40000);
    const states = await Promise.all(pages.map((p) => p.page.evaluate(() => window.peerlinkState).catch(() => null)));
    const got = states.map((st) => st?.filesReceived.find((t) => t.name === 'from-native.bin') ?? null);
    const right = got.filter((t) => t && t.sha256 === digest && t.size === bytes.length && t.peerName === 'native-send');
    check(code === 0 && /5 of 5 receivers confirmed/.test(log) && right.length === 4,
      `peerlink send through the server: exit ${code}, "${(log.match(/\d+ of \d+ receivers confirmed/) || ['no count'])[0]}" (want 5 of 5: the 4 pages and peerlink recv), the 4 pages verified it as from native-send (${right.length}/4)`);
    native.stop();
  }
  // One leaves: the others' tiles follow (the server renegotiates with each of them).
  const stay = new Set(s ? s.slice(0, 3).map((l) => l.id) : []);
  await resetGaps(pages);
  await leave(pages.pop());
  if (await settled(pages, 'sfu', () => 1, 'after one left')) check(true, 'after one left, each page shows the 2 others over its one connection');
  await freezes(pages, stay, 'sfu, one leaves, the 3 others', { quiet: true });
  await closeGone();
  await browser.close();
  checks.finish();
}

// auto: a mesh of N, then N + 2 through the server, then a mesh of N again.
const control = which === 'control';
const mesh = control ? ['sfu', () => 1] : ['mesh', () => N - 1];
const pages = [];
for (let i = 1; i <= N; i++) pages.push(await openPage(`p${i}`));
let s = await settled(pages, ...mesh, `mesh of ${N}`);
check(!!s, `${which}: ${N} pages, mode ${mesh[0]}, ${mesh[1]()} connection(s) each, ${N - 1} playing tiles`);
const first = new Set(s ? s.map((l) => l.id) : []);
const maxima = {};
// What this machine gives with nothing happening, for comparison.
await resetGaps(pages);
await sleep(4000);
maxima[`none (a mesh of ${N} for 4 s)`] = await freezes(pages, first, `no switch, a mesh of ${N} for 4 s`, { quiet: true });

const nth = (k) => `${k}${['th', 'st', 'nd', 'rd'][k % 10 > 3 || Math.floor(k / 10) % 10 === 1 ? 0 : k % 10]}`;
const extra1 = await openPage(`p${N + 1}`, true);
const extra2 = await openPage(`p${N + 2}`, true);
await resetGaps(pages);
await extra1.join();
pages.push(extra1);
s = await settled(pages, 'sfu', () => 1, `a ${nth(N + 1)} joined`);
check(!!s, `${which}: a ${nth(N + 1)} page joins: mode sfu on every page, one connection each, ${N} playing tiles`);
if (s && !control) {
  const { early } = switchTimes(s.slice(0, N));
  check(early > 0, `mesh -> sfu: ${early} of the ${N * (N - 1)} ends of the old mesh connections closed as soon as both ends showed the server's video ("moved" signals), not at the 2 s margin`);
}
maxima[`mesh -> sfu (${nth(N + 1)} joins)`] = await freezes(pages.slice(0, N), first, `${control ? 'no switch' : 'mesh -> sfu'}, ${nth(N + 1)} joins, the ${N} first pages`, { event: 'join', quiet: control });

await resetGaps(pages);
await extra2.join();
pages.push(extra2);
s = await settled(pages, 'sfu', () => 1, `a ${nth(N + 2)} joined`);
check(!!s, `${which}: a ${nth(N + 2)} page joins the room through the server (${N + 1} playing tiles each, one connection)`);
const others = new Set(s ? s.slice(0, N + 1).map((l) => l.id) : []);
maxima[`sfu, ${nth(N + 2)} joins`] = await freezes(pages.slice(0, N + 1), others, `sfu, a ${nth(N + 2)} joins, the ${N + 1} others`, { event: 'join', quiet: control });

await resetGaps(pages);
await Promise.all([leave(pages.pop()), leave(pages.pop())]);
s = await settled(pages, ...mesh, 'two left');
check(!!s, `${which}: after two leave: mode ${mesh[0]}, ${mesh[1]()} connection(s) each, ${N - 1} playing tiles`);
if (s && !control) {
  const { heard } = switchTimes(s);
  check(heard > 0, `sfu -> mesh: ${heard} of ${N} pages closed their connection to the server on every other page's word ("moved" signals), not at the 2 s margin`);
}
maxima['sfu -> mesh (2 leave)'] = await freezes(pages, first, `${control ? 'no switch' : 'sfu -> mesh'}, 2 leave, the ${N} remaining pages`, { quiet: control });
await closeGone();
console.log(`# freeze maxima per switch (ms): ${JSON.stringify(maxima)}`);
for (const p of pages) {
  const errors = await p.page.evaluate(() => window.peerlinkState.errors.map((e) => e.code)).catch(() => []);
  if (p.log.length || errors.length) console.log(`# ${p.name}: server errors ${errors.join(' ') || 'none'}; log: ${p.log.slice(-6).join(' | ')}`);
}
await browser.close();
checks.finish();
