// Last-N and thumbnails in a room of `peerlink serve --room-mode sfu --last-n 2
// --thumbnails-above 1`, with headless Chromium pages written from docs/signaling.md alone
// (sfu-client.mjs; simulcast with rids q, h, f). Four pages; one page's microphone at a time
// is on (all are at first). After each change of speaker every page must:
//   - be told (`{"forwarding": [...]}` from "sfu") the ids the documented rule gives: the
//     others ranked by who spoke most recently, then by joining order, the first 2 kept;
//   - decode exactly those videos (framesDecoded growing) and no other (frozen), while the
//     audio of all 3 others keeps coming;
//   - get the featured one (the most recent other speaker) in the best layer its publisher
//     sends and the other shown one in the lowest (a thumbnail: 2 shown > 1).
// The third speaker's video comes back to pages that had it paused (a restart at a key frame).
//
//   node sfu-lastn.mjs ORIGIN WS_URL
import { launchChromium } from './chromium.mjs';
import { sleep } from './report.mjs';
import { openPage as openSfuPage, receiving, sending } from './sfu-client.mjs';

const [origin, ws] = process.argv.slice(2);
const LAST_N = 2;
const THUMBNAILS_ABOVE = 1;
const WAIT = 25000;
const room = `lastn-${process.pid}`;

setTimeout(() => {
  console.log('FAIL the run did not finish within 170 s');
  process.exit(1);
}, 170000).unref();

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);
let failures = 0;
const fail = (m) => { failures += 1; console.log(`FAIL ${m}`); };
const ok = (m) => console.log(`ok   ${m}`);

// Pages join one after the other, so the joining order is the opening order.
const pages = [];
for (let i = 0; i < 4; i += 1) {
  const p = await openSfuPage(browser, origin, { ws, room, name: `p${i}`, simulcast: true });
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && !(p.id = await p.page.evaluate(() => window.__sfu.id))) await sleep(50);
  if (!p.id) fail(`${p.name} got no welcome`);
  pages.push(p);
}
const order = pages.map((p) => p.id);
// Each page has its camera and microphone (window.__mute) before the first check.
for (const p of pages) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline && !(await p.page.evaluate(() => typeof window.__mute === 'function'))) await sleep(100);
}
const short = (id) => (pages.find((p) => p.id === id) || { name: id && id.slice(0, 6) }).name;

// The documented rule (docs/signaling.md, "Which videos, how good").
function expected(self, recent) {
  const others = (id) => id !== self;
  const spoke = recent.filter(others);
  const ranked = [...spoke, ...order.filter((id) => others(id) && !spoke.includes(id))];
  const shown = ranked.slice(0, LAST_N);
  const thumbs = shown.length > THUMBNAILS_ABOVE;
  return shown.map((id, i) => ({ id, want: thumbs && !(i === 0 && spoke.length) ? 'thumbnail' : 'full' }));
}

async function speaks(speaking, recentSpeakers) {
  await Promise.all(pages.map((p) => p.page.evaluate((on) => window.__mute(!on), p === speaking)));
  let deadline = Date.now() + 10000;
  let told = [];
  while (Date.now() < deadline) {
    told = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__sfu.speaker)));
    if (told.every((s) => s === speaking.id)) break;
    await sleep(200);
  }
  if (!told.every((s) => s === speaking.id)) return fail(`${speaking.name} speaks, pages were told ${told.map(short)}`);
  const recent = await recentSpeakers();
  ok(`every page was told ${speaking.name} speaks (speakers, most recent first: ${recent.map(short)})`);
  const started = Date.now();
  deadline = started + WAIT;
  let problems = [];
  let report = '';
  while (Date.now() < deadline) {
    const sent0 = await Promise.all(pages.map(sending));
    const a = await Promise.all(pages.map(receiving));
    await sleep(1500);
    const sent1 = await Promise.all(pages.map(sending));
    const b = await Promise.all(pages.map(receiving));
    const told = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__sfu.forwarding)));
    // The widths each publisher's flowing layers have.
    const widths = {};
    sent1.forEach((s, i) => {
      widths[s.id] = s.layers
        .filter((l) => l.sent > (sent0[i].layers.find((x) => x.rid === l.rid) || { sent: 0 }).sent && l.width > 0)
        .map((l) => l.width);
    });
    problems = [];
    const lines = [];
    pages.forEach((p, i) => {
      const want = expected(p.id, recent);
      const names = (ids) => (ids || []).map(short).join(',');
      if (JSON.stringify(told[i]) !== JSON.stringify(want.map((w) => w.id))) {
        problems.push(`${p.name} told [${names(told[i])}], rule says [${names(want.map((w) => w.id))}]`);
      }
      const parts = [];
      for (const id of order.filter((x) => x !== p.id)) {
        const s1 = a[i].streams[id] || { frames: 0, audio: 0 };
        const s2 = b[i].streams[id] || { frames: 0, audio: 0 };
        const w = want.find((x) => x.id === id);
        if (!(s2.audio > s1.audio)) problems.push(`${p.name}: no audio from ${short(id)}`);
        const grew = s2.frames > s1.frames;
        if (!w) {
          if (grew) problems.push(`${p.name} still decodes ${short(id)}'s video`);
          parts.push(`${short(id)}:off`);
          continue;
        }
        if (!grew) problems.push(`${p.name} does not decode ${short(id)}'s video`);
        const flowing = widths[id] || [];
        const target = w.want === 'full' ? Math.max(0, ...flowing) : Math.min(...flowing);
        if (!flowing.length || s2.width !== target) problems.push(`${p.name} gets ${short(id)} ${s2.width} wide, ${w.want} is ${target} (${flowing})`);
        parts.push(`${short(id)}:${w.want}:${s2.width}`);
      }
      lines.push(`${p.name}[${parts.join(' ')}]`);
    });
    report = lines.join(' ');
    if (!problems.length) break;
  }
  console.log(`# after ${speaking.name} spoke (${((Date.now() - started) / 1000).toFixed(1)} s): ${report}`);
  if (problems.length) fail(`after ${speaking.name} spoke: ${problems.join('; ')}`);
  else ok(`after ${speaking.name} spoke: every page gets the last-${LAST_N} videos the rule names, featured in full, the other as a thumbnail, the rest paused, all audio`);
}

// Who had the floor, most recent first, as the first page was told (every microphone is on
// until the first check, so anyone may have had it before).
async function recentSpeakers() {
  const told = await pages[0].page.evaluate(() => window.__sfu.speakers.slice());
  return told.reverse().filter((id, i, all) => all.indexOf(id) === i);
}
for (const speaker of [pages[1], pages[2], pages[3]]) {
  await speaks(speaker, recentSpeakers);
}
const logs = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__sfu.log.slice(-8))));
if (failures) logs.forEach((l, i) => console.log(`# ${pages[i].name}: ${l.join(' | ')}`));
await browser.close();
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
