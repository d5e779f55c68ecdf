// Headless Chromium pages in one room of `peerlink serve --room-mode sfu`, written only from
// the protocol in docs/signaling.md (not the app's code): each page joins, sees
// `"mode":"sfu"`, makes ONE RTCPeerConnection, to the peer "sfu", offers its fake camera and
// microphone, and answers the server's offers of the others' tracks (perfect negotiation,
// the page polite). Checked:
//   1. N pages (default 4): each page decodes video from each of the other N-1 (framesDecoded
//      growing, by msid stream id = the publisher's peer id) and receives their audio; each
//      page has exactly one peer connection.
//   2. One page leaves and a newcomer joins: the others drop the leaver's stream and decode
//      the newcomer's; the newcomer decodes everyone's; the time to its first frame is printed.
//
//   node sfu-room.mjs ORIGIN WS_URL
//   PAGES=N (default 4)   WAIT_MS=bound on each step (default 30000)
import { launchChromium } from './chromium.mjs';
import { sleep } from './report.mjs';

const [origin, ws] = process.argv.slice(2);
const PAGES = Number(process.env.PAGES || 4);
const WAIT = Number(process.env.WAIT_MS || 30000);
const room = `sfu-${process.pid}`;

setTimeout(() => {
  console.log('FAIL the run did not finish within 150 s');
  process.exit(1);
}, 150000).unref();

// Runs in the page: the whole client.
function client({ ws, room, name }) {
  const state = { id: null, mode: null, pcs: 0, log: [], streams: {}, chat: [], errors: [] };
  window.__sfu = state;
  const log = (m) => state.log.push(`${Math.round(performance.now())} ${m}`);
  let pc = null;
  let makingOffer = false;
  const sock = new WebSocket(ws);
  const send = (data) => sock.send(JSON.stringify({ type: 'signal', to: 'sfu', data }));
  const start = async (iceServers) => {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
    pc = new RTCPeerConnection({ iceServers });
    state.pcs += 1;
    for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    // Chat through the server: text out, {from, text} in.
    const chat = pc.createDataChannel('chat', { ordered: true });
    chat.onmessage = (e) => state.chat.push(JSON.parse(e.data));
    window.__chat = chat;
    pc.onnegotiationneeded = async () => {
      try {
        makingOffer = true;
        await pc.setLocalDescription();
        send({ description: pc.localDescription });
      } catch (e) {
        state.errors.push(`offer: ${e}`);
      } finally {
        makingOffer = false;
      }
    };
    pc.onicecandidate = (e) => send({ candidate: e.candidate });
    pc.onconnectionstatechange = () => log(`connection ${pc.connectionState}`);
    pc.ontrack = (e) => {
      const id = e.streams[0] ? e.streams[0].id : '?';
      const s = state.streams[id] || (state.streams[id] = { tracks: {} });
      s.tracks[e.track.kind] = e.track.id;
      log(`track ${e.track.kind} from ${id}`);
      if (e.track.kind === 'video') {
        // A sink, so the video is decoded as an app would.
        const v = document.createElement('video');
        v.muted = true;
        v.autoplay = true;
        v.playsInline = true;
        v.srcObject = new MediaStream([e.track]);
        document.body.appendChild(v);
      }
    };
  };
  sock.onopen = () => sock.send(JSON.stringify({ type: 'join', room, name }));
  sock.onmessage = async (e) => {
    const m = JSON.parse(e.data);
    if (m.type === 'welcome') {
      state.id = m.id;
      state.mode = m.mode;
      log(`welcome mode ${m.mode}`);
      if (m.mode === 'sfu') await start(m.iceServers);
    } else if (m.type === 'error') {
      state.errors.push(`${m.code}: ${m.message}`);
    } else if (m.type === 'signal' && m.from === 'sfu' && pc) {
      const { description, candidate } = m.data;
      try {
        if (description) {
          // Perfect negotiation, polite: our offer gives way to the server's (an offer
          // applied in have-local-offer rolls ours back implicitly).
          await pc.setRemoteDescription(description);
          if (description.type === 'offer') {
            await pc.setLocalDescription();
            send({ description: pc.localDescription });
          }
        } else if (candidate !== undefined) {
          await pc.addIceCandidate(candidate);
        }
      } catch (err) {
        state.errors.push(`signal: ${err}`);
      }
    }
  };
  window.__leave = () => {
    sock.send(JSON.stringify({ type: 'leave' }));
    if (pc) pc.close();
    sock.close();
  };
}

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);
let failures = 0;
const fail = (m) => { failures += 1; console.log(`FAIL ${m}`); };
const ok = (m) => console.log(`ok   ${m}`);

async function openPage(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`# ${name} page error: ${e}`));
  await page.goto(`${origin}/sfu-test-page-${name}`).catch(() => {});
  // Keep a handle on the peer connection for getStats.
  await page.evaluate(() => {
    const Original = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Original {
      constructor(...a) { super(...a); window.__sfuPc = this; }
    };
  });
  await page.evaluate(client, { ws, room, name });
  return { name, page, context };
}

