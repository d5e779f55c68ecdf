// The interoperability matrix (tests/e2e/interop-matrix.sh sets up the namespaces and the
// server, then runs this inside them): each third-party stack × (it offers / we offer) ×
// (direct / relay-only through our TURN) against `peerlink chat`, then Firefox ↔ Chromium
// through the browser app (call, chat, a file) direct and relay-only, and Firefox's audio and
// video with `peerlink echo`, `record` and `play` in both join orders, and the same three with
// Pion's and werift's VP8 and Opus tracks (sent from files, counted per RTP packet and whole
// frame, what they receive decoded by ffmpeg). Prints ok/FAIL per case and run, a results
// table, and "N passed, M failed".
//
//   node matrix.mjs PEERLINK WS_URL APP_URL BIND_IP
// Env: RUNS (runs of every case, default 1), ONLY (a regular expression on case names),
//      FAR_NS (namespace that reaches only our TURN and signaling: libdatachannel's relay
//      case runs there), PION (the pion-peer binary), SDP_DIR (keep each stack's SDP there),
//      APP=0 (skip the browser app rows), MEDIA_FILE (a VP8+Opus WebM for `peerlink play`;
//      without it no media rows), MEDIA_RUNS (runs of the media rows, default RUNS),
//      MEDIA_IVF and MEDIA_OGG (VP8 IVF and Opus Ogg, one packet a page, of the same length:
//      what Pion and werift send and `peerlink play` sends them; without them no such rows).
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchFirefox } from './firefox.mjs';
import { readIvf, readOggOpus } from './rtp-media.mjs';
import { w3cPeer } from './w3c-peer.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [peerlink, ws, app, bind] = process.argv.slice(2);
const RUNS = Number(process.env.RUNS || 1);
const only = process.env.ONLY ? new RegExp(process.env.ONLY) : null;
const farNs = process.env.FAR_NS || '';
const pion = process.env.PION || join(here, 'pion-peer/bin/pion-peer');
const sdpDir = process.env.SDP_DIR || '';
const EXPECT = 'hello from peerlink';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();

// The whole matrix is bounded, whatever hangs: 280 s a run, 120 s more a run of media rows.
const bound = 280 * RUNS + 120 * Number(process.env.MEDIA_RUNS ?? RUNS);
setTimeout(() => {
  console.log(`FAIL the matrix did not finish within ${bound} s`);
  process.exit(1);
}, bound * 1000).unref();

let passed = 0;
let failed = 0;
const table = new Map(); // case name -> [ok, ...] per run
const details = new Map(); // case name -> last detail string
const record = (name, ok, detail) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
  ok ? passed++ : failed++;
  if (!table.has(name)) table.set(name, []);
  table.get(name).push(ok);
  details.set(name, detail);
};

/** A child process whose output is collected; `until(pattern, ms)` waits for it. */
function child(cmd, args) {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const c = { p, out: '', err: '', exited: false };
  p.stdout.on('data', (d) => { c.out += d; });
  p.stderr.on('data', (d) => { c.err += d; });
  p.on('exit', () => { c.exited = true; });
  p.stdin.on('error', () => {});
  c.until = async (pred, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (pred(c)) return true;
      await sleep(50);
    }
    return pred(c);
  };
  c.stop = async () => {
    if (!c.exited) p.kill('SIGTERM');
    await c.until((x) => x.exited, 3000);
    if (!c.exited) p.kill('SIGKILL');
  };
  return c;
}

/** Our side: `peerlink chat`; `type()` writes the line it sends (sent once a channel opens). */
function chat(room) {
  const c = child(peerlink, ['chat', '--server', ws, '--room', room, '--name', 'peerlink', '--bind', bind]);
  c.type = () => c.p.stdin.write(`${EXPECT}\n`);
  return c;
}

