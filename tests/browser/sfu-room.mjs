// Headless Chromium pages in one room of `peerlink serve --room-mode sfu`, written only from
// the protocol in docs/signaling.md (not the app's code): each page joins, sees
// `"mode":"sfu"`, makes ONE RTCPeerConnection, to the peer "sfu", offers its fake camera and
// microphone, and answers the server's offers of the others' tracks (perfect negotiation,
// the page polite). Checked:
//   1. N pages (default 4): each page decodes video from each of the other N-1 (framesDecoded
//      growing, by msid stream id = the publisher's peer id) and receives their audio; each
//      page has exactly one peer connection.
//   2. Chat through the server; the active speaker (from the pages' RFC 6464 audio levels)
//      announced to every page as one page's microphone and then another's is on.
//   With STATS_URL (serve --metrics ADDR's /stats): /stats.json lists the room, its
//   participants and tracks, each flowing and forwarded to the others; the /stats page shows it.
//   3. One page leaves and a newcomer joins: the others drop the leaver's stream and decode
//      the newcomer's; the newcomer decodes everyone's; the time to its first frame is printed.
//
//   node sfu-room.mjs ORIGIN WS_URL
//   PAGES=N (default 4)   WAIT_MS=bound on each step (default 30000)
//   SIMULCAST=0           send one video layer instead of three (rids q, h, f at 1/4, 1/2, 1)
import { launchChromium } from './chromium.mjs';
import { sleep } from './report.mjs';
import { openPage as openSfuPage, receiving, sending } from './sfu-client.mjs';

const [origin, ws] = process.argv.slice(2);
const PAGES = Number(process.env.PAGES || 4);
const WAIT = Number(process.env.WAIT_MS || 30000);
const room = `sfu-${process.pid}`;
const SIMULCAST = process.env.SIMULCAST !== '0';

setTimeout(() => {
  console.log('FAIL the run did not finish within 150 s');
  process.exit(1);
}, 150000).unref();

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required']);
let failures = 0;
const fail = (m) => { failures += 1; console.log(`FAIL ${m}`); };
const ok = (m) => console.log(`ok   ${m}`);

async function openPage(name) {
  return openSfuPage(browser, origin, { ws, room, name, simulcast: SIMULCAST });
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
if (SIMULCAST) {
  // Each subscriber must get the best layer its publisher sends (the widest one flowing;
  // which layers flow is the publisher's own bandwidth estimate's choice).
  const deadline = Date.now() + 20000;
  let report = '';
  let good = false;
  while (Date.now() < deadline && !good) {
    const before = await Promise.all(pages.map(sending));
    await sleep(1000);
    const after = await Promise.all(pages.map(sending));
    const best = {};
    after.forEach((a, i) => {
      const flowing = a.layers.filter((l) => l.sent > (before[i].layers.find((x) => x.rid === l.rid) || { sent: 0 }).sent);
      best[a.id] = Math.max(0, ...flowing.map((l) => l.width));
    });
    const got = await Promise.all(pages.map(receiving));
    const pairs = got.flatMap((r) => Object.entries(r.streams).map(([sid, s]) => ({ sid, width: s.width || 0, best: best[sid] })));
    report = pairs.map((x) => `${x.width}/${x.best}`).join(' ');
    good = pairs.length === pages.length * (pages.length - 1) && pairs.every((x) => x.best > 0 && x.width === x.best);
    if (!good) await sleep(500);
  }
  console.log(`# simulcast (rids q, h, f at 160, 320, 640 wide): received width / best layer its publisher sends: ${report}`);
  if (good) ok('simulcast: every page receives the best layer each other page sends');
  else fail('simulcast: some page does not receive the best layer sent');
}

// The server's own account of the room (`serve --metrics`: /stats.json, and the /stats page
// rendering it): every participant, each track with its layers flowing and forwarded to the
// N-1 others.
if (process.env.STATS_URL) {
  const url = process.env.STATS_URL;
  const ids = first.map((r) => r.id).sort();
  let problems = ['no report'];
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && problems.length) {
    const rooms = await (await fetch(`${url}.json`)).json();
    const r = rooms.find((x) => x.room === room);
    problems = [];
    if (!r) problems.push(`room ${room} missing from ${rooms.map((x) => x.room)}`);
    else {
      const got = r.participants.map((p) => p.id).sort();
      if (JSON.stringify(got) !== JSON.stringify(ids)) problems.push(`participants ${got}`);
      if (r.tracks.length !== 2 * PAGES) problems.push(`${r.tracks.length} tracks`);
      for (const t of r.tracks) {
        const name = `${t.publisher.slice(0, 6)}/${t.kind}`;
        if (t.kind === 'video' && t.layers.length !== (SIMULCAST ? 3 : 1)) problems.push(`${name}: ${t.layers.length} layers`);
        if (!t.layers.some((l) => l.active && l.bitrate_bps > 0)) problems.push(`${name}: nothing flowing`);
        const subs = t.subscribers.filter((s) => s.id !== t.publisher && s.packets > 0);
        if (subs.length !== PAGES - 1) problems.push(`${name}: forwarded to ${subs.length}`);
      }
    }
    if (problems.length) await sleep(1000);
  }
  if (problems.length) fail(`/stats.json: ${problems.join('; ')}`);
  else ok(`/stats.json: ${PAGES} participants, ${2 * PAGES} tracks, each flowing and forwarded to the ${PAGES - 1} others`);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.rooms === '1', null, { timeout: 10000 }).catch(() => {});
  const text = await page.evaluate(() => document.body.innerText);
  if (text.includes(`Room ${room}: ${PAGES} participant(s)`) && text.includes('kbit/s')) ok('the /stats page shows the room, its participants and tracks');
  else fail(`the /stats page shows: ${text.slice(0, 300)}`);
  await context.close();
}

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

// Active speaker: only one page's microphone on; every page must be told it is that page's
// (a {"speaker": id} signal from "sfu"); then another's.
async function speakerIs(speaking) {
  await Promise.all(pages.map((p) => p.page.evaluate((on) => window.__mute(!on), p === speaking)));
  const id = await speaking.page.evaluate(() => window.__sfu.id);
  const deadline = Date.now() + 10000;
  let seen = [];
  while (Date.now() < deadline) {
    seen = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__sfu.speaker)));
    if (seen.every((s) => s === id)) return ok(`active speaker: every page was told ${speaking.name} speaks`);
    await sleep(200);
  }
  fail(`active speaker: ${speaking.name} (${id.slice(0, 6)}) speaks, pages were told ${seen.map((s) => s && s.slice(0, 6))}`);
}
await speakerIs(pages[1]);
await speakerIs(pages[2]);
await Promise.all(pages.map((p) => p.page.evaluate(() => window.__mute(false))));

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
