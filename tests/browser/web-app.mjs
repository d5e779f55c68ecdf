// The browser app served by `peerlink serve`, driven in headless Chromium: two participants
// (a laptop-sized and a phone-sized page, separate browser contexts) join a random room, see
// each other's (fake) camera, chat both ways and send a 20 MB file whose SHA-256 must match.
// On the phone-sized page, where the file list is below the fold, a notice tells of the file.
// Then all again with ?relay=1 (iceTransportPolicy "relay"), where the selected candidate
// pair must be relay on both sides.
//
//   node web-app.mjs http://127.0.0.1:PORT/
// Env: SCREENSHOTS (directory, default tests/browser/screenshots/), CHROMIUM (binary).
// Prints ok/FAIL lines and "N passed, M failed"; exits non-zero on failure.
import { launchChromium } from './chromium.mjs';
import { state, waitFor } from './app-state.mjs';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// A second URL puts bob on another server (rooms shared through Redis); ROUNDS picks the
// rounds to run (default "direct,relay").
const base = process.argv[2];
const baseBob = process.argv[3] || base;
const rounds = (process.env.ROUNDS || 'direct,relay').split(',');
if (![base, baseBob].every((u) => u && /^https?:\/\//.test(u))) {
  console.error('usage: node web-app.mjs http://127.0.0.1:PORT/ [http://OTHER-SERVER/]');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const shots = resolve(process.env.SCREENSHOTS || join(here, 'screenshots'));
mkdirSync(shots, { recursive: true });
const FILE_SIZE = 20 * 1024 * 1024;

let passed = 0;
let failed = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  ok ? passed++ : failed++;
  return ok;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The whole run is bounded, whatever hangs.
const watchdog = setTimeout(() => {
  console.log('FAIL the test did not finish within 170 s');
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, 170000);

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
const tmp = mkdtempSync(join(tmpdir(), 'peerlink-web-'));

async function participant(label, viewport) {
  const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[${label}] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${label}] page error: ${e.message}`));
  return { label, context, page };
}

async function round(relay) {
  const tag = relay ? 'relay' : 'direct';
  const room = `e2e-${tag}-${randomBytes(4).toString('hex')}`;
  console.log(`# ${tag}: room ${room}`);
  const a = await participant('alice', { width: 1280, height: 800 });
  const b = await participant('bob', { width: 390, height: 844 });
  const url = (name, at = base) => `${at.replace(/\/?$/, '/')}?room=${room}&name=${name}${relay ? '&relay=1' : ''}`;
  try {
    await a.page.goto(url('Alice'), { timeout: 15000 });
    const [aJoined] = await waitFor(a.page, (s) => s.signaling === 'joined', 15000);
    check(aJoined, `${tag}: alice joined the room`);
    await b.page.goto(url('Bob', baseBob), { timeout: 15000 });

    const connected = (s) => s.peers.length === 1 && s.peers[0].connectionState === 'connected';
    const [[aOk, aS], [bOk, bS]] = await Promise.all([waitFor(a.page, connected, 30000), waitFor(b.page, connected, 30000)]);
    if (!check(aOk && bOk, `${tag}: both peer connections connected (${aS?.peers[0]?.connectionState}/${bS?.peers[0]?.connectionState})`)) {
      console.log(JSON.stringify({ alice: aS, bob: bS }).slice(0, 2000));
      return;
    }
    check(aS.peers[0].name === 'Bob' && bS.peers[0].name === 'Alice', `${tag}: each sees the other's name`);

    // Video decodes on both sides: framesDecoded grows between two samples.
    for (const p of [a, b]) {
      const [started, s1] = await waitFor(p.page, (s) => s.peers[0]?.framesDecoded > 0, 15000);
      await sleep(1500);
      const [grew, s2] = await waitFor(p.page, (s) => s.peers[0]?.framesDecoded > (s1?.peers[0]?.framesDecoded ?? 0), 5000);
      check(started && grew, `${p.label}: video frames decoded ${s1?.peers[0]?.framesDecoded ?? 0} -> ${s2?.peers[0]?.framesDecoded ?? 0}` +
        ` (${s2?.peers[0]?.frameWidth}x${s2?.peers[0]?.frameHeight})`);
    }

    // Selected candidate pair (stats refresh every second).
    const pairOf = (s) => `${s.peers[0].localCandidateType} -> ${s.peers[0].remoteCandidateType}`;
    const [, aP] = await waitFor(a.page, (s) => s.peers[0]?.localCandidateType, 5000);
    const [, bP] = await waitFor(b.page, (s) => s.peers[0]?.localCandidateType, 5000);
    if (relay) {
      check(aP.peers[0].localCandidateType === 'relay' && aP.peers[0].remoteCandidateType === 'relay',
        `alice: selected pair is ${pairOf(aP)} (relay over ${aP.peers[0].relayProtocol})`);
      check(bP.peers[0].localCandidateType === 'relay' && bP.peers[0].remoteCandidateType === 'relay',
        `bob: selected pair is ${pairOf(bP)} (relay over ${bP.peers[0].relayProtocol})`);
    } else {
      console.log(`# alice: selected pair ${pairOf(aP)}, rtt ${aP.peers[0].rttMs} ms; bob: ${pairOf(bP)}, rtt ${bP.peers[0].rttMs} ms`);
    }

    // Chat, each way, through the UI.
    for (const [from, to] of [[a, b], [b, a]]) {
      const text = `hello from ${from.label} <b>${randomBytes(3).toString('hex')}</b>`;
      await from.page.fill('#chat-input', text);
      await from.page.click('#chat-send');
      const [got] = await waitFor(to.page, (s) => s.chatReceived.some((m) => m.text === text), 10000);
      const shown = got && await to.page.evaluate((t) => [...document.querySelectorAll('#chat-log .text')].some((e) => e.textContent === t), text);
      check(got && shown, `${tag}: chat ${from.label} -> ${to.label} arrives and shows as text`);
    }
    await a.page.screenshot({ path: join(shots, `${tag}-alice-laptop.png`) });
    await b.page.screenshot({ path: join(shots, `${tag}-bob-phone.png`) });

    // A longer conversation pushes the phone's file list below the fold.
    for (let i = 1; i <= 8; i++) {
      await a.page.fill('#chat-input', `line ${i} of a longer conversation`);
      await a.page.click('#chat-send');
    }
    await waitFor(b.page, (s) => s.chatReceived.some((m) => m.text === 'line 8 of a longer conversation'), 10000);
    const belowFold = await b.page.evaluate(() => document.querySelector('#transfers').getBoundingClientRect().top > innerHeight);
    console.log(`# bob's file list is ${belowFold ? 'below the fold' : 'in view'} before the transfer`);

    // A 20 MB random file from alice to bob, picked through the file input.
    const name = `random-${tag}.bin`;
    const path = join(tmp, name);
    const bytes = randomBytes(FILE_SIZE);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(path, bytes);
    const t0 = Date.now();
    await a.page.setInputFiles('#file-input', path);
    const [recv, bS2] = await waitFor(b.page, (s) => s.filesReceived.some((f) => f.name === name)
      || s.transfers.some((f) => f.status === 'failed'), 60000);
    const f = bS2?.filesReceived.find((x) => x.name === name);
    check(recv && f && f.size === FILE_SIZE && f.sha256 === sha256,
      `${tag}: bob received ${name}, ${f?.size} bytes, SHA-256 ${f?.sha256 === sha256 ? 'matches' : `differs (${f?.sha256})`}` +
      ` (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    if (!f) console.log(JSON.stringify(bS2?.transfers));
    const [conf, aS2] = await waitFor(a.page, (s) => s.filesSent.some((x) => x.name === name && ['confirmed', 'failed'].includes(x.status)), 15000);
    const sent = aS2?.filesSent.find((x) => x.name === name);
    check(conf && sent.status === 'confirmed' && sent.sha256 === sha256,
      `${tag}: alice sees the transfer confirmed by bob's SHA-256 (${sent?.status}${sent?.reason ? `: ${sent.reason}` : ''})`);
    if (sent?.ms) console.log(`# ${tag}: 20 MiB in ${sent.ms} ms on the page, ${(FILE_SIZE / 1048576 / (sent.ms / 1000)).toFixed(1)} MiB/s`);
    const link = await b.page.evaluate(() => {
      const l = document.querySelector('#transfers a.save');
      return l && { download: l.download, blob: l.href.startsWith('blob:') };
    });
    check(link && link.download === name && link.blob, `${tag}: bob is offered a download link named ${link?.download}`);
    // On the phone the file list is below the fold: a notice says a file came, and its
    // button brings the list into view.
    const toast = bS2?.fileToast;
    check(typeof toast === 'string' && toast.includes(name), `${tag}: bob's phone-sized page tells him of the file ("${toast}")`);
    if (toast) {
      await b.page.screenshot({ path: join(shots, `${tag}-bob-file-notice.png`) });
      await b.page.click('#file-toast-show');
      await sleep(800);
      const listShown = await b.page.evaluate(() => {
        const r = document.querySelector('#transfers a.save').getBoundingClientRect();
        return r.top >= 0 && r.bottom <= innerHeight;
      });
      check(listShown, `${tag}: its Show button scrolls bob's file list into view`);
    }
    await a.page.screenshot({ path: join(shots, `${tag}-alice-file.png`) });
    await b.page.screenshot({ path: join(shots, `${tag}-bob-file.png`) });
    rmSync(path, { force: true });
  } finally {
    await a.context.close();
    await b.context.close();
  }
}

try {
  if (rounds.includes('direct')) await round(false);
  if (rounds.includes('relay')) await round(true);
} catch (e) {
  check(false, `${e.stack || e}`);
} finally {
  await browser.close();
  rmSync(tmp, { recursive: true, force: true });
  clearTimeout(watchdog);
}
console.log(`# screenshots in ${shots}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
