// Headless Debian Chromium for the browser tests (never a downloaded browser): the flags
// FIELD-NOTES.md lists for running as root on this machine. playwright-core gives every
// launch a fresh, temporary user data dir.
import { chromium } from 'playwright-core';

export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}
