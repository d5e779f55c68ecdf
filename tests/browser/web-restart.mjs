// A call survives a restart of the signaling server. Two headless Chromium pages (fake camera,
// a laptop-sized and a phone-sized one) join one room of `peerlink serve`, which this script
// runs itself; once video and chat flow, the server gets SIGINT, stays down a few seconds and
// starts again on the same ports. Checked: nobody is told anyone left; the peer connections
// are never replaced (same connection object, connected all along); chat messages and video
// frames keep flowing while the server is down and after it is back; both pages show the
// "signaling reconnecting" status while away and are back in the room under the same ids,
// each listed to the other again. Then one leaves for real, and the other drops it at once;
// and a page that finds its room full goes back to the join form with the reason, camera off.
//
//   node --experimental-websocket web-restart.mjs PEERLINK HTTP_PORT TURN_PORT
//
// Env: DOWN_MS (how long the server stays down, default 3000), SCREENSHOTS, CHROMIUM.
//
// A native `peerlink chat` (Carl) joins the call after the pages and is checked like them
// (chat each way, the same connections through the restart, back under its id); it shows no
// video. More participants: everything below runs over the `participants` list, whose members
// implement the Participant methods (see `pageParticipant`): label, id(), inRoom(other),
// keptConnection(other), framesDecoded(other) (null when it shows no video), send(text),
// received(text), leftLines(), close(). A native `peerlink chat` peer fits as one more: spawn
// it with `--server ws://127.0.0.1:HTTP_PORT/ws --room ROOM --name carol` after the pages
// joined, send() writes a line to its standard input, received() looks for the line on its
// standard output, id() comes from its "joined room ... (ID)" status line, framesDecoded()
// is null; push it onto `participants` before `checkFlow('before')`.
import { launchChromium } from './chromium.mjs';
import { state, waitFor } from './app-state.mjs';
import { report, sleep } from './report.mjs';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [peerlink, httpPort, turnPort] = process.argv.slice(2);
if (!peerlink || !/^\d+$/.test(httpPort || '') || !/^\d+$/.test(turnPort || '')) {
  console.error('usage: node --experimental-websocket web-restart.mjs PEERLINK HTTP_PORT TURN_PORT');
  process.exit(2);
}
const DOWN_MS = Number(process.env.DOWN_MS || 3000);
const here = dirname(fileURLToPath(import.meta.url));
const shots = resolve(process.env.SCREENSHOTS || join(here, 'screenshots'));
mkdirSync(shots, { recursive: true });
const base = `http://127.0.0.1:${httpPort}/`;
const wsUrl = `ws://127.0.0.1:${httpPort}/ws`;
const MAX_ROOM_PEERS = 3;
const r = report(170000);

// ---- the server -------------------------------------------------------------------------------

let server = null;
let serverLog = '';
let runs = 0;

/** Starts `peerlink serve` on the fixed ports and waits until it serves. */
async function startServer() {
  runs++;
  for (let attempt = 0; attempt < 20; attempt++) {
    const child = spawn(peerlink, ['serve', '--http', `127.0.0.1:${httpPort}`, '--listen', `127.0.0.1:${turnPort}`,
      '--relay-ip', '127.0.0.1', '--allow-loopback-peers', '--max-room-peers', String(MAX_ROOM_PEERS)],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { serverLog += d; });
    const exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
    child.exited = exited;
    const ready = await Promise.race([
      (async () => { while (!out.includes('browser app at http://')) await sleep(50); return true; })(),
      exited.then(() => false),
      sleep(15000).then(() => false),
    ]);
    if (ready) {
      server = child;
      return;
    }
    child.kill('SIGKILL');
    await sleep(250); // a port still held by the previous process: try again
  }
  throw new Error(`peerlink serve did not start (run ${runs}); log:\n${serverLog.slice(-2000)}`);
}

