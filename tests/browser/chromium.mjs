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
      // CHROMIUM_ARGS: extra switches for an investigation (e.g. Chromium's own logging).
      ...(process.env.CHROMIUM_ARGS ? process.env.CHROMIUM_ARGS.split(' ').filter(Boolean) : []),
    ],
  });
}

/** For page.addInitScript: keeps the page's RTCPeerConnections reachable in window.__pcs (the
 * app does not expose them), each with the wall clock time it first reached "connected". */
export function keepPeerConnections() {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected' && !this.__connectedAt) this.__connectedAt = Date.now();
      });
    }
  };
}
