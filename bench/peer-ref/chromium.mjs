// Chromium <-> Chromium reference for bench/peer.sh: two RTCPeerConnections in one headless
// page (loopback host candidates exposed with the same flag the field notes name), set-up time
// from createOffer to the data channel open on both sides (ROUNDS rounds), then reliable
// ordered throughput of BYTES in 64 KiB messages with bufferedAmount back-pressure. Prints one
// JSON line: {"setup_ms":[...],"median_ms","mb_per_s"}.
//
//   node chromium.mjs ROUNDS BYTES
import { launchChromium } from '../../tests/browser/chromium.mjs';

const [rounds, bytes] = process.argv.slice(2).map(Number);
const browser = await launchChromium(['--disable-features=WebRtcHideLocalIpsWithMdns']);
try {
  const page = await browser.newPage();
  const result = await page.evaluate(async ({ rounds, bytes }) => {
    async function pair() {
      const a = new RTCPeerConnection();
      const b = new RTCPeerConnection();
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      const start = performance.now();
      const dc = a.createDataChannel('bench');
      const incoming = new Promise((r) => { b.ondatachannel = (e) => e.channel.readyState === 'open' ? r(e.channel) : (e.channel.onopen = () => r(e.channel)); });
      const opened = new Promise((r) => { dc.onopen = r; });
      await a.setLocalDescription();
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription();
      await a.setRemoteDescription(b.localDescription);
      const [, rx] = await Promise.all([opened, incoming]);
      return { a, b, dc, rx, ms: performance.now() - start };
    }
    const setup = [];
    for (let i = 0; i < rounds; i++) {
      const p = await pair();
      setup.push(p.ms);
      p.a.close();
      p.b.close();
    }
    const p = await pair();
    const chunk = new Uint8Array(65536);
    let sent = 0;
    let got = 0;
    let first = 0;
    let last = 0;
    const done = new Promise((resolve) => {
      p.rx.onmessage = (e) => {
        const now = performance.now();
        if (!first) first = now;
        got += e.data.byteLength ?? e.data.size;
        if (got >= bytes) { last = now; resolve(); }
      };
    });
    p.rx.binaryType = 'arraybuffer';
    p.dc.bufferedAmountLowThreshold = 1 << 20;
    const pump = () => {
      while (sent < bytes && p.dc.bufferedAmount < 4 << 20) {
        p.dc.send(chunk);
        sent += chunk.byteLength;
      }
    };
    p.dc.onbufferedamountlow = pump;
    pump();
    await done;
    p.a.close();
    p.b.close();
    return { setup, mbps: got / 1e6 / ((last - first) / 1000) };
  }, { rounds, bytes });
  const sorted = [...result.setup].sort((x, y) => x - y);
  console.log(JSON.stringify({ setup_ms: result.setup, median_ms: sorted[Math.floor(sorted.length / 2)], mb_per_s: result.mbps }));
} finally {
  await browser.close();
}