async function stopServer() {
  const t0 = Date.now();
  server.kill('SIGINT');
  const result = await Promise.race([server.exited, sleep(10000).then(() => null)]);
  if (!result) server.kill('SIGKILL');
  server = null;
  return { result, ms: Date.now() - t0 };
}

// ---- participants -----------------------------------------------------------------------------

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);

async function pageParticipant(label, viewport, room) {
  const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`# [${label}] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`# [${label}] page error: ${e.message}`));
  await page.goto(`${base}?room=${room}&name=${label}`, { timeout: 15000 });
  const peerOf = (s, other) => s.peers.find((p) => p.id === other.idSeen);
  return {
    label,
    page,
    serials: new Map(), // other's label -> the connection's serial first seen
    async id() { return (await state(page)).selfId; },
    async snapshot() { return state(page); },
    async inRoom(other) {
      const s = await state(page);
      return s.signaling === 'joined' && peerOf(s, other)?.inRoom === true;
    },
    /** Connected, and the same RTCPeerConnection as at the start. */
    async keptConnection(other) {
      const p = peerOf(await state(page), other);
      if (!p) return false;
      if (!this.serials.has(other.label)) this.serials.set(other.label, p.serial);
      return p.connectionState === 'connected' && p.serial === this.serials.get(other.label);
    },
    async framesDecoded(other) { return other.native ? null : (peerOf(await state(page), other)?.framesDecoded ?? 0); },
    async send(text) {
      await page.fill('#chat-input', text);
      await page.click('#chat-send');
    },
    async received(text) { return (await state(page)).chatReceived.some((m) => m.text === text); },
    async leftLines() { return (await state(page)).chat.filter((m) => m.system && / left$/.test(m.text)).map((m) => m.text); },
    async signalPill() { return page.textContent('#signal-state'); },
    async close() { await context.close(); },
  };
}