// Per remote stream id: frames decoded and audio packets received, from getStats.
async function receiving(p) {
  return p.page.evaluate(async () => {
    const state = window.__sfu;
    const pc = window.__sfuPc;
    const res = { id: state.id, mode: state.mode, pcs: state.pcs, errors: state.errors.slice(), streams: {} };
    if (!pc) return res;
    const byTrack = {};
    for (const [sid, s] of Object.entries(state.streams)) {
      for (const [kind, tid] of Object.entries(s.tracks)) byTrack[tid] = { sid, kind };
    }
    const live = new Set(pc.getTransceivers()
      .filter((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv')
      .map((t) => t.receiver.track.id));
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const t = byTrack[r.trackIdentifier];
      if (!t || !live.has(r.trackIdentifier)) return;
      const s = res.streams[t.sid] || (res.streams[t.sid] = { frames: 0, audio: 0 });
      if (r.kind === 'video') s.frames = r.framesDecoded || 0;
      else s.audio = r.packetsReceived || 0;
    });
    return res;
  });
}

// Waits until every page decodes video and gets audio from each of `expect(page)` ids,
// with progress (frames growing) over a second.
async function allReceive(pages, label) {
  const started = Date.now();
  let last = null;
  while (Date.now() - started < WAIT) {
    const a = await Promise.all(pages.map(receiving));
    await sleep(1000);
    const b = await Promise.all(pages.map(receiving));
    const ids = b.map((r) => r.id);
    const missing = [];
    b.forEach((r, i) => {
      for (const other of ids) {
        if (other === r.id) continue;
        const s1 = a[i].streams[other] || { frames: 0, audio: 0 };
        const s2 = r.streams[other] || { frames: 0, audio: 0 };
        if (!(s2.frames > s1.frames && s2.audio > s1.audio)) missing.push(`${pages[i].name}<-${other.slice(0, 6)}`);
      }
      const extra = Object.keys(r.streams).filter((sid) => !ids.includes(sid));
      if (extra.length) missing.push(`${pages[i].name} still receives ${extra.map((x) => x.slice(0, 6))}`);
    });
    last = { b, missing };
    if (!missing.length) {
      ok(`${label}: every page decodes video and receives audio from the ${pages.length - 1} others (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      return b;
    }
  }
  fail(`${label}: not all media flows after ${WAIT / 1000} s: ${last.missing.join(', ')}`);
  for (const r of last.b) console.log(`#   ${r.id} mode=${r.mode} pcs=${r.pcs} errors=${JSON.stringify(r.errors)} streams=${JSON.stringify(r.streams)}`);
  return last.b;
}

const pages = [];
for (let i = 0; i < PAGES; i += 1) pages.push(await openPage(`p${i}`));
const first = await allReceive(pages, `${PAGES} pages`);
if (first.every((r) => r.mode === 'sfu')) ok('every welcome said mode sfu'); else fail(`modes: ${first.map((r) => r.mode)}`);
if (first.every((r) => r.pcs === 1)) ok('each page has exactly one peer connection'); else fail(`peer connections: ${first.map((r) => r.pcs)}`);

// Chat: one page says something, every other page hears it from that page's id.
const said = await pages[0].page.evaluate(() => { window.__chat.send('hello through the sfu'); return window.__sfu.id; });
const heard = [];
const chatDeadline = Date.now() + 10000;
while (Date.now() < chatDeadline) {
  heard.length = 0;
  for (const p of pages.slice(1)) {
    heard.push(await p.page.evaluate(() => window.__sfu.chat.slice()));
  }
  if (heard.every((h) => h.some((m) => m.from === said && m.text === 'hello through the sfu'))) break;
  await sleep(200);
}
if (heard.every((h) => h.some((m) => m.from === said && m.text === 'hello through the sfu'))) {
  ok(`chat: the ${pages.length - 1} other pages got the message with its sender's id`);
} else fail(`chat not relayed: ${JSON.stringify(heard)}`);
const own = await pages[0].page.evaluate(() => window.__sfu.chat.length);
if (own === 0) ok('chat: the sender does not get its own message back'); else fail(`sender got ${own} messages back`);

// One leaves, a newcomer joins.
const leaver = pages.shift();
await leaver.page.evaluate(() => window.__leave());
await leaver.context.close();
const joinedAt = Date.now();
const newcomer = await openPage(`p${PAGES}`);
pages.push(newcomer);
let firstFrame = null;
while (Date.now() - joinedAt < WAIT) {
  const r = await receiving(newcomer);
  if (Object.values(r.streams).some((s) => s.frames > 0)) {
    firstFrame = Date.now() - joinedAt;
    break;
  }
  await sleep(50);
}
if (firstFrame === null) fail('the newcomer decoded no frame');
else console.log(`# newcomer's first decoded frame ${firstFrame} ms after it opened its page (page load, getUserMedia, ICE, DTLS included)`);
await allReceive(pages, 'after one left and one joined');
const logs = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__sfu.log.slice(-6))));
if (failures) logs.forEach((l, i) => console.log(`# ${pages[i].name}: ${l.join(' | ')}`));
await browser.close();
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
