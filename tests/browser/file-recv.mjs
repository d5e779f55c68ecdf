// Headless Chromium as the receiver of `peerlink send`, for tests/e2e/transfer-path.sh: a page
// of this test's own (not the browser app) joins ROOM with the signaling of docs/signaling.md
// before the sender, answers its offer (trickle both ways, only the welcome's iceServers),
// takes one file on the `file` channel as docs/file-transfer.md says (header, binary chunks,
// trailer), checks the size and the SHA-256 (WebCrypto over the gathered chunks), answers `ack`
// (or `error`), and prints one JSON line: {ok, bytes, seconds (first chunk to last), sha256,
// error, events}. Exits 0 when the file checked.
//
//   node file-recv.mjs WS_URL ROOM [TIMEOUT_S]
import { launchChromium } from './chromium.mjs';

const [server, room, timeoutArg] = process.argv.slice(2);
if (!server || !room) {
  process.stderr.write('usage: node file-recv.mjs WS_URL ROOM [TIMEOUT_S]\n');
  process.exit(1);
}
const timeoutS = Number(timeoutArg || 120);
const origin = server.replace(/^ws/, 'http').replace(/\/ws$/, '');

// Runs in the page: stringified, so it refers to nothing outside itself.
async function receiveFile(cfg) {
  const r = { ok: false, bytes: 0, seconds: null, sha256: null, error: null, events: [] };
  const t0 = performance.now();
  const note = (m) => r.events.push(`${Math.round(performance.now() - t0)} ${m}`);
  let finish;
  const done = new Promise((res) => { finish = res; });
  const timer = setTimeout(() => { r.error = r.error || 'timed out'; finish(); }, cfg.timeoutS * 1000);
  let pc = null;
  let ws = null;
  const receive = (dc) => {
    dc.binaryType = 'arraybuffer';
    let header = null;
    let first = 0;
    let last = 0;
    const chunks = [];
    const refuse = (reason) => {
      r.error = reason;
      dc.send(JSON.stringify({ type: 'error', reason }));
      finish();
    };
    dc.onmessage = async (ev) => {
      if (typeof ev.data !== 'string') {
        if (!header) return refuse('data before header');
        const now = performance.now();
        if (!first) first = now;
        last = now;
        chunks.push(new Uint8Array(ev.data));
        r.bytes += ev.data.byteLength;
        if (r.bytes > header.size) refuse('more data than announced');
        return;
      }
      const msg = JSON.parse(ev.data);
      if (msg.type === 'file' && !header) {
        header = msg;
        note(`receiving ${msg.name} (${msg.size} bytes)`);
      } else if (msg.type === 'end' && header) {
        r.seconds = first ? (last - first) / 1000 : 0;
        if (r.bytes !== header.size) return refuse(`size mismatch: ${r.bytes} of ${header.size}`);
        const all = new Uint8Array(r.bytes);
        let at = 0;
        for (const c of chunks) { all.set(c, at); at += c.length; }
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
        r.sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
        if (r.sha256 !== String(msg.sha256).toLowerCase()) return refuse('sha256 mismatch');
        dc.send(JSON.stringify({ type: 'ack', sha256: r.sha256 }));
        r.ok = true;
        // Let the answer leave before the page closes.
        setTimeout(finish, 500);
      } else {
        refuse(`unexpected ${msg.type} message`);
      }
    };
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
        if (window.joinedRoom) window.joinedRoom(m.id);
        pc = new RTCPeerConnection({ iceServers: m.iceServers || [] });
        pc.onicecandidate = (ev) => signal({
          candidate: ev.candidate && ev.candidate.candidate
            ? { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex }
            : null,
        });
        pc.ondatachannel = (ev) => { if (ev.channel.label === 'file') receive(ev.channel); };
        pc.onconnectionstatechange = () => {
          note(`connection ${pc.connectionState}`);
          if (pc.connectionState === 'failed') { r.error = 'connection failed'; finish(); }
        };
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
      } else if (m.type === 'error') {
        note(`signaling error ${m.code}: ${m.message}`);
      }
    };
    let queue = Promise.resolve();
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      queue = queue.then(() => handle(m)).catch((e) => { r.error = e.message; finish(); });
    };
    ws.send(JSON.stringify({ type: 'join', room: cfg.room, name: 'chromium' }));
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
setTimeout(() => { process.stderr.write('file-recv: overall time limit\n'); process.exit(1); }, (timeoutS + 30) * 1000).unref();
try {
  // The page's origin is the server's plain-HTTP one: WebCrypto needs it treated as secure.
  browser = await launchChromium([
    '--disable-features=WebRtcHideLocalIpsWithMdns', `--unsafely-treat-insecure-origin-as-secure=${origin}`,
  ]);
  const page = await browser.newPage();
  await page.exposeFunction('joinedRoom', () => process.stderr.write('joined room\n'));
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
  // A page on the server's own origin (its 404), so the WebSocket is same-origin.
  await page.goto(`${origin}/file-recv`, { timeout: 30000 });
  const r = await page.evaluate(receiveFile, { server, room, timeoutS });
  process.stdout.write(`${JSON.stringify(r)}\n`);
  code = r.ok ? 0 : 1;
} catch (e) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: e.message })}\n`);
} finally {
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((res) => setTimeout(res, 5000))]);
}
process.exit(code);
