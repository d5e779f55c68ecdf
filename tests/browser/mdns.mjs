// Chromium hides its host candidates behind random `*.local` names and answers multicast DNS
// queries for them. This page gathers one, then our resolver (mdns_resolve, from the ICE
// crate's mDNS codec) must get the address back from Chromium's responder; a name nobody
// registered must get no answer.
//
//   node tests/browser/mdns.mjs path/to/mdns_resolve EXPECTED_IP
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { launchChromium } from './chromium.mjs';

const [resolver, expected] = process.argv.slice(2);
const run = promisify(execFile);
let failed = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failed += 1;
};

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const candidate = await page.evaluate(async () => {
    const pc = new RTCPeerConnection();
    window.keep = pc; // the name stays registered while the connection lives
    pc.createDataChannel('x');
    const found = new Promise((resolve) => {
      pc.onicecandidate = (e) => {
        if (e.candidate && /\.local$/.test(e.candidate.address || '')) resolve(e.candidate.candidate);
        if (!e.candidate) resolve(null);
      };
    });
    await pc.setLocalDescription();
    return found;
  });
  check(candidate !== null, `Chromium gathered an mDNS host candidate: ${candidate}`);
  if (candidate) {
    const name = candidate.split(' ')[4];
    const { stdout } = await run(resolver, [name, '10']).catch((e) => ({ stdout: e.stdout || '' }));
    const addresses = stdout.trim().split('\n').filter(Boolean);
    check(addresses.includes(expected), `${name} resolved by our query to ${addresses.join(', ') || 'nothing'} (want ${expected})`);
  }
  const unknown = '0f0e0d0c-0b0a-4909-8807-060504030201.local';
  const res = await run(resolver, [unknown, '2']).then(() => 'answered', (e) => e.code);
  check(res === 1, `an unregistered name gets no answer (exit ${res})`);
} finally {
  await browser.close();
}
console.log(`${failed === 0 ? 'mDNS: all passed' : `mDNS: ${failed} failed`}`);
process.exit(failed === 0 ? 0 : 1);