/** A native `peerlink chat` in the room: lines on its standard input and output. */
function nativeParticipant(label, room) {
  const child = spawn(peerlink, ['chat', '--server', wsUrl, '--room', room, '--name', label, '--bind', '127.0.0.1'],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((res) => child.once('exit', (code) => res(code)));
  const count = (re) => (err.match(re) || []).length;
  const esc = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return {
    label,
    native: true,
    log: () => err,
    async id() { return (err.match(/joined room \S+ as \S+ \(([0-9a-f]+)\)/) || [])[1]; },
    async snapshot() { return { selfId: await this.id(), rejoins: count(/signaling is back \(same id\)/g) }; },
    /** The native peer does not list the room; back in it under its id is what it can say. */
    async inRoom() { return count(/signaling is back \(same id\)/g) >= 1 || !/signaling: /.test(err); },
    /** Connected once to `other`, and that connection never ended. */
    async keptConnection(other) {
      return count(new RegExp(`connection Connected \\(${esc(other.label)}\\)`, 'g')) === 1
        && !new RegExp(`${esc(other.label)} \\([0-9a-f]+\\): `).test(err);
    },
    async connectedTo(n) { return count(/connection Connected \(/g) >= n; },
    async framesDecoded() { return null; },
    async send(text) { child.stdin.write(`${text}\n`); },
    async received(text) { return out.split('\n').includes(text); },
    async leftLines() { return err.split('\n').filter((l) => /: the other peer (left|closed the connection)/.test(l)); },
    async signalPill() { return 'native'; },
    async close() {
      child.stdin.end();
      const code = await Promise.race([exited, sleep(15000).then(() => 'timeout')]);
      if (code === 'timeout') child.kill('SIGKILL');
      return code;
    },
  };
}

const participants = [];
const pairs = () => participants.flatMap((a) => participants.filter((b) => b !== a).map((b) => [a, b]));

/** A chat line from each participant reaches every other one. */
async function checkChat(tag) {
  const lines = [];
  for (const p of participants) {
    const text = `${tag} from ${p.label} ${randomBytes(3).toString('hex')}`;
    await p.send(text);
    lines.push([p, text]);
  }
  for (const [from, text] of lines) {
    for (const to of participants.filter((x) => x !== from)) {
      const until = Date.now() + 10000;
      let got = false;
      while (!(got = await to.received(text)) && Date.now() < until) await sleep(200);
      r.check(got, `${tag}: chat ${from.label} -> ${to.label} arrives`);
    }
  }
}

/** Video frames decoded grow on every page, for every other participant that sends video. */
async function checkVideo(tag) {
  const before = [];
  for (const [a, b] of pairs()) before.push([a, b, await a.framesDecoded(b)]);
  await sleep(1500);
  for (const [a, b, n0] of before) {
    if (n0 === null) continue;
    const n1 = await a.framesDecoded(b);
    r.check(n1 > n0, `${tag}: ${a.label} decodes ${b.label}'s video (${n0} -> ${n1} frames)`);
  }
}

async function checkConnections(tag) {
  for (const [a, b] of pairs()) {
    r.check(await a.keptConnection(b), `${tag}: ${a.label}'s connection to ${b.label} is the same one, connected`);
  }
}

// ---- the run ----------------------------------------------------------------------------------

try {
  await startServer();
  const room = `restart-${randomBytes(4).toString('hex')}`;
  console.log(`# ${base} room ${room}`);
  const alice = await pageParticipant('Alice', { width: 1280, height: 800 }, room);
  participants.push(alice);
  await waitFor(alice.page, (s) => s.signaling === 'joined', 15000);
  const bob = await pageParticipant('Bob', { width: 390, height: 844 }, room);
  participants.push(bob);
  for (const p of participants) {
    const [ok, s] = await waitFor(p.page, (x) => x.signaling === 'joined' && x.peers.length === participants.length - 1
      && x.peers.every((q) => q.connectionState === 'connected' && q.framesDecoded > 0), 30000);
    r.check(ok, `${p.label}: joined, connected to ${s?.peers.length} peer(s), video decoding`);
  }
  for (const p of participants) p.idSeen = await p.id();
  // A native `peerlink chat` joins the call (it offers to both pages).
  const carl = nativeParticipant('Carl', room);
  participants.push(carl);
  {
    const until = Date.now() + 30000;
    let ok = false;
    while (!ok && Date.now() < until) {
      carl.idSeen = await carl.id();
      ok = carl.idSeen && await carl.connectedTo(2);
      for (const p of [alice, bob]) {
        const q = ok && (await state(p.page)).peers.find((x) => x.id === carl.idSeen);
        ok = ok && q && q.connectionState === 'connected' && q.chatOpen;
      }
      if (!ok) await sleep(200);
    }
    r.check(ok, `Carl (peerlink chat) joins: connected to both pages, their chat channels open (${carl.idSeen})`);
    if (!ok) console.log(`# Carl's log:\n${carl.log().slice(-2000)}`);
  }
  await checkConnections('before');
  await checkVideo('before');
  await checkChat('before');

  // SIGINT: the server goes away for DOWN_MS. Meanwhile the pages watch their connections.
  const watch = { stop: false, broken: [], pills: new Set() };
  const watcher = (async () => {
    while (!watch.stop) {
      for (const [a, b] of pairs()) {
        if (!(await a.keptConnection(b))) watch.broken.push(`${a.label}->${b.label}`);
      }
      for (const p of participants) watch.pills.add(`${p.label}: ${await p.signalPill()}`);
      await sleep(250);
    }
  })();
  const { result, ms } = await stopServer();
  r.check(result && result.code === 0, `the server stops on SIGINT (exit ${result?.code ?? result?.signal ?? 'none'}, ${ms} ms)`);
  const downSince = Date.now();
  await checkVideo('server down');
  await checkChat('server down');
  const [awayOk] = await waitFor(alice.page, (s) => s.signaling !== 'joined', 5000);
  r.check(awayOk && [...watch.pills].some((t) => t.includes('signaling reconnecting')),
    `while down the pages say so (${[...watch.pills].filter((t) => !t.endsWith('online')).slice(0, 2).join('; ')})`);
  await sleep(Math.max(0, DOWN_MS - (Date.now() - downSince)));
  console.log(`# server down for ${Date.now() - downSince} ms`);

  await startServer();
  const back = Date.now();
  for (const a of participants) {
    const until = Date.now() + 30000;
    let ok = false;
    while (Date.now() < until) {
      const others = participants.filter((b) => b !== a);
      const inRoom = await Promise.all(others.map((b) => a.inRoom(b)));
      if ((await a.id()) === a.idSeen && inRoom.every(Boolean)) { ok = true; break; }
      await sleep(200);
    }
    const s = await a.snapshot();
    r.check(ok && s.rejoins >= 1, `${a.label} is back in the room as ${s.selfId} (was ${a.idSeen}; rejoins ${s.rejoins}), ` +
      `seeing the others under their old ids (${Date.now() - back} ms after the restart)`);
  }
  await checkConnections('after');
  await checkVideo('after');
  await checkChat('after');
  watch.stop = true;
  await watcher;
  r.check(watch.broken.length === 0, `no connection was lost or replaced during the restart${watch.broken.length ? ` (${[...new Set(watch.broken)].join(', ')})` : ''}`);
  for (const p of participants) {
    const left = await p.leftLines();
    r.check(left.length === 0, `${p.label} was never told anyone left${left.length ? ` (${left.join('; ')})` : ''}`);
  }
  await alice.page.screenshot({ path: join(shots, 'restart-alice.png') });
  await bob.page.screenshot({ path: join(shots, 'restart-bob.png') });

  // A real departure still ends the call at once: Bob leaves; Alice hears `peer-left` while
  // still connected, and drops him as soon as his connection closes.
  const t0 = Date.now();
  await bob.page.click('#leave-btn');
  const [gone, as] = await waitFor(alice.page, (s) => s.peers.every((p) => p.id !== bob.idSeen), 10000);
  r.check(gone && as.chat.some((m) => m.system && m.text === 'Bob left'),
    `when Bob leaves, Alice drops him and says so (${Date.now() - t0} ms)`);

  // A full room: the page goes back to the join form with the reason, camera off.
  const full = `full-${randomBytes(4).toString('hex')}`;
  const holders = [];
  for (let i = 0; i < MAX_ROOM_PEERS; i++) {
    const ws = new WebSocket(wsUrl);
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
    ws.send(JSON.stringify({ type: 'join', room: full, name: `holder${i}` }));
    holders.push(ws);
  }
  await sleep(300);
  const carol = await pageParticipant('Carol', { width: 390, height: 844 }, full);
  const [backToForm, cs] = await waitFor(carol.page, (s) => s.view === 'join', 15000);
  const cameraOff = await carol.page.evaluate(() => !document.querySelector('#tiles video')?.srcObject);
  r.check(backToForm && /full/i.test(cs.joinProblem) && cs.media === 'pending' && cameraOff,
    `a full room sends the page back to the join form: "${cs?.joinProblem}" (view ${cs?.view}, media ${cs?.media})`);
  const shown = await carol.page.textContent('#join-problem');
  r.check(/full/i.test(shown || '') && await carol.page.isVisible('#join-form'), `the form shows "${shown}"`);
  await carol.page.screenshot({ path: join(shots, 'room-full-phone.png') });
  // The native chat ends cleanly at the end of its input.
  const carlExit = await carl.close();
  r.check(carlExit === 0, `Carl (peerlink chat) exits 0 at the end of its input (${carlExit})`);
  for (const ws of holders) ws.close();
  await carol.close();
} catch (e) {
  r.check(false, `${e.stack || e}`);
} finally {
  for (const p of participants) await p.close().catch(() => {});
  await browser.close().catch(() => {});
  if (server) await stopServer();
}
if (r.failed) console.log(`# server log (last lines):\n${serverLog.split('\n').slice(-30).join('\n')}`);
console.log(`# screenshots in ${shots}`);
r.finish();
