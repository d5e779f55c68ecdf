// The browser app in headless Chromium against `peerlink chat`: the native peer waits in a
// room, the page joins (and offers audio, video and data; the native answer rejects the
// media), and a line goes each way: typed into the page's chat, read from the CLI's output;
// written to the CLI's input, shown in the page. Run inside a network namespace
// (tests/e2e/chat-browser.sh).
//
//   node chat-cli.mjs APP_URL ROOM PATH/TO/peerlink WS_URL BIND_IP
import { spawn } from 'node:child_process';
import { launchChromium } from './chromium.mjs';
import { report, sleep } from './report.mjs';

const [app, room, peerlink, ws, bind] = process.argv.slice(2);
const checks = report(100000);
const check = checks.check;

const cli = spawn(peerlink, ['chat', '--server', ws, '--room', room, '--name', 'native', '--bind', bind]);
let out = '';
let err = '';
cli.stdout.on('data', (d) => { out += d; });
cli.stderr.on('data', (d) => { err += d; });
const until = async (pred, ms) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(100);
  }
  return pred();
};
await until(() => err.includes('waiting for someone'), 10000);

const browser = await launchChromium(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']);
try {
  const page = await browser.newPage();
  await page.goto(`${app}?room=${room}&name=browser`);
  const state = () => page.evaluate(() => window.peerlinkState).catch(() => null);
  let s = null;
  const open = await until(() => false, 0) || await (async () => {
    const end = Date.now() + 30000;
    while (Date.now() < end) {
      s = await state();
      if (s && s.peers.some((p) => p.chatOpen)) return true;
      await sleep(200);
    }
    return false;
  })();
  check(open, `the page's chat channel to the native peer opens (${JSON.stringify(s && s.peers)})`);
  const selected = await until(() => /^selected pair: /m.test(err), 10000);
  check(selected, `peerlink chat reports ${(err.match(/^selected pair: .*$/m) || ['no selected pair'])[0]}`);

  await page.fill('#chat-input', 'hello from the browser');
  await page.click('#chat-send');
  check(await until(() => out.includes('hello from the browser'), 10000), 'the browser\'s line is printed by peerlink chat');

  cli.stdin.write('hello from peerlink chat\n');
  let shown = false;
  const end = Date.now() + 10000;
  while (!shown && Date.now() < end) {
    shown = await page.evaluate(() => [...document.querySelectorAll('#chat-log .text')]
      .some((e) => e.textContent === 'hello from peerlink chat')).catch(() => false);
    if (!shown) await sleep(200);
  }
  check(shown, 'the native peer\'s line shows in the page, as text');
} finally {
  await browser.close();
  cli.kill();
}
if (checks.failed) console.log(err);
checks.finish();
