// Shared by the native-peer browser tests: ok/FAIL lines, a bounded run, and the summary.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A checker printing "ok"/"FAIL" lines; `finish()` prints the count and exits. The whole
 * run fails if it takes longer than `limitMs`. */
export function report(limitMs) {
  let passed = 0;
  let failed = 0;
  setTimeout(() => {
    console.log(`FAIL the test did not finish within ${limitMs / 1000} s`);
    process.exit(1);
  }, limitMs).unref();
  return {
    check(ok, what) {
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
      ok ? passed++ : failed++;
      return ok;
    },
    get failed() { return failed; },
    finish() {
      console.log(`${passed} passed, ${failed} failed`);
      process.exit(failed ? 1 : 0);
    },
  };
}