// One Firefox for the whole matrix, started when a case first needs it; a context per case.
let firefox = null;
async function firefoxContext() {
  if (!firefox) {
    const t = Date.now();
    firefox = await launchFirefox();
    console.log(`# ${await firefox.version()}; started in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  return firefox.createBrowserContext();
}

/** A page of a Firefox context whose console errors and warnings are kept in `page.logged`
 * (Firefox says there what it thinks of what it was sent, e.g. a candidate before its
 * description). */
async function firefoxPage(ctx) {
  const page = await ctx.newPage();
  page.logged = [];
  page.on('console', (m) => {
    if (['error', 'warn', 'warning'].includes(m.type())) page.logged.push(m.text().slice(0, 200));
  });
  return page;
}
/** The console lines of Firefox pages worth a note in a case's result. */
const consoleNote = (lines) => (lines.length ? `; firefox console: ${[...new Set(lines)].join(' | ')}` : '');

/** A third-party peer; resolves to its result object (tests/interop/w3c-peer.mjs's shape). */
function thirdParty(stack, room, relay) {
  const timeout = '20000';
  if (stack === 'firefox') {
    let joined = false;
    const run = (async () => {
      const ctx = await firefoxContext();
      try {
        const page = await firefoxPage(ctx);
        await page.goto(`${app.replace(/\/?$/, '/')}interop-peer`);
        const o = { stack, url: ws, room, relay, expect: EXPECT, timeoutMs: Number(timeout) };
        const poll = (async () => {
          while (!joined) {
            joined = await page.evaluate(() => globalThis.__plxJoined === true).catch(() => false);
            if (!joined) await sleep(50);
          }
        })();
        const r = await page.evaluate(`(${w3cPeer.toString()})(${JSON.stringify(o)})`);
        joined = true;
        await poll;
        r.console = page.logged;
        return r;
      } finally {
        await ctx.close().catch(() => {});
      }
    })();
    return { joined: () => joined, result: run, stop: async () => {} };
  }
  const args = [relay ? '1' : '0', EXPECT, timeout];
  let cmd;
  let argv;
  if (stack === 'pion') {
    [cmd, argv] = [pion, [ws, room, ...args]];
  } else {
    [cmd, argv] = ['node', [join(here, 'peer.mjs'), stack, ws, room, ...args]];
  }
  // libjuice checks from its host socket whatever the policy: relay-only is made by the
  // topology (FAR_NS reaches nothing of ours but the TURN and signaling ports).
  if (stack === 'libdatachannel' && relay && farNs) [cmd, argv] = ['ip', ['netns', 'exec', farNs, cmd, ...argv]];
  const c = child(cmd, argv);
  const result = (async () => {
    await c.until((x) => x.exited, 30000);
    await c.stop();
    try {
      return JSON.parse(c.out.trim().split('\n').pop());
    } catch {
      return { ok: false, events: [`no result; exit ${c.p.exitCode}; stderr: ${c.err.slice(-800)}`] };
    }
  })();
  return { joined: () => /joined/.test(c.err), result, stop: c.stop };
}

async function stackCase(stack, itOffers, relay, run) {
  const name = `${stack} ${itOffers ? 'offers' : 'answers'} ${relay ? 'relay' : 'direct'}`;
  if (only && !only.test(name)) return;
  const room = `ix-${stack}-${itOffers ? 'o' : 'a'}-${relay ? 'r' : 'd'}-${randomBytes(3).toString('hex')}`;
  let ours = null;
  let theirs = null;
  const started = Date.now();
  try {
    if (itOffers) {
      // We are in the room first: the newcomer (the stack) offers.
      ours = chat(room);
      await ours.until((c) => /waiting for someone/.test(c.err), 10000);
      theirs = thirdParty(stack, room, relay);
      // The line is typed while their offer is on its way or being applied: an input that
      // interrupts the negotiation must not lose it.
      const end = Date.now() + 10000;
      while (!theirs.joined() && Date.now() < end) await sleep(20);
      ours.type();
    } else {
      theirs = thirdParty(stack, room, relay);
      const end = Date.now() + 10000;
      while (!theirs.joined() && Date.now() < end) await sleep(50);
      ours = chat(room);
      ours.type();
    }
    const r = await theirs.result;
    await ours.until((c) => c.out.includes(`hello from ${stack}`) && /selected pair: /.test(c.err), 5000);
    const got = ours.out.includes(`hello from ${stack}`);
    const pairLine = ([...ours.err.matchAll(/^selected pair: (.*)$/gm)].pop() || [, 'none'])[1];
    const ourRemote = pairLine.split(' -> ')[1];
    const relayOk = !relay || ourRemote === 'relay' || (r.selected && r.selected.local === 'relay');
    const roleOk = r.role === (itOffers ? 'offer' : 'answer');
    const ok = Boolean(r.ok && got && relayOk && roleOk);
    const notes = [];
    if (r.earlyCandidates) notes.push(`${r.earlyCandidates} of our candidates came before our description`);
    if (r.addCandidateErrors && r.addCandidateErrors.length) notes.push(`addIceCandidate errors: ${r.addCandidateErrors.join('; ')}`);
    if (!r.remoteEndOfCandidates) notes.push('no end-of-candidates from us');
    const theirPair = r.selected ? `${r.selected.local} -> ${r.selected.remote}` : 'not told';
    const detail = `open ${r.openMs ?? '-'} ms; ours ${pairLine}; theirs ${theirPair}` +
      `${got ? '' : '; peerlink chat did not print their line'}${r.ok ? '' : `; they did not get ours`}` +
      `${relayOk ? '' : '; not relayed'}${roleOk ? '' : `; role ${r.role}`}${notes.length ? `; ${notes.join('; ')}` : ''}` +
      `${consoleNote(r.console || [])} (${((Date.now() - started) / 1000).toFixed(1)} s)`;
    record(name, ok, detail);
    if (!ok) {
      console.log(`# ${name}: their events: ${(r.events || []).join(' | ')}`);
      console.log(`# ${name}: peerlink chat stderr (last lines):\n${ours.err.split('\n').slice(-15).join('\n')}`);
    }
    if (sdpDir && run === 0) {
      const tag = `${stack}-${itOffers ? 'offer' : 'answer'}-${relay ? 'relay' : 'direct'}`;
      writeFileSync(join(sdpDir, `${tag}.theirs.sdp`), r.localSdp || '');
      writeFileSync(join(sdpDir, `${tag}.ours.sdp`), r.remoteSdp || '');
      writeFileSync(join(sdpDir, `${tag}.json`), JSON.stringify({ ...r, localSdp: undefined, remoteSdp: undefined, startedAt: started / 1000, endedAt: Date.now() / 1000, ourStderr: ours.err }, null, 1));
    }
  } catch (e) {
    record(name, false, `${e.stack || e}`);
  } finally {
    if (theirs) await theirs.stop();
    if (ours) {
      ours.p.stdin.end();
      await ours.stop();
    }
  }
}

