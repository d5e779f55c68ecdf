// A receiver behind a rate-limited path in an SFU room (issue 18's proof), driven by
// tests/e2e/sfu-ratelimit.sh. Two headless Chromium processes, each started in a network
// namespace of the test's own (CHROMIUM_A, CHROMIUM_B: wrappers around `ip netns exec`):
//   - in A, beside `peerlink serve`: the publisher (fake camera at CAMERA, default 1280x720,
//     simulcast with rids q, h, f: 320, 640 and 1280 wide);
//   - in B, behind the path emulator: the receiver (microphone only), which samples its
//     getStats every 50 ms in the page (frameWidth, framesDecoded, bytes, freezes).
// Once the receiver decodes the top layer, the emulator's A->B rate is limited (SIGUSR2 to
// EMULATOR_PID swaps in its --alt-rate-mbit) for LIMIT_S seconds, then lifted. Printed and
// asserted (the bounds): the low layer (the narrowest the publisher sends) decoded
// within 2 s of the limit, no stretch
// without a new decoded frame longer than 500 ms from the limit to the end, the top layer
// decoded again within 10 s of the lift. The server's layer switches for the receiver (its
// debug log, SERVE_LOG) are printed beside them.
//
//   node sfu-ratelimit.mjs ORIGIN WS_URL
import { readFileSync } from 'node:fs';
import { launchChromium } from './chromium.mjs';
import { report, sleep } from './report.mjs';
import { openPage } from './sfu-client.mjs';

const [origin, ws] = process.argv.slice(2);
const LIMIT_S = Number(process.env.LIMIT_S || 15);
const LOW_WITHIN = 2000;
const FREEZE_MAX = 500;
const HIGH_WITHIN = 10000;
const room = `ratelimit-${process.pid}`;
const r = report(110000);
const flags = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // The server is on a namespace's address, not loopback: a secure context for getUserMedia.
  `--unsafely-treat-insecure-origin-as-secure=${origin}`];

process.env.CHROMIUM = process.env.CHROMIUM_A;
const browserA = await launchChromium(flags);
process.env.CHROMIUM = process.env.CHROMIUM_B;
const browserB = await launchChromium(flags);

// 1280x720: libwebrtc sends all 3 layers only from 960x540 up (640x480 gets 2).
const size = (process.env.CAMERA || '1280x720').split('x').map(Number);
const publisher = await openPage(browserA, origin, { ws, room, name: 'pub', simulcast: true, size });
const receiver = await openPage(browserB, origin, { ws, room, name: 'rcv', simulcast: false, camera: false });
const idOf = async (p) => {
  const deadline = Date.now() + 15000;
  let id = null;
  while (Date.now() < deadline && !(id = await p.page.evaluate(() => window.__sfu.id))) await sleep(100);
  return id;
};
const pubId = await idOf(publisher);
const rcvId = await idOf(receiver);
if (!r.check(pubId && rcvId, `both pages joined (publisher ${pubId}, receiver ${rcvId})`)) r.finish();

// In the receiver's page: a getStats sample of the publisher's video every 50 ms.
await receiver.page.evaluate((pub) => {
  window.__samples = [];
  const sample = async () => {
    const pc = window.__sfuPc;
    const s = window.__sfu.streams[pub];
    if (!pc || !s || !s.tracks.video) return;
    const report = await pc.getStats();
    report.forEach((x) => {
      if (x.type !== 'inbound-rtp' || x.kind !== 'video' || x.trackIdentifier !== s.tracks.video) return;
      window.__samples.push({
        t: Date.now(), frames: x.framesDecoded || 0, width: x.frameWidth || 0, bytes: x.bytesReceived || 0,
        freezes: x.freezeCount || 0, frozen: x.totalFreezesDuration || 0,
      });
    });
  };
  setInterval(() => { sample().catch(() => {}); }, 50);
}, pubId);
const samples = () => receiver.page.evaluate(() => window.__samples);
const last = async () => (await samples()).slice(-1)[0] || { width: 0, frames: 0 };

