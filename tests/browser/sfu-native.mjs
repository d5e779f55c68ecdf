// A headless Chromium page (the protocol-only client of sfu-client.mjs) in a room of
// `peerlink serve --room-mode sfu` with native peers (tests/e2e/sfu-native.sh): it publishes
// its fake camera and microphone, must decode the video and receive the audio of another
// publisher (`peerlink play`), must hear "hello from native" (`peerlink chat`) from a sender
// id that is not its own and answers "hello from chromium". Then it keeps
// publishing HOLD_MS for `peerlink record` and leaves.
//
//   node sfu-native.mjs ORIGIN WS_URL ROOM
//   WAIT_MS (30000): bound on each check   HOLD_MS (6000)
import { launchChromium } from './chromium.mjs';
import { sleep } from './report.mjs';
import { openPage, receiving } from './sfu-client.mjs';

const [origin, ws, room] = process.argv.slice(2);
const WAIT = Number(process.env.WAIT_MS || 30000);
const HOLD = Number(process.env.HOLD_MS || 6000);
setTimeout(() => {
  console.log('FAIL the run did not finish within 90 s');
  process.exit(1);
}, 90000).unref();

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);
let failures = 0;
const fail = (m) => { failures += 1; console.log(`FAIL ${m}`); };
const ok = (m) => console.log(`ok   ${m}`);
const p = await openPage(browser, origin, { ws, room, name: 'chromium', simulcast: false });

// Media from another publisher: video frames and audio packets growing over a second.
let from = null;
let last = null;
const started = Date.now();
while (Date.now() - started < WAIT && !from) {
  const a = await receiving(p);
  await sleep(1000);
  const b = await receiving(p);
  last = b;
  from = Object.keys(b.streams).find((sid) => sid !== b.id
    && b.streams[sid].frames > (a.streams[sid]?.frames ?? 0) && b.streams[sid].audio > (a.streams[sid]?.audio ?? 0));
}
if (from) ok(`the page decodes video and receives audio from ${from} (${last.streams[from].frames} frames, ${last.streams[from].width} wide) over its one connection (${last.pcs})`);
else fail(`no other publisher's media decoded: ${JSON.stringify(last)}`);

// Chat both ways through the server: the native chat speaks first (it joins after this
// page decodes media), then the page answers.
const chatStarted = Date.now();
let heard = null;
let sent = false;
while (Date.now() - chatStarted < WAIT && !heard) {
  const r = await p.page.evaluate(() => ({ id: window.__sfu.id, chat: window.__sfu.chat.slice() }));
  heard = r.chat.find((m) => m.text === 'hello from native' && m.from && m.from !== r.id) || null;
  if (!heard) await sleep(200);
}
if (heard) ok(`the page heard "hello from native" from ${heard.from}`); else fail('the page did not hear the native chat');
if (await p.page.evaluate(() => window.__chat?.readyState === 'open')) {
  await p.page.evaluate(() => window.__chat.send('hello from chromium'));
  sent = true;
}
if (sent) ok('the page said hello in the chat'); else fail('the chat channel is not open');

await sleep(HOLD);
await p.page.evaluate(() => window.__leave());
await browser.close();
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
