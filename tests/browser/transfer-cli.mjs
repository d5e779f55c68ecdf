// The browser app in headless Chromium against `peerlink recv` and `peerlink send`: a 50 MB
// random file from the page to the native receiver, then one from the native sender to the
// page; the SHA-256 must match at both ends and the native commands must exit 0. Run inside
// a network namespace (tests/e2e/chat-browser.sh runs it after the chat test).
//
//   node transfer-cli.mjs APP_URL ROOM PATH/TO/peerlink WS_URL BIND_IP
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium } from './chromium.mjs';
import { report, sleep } from './report.mjs';

const [app, room, peerlink, ws, bind] = process.argv.slice(2);
// RELAY=1: the page uses only relayed candidates (?relay=1, iceTransportPolicy "relay").
const relay = process.env.RELAY === '1';
const tag = relay ? 'relay-only page' : 'direct';
const SIZE = 50 * 1024 * 1024;
const checks = report(170000);
const check = checks.check;
const sha = (b) => createHash('sha256').update(b).digest('hex');

function native(args) {
  const child = spawn(peerlink, args);
  const run = { out: '', err: '', code: null };
  child.stdout.on('data', (d) => { run.out += d; });
  child.stderr.on('data', (d) => { run.err += d; });
  run.done = new Promise((resolve) => child.on('exit', (code) => { run.code = code; resolve(code); }));
  run.child = child;
  return run;
}
const within = (p, ms) => Promise.race([p, sleep(ms).then(() => 'timeout')]);

const dir = mkdtempSync(join(tmpdir(), 'peerlink-transfer-'));
const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
try {
  const common = ['--server', ws, '--room', room, '--bind', bind];
  // 1. page -> peerlink recv
  const recv = native(['recv', '--out', join(dir, 'in'), '--name', 'native-recv', ...common]);
  await sleep(1500);
  const page = await browser.newPage();
  await page.goto(`${app}?room=${room}&name=browser${relay ? '&relay=1' : ''}`);
  const state = () => page.evaluate(() => window.peerlinkState).catch(() => null);
  const waitState = async (pred, ms) => {
    const end = Date.now() + ms;
    let s = null;
    while (Date.now() < end) {
      s = await state();
      if (s && pred(s)) return [true, s];
      await sleep(200);
    }
    return [false, s];
  };
  const [connected] = await waitState((s) => s.peers.some((p) => p.connectionState === 'connected'), 30000);
  check(connected, `${tag}: the page connects to peerlink recv`);
  if (relay) {
    const [isRelay, sr] = await waitState((s) => s.peers.some((p) => p.localCandidateType === 'relay'), 10000);
    check(isRelay, `${tag}: the page's selected local candidate is relayed (${JSON.stringify(sr && sr.peers.map((p) => [p.localCandidateType, p.remoteCandidateType]))})`);
  }
  const data = randomBytes(SIZE);
  const path = join(dir, 'from-browser.bin');
  writeFileSync(path, data);
  const started = Date.now();
  await page.setInputFiles('#file-input', path);
  const code = await within(recv.done, 120000);
  const received = (() => { try { return readFileSync(join(dir, 'in', 'from-browser.bin')); } catch { return null; } })();
  check(code === 0 && received && sha(received) === sha(data),
    `${tag}: 50 MB page -> peerlink recv: exit ${code}, SHA-256 ${received ? (sha(received) === sha(data) ? 'matches' : 'differs') : 'missing'} (${((Date.now() - started) / 1000).toFixed(1)} s; ${(recv.err.match(/^selected pair: .*$/m) || ['no pair'])[0]})`);
  if (code !== 0) console.log(recv.err.slice(-2000));
  const [sentOk, s1] = await waitState((s) => s.transfers.some((t) => t.direction === 'send' && t.status === 'confirmed'), 20000);
  check(sentOk, `${tag}: the page reports its file confirmed by the native receiver (${JSON.stringify(s1 && s1.transfers.map((t) => t.status))})`);

  // 2. peerlink send -> page
  const data2 = randomBytes(SIZE);
  const path2 = join(dir, 'from-native.bin');
  writeFileSync(path2, data2);
  const started2 = Date.now();
  const send = native(['send', path2, '--name', 'native-send', ...common]);
  const code2 = await within(send.done, 120000);
  const [got, s2] = await waitState((s) => s.filesReceived.some((f) => f.name === 'from-native.bin'), 20000);
  const f = s2 && s2.filesReceived.find((x) => x.name === 'from-native.bin');
  check(code2 === 0 && got && f.sha256 === sha(data2) && f.size === SIZE,
    `${tag}: 50 MB peerlink send -> page: exit ${code2}, page verified ${f ? f.sha256 === sha(data2) : 'nothing'} (${((Date.now() - started2) / 1000).toFixed(1)} s)`);
  if (code2 !== 0) console.log(send.err.slice(-2000));
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
checks.finish();
