// Two headless Chromium pages, each with an RTCPeerConnection limited to relay candidates
// (iceTransportPolicy "relay") and given only our TURN server, open a data channel and
// exchange messages both ways. The selected candidate pair must be relay/relay.
//
//   node turn-relay.mjs TURN_PORT REST_SECRET [udp|tcp]
// Prints "N passed, M failed"; exits non-zero on failure.
import { launchChromium } from './chromium.mjs';
import { createHmac } from 'node:crypto';

const [port, secret, transport = 'udp'] = process.argv.slice(2);
if (!port || !secret) {
  console.error('usage: node turn-relay.mjs TURN_PORT REST_SECRET [udp|tcp]');
  process.exit(2);
}
// TURN REST credentials, as `peerlink serve` will hand them out.
const username = `${Math.floor(Date.now() / 1000) + 3600}:chromium`;
const credential = createHmac('sha1', secret).update(username).digest('base64');
const config = {
  iceServers: [{ urls: `turn:127.0.0.1:${port}?transport=${transport}`, username, credential }],
  iceTransportPolicy: 'relay',
};

const browser = await launchChromium();
let passed = 0;
let failed = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  ok ? passed++ : failed++;
};

try {
  const context = await browser.newContext();
  const [a, b] = [await context.newPage(), await context.newPage()];
  for (const [name, page] of [['a', a], ['b', b]]) {
    page.on('console', (m) => console.log(`[${name}] ${m.text()}`));
    await page.goto('about:blank');
  }
  // Each page: a peer connection that queues its ICE candidates and received messages.
  const setup = async (page, offerer) => page.evaluate(({ config, offerer }) => {
    const pc = new RTCPeerConnection(config);
    window.pc = pc;
    window.candidates = [];
    window.received = [];
    pc.onicecandidate = (e) => { if (e.candidate) window.candidates.push(e.candidate.toJSON()); };
    const wire = (dc) => {
      window.dc = dc;
      dc.onmessage = (e) => window.received.push(e.data);
      window.opened = new Promise((resolve) => {
        if (dc.readyState === 'open') resolve();
        else dc.onopen = () => resolve();
      });
    };
    if (offerer) wire(pc.createDataChannel('chat'));
    else window.opened = new Promise((resolve) => {
      pc.ondatachannel = (e) => { wire(e.channel); window.opened.then ? resolve(window.opened) : resolve(); };
    });
  }, { config, offerer });
  await setup(a, true);
  await setup(b, false);

  const offer = await a.evaluate(async () => {
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription.toJSON();
  });
  const answer = await b.evaluate(async (offer) => {
    await pc.setRemoteDescription(offer);
    await pc.setLocalDescription(await pc.createAnswer());
    return pc.localDescription.toJSON();
  }, offer);
  await a.evaluate(async (answer) => pc.setRemoteDescription(answer), answer);

  // Trickle candidates across until both sides are connected (bounded).
  const deadline = Date.now() + 20000;
  const sent = { a: 0, b: 0 };
  let connected = false;
  while (Date.now() < deadline) {
    for (const [from, to, key] of [[a, b, 'a'], [b, a, 'b']]) {
      const list = await from.evaluate(() => window.candidates);
      for (const c of list.slice(sent[key])) await to.evaluate((c) => pc.addIceCandidate(c), c);
      sent[key] = list.length;
    }
    const states = await Promise.all([a, b].map((p) => p.evaluate(() => pc.connectionState)));
    if (states.every((s) => s === 'connected')) { connected = true; break; }
    if (states.some((s) => s === 'failed')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const gathered = await a.evaluate(() => window.candidates.map((c) => c.candidate));
  check(gathered.length > 0 && gathered.every((c) => / typ relay /.test(c)),
    `page a gathered ${gathered.length} relay candidate(s) from our TURN server`);
  check(connected, `both peer connections connected over ${transport.toUpperCase()} to TURN`);

  if (connected) {
    await Promise.all([a, b].map((p) => p.evaluate(() => window.opened)));
    await a.evaluate(() => { for (let i = 0; i < 20; i++) dc.send(`a->b ${i}`); });
    await b.evaluate(() => { for (let i = 0; i < 20; i++) dc.send(`b->a ${i}`); });
    const wait = async (page, n) => {
      const until = Date.now() + 10000;
      while (Date.now() < until) {
        const got = await page.evaluate(() => window.received.length);
        if (got >= n) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      return page.evaluate(() => window.received);
    };
    const atB = await wait(b, 20);
    const atA = await wait(a, 20);
    check(atB.length === 20 && atB.every((m, i) => m === `a->b ${i}`), `b received a's 20 messages in order (${atB.length})`);
    check(atA.length === 20 && atA.every((m, i) => m === `b->a ${i}`), `a received b's 20 messages in order (${atA.length})`);

    const pair = await a.evaluate(async () => {
      const stats = await pc.getStats();
      let selected;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
      });
      if (!selected) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') selected = s; });
      if (!selected) return null;
      const local = stats.get(selected.localCandidateId);
      const remote = stats.get(selected.remoteCandidateId);
      return { local: local.candidateType, remote: remote.candidateType, relayProtocol: local.relayProtocol };
    });
    check(pair && pair.local === 'relay' && pair.remote === 'relay',
      `selected pair is relay/relay (${JSON.stringify(pair)})`);
  }
} catch (e) {
  console.log(`FAIL ${e.stack || e}`);
  failed++;
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
