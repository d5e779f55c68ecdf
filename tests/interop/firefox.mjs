// Headless Debian Firefox ESR for the interop tests, driven by puppeteer-core over WebDriver
// BiDi (never a downloaded browser: PUPPETEER_SKIP_DOWNLOAD=1 at install). Prefs from
// FIELD-NOTES: real host candidates instead of mDNS names, fake camera and microphone without
// a prompt, and nothing that would try to leave the machine (updates, telemetry, captive
// portal, safe browsing).
import puppeteer from 'puppeteer-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launchFirefox() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'peerlink-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    protocol: 'webDriverBiDi',
    headless: true,
    userDataDir,
    extraPrefsFirefox: {
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'app.update.enabled': false,
      'app.update.auto': false,
      'toolkit.telemetry.enabled': false,
      'datareporting.policy.dataSubmissionEnabled': false,
      'datareporting.healthreport.uploadEnabled': false,
      'network.captive-portal-service.enabled': false,
      'network.connectivity-service.enabled': false,
      'browser.safebrowsing.malware.enabled': false,
      'browser.safebrowsing.phishing.enabled': false,
      'browser.safebrowsing.downloads.enabled': false,
      'browser.safebrowsing.downloads.remote.enabled': false,
      'extensions.update.enabled': false,
      'network.dns.disablePrefetch': true,
      'network.prefetch-next': false,
    },
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  };
  return browser;
}