// The top layer: the widest the publisher sends (640 with the fake camera), decoded steadily.
let top = 0;
let deadline = Date.now() + 30000;
while (Date.now() < deadline) {
  const widths = (await publisher.page.evaluate(async () => {
    const w = [];
    (await window.__sfuPc.getStats()).forEach((x) => {
      if (x.type === 'outbound-rtp' && x.kind === 'video' && x.frameWidth) w.push(x.frameWidth);
    });
    return w;
  }).catch(() => []));
  top = Math.max(top, ...widths);
  const s = await last();
  if (top && widths.length === 3 && s.width === top) break;
  await sleep(250);
}
const s0 = await last();
// What the publisher sends, layer by layer (Chromium drops its top layer when short of CPU or
// of upstream bandwidth: then the top is what flows).
const layers = await publisher.page.evaluate(async () => {
  const out = [];
  (await window.__sfuPc.getStats()).forEach((x) => {
    if (x.type === 'outbound-rtp' && x.kind === 'video') {
      out.push(`${x.rid}:${x.frameWidth || 0}w:${x.framesPerSecond || 0}fps:${Math.round((x.targetBitrate || 0) / 1000)}k:${x.qualityLimitationReason}`);
    }
    if (x.type === 'candidate-pair' && x.nominated && x.availableOutgoingBitrate) {
      out.push(`(its estimate upstream ${Math.round(x.availableOutgoingBitrate / 1000)} kbit/s)`);
    }
  });
  return out;
});
console.log(`# publisher layers (rid:width:fps:target:limitation): ${layers.join(' ')}`);
// The low layer: the narrowest the publisher sends.
const sentWidths = layers.map((l) => Number((l.match(/:(\d+)w:/) || [])[1] || 0)).filter((w) => w > 0);
if (!r.check(top && s0.width === top, `the receiver decodes the top layer (${s0.width} wide of ${top}) before the limit`)) {
  console.log(`# receiver log: ${(await receiver.page.evaluate(() => window.__sfu.log.slice(-10))).join(' | ')}`);
  r.finish();
}
// The limit comes once the receiver has decoded only the top layer for 3 s (the server's
// estimate may still hold it lower for a while after the start).
deadline = Date.now() + 30000;
let steady = false;
while (Date.now() < deadline && !steady) {
  await sleep(250);
  const recent = (await samples()).filter((x) => x.t > Date.now() - 3000);
  steady = recent.length > 20 && recent.every((x) => x.width === top);
}
if (!r.check(steady, `the receiver decodes only the top layer for 3 s before the limit`)) r.finish();

const swap = () => process.kill(Number(process.env.EMULATOR_PID), 'SIGUSR2');
swap();
const tLimit = Date.now();
console.log(`# limit on (${process.env.LIMIT_MBIT} Mbit/s toward the receiver) for ${LIMIT_S} s`);
await sleep(LIMIT_S * 1000);
swap();
const tLift = Date.now();
console.log('# limit lifted');
deadline = tLift + HIGH_WITHIN + 5000;
let highAt = null;
while (Date.now() < deadline) {
  const all = await samples();
  const back = all.find((x) => x.t > tLift && x.width === top);
  if (back && !highAt) highAt = back.t;
  if (highAt && Date.now() > highAt + 3000) break;
  await sleep(250);
}

