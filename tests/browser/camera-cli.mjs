// The browser app WITH its (fake) camera and microphone on, against `peerlink recv`, repeated:
// each iteration a fresh page and a fresh `peerlink recv` meet in a room of their own, the page
// sends a small random file and recv must exit 0 with the SHA-256 matching (which needs ICE,
// DTLS and SCTP up). Two join orders:
//   page-first    the page joins, then recv: recv (the newcomer) offers data only, the page
//                 answers and at once re-offers to add its audio and video (renegotiation
//                 during set-up);
//   native-first  recv waits in the room, then the page joins and offers audio, video and a
//                 data channel; recv answers (media rejected).
// Chromium runs with its defaults otherwise: host candidates are mDNS `*.local` names, as a
// real user's are. Run inside a network namespace (tests/e2e/camera-browser.sh).
//
//   node camera-cli.mjs APP_URL PATH/TO/peerlink WS_URL
//   ITER=N            iterations per join order (default 50)
//   ORDERS=a,b        join orders to run (default page-first,native-first)
//   ITER_TIMEOUT_MS   bound on one iteration (default 20000)
//   BIND=IP           pass --bind IP to recv (default: none, recv gathers on every address)
//   FAIL_DIR=DIR      where failures are saved (default: a new temporary folder)
//   MAX_FAIL=N        exit 1 when more than N iterations failed in total (default 0)
//   SNIFF_LOG=FILE    the log of tests/e2e/udp-sniff.py (camera-browser.sh SNIFF=1 runs it):
//                     a failure's datagrams (STUN roles, nominations, DTLS flights) are saved
//
// On a failure, FAIL_DIR/<order>-<i>/ gets recv's stderr (RUST_LOG=debug,peerlink_ice=trace
// unless RUST_LOG is set), the page's console, a log of the page's RTCPeerConnection calls and
// events (descriptions, candidates, states, with times), and its getStats() transport,
// candidate-pair and candidate entries.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium } from './chromium.mjs';
import { sleep } from './report.mjs';

const [app, peerlink, ws] = process.argv.slice(2);
const ITER = Number(process.env.ITER || 50);
const ORDERS = (process.env.ORDERS || 'page-first,native-first').split(',').filter(Boolean);
const ITER_TIMEOUT = Number(process.env.ITER_TIMEOUT_MS || 20000);
const MAX_FAIL = Number(process.env.MAX_FAIL || 0);
const BIND = process.env.BIND || '';
const SNIFF_LOG = process.env.SNIFF_LOG || '';
const SIZE = 200 * 1024;
const sha = (b) => createHash('sha256').update(b).digest('hex');

// The whole run is bounded too.
const limit = ORDERS.length * ITER * (ITER_TIMEOUT + 8000) + 60000;
setTimeout(() => {
  console.log(`FAIL the run did not finish within ${Math.round(limit / 1000)} s`);
  process.exit(1);
}, limit).unref();

const work = mkdtempSync(join(tmpdir(), 'peerlink-camera-'));
const failDir = process.env.FAIL_DIR || mkdtempSync(join(tmpdir(), 'peerlink-camera-fail-'));
mkdirSync(failDir, { recursive: true });

function native(args) {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'debug,peerlink_ice=trace' };
  const child = spawn(peerlink, args, { env });
  const run = { out: '', err: '', code: null, started: Date.now() };
  child.stdout.on('data', (d) => { run.out += d; });
  child.stderr.on('data', (d) => { run.err += d; });
  run.done = new Promise((resolve) => child.on('exit', (code, signal) => {
    run.code = code === null ? signal : code;
    resolve(run.code);
  }));
  run.child = child;
  return run;
}
const within = (p, ms) => Promise.race([p, sleep(Math.max(0, ms)).then(() => 'timeout')]);
async function until(pred, deadline, step = 100) {
  while (Date.now() < deadline) {
    const v = await pred();
    if (v) return v;
    await sleep(step);
  }
  return null;
}