// ---- Firefox ↔ Chromium through the browser app ---------------------------------------------

const FILE_SIZE = 2 * 1024 * 1024;

async function appCase(chromium, firstEngine, relay, tmp) {
  const second = firstEngine === 'chromium' ? 'firefox' : 'chromium';
  const name = `app ${firstEngine} then ${second} ${relay ? 'relay' : 'direct'}`;
  if (only && !only.test(name)) return;
  const room = `ix-app-${randomBytes(4).toString('hex')}`;
  const url = (who) => `${app.replace(/\/?$/, '/')}?room=${room}&name=${who}${relay ? '&relay=1' : ''}`;
  const ctxs = [];
  const pages = {};
  const started = Date.now();
  const facts = [];
  let ok = true;
  const need = (cond, what) => { if (!cond) { ok = false; facts.push(`NOT ${what}`); } return cond; };
  try {
    const open = async (engine) => {
      if (engine === 'chromium') {
        const ctx = await chromium.newContext({ permissions: ['camera', 'microphone'] });
        ctxs.push(ctx);
        pages[engine] = await ctx.newPage();
      } else {
        const ctx = await firefoxContext();
        ctxs.push(ctx);
        pages[engine] = await firefoxPage(ctx);
      }
      await pages[engine].goto(url(engine));
    };
    const state = (engine) => pages[engine].evaluate(() => window.peerlinkState).catch(() => null);
    const waitFor = async (engine, pred, ms) => {
      const end = Date.now() + ms;
      let s = null;
      for (;;) {
        s = await state(engine);
        if (s && pred(s)) return [true, s];
        if (Date.now() > end) return [false, s];
        await sleep(200);
      }
    };
    await open(firstEngine);
    await waitFor(firstEngine, (s) => s.signaling === 'joined', 15000);
    await open(second);
    const connected = (s) => s.peers.length === 1 && s.peers[0].connectionState === 'connected' && s.peers[0].chatOpen;
    const [[c1, s1], [c2, s2]] = await Promise.all([waitFor(firstEngine, connected, 30000), waitFor(second, connected, 30000)]);
    if (need(c1 && c2, 'connected with the chat channel open')) {
      // The call: video decodes both ways (frames keep coming).
      for (const e of [firstEngine, second]) {
        const [v1, a] = await waitFor(e, (s) => s.peers[0]?.framesDecoded > 0, 15000);
        const [v2, b] = await waitFor(e, (s) => s.peers[0]?.framesDecoded > (a?.peers[0]?.framesDecoded ?? 0) + 5, 8000);
        need(v1 && v2, `${e} decodes video`);
        facts.push(`${e} video ${b?.peers[0]?.framesDecoded ?? 0} frames`);
      }
      const [, p1] = await waitFor(firstEngine, (s) => s.peers[0]?.localCandidateType, 5000);
      const [, p2] = await waitFor(second, (s) => s.peers[0]?.localCandidateType, 5000);
      const pair = (s) => `${s?.peers[0]?.localCandidateType} -> ${s?.peers[0]?.remoteCandidateType}`;
      facts.push(`pairs ${firstEngine} ${pair(p1)}, ${second} ${pair(p2)}`);
      if (relay) need(p1?.peers[0]?.localCandidateType === 'relay' && p2?.peers[0]?.localCandidateType === 'relay', 'relayed on both sides');
      // Chat both ways, through the page's own input.
      for (const [from, to] of [[firstEngine, second], [second, firstEngine]]) {
        const text = `hello from ${from} ${randomBytes(3).toString('hex')}`;
        if (from === 'chromium') {
          await pages[from].fill('#chat-input', text);
        } else {
          await pages[from].type('#chat-input', text);
        }
        await pages[from].click('#chat-send');
        const [got] = await waitFor(to, (s) => s.chatReceived.some((m) => m.text === text), 10000);
        need(got, `chat ${from} -> ${to}`);
      }
      // A file from the second to the first, SHA-256 checked by the app.
      const fileName = `ix-${second}-${relay ? 'relay' : 'direct'}.bin`;
      const path = join(tmp, fileName);
      const bytes = randomBytes(FILE_SIZE);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      writeFileSync(path, bytes);
      if (second === 'chromium') {
        await pages[second].setInputFiles('#file-input', path);
      } else {
        const input = await pages[second].$('#file-input');
        await input.uploadFile(path);
      }
      const [recv, rs] = await waitFor(firstEngine, (s) => s.filesReceived.some((f) => f.name === fileName)
        || s.transfers.some((f) => f.status === 'failed'), 30000);
      const f = rs?.filesReceived.find((x) => x.name === fileName);
      need(recv && f && f.size === FILE_SIZE && f.sha256 === sha256, `file ${second} -> ${firstEngine} with its SHA-256`);
      facts.push(`file ${f ? 'verified' : 'missing'}`);
      rmSync(path, { force: true });
    } else {
      facts.push(`states ${JSON.stringify(s1?.peers)} / ${JSON.stringify(s2?.peers)}`.slice(0, 600));
    }
  } catch (e) {
    need(false, `${e.stack || e}`);
  } finally {
    for (const c of ctxs) await c.close().catch(() => {});
  }
  record(name, ok, `${facts.join('; ')}${consoleNote(pages.firefox?.logged || [])} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

// ---- Firefox's audio and video with the native peer's media commands -------------------------

const mediaFile = process.env.MEDIA_FILE || '';
const MEDIA_SECONDS = 5;

/** Video frames and whether there is audio in a recording, as ffprobe counts them. */
function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_type,codec_name,nb_read_frames',
    '-of', 'json', file], { encoding: 'utf8', timeout: 20000 });
  const streams = JSON.parse(out).streams || [];
  const v = streams.find((x) => x.codec_type === 'video');
  return { video: v ? Number(v.nb_read_frames) : 0, videoCodec: v && v.codec_name, audio: streams.some((x) => x.codec_type === 'audio') };
}

async function mediaCase(tool, itOffers, relay, tmp) {
  const name = `firefox media ${tool} ${itOffers ? 'offers' : 'answers'} ${relay ? 'relay' : 'direct'}`;
  if (only && !only.test(name)) return;
  const room = `ix-m-${tool}-${randomBytes(3).toString('hex')}`;
  const dir = join(tmp, room);
  mkdirSync(dir);
  const args = { echo: ['echo'], record: ['record', '--out', dir], play: ['play', mediaFile, '--loop'] }[tool];
  const started = Date.now();
  let ours = null;
  let logged = [];
  const facts = [];
  let ok = true;
  const need = (cond, what) => { if (!cond) { ok = false; facts.push(`NOT ${what}`); } return cond; };
  try {
    const start = () => child(peerlink, [...args, '--server', ws, '--room', room, '--name', tool, '--bind', bind]);
    const ctx = await firefoxContext();
    const page = await firefoxPage(ctx);
    await page.goto(`${app.replace(/\/?$/, '/')}interop-peer`);
    const o = { stack: 'firefox', url: ws, room, relay, media: { send: tool !== 'play', seconds: MEDIA_SECONDS }, timeoutMs: 20000 };
    if (itOffers) {
      ours = start();
      await ours.until((c) => /joined room/.test(c.err), 10000);
    }
    const run = page.evaluate(`(${w3cPeer.toString()})(${JSON.stringify(o)})`);
    if (!itOffers) {
      const end = Date.now() + 10000;
      while (Date.now() < end && !(await page.evaluate(() => globalThis.__plxJoined === true).catch(() => false))) await sleep(50);
      ours = start();
    }
    const r = await run;
    await ctx.close().catch(() => {});
    logged = page.logged;
    need(r.ok, `connected (${r.events.slice(-3).join(' | ')})`);
    need(r.role === (itOffers ? 'offer' : 'answer'), `role ${r.role}`);
    const m = r.media || {};
    const sent = m['out-video']?.frames ?? 0;
    if (tool === 'echo') {
      const back = m['in-video']?.frames ?? 0;
      need(sent > 20 && back >= sent * 0.5, `echoed video decodes (${back} of ${sent} frames)`);
      need((m['in-audio']?.packets ?? 0) > 50, `echoed audio (${m['in-audio']?.packets ?? 0} packets)`);
      facts.push(`sent ${sent} ${m['out-video']?.codec} frames, ${back} came back at ${m['in-video']?.width}x${m['in-video']?.height}, audio ${m['in-audio']?.packets ?? 0} packets`);
    } else if (tool === 'record') {
      // The room empties when Firefox leaves: record finalises its file and exits.
      await ours.until((c) => c.exited, 10000);
      const files = readdirSync(dir);
      const f = files.length ? probe(join(dir, files[0])) : { video: 0, audio: false };
      need(files.length === 1, `one recording (${files.join(', ')})`);
      need(sent > 20 && f.video >= sent * 0.5, `recording decodes (${f.video} of ${sent} frames)`);
      need(f.audio, 'audio in the recording');
      facts.push(`recorded ${f.video} ${f.videoCodec} frames of ${sent} sent, audio ${f.audio ? 'yes' : 'no'}`);
    } else {
      const got = m['in-video']?.frames ?? 0;
      need(got >= MEDIA_SECONDS * 15 * 0.5, `played video decodes (${got} frames in ${MEDIA_SECONDS} s)`);
      need((m['in-audio']?.packets ?? 0) > 50 * MEDIA_SECONDS * 0.5, `played audio (${m['in-audio']?.packets ?? 0} packets)`);
      facts.push(`decoded ${got} ${m['in-video']?.codec} frames at ${m['in-video']?.width}x${m['in-video']?.height}, audio ${m['in-audio']?.packets ?? 0} packets`);
    }
    const pairLine = ([...ours.err.matchAll(/^selected pair: (.*)$/gm)].pop() || [, 'none'])[1];
    facts.push(`ours ${pairLine}, theirs ${r.selected ? `${r.selected.local} -> ${r.selected.remote}` : 'not told'}`);
    if (relay) need(pairLine.endsWith('relay') || r.selected?.local === 'relay', 'relayed');
    if (!ok) console.log(`# ${name}: ours:\n${ours.err.split('\n').slice(-12).join('\n')}`);
  } catch (e) {
    need(false, `${e.stack || e}`);
  } finally {
    if (ours) await ours.stop();
  }
  record(name, ok, `${facts.join('; ')}${consoleNote(logged)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

// ---- Pion's and werift's tracks with the native peer's media commands -----------------------

const mediaIvf = process.env.MEDIA_IVF || '';
const mediaOgg = process.env.MEDIA_OGG || '';
const FILE_FRAMES = Number(process.env.MEDIA_FRAMES || 45); // in MEDIA_IVF
const FILE_OPUS = Number(process.env.MEDIA_OPUS_PACKETS || 151); // in MEDIA_OGG
const FILE_SECONDS = FILE_FRAMES / 15;

/** Whether ffmpeg decodes a file without an error (the two output options keep its output side
 * from failing on variable-rate timestamps; ffmpeg 5.1 takes them only after -i), and the video
 * frames ffprobe counts. */
function decodes(file) {
  let ok = true;
  let error = '';
  try {
    execFileSync('ffmpeg', ['-v', 'error', '-xerror', '-i', file, '-fps_mode', 'passthrough', '-enc_time_base', '-1', '-f', 'null', '-'],
      { encoding: 'utf8', timeout: 20000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    ok = false;
    error = String(e.stderr || e.message).trim().split('\n').slice(-2).join(' | ');
  }
  let frames = 0;
  try {
    if (!file.endsWith('.ogg')) frames = probe(file).video;
  } catch { /* counted as none */ }
  return { ok, error, frames };
}

/** How many of the VP8 frames (IVF) or Opus packets (Ogg) in `file` are, byte for byte, among
 * those of `source`: neither stack transcodes, so what arrives must be what the file holds
 * (ffmpeg -xerror alone passes a VP8 frame cut in half). */
function identical(file, source) {
  const read = (f) => (f.endsWith('.ogg') ? readOggOpus(f) : readIvf(f).frames);
  const digest = (b) => createHash('sha256').update(b).digest('hex');
  const known = new Set(read(source).map(digest));
  const got = read(file);
  return { same: got.filter((x) => known.has(digest(x))).length, of: got.length };
}

/** A recording's video as IVF and audio as Ogg, copied out by ffmpeg (no decoding). */
function demux(file, dir) {
  const out = { ivf: join(dir, 'rec-video.ivf'), ogg: join(dir, 'rec-audio.ogg') };
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', file, '-map', '0:v', '-c', 'copy', '-f', 'ivf', out.ivf,
    '-map', '0:a', '-c', 'copy', '-f', 'ogg', out.ogg], { timeout: 20000, stdio: 'ignore' });
  return out;
}

/** The RTP packets `peerlink play` says it sent, per kind, from its `stats` lines at exit. */
function playStats(err) {
  const out = {};
  for (const m of err.matchAll(/stats \S+ (audio|video) sent=(\d+)/g)) out[m[1]] = Number(m[2]);
  return out;
}

async function stackMediaCase(stack, tool, itOffers, tmp) {
  const name = `${stack} media ${tool} ${itOffers ? 'offers' : 'answers'}`;
  if (only && !only.test(name)) return;
  const room = `ix-sm-${stack}-${tool}-${randomBytes(3).toString('hex')}`;
  const dir = join(tmp, room);
  const recDir = join(dir, 'rec');
  mkdirSync(recDir, { recursive: true });
  // The stack sends `seconds - 1` (the file's length) and is done `seconds` after connecting;
  // with play it stays until play leaves at the file's end.
  const seconds = tool === 'play' ? 20 : FILE_SECONDS + 1;
  const mode = { echo: 'sendrecv', record: 'send', play: 'recv' }[tool];
  const args = { echo: ['echo'], record: ['record', '--out', recDir], play: ['play', mediaIvf, mediaOgg] }[tool];
  const started = Date.now();
  let ours = null;
  let theirs = null;
  const facts = [];
  let ok = true;
  const need = (cond, what) => { if (!cond) { ok = false; facts.push(`NOT ${what}`); } return cond; };
  try {
    const start = () => child(peerlink, [...args, '--server', ws, '--room', room, '--name', tool, '--bind', bind]);
    const timeout = String((seconds + 15) * 1000);
    const [cmd, argv] = stack === 'pion'
      ? [pion, ['-media', mode, '-ivf', mediaIvf, '-ogg', mediaOgg, '-seconds', String(seconds), '-out', dir, ws, room, '0', EXPECT, timeout]]
      : ['node', [join(here, 'peer.mjs'), stack, ws, room, '0', EXPECT, timeout,
        JSON.stringify({ send: mode !== 'recv', ivf: mediaIvf, ogg: mediaOgg, seconds, untilLeft: tool === 'play', out: dir })]];
    if (itOffers) {
      ours = start();
      await ours.until((c) => /joined room/.test(c.err), 10000);
      theirs = child(cmd, argv);
    } else {
      theirs = child(cmd, argv);
      await theirs.until((c) => /joined/.test(c.err), 10000);
      ours = start();
    }
    await theirs.until((x) => x.exited, (seconds + 20) * 1000);
    let r;
    try {
      r = JSON.parse(theirs.out.trim().split('\n').pop());
    } catch {
      r = { ok: false, events: [`no result; exit ${theirs.p.exitCode}; stderr: ${theirs.err.slice(-800)}`] };
    }
    need(r.ok, `connected (${(r.events || []).slice(-4).join(' | ')})`);
    need(r.role === (itOffers ? 'offer' : 'answer'), `role ${r.role}`);
    if (sdpDir) {
      const tag = `${stack}-media-${tool}-${itOffers ? 'offer' : 'answer'}`;
      writeFileSync(join(sdpDir, `${tag}.theirs.sdp`), r.localSdp || '');
      writeFileSync(join(sdpDir, `${tag}.ours.sdp`), r.remoteSdp || '');
    }
    const m = r.media || {};
    const sent = m['out-video']?.frames ?? 0;
    const sentAudio = m['out-audio']?.packets ?? 0;
    const inV = m['in-video'] || {};
    const inA = m['in-audio'] || {};
    if (tool === 'record') {
      // The room empties when the stack leaves: record finalises its file and exits.
      // The stack has left: record finalises its file and exits once the connection closes.
      // werift's close sends no DTLS close_notify (nor RTCP BYE), and a `peer-left` alone does
      // not end a call (docs/signaling.md): record would wait ~30 s for ICE consent to expire,
      // so after 2 s it is stopped with SIGINT, which finalises the file too.
      const leftAt = Date.now();
      await ours.until((c) => c.exited, 2000);
      if (!ours.exited) {
        ours.p.kill('SIGINT');
        await ours.until((c) => c.exited, 10000);
        facts.push('record stopped with SIGINT');
      } else {
        facts.push(`record exited by itself ${((Date.now() - leftAt) / 1000).toFixed(1)} s after they left`);
      }
      need(ours.p.exitCode === 0, `record exited 0 (${ours.p.exitCode})`);
      const files = readdirSync(recDir);
      need(files.length === 1, `one recording (${files.join(', ') || 'none'})`);
      const f = files.length ? probe(join(recDir, files[0])) : { video: 0, audio: false };
      const d = files.length ? decodes(join(recDir, files[0])) : { ok: false, error: 'no file' };
      need(d.ok, `the recording decodes with ffmpeg -xerror (${d.error})`);
      need(sent >= FILE_FRAMES * 0.9 && f.video >= sent * 0.9, `recording has the video (${f.video} of ${sent} frames)`);
      need(f.videoCodec === 'vp8', `VP8 in the recording (${f.videoCodec})`);
      need(f.audio, 'audio in the recording');
      let same = { v: { same: 0, of: 0 }, a: { same: 0, of: 0 } };
      try {
        const x = demux(join(recDir, files[0]), dir);
        same = { v: identical(x.ivf, mediaIvf), a: identical(x.ogg, mediaOgg) };
      } catch (e) {
        facts.push(`demux: ${String(e.message).slice(0, 200)}`);
      }
      need(same.v.same === same.v.of && same.v.same >= sent * 0.9, `recorded frames are the file's (${same.v.same} of ${same.v.of})`);
      need(same.a.same === same.a.of && same.a.same >= sentAudio * 0.9, `recorded Opus packets are the file's (${same.a.same} of ${same.a.of})`);
      facts.push(`sent ${sent} VP8 frames and ${sentAudio} Opus packets; recorded ${f.video} ${f.videoCodec} frames ` +
        `(${same.v.same} identical to the file's) and ${same.a.of} Opus packets (${same.a.same} identical), ffmpeg ${d.ok ? 'decodes it' : 'fails'}`);
    } else {
      // echo: what came back of what was sent; play: what came of the whole file.
      const wantV = tool === 'echo' ? sent : FILE_FRAMES;
      const wantA = tool === 'echo' ? sentAudio : FILE_OPUS;
      if (tool === 'echo') need(sent >= FILE_FRAMES * 0.9, `sent video (${sent} frames)`);
      if (tool === 'play') {
        await ours.until((c) => c.exited, 5000);
        need(ours.p.exitCode === 0, `play exited 0 at the file's end (${ours.p.exitCode})`);
      }
      need(inV.frames >= wantV * 0.9 && inV.frames <= wantV, `whole VP8 frames received (${inV.frames ?? 0} of ${wantV})`);
      need(inA.packets >= wantA * 0.9 && inA.packets <= wantA + 5, `Opus packets received (${inA.packets ?? 0} of ${wantA})`);
      need(inV.width === 320 && inV.height === 240, `320x240 key frames (${inV.width}x${inV.height})`);
      const d = inV.file ? decodes(inV.file) : { ok: false, error: 'no file', frames: 0 };
      need(d.ok && d.frames >= wantV * 0.9, `the received video decodes with ffmpeg -xerror (${d.frames} frames; ${d.error})`);
      const sameV = inV.file ? identical(inV.file, mediaIvf) : { same: 0, of: 0 };
      need(sameV.same === sameV.of && sameV.same >= wantV * 0.9, `received frames are the file's (${sameV.same} of ${sameV.of})`);
      let audioNote = '';
      if (inA.file) {
        const a = decodes(inA.file);
        const sameA = identical(inA.file, mediaOgg);
        need(a.ok, `the received audio decodes (${a.error})`);
        need(sameA.same === sameA.of && sameA.same >= wantA * 0.9, `received Opus packets are the file's (${sameA.same} of ${sameA.of})`);
        audioNote = `, Ogg ${a.ok ? 'decodes' : 'fails'} (${sameA.same} packets identical)`;
      }
      const ps = tool === 'play' ? playStats(ours.err) : {};
      facts.push(`${tool === 'echo' ? `sent ${sent} VP8 frames and ${sentAudio} Opus packets, back` : 'got'} ` +
        `${inV.frames ?? 0} whole frames (${sameV.same} identical to the file's) in ${inV.packets ?? 0} packets (${inV.keyframes ?? 0} key) and ${inA.packets ?? 0} Opus packets` +
        `${ps.video ? ` (play sent ${ps.video} video and ${ps.audio} audio packets)` : ''}; ffmpeg decodes ${d.frames} frames${audioNote}`);
    }
    const pairLine = ([...ours.err.matchAll(/^selected pair: (.*)$/gm)].pop() || [, 'none'])[1];
    facts.push(`connected ${r.connectedMs ?? '-'} ms; ours ${pairLine}, theirs ${r.selected ? `${r.selected.local} -> ${r.selected.remote}` : 'not told'}`);
    if (!ok) {
      console.log(`# ${name}: their events: ${(r.events || []).join(' | ')}`);
      console.log(`# ${name}: ours:\n${ours.err.split('\n').slice(-30).join('\n')}`);
    }
  } catch (e) {
    need(false, `${e.stack || e}`);
  } finally {
    if (theirs) await theirs.stop();
    if (ours) await ours.stop();
  }
  record(name, ok, `${facts.join('; ')} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

// ---- the runs ---------------------------------------------------------------------------------

const stacks = ['firefox', 'libdatachannel', 'werift', 'pion'];
const tmp = mkdtempSync(join(tmpdir(), 'peerlink-matrix-'));
if (sdpDir) mkdirSync(sdpDir, { recursive: true });
let chromium = null;
try {
  for (let run = 0; run < RUNS; run++) {
    console.log(`# run ${run + 1} of ${RUNS}`);
    for (const stack of stacks) {
      for (const itOffers of [true, false]) {
        for (const relay of [false, true]) await stackCase(stack, itOffers, relay, run);
      }
    }
    if (process.env.APP !== '0' && (!only || only.test('app'))) {
      if (!chromium) {
        const { launchChromium } = await import('../browser/chromium.mjs');
        chromium = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
        console.log(`# chromium ${chromium.version()}`);
      }
      await appCase(chromium, 'chromium', false, tmp);
      await appCase(chromium, 'firefox', false, tmp);
      await appCase(chromium, 'chromium', true, tmp);
    }
    if (mediaFile && run < Number(process.env.MEDIA_RUNS || RUNS)) {
      for (const tool of ['echo', 'record', 'play']) {
        for (const itOffers of [true, false]) await mediaCase(tool, itOffers, false, tmp);
      }
      await mediaCase('echo', true, true, tmp);
    }
    if (mediaIvf && mediaOgg && run < Number(process.env.MEDIA_RUNS || RUNS)) {
      for (const stack of ['pion', 'werift']) {
        for (const tool of ['record', 'play', 'echo']) {
          for (const itOffers of [true, false]) await stackMediaCase(stack, tool, itOffers, tmp);
        }
      }
    }
  }
} catch (e) {
  record('matrix', false, `${e.stack || e}`);
} finally {
  if (chromium) await chromium.close().catch(() => {});
  if (firefox) await firefox.close();
  rmSync(tmp, { recursive: true, force: true });
}

// The table: one row per case, a mark per run.
const width = Math.max(...[...table.keys()].map((k) => k.length), 4);
console.log(`\n${'case'.padEnd(width)}  runs  result`);
for (const [k, runs] of table) {
  const n = runs.filter(Boolean).length;
  console.log(`${k.padEnd(width)}  ${runs.map((x) => (x ? '+' : 'x')).join('').padEnd(4)}  ${n}/${runs.length}${n === runs.length ? '' : '  FAIL'}`);
}
console.log(`# matrix took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
