// A headless Chromium page (the protocol-only client of sfu-client.mjs, microphone only) in
// a room of `peerlink serve --room-mode sfu --thumbnails-above 1` where `peerlink play
// --layer low.ivf high.ivf` publishes one video in two simulcast layers (tests/e2e/
// sfu-native.sh). Checked from the page's getStats (inbound-rtp frameWidth, frameHeight,
// framesDecoded):
//   - alone with the player, the page is shown one video, in full: it decodes the top
//     layer, TOP (640x360), frames growing while that size;
//   - a second page then publishes its fake camera (one layer, another size): shown two
//     videos, the page gets the player's as a thumbnail, its lowest layer: it decodes LOW
//     (320x180) frames of the same stream, frames growing while that size.
//
//   node sfu-layers.mjs ORIGIN WS_URL ROOM
//   TOP (640x360)   LOW (320x180)   WAIT_MS (20000): bound on each check
import { launchChromium } from './chromium.mjs';
import { report, sleep } from './report.mjs';
import { openPage, receiving } from './sfu-client.mjs';

const [origin, ws, room] = process.argv.slice(2);
const TOP = process.env.TOP || '640x360';
const LOW = process.env.LOW || '320x180';
const WAIT = Number(process.env.WAIT_MS || 20000);
const r = report(75000);

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);
const p = await openPage(browser, origin, { ws, room, name: 'watcher', simulcast: false, camera: false });

// Waits until a stream (`sid`, or any but the page's own) decodes frames of `size` over
// half a second; returns its id and the frames, or null with the last sample.
const sizeOf = (s) => `${s.width}x${s.height}`;
async function decodes(size, sid) {
  const deadline = Date.now() + WAIT;
  let last = null;
  while (Date.now() < deadline) {
    const a = await receiving(p);
    await sleep(500);
    const b = await receiving(p);
    last = b;
    const found = Object.keys(b.streams).find((id) => id !== b.id && (!sid || id === sid)
      && sizeOf(a.streams[id] ?? {}) === size && sizeOf(b.streams[id]) === size
      && b.streams[id].frames > (a.streams[id]?.frames ?? 0));
    if (found) return { sid: found, from: a.streams[found].frames, to: b.streams[found].frames };
  }
  return { sid: null, last };
}

const top = await decodes(TOP);
r.check(top.sid, top.sid
  ? `the page decodes the top layer ${TOP} of ${top.sid} (frames ${top.from} -> ${top.to} in 0.5 s)`
  : `no ${TOP} frames decoded: ${JSON.stringify(top.last)}`);
if (!top.sid) {
  await browser.close();
  r.finish();
}

// A second video in the room: the page is shown two, the player's becomes a thumbnail.
const other = await openPage(browser, origin, { ws, room, name: 'camera', simulcast: false, size: [480, 270] });
const low = await decodes(LOW, top.sid);
r.check(low.sid, low.sid
  ? `with a second video in the room, the page decodes the low layer ${LOW} of ${low.sid} (frames ${low.from} -> ${low.to} in 0.5 s)`
  : `no ${LOW} frames of ${top.sid} decoded: ${JSON.stringify(low.last)}`);

await other.page.evaluate(() => window.__leave());
await p.page.evaluate(() => window.__leave());
await browser.close();
r.finish();