const all = await samples();
const fmt = (ms) => (ms === null ? 'never' : `${(ms / 1000).toFixed(2)} s`);
// Time to the first decoded frame of a lower layer after the limit, and of the lowest one.
const lower = all.find((x) => x.t > tLimit && x.width > 0 && x.width < top);
const lowest = Math.min(...sentWidths);
const lowestAt = all.find((x) => x.t > tLimit && x.width === lowest);
// The longest stretch without a newly decoded frame, from the limit to the end.
let freeze = 0;
let freezeAt = null;
let lastNew = null;
for (let i = 1; i < all.length; i += 1) {
  if (all[i].t < tLimit) continue;
  if (lastNew === null) lastNew = all[i - 1].frames < all[i].frames ? all[i].t : tLimit;
  if (all[i].frames > all[i - 1].frames) {
    if (all[i].t - lastNew > freeze) { freeze = all[i].t - lastNew; freezeAt = lastNew; }
    lastNew = all[i].t;
  }
}
if (lastNew !== null && all.length && all[all.length - 1].t - lastNew > freeze) {
  freeze = all[all.length - 1].t - lastNew; freezeAt = lastNew;
}
// Received video bitrate over the limit's last half (settled) and after the lift.
const rate = (from, to) => {
  const a = all.find((x) => x.t >= from);
  const b = [...all].reverse().find((x) => x.t <= to);
  return a && b && b.t > a.t ? ((b.bytes - a.bytes) * 8) / (b.t - a.t) : 0; // kbit/s
};
const before = [...all].reverse().find((x) => x.t <= tLimit) || all[0];
const end = all[all.length - 1];
// Widths decoded, second by second, from 2 s before the limit.
const timeline = [];
for (let t = tLimit - 2000; t <= end.t; t += 1000) {
  const x = [...all].reverse().find((y) => y.t <= t);
  if (x) timeline.push(`${((t - tLimit) / 1000).toFixed(0)}:${x.width}`);
}
console.log(`# widths decoded by second from the limit: ${timeline.join(' ')} (lift at ${((tLift - tLimit) / 1000).toFixed(1)})`);
console.log(`# video received: ${rate(tLimit + (LIMIT_S * 1000) / 2, tLift).toFixed(0)} kbit/s over the limit's second half, `
  + `${rate(tLift + 2000, end.t).toFixed(0)} kbit/s from 2 s after the lift`);
console.log(`# Chromium freezes from the limit on: ${end.freezes - before.freezes}, `
  + `${(end.frozen - before.frozen).toFixed(2)} s in all`);
if (process.env.SERVE_LOG) {
  // The server's layer switches for this receiver (tracing's UTC time stamps).
  const lines = readFileSync(process.env.SERVE_LOG, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').split('\n')
    .filter((l) => l.includes('sfu: layer switch') && l.includes(`subscriber=${rcvId}`));
  const switches = lines.map((l) => {
    const t = Date.parse(l.split(' ')[0]);
    const layer = (l.match(/layer=(\d+)/) || [])[1];
    const cap = (l.match(/cap=(Some\(\d+\)|None)/) || [])[1];
    return `${((t - tLimit) / 1000).toFixed(2)}s:layer ${layer} cap ${cap}`;
  });
  console.log(`# server layer switches for the receiver (s from the limit): ${switches.join(', ') || 'none'}`);
}
console.log(`RESULT lower_layer_s=${lower ? ((lower.t - tLimit) / 1000).toFixed(2) : 'never'} lower_width=${lower ? lower.width : 0} `
  + `lowest_layer_s=${lowestAt ? ((lowestAt.t - tLimit) / 1000).toFixed(2) : 'never'} longest_freeze_ms=${freeze} `
  + `freeze_at_s=${freezeAt === null ? '-' : ((freezeAt - tLimit) / 1000).toFixed(2)} `
  + `high_back_s=${highAt ? ((highAt - tLift) / 1000).toFixed(2) : 'never'}`);
console.log(`# first lower layer decoded: ${lower ? lower.width : '-'} wide, ${fmt(lower ? lower.t - tLimit : null)} after the limit`);
r.check(lowestAt && lowestAt.t - tLimit <= LOW_WITHIN,
  `the low layer (${lowest} wide) decoded ${fmt(lowestAt ? lowestAt.t - tLimit : null)} after the limit (at most ${LOW_WITHIN / 1000} s)`);
r.check(freeze <= FREEZE_MAX,
  `longest stretch without a new frame from the limit on: ${freeze} ms (at most ${FREEZE_MAX} ms; 50 ms samples)`);
r.check(highAt && highAt - tLift <= HIGH_WITHIN,
  `the top layer (${top} wide) decoded again ${fmt(highAt ? highAt - tLift : null)} after the lift (at most ${HIGH_WITHIN / 1000} s)`);
await Promise.all([browserA.close(), browserB.close()]).catch(() => {});
r.finish();
