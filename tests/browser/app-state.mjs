// The browser app's test hook (window.peerlinkState), shared by the page tests.
import { sleep } from './report.mjs';

/** The page's current state. */
export const state = (page) => page.evaluate(() => window.peerlinkState);

/** Polls the state until pred(state) holds or ms pass; returns [ok, lastState]. */
export async function waitFor(page, pred, ms) {
  const until = Date.now() + ms;
  let s = null;
  for (;;) {
    try {
      s = await state(page);
      if (s && pred(s)) return [true, s];
    } catch { /* page navigating */ }
    if (Date.now() > until) return [false, s];
    await sleep(200);
  }
}
