// Headless Chromium as a file sender, for bench/datachannel-path.sh (Chromium -> Chromium with
// tests/browser/file-recv.mjs as the receiver): a page of this test's own joins ROOM with the
// signaling of docs/signaling.md after the receiver, offers to the peer its `welcome` lists
// (trickle both ways, only the welcome's iceServers), and sends BYTES of random data (made in
// the page) on a `file` channel as docs/file-transfer.md says: header, 65,536-byte binary chunks
// with back-pressure (4 MiB high, 1 MiB low water mark), trailer with the SHA-256 (WebCrypto).
// It waits for the receiver's `ack` and checks its digest; prints one JSON line {ok, bytes,
// sha256, error, events} and exits 0 only when the receiver acknowledged the right digest.
//
//   node file-send.mjs WS_URL ROOM BYTES [TIMEOUT_S]
import { launchChromium } from './chromium.mjs';

const [server, room, bytesArg, timeoutArg] = process.argv.slice(2);
if (!server || !room || !bytesArg) {
  process.stderr.write('usage: node file-send.mjs WS_URL ROOM BYTES [TIMEOUT_S]\n');
  process.exit(1);
}
const timeoutS = Number(timeoutArg || 120);
const origin = server.replace(/^ws/, 'http').replace(/\/ws$/, '');

// Runs in the page: stringified, so it refers to nothing outside itself.
async function sendFile(cfg) {
  const r = { ok: false, bytes: 0, sha256: null, error: null, events: [] };
  const t0 = performance.now();
  const note = (m) => r.events.push(`${Math.round(performance.now() - t0)} ${m}`);
  let finish;
  const done = new Promise((res) => { finish = res; });
  const timer = setTimeout(() => { r.error = r.error || 'timed out'; finish(); }, cfg.timeoutS * 1000);
  const CHUNK = 65536;
  const data = new Uint8Array(cfg.bytes);
  for (let at = 0; at < data.length; at += CHUNK) crypto.getRandomValues(data.subarray(at, at + CHUNK));
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  r.sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  let pc = null;
  let ws = null;
  const send = (dc) => {
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = 1 << 20;
    let sent = 0;
    let trailer = false;
    const pump = () => {
      while (sent < data.length && dc.bufferedAmount < 4 << 20) {
        const n = Math.min(CHUNK, data.length - sent);
        dc.send(data.subarray(sent, sent + n));
        sent += n;
      }
      if (sent === data.length && !trailer) {
        trailer = true;
        r.bytes = sent;
        dc.send(JSON.stringify({ type: 'end', sha256: r.sha256 }));
      }
    };
    dc.onbufferedamountlow = pump;
    dc.onopen = () => {
      note('channel open');
      dc.send(JSON.stringify({ type: 'file', name: 'chromium.bin', size: data.length, mime: 'application/octet-stream' }));
      pump();
    };
    dc.onmessage = (ev) => {
      let msg = {};
      try { msg = JSON.parse(ev.data); } catch { /* not JSON: a refusal */ }
      if (msg.type === 'ack' && String(msg.sha256).toLowerCase() === r.sha256) r.ok = true;
      else r.error = msg.type === 'ack' ? 'the receiver acknowledged another digest' : `refused: ${msg.reason || msg.type}`;
      dc.close();
      finish();
    };
    dc.onclose = () => { if (!r.ok && !r.error) r.error = 'channel closed before the answer'; finish(); };
  };
  try {
    ws = new WebSocket(cfg.server);
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('signaling connection failed')); });
    let remote = null;
    const early = [];
    const signal = (data) => ws.send(JSON.stringify({ type: 'signal', to: remote, data }));
    const addCandidate = async (c) => {
      try { await pc.addIceCandidate(c); } catch (e) { note(`addIceCandidate: ${e.message}`); }
    };
    const handle = async (m) => {
      if (m.type === 'welcome') {
        if (!m.peers || !m.peers.length) { r.error = 'nobody in the room to send to'; finish(); return; }
        remote = m.peers[0].id;
        pc = new RTCPeerConnection({ iceServers: m.iceServers || [] });
        pc.onicecandidate = (ev) => signal({
          candidate: ev.candidate && ev.candidate.candidate
            ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex }
            : null,
        });
        pc.onconnectionstatechange = () => {
          note(`connection ${pc.connectionState}`);
          if (pc.connectionState === 'failed') { r.error = 'connection failed'; finish(); }
        };
        send(pc.createDataChannel('file', { ordered: true }));
        await pc.setLocalDescription();
        signal({ description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
      } else if (m.type === 'signal' && m.from === remote) {
        const d = m.data || {};
        if (d.description && d.description.type === 'answer') {
          await pc.setRemoteDescription(d.description);
          for (const c of early.splice(0)) await addCandidate(c);
        } else if ('candidate' in d) {
          if (pc.remoteDescription) await addCandidate(d.candidate);
          else early.push(d.candidate);
        }
      } else if (m.type === 'error') {
        note(`signaling error ${m.code}: ${m.message}`);
      }
    };
    let queue = Promise.resolve();
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      queue = queue.then(() => handle(m)).catch((e) => { r.error = e.message; finish(); });
    };
    ws.send(JSON.stringify({ type: 'join', room: cfg.room, name: 'chromium-send' }));
    await done;
  } catch (e) {
    r.error = r.error || e.message;
  } finally {
    clearTimeout(timer);
    if (pc) pc.close();
    if (ws) ws.close();
  }
  return r;
}

let browser;
let code = 1;
setTimeout(() => { process.stderr.write('file-send: overall time limit\n'); process.exit(1); }, (timeoutS + 30) * 1000).unref();
try {
  // The page's origin is the server's plain-HTTP one: WebCrypto needs it treated as secure.
  browser = await launchChromium([
    '--disable-features=WebRtcHideLocalIpsWithMdns', `--unsafely-treat-insecure-origin-as-secure=${origin}`,
  ]);
  const page = await browser.newPage();
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
  // A page on the server's own origin (its 404), so the WebSocket is same-origin.
  await page.goto(`${origin}/file-send`, { timeout: 30000 });
  const r = await page.evaluate(sendFile, { server, room, bytes: Number(bytesArg), timeoutS });
  process.stdout.write(`${JSON.stringify(r)}\n`);
  code = r.ok ? 0 : 1;
} catch (e) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: e.message })}\n`);
} finally {
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((res) => setTimeout(res, 5000))]);
}
process.exit(code);
