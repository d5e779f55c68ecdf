// Headless Chromium against an echo peer (`peerlink echo`) in a room of `peerlink serve`: a
// page of this test's own (not the browser app) joins ROOM with the signaling protocol of
// docs/signaling.md (the newcomer offers, trickle with a null end-of-candidates, only the
// welcome's iceServers), gets a data channel to the one other participant (its own "chat"
// channel when it offers, the other's when it answers), sends COUNT messages, text and binary
// mixed and of many sizes (up to 64 KiB), and checks that every one comes back on that
// channel, in order, of the same type and byte for byte. Prints one JSON line and exits 0
// when all came back, 1 otherwise.
//
//   node echo-peer.mjs WS_URL ROOM [COUNT [TIMEOUT_S]]
import { launchChromium } from './chromium.mjs';

const [server, room, countArg, timeoutArg] = process.argv.slice(2);
if (!server || !room) {
  process.stderr.write('usage: node echo-peer.mjs WS_URL ROOM [COUNT [TIMEOUT_S]]\n');
  process.exit(1);
}
const count = Number(countArg || 1000);
const timeoutS = Number(timeoutArg || 40);
const origin = server.replace(/^ws/, 'http').replace(/\/ws$/, '');

// Runs in the page: stringified, so it refers to nothing outside itself.
async function echoCheck(cfg) {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const r = { ok: false, role: null, sent: 0, echoed: 0, mismatch: null, openMs: null, doneMs: null, pair: null, events: [] };
  const note = (m) => r.events.push(`${ms()} ${m}`);
  // Message i: binary when i % 3 == 1 or i % 7 == 0, else text; sizes vary with i; every
  // 250th message is a 64 KiB binary one.
  const message = (i) => {
    if (i % 250 === 1) return new Uint8Array(65536).map((_, k) => (i * 7 + k * 13) & 255);
    if (i % 3 === 1 || i % 7 === 0) return new Uint8Array(1 + ((i * 131) % 4096)).map((_, k) => (i * 7 + k * 13) & 255);
    return `echo ${i} ${'é✓漢'.repeat(i % 7)}${'x'.repeat((i * 53) % 1500)}`;
  };
  const same = (a, b) => {
    if (typeof a === 'string' || typeof b === 'string') return a === b;
    const x = new Uint8Array(a);
    if (x.length !== b.length) return false;
    for (let k = 0; k < x.length; k++) if (x[k] !== b[k]) return false;
    return true;
  };
  const describe = (m) => (typeof m === 'string' ? `text of ${m.length} chars` : `binary of ${m.byteLength ?? m.length} bytes`);
  let pc = null;
  let ws = null;
  let finish;
  const done = new Promise((res) => { finish = res; });
  let chan = null;
  const timer = setTimeout(() => { note(`timed out; bufferedAmount ${chan && chan.bufferedAmount}`); finish(); }, cfg.timeoutS * 1000);
  try {
    ws = new WebSocket(cfg.server);
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('signaling connection failed')); });
    let remote = null;
    const early = [];
    const signal = (data) => ws.send(JSON.stringify({ type: 'signal', to: remote, data }));
    const run = async (dc) => {
      if (r.openMs !== null) return; // one channel is enough: the first to open
      r.openMs = ms();
      chan = dc;
      note(`channel "${dc.label}" open`);
      dc.binaryType = 'arraybuffer';
      dc.onmessage = (ev) => {
        const i = r.echoed;
        const want = message(i);
        if (r.mismatch === null && (i >= cfg.count || !same(ev.data, want))) {
          r.mismatch = { index: i, want: describe(want), got: describe(ev.data) };
          finish();
          return;
        }
        r.echoed++;
        if (r.echoed === cfg.count) { r.doneMs = ms(); finish(); }
      };
      dc.onclose = () => { note('channel closed'); finish(); };
      dc.bufferedAmountLowThreshold = 256 * 1024;
      // Chromium announces a remote channel as open (as the spec says) before it has wired it
      // up inside: a burst sent at once may lose its first message before Chromium's SCTP, or
      // leave bufferedAmount never counting down (issue 15; it does the same with
      // libdatachannel as the other peer). One getStats round trip through its threads first.
      await pc.getStats();
      for (let i = 0; i < cfg.count; i++) {
        if (dc.bufferedAmount > 1024 * 1024) {
          // Noted so a stall here can be told from one in the transport (see scripts/test.sh).
          note(`waiting for bufferedamountlow after ${i} sent, ${r.echoed} back, bufferedAmount ${dc.bufferedAmount}`);
          await new Promise((res) => { dc.onbufferedamountlow = res; });
        }
        if (dc.readyState !== 'open') { note(`channel ${dc.readyState} after ${i} sent`); return; }
        dc.send(message(i));
        r.sent++;
      }
    };
    const wire = (dc) => {
      dc.onopen = () => run(dc);
      if (dc.readyState === 'open') run(dc);
    };
    const addCandidate = async (c) => {
      try { await pc.addIceCandidate(c); } catch (e) { note(`addIceCandidate: ${e.message}`); }
    };
    let queue = Promise.resolve();
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      queue = queue.then(() => handle(m)).catch((e) => { note(`error: ${e.message}`); finish(); });
    };
    const handle = async (m) => {
      if (m.type === 'welcome') {
        if (window.joinedRoom) window.joinedRoom(m.id);
        pc = new RTCPeerConnection({ iceServers: m.iceServers || [] });
        pc.onicecandidate = (ev) => signal({
          candidate: ev.candidate && ev.candidate.candidate
            ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex }
            : null,
        });
        pc.ondatachannel = (ev) => wire(ev.channel);
        pc.onconnectionstatechange = () => {
          note(`connection ${pc.connectionState}`);
          if (pc.connectionState === 'failed') finish();
        };
        if (m.peers.length > 0) {
          r.role = 'offerer';
          remote = m.peers[0].id;
          wire(pc.createDataChannel('chat'));
          await pc.setLocalDescription();
          signal({ description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
        } else {
          r.role = 'answerer';
        }
      } else if (m.type === 'signal') {
        remote = remote || m.from;
        const d = m.data || {};
        if (d.description) {
          await pc.setRemoteDescription(d.description);
          if (d.description.type === 'offer') {
            await pc.setLocalDescription();
            signal({ description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
          }
          for (const c of early.splice(0)) await addCandidate(c);
        } else if ('candidate' in d) {
          if (pc.remoteDescription) await addCandidate(d.candidate);
          else early.push(d.candidate);
        }
      } else if (m.type === 'peer-left' && m.id === remote) {
        note('the echo peer left');
        finish();
      } else if (m.type === 'error') {
        note(`signaling error ${m.code}: ${m.message}`);
      }
    };
    ws.send(JSON.stringify({ type: 'join', room: cfg.room, name: 'chromium' }));
    await done;
    if (pc) {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          const l = stats.get(s.localCandidateId);
          const rc = stats.get(s.remoteCandidateId);
          r.pair = `${l && l.candidateType} -> ${rc && rc.candidateType}`;
        }
      });
    }
    r.ok = r.mismatch === null && r.sent === cfg.count && r.echoed === cfg.count;
  } catch (e) {
    note(`error: ${e.message}`);
  } finally {
    clearTimeout(timer);
    if (pc) pc.close();
    if (ws) ws.close();
  }
  return r;
}

let browser;
let code = 1;
// Bounded even if the page hangs.
setTimeout(() => { process.stderr.write('echo-peer: overall time limit\n'); process.exit(1); }, (timeoutS + 30) * 1000).unref();
try {
  browser = await launchChromium(['--disable-features=WebRtcHideLocalIpsWithMdns']);
  const page = await browser.newPage();
  await page.exposeFunction('joinedRoom', (id) => process.stderr.write(`echo-peer: joined as ${id}\n`));
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
  // A page on the server's own origin (its 404), so the WebSocket is same-origin loopback.
  await page.goto(`${origin}/echo-peer`, { timeout: 15000 });
  const r = await page.evaluate(echoCheck, { server, room, count, timeoutS });
  process.stdout.write(`${JSON.stringify(r)}\n`);
  code = r.ok ? 0 : 1;
} catch (e) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: e.message })}\n`);
} finally {
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((res) => setTimeout(res, 5000))]);
}
process.exit(code);