// Records every RTCPeerConnection the page makes, and what is done to it, with times.
function instrument() {
  const Original = window.RTCPeerConnection;
  const t0 = performance.now();
  window.__pcs = [];
  window.__pclog = [];
  const log = (what, detail) => window.__pclog.push({ t: Math.round(performance.now() - t0), what, detail });
  const sdpSummary = (d) => d && d.sdp ? {
    type: d.type,
    media: (d.sdp.match(/^m=.*$/gm) || []),
    setup: (d.sdp.match(/^a=setup:.*$/gm) || []),
    ufrag: [...new Set(d.sdp.match(/^a=ice-ufrag:.*$/gm) || [])],
    candidates: (d.sdp.match(/^a=candidate:.*$/gm) || []),
    sdp: d.sdp,
  } : d;
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
      log('new', args[0]);
      for (const ev of ['signalingstatechange', 'iceconnectionstatechange', 'connectionstatechange', 'icegatheringstatechange']) {
        this.addEventListener(ev, () => log(ev, {
          signaling: this.signalingState, ice: this.iceConnectionState,
          connection: this.connectionState, gathering: this.iceGatheringState,
          dtls: this.sctp && this.sctp.transport ? this.sctp.transport.state : null,
        }));
      }
      this.addEventListener('icecandidate', (e) => log('local-candidate', e.candidate ? e.candidate.candidate : null));
      this.addEventListener('negotiationneeded', () => log('negotiationneeded', null));
    }
    async setLocalDescription(...a) {
      log('setLocalDescription', a[0] ? sdpSummary(a[0]) : 'implicit');
      try {
        const r = await super.setLocalDescription(...a);
        log('setLocalDescription-done', sdpSummary(this.localDescription));
        return r;
      } catch (e) { log('setLocalDescription-error', String(e)); throw e; }
    }
    async setRemoteDescription(d) {
      log('setRemoteDescription', sdpSummary(d));
      try {
        const r = await super.setRemoteDescription(d);
        log('setRemoteDescription-done', this.signalingState);
        return r;
      } catch (e) { log('setRemoteDescription-error', String(e)); throw e; }
    }
    async addIceCandidate(c) {
      log('addIceCandidate', c ? c.candidate : c);
      try { return await super.addIceCandidate(c); } catch (e) { log('addIceCandidate-error', String(e)); throw e; }
    }
  };
}

async function pageStats(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__pcs || []) {
      const entries = [];
      try {
        (await pc.getStats()).forEach((s) => {
          if (['transport', 'candidate-pair', 'local-candidate', 'remote-candidate'].includes(s.type)) entries.push(s);
        });
      } catch (e) { entries.push({ error: String(e) }); }
      out.push({
        signalingState: pc.signalingState, iceConnectionState: pc.iceConnectionState,
        connectionState: pc.connectionState,
        dtls: pc.sctp && pc.sctp.transport ? pc.sctp.transport.state : null,
        local: pc.localDescription && pc.localDescription.sdp,
        remote: pc.remoteDescription && pc.remoteDescription.sdp,
        stats: entries,
      });
    }
    return { pcs: out, log: window.__pclog || [], state: window.peerlinkState };
  }).catch((e) => ({ error: String(e) }));
}

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
const results = [];
try {
  for (const order of ORDERS) {
    for (let i = 1; i <= ITER; i++) {
      const start = Date.now();
      const deadline = start + ITER_TIMEOUT;
      const room = `cam${process.pid}${order === 'page-first' ? 'p' : 'n'}${i}`;
      const dir = join(work, `${order}-${i}`);
      mkdirSync(dir, { recursive: true });
      const data = randomBytes(SIZE);
      const file = join(dir, 'from-browser.bin');
      writeFileSync(file, data);
      const args = ['recv', '--server', ws, '--room', room, '--out', join(dir, 'in'), '--name', 'native-recv',
        ...(BIND ? ['--bind', BIND] : [])];
      const consoleLines = [];
      const page = await browser.newPage();
      page.on('console', (m) => consoleLines.push(`${Date.now() - start} ms ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`${Date.now() - start} ms pageerror: ${e}`));
      await page.addInitScript(instrument);
      const state = () => page.evaluate(() => window.peerlinkState).catch(() => null);
      let recv = null;
      let why = '';
      let tJoin = null;
      let tConn = null;
      let tDone = null;
      try {
        if (order === 'page-first') {
          await page.goto(`${app}?room=${room}&name=browser`);
          const joined = await until(async () => {
            const s = await state();
            return s && s.signaling === 'joined' && s.media !== 'pending';
          }, deadline);
          if (!joined) throw new Error('the page did not join');
          const s = await state();
          if (s.media !== 'audio+video') throw new Error(`the page has media ${s.media}, not audio+video`);
          tJoin = Date.now() - start;
          recv = native(args);
        } else {
          recv = native(args);
          const waiting = await until(() => /waiting for someone to join/.test(recv.err) || recv.code !== null, deadline, 50);
          if (!waiting || recv.code !== null) throw new Error('recv did not get into the room');
          tJoin = Date.now() - start;
          await page.goto(`${app}?room=${room}&name=browser`);
        }
        const connected = await until(async () => {
          const s = await state();
          return s && s.peers.some((p) => p.connectionState === 'connected');
        }, deadline);
        if (!connected) throw new Error('the page did not connect');
        tConn = Date.now() - start;
        await page.setInputFiles('#file-input', file);
        const code = await within(recv.done, deadline - Date.now());
        if (code === 'timeout') throw new Error('recv did not finish');
        tDone = Date.now() - start;
        let got = null;
        try { got = readFileSync(join(dir, 'in', 'from-browser.bin')); } catch { /* missing */ }
        if (code !== 0) throw new Error(`recv exited ${code}`);
        if (!got || sha(got) !== sha(data)) throw new Error(`the received file ${got ? 'differs' : 'is missing'}`);
      } catch (e) {
        why = e.message || String(e);
      }
      const ok = !why;
      const pair = recv ? (recv.err.match(/^selected pair: .*$/m) || ['no selected pair'])[0] : '-';
      const ms = (t) => (t === null ? '-' : `${t}`);
      let saved = '';
      if (!ok) {
        const where = join(failDir, `${order}-${i}`);
        mkdirSync(where, { recursive: true });
        // The page's view first: once recv is gone the page closes its connection.
        writeFileSync(join(where, 'page-stats.json'), JSON.stringify(await pageStats(page), null, 1));
        if (recv && recv.code === null) {
          // Let its last debug lines out.
          recv.child.kill('SIGTERM');
          await within(recv.done, 2000);
        }
        writeFileSync(join(where, 'recv.stderr'), recv ? recv.err : '(not started)');
        if (SNIFF_LOG) {
          // This iteration's datagrams from the sniffer's log (wall-clock seconds first).
          const from = start / 1000 - 0.2;
          const lines = (() => { try { return readFileSync(SNIFF_LOG, 'utf8').split('\n'); } catch { return []; } })()
            .filter((l) => Number(l.split(' ')[0]) >= from);
          writeFileSync(join(where, 'packets.txt'), lines.join('\n') + '\n');
        }
        writeFileSync(join(where, 'page-console.txt'), consoleLines.join('\n') + '\n');
        writeFileSync(join(where, 'times.txt'), `iteration started at ${(start / 1000).toFixed(3)} (wall clock)\n`);
        saved = ` (saved in ${where})`;
      }
      if (recv && recv.code === null) {
        recv.child.kill('SIGKILL');
        await within(recv.done, 2000);
      }
      await page.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      results.push({ order, ok });
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${order} ${i}/${ITER}: joined ${ms(tJoin)} ms, page connected ${ms(tConn)} ms, `
        + `file checked ${ms(tDone)} ms; recv ${pair}${ok ? '' : `: ${why}`}${saved}`);
    }
  }
} finally {
  await browser.close();
  rmSync(work, { recursive: true, force: true });
}
let failed = 0;
for (const order of ORDERS) {
  const mine = results.filter((r) => r.order === order);
  const bad = mine.filter((r) => !r.ok).length;
  failed += bad;
  console.log(`summary ${order}: ${bad} of ${mine.length} failed`);
}
console.log(`summary: ${failed} of ${results.length} iterations failed${failed ? `; logs in ${failDir}` : ''}`);
if (!failed) rmSync(failDir, { recursive: true, force: true });
process.exit(failed > MAX_FAIL ? 1 : 0);
