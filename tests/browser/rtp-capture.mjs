// The browser half of tests/rtp-capture/capture.sh: two RTCPeerConnections in one headless
// Chromium page, the first sending its fake camera and microphone (VP8 + Opus) to the second
// over host candidates, with Chromium's testing switch --disable-webrtc-encryption so the two
// speak plain RTP/RTCP (the SDP then says RTP/AVPF and carries no fingerprint; no DTLS, no
// SRTP). No ICE servers: nothing but host candidates. Run it inside a network namespace of its
// own (capture.sh does) while a sniffer records the datagrams.
//
//   node rtp-capture.mjs OUT_DIR      writes OUT_DIR/offer.sdp, answer.sdp, info.json
//   DURATION_MS=N                     how long media flows once connected (default 8000)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from './chromium.mjs';

const out = process.argv[2];
const DURATION = Number(process.env.DURATION_MS || 8000);
const FLAGS = [
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--disable-webrtc-encryption', '--disable-features=WebRtcHideLocalIpsWithMdns',
];
setTimeout(() => {
  console.log('FAIL the capture did not finish in time');
  process.exit(1);
}, DURATION + 60000).unref();

const browser = await launchChromium(FLAGS);
try {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => console.log('page:', m.text()));
  // getUserMedia needs a secure context: http://localhost is one (the page is served by the
  // interception below; it opens no connections of its own).
  await page.route('http://localhost/', (r) => r.fulfill({
    contentType: 'text/html', body: '<!doctype html><title>rtp capture</title>',
  }));
  await page.goto('http://localhost/');
  const r = await page.evaluate(async (duration) => {
    const a = new RTCPeerConnection({ iceServers: [] });
    const b = new RTCPeerConnection({ iceServers: [] });
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    // The receiver plays what it gets, as a call would (its decoder runs and asks for key
    // frames when it must).
    b.ontrack = (e) => {
      if (e.track.kind !== 'video') return;
      const v = document.createElement('video');
      v.muted = true;
      v.autoplay = true;
      v.srcObject = new MediaStream([e.track]);
      document.body.append(v);
    };
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    for (const t of stream.getTracks()) a.addTrack(t, stream);
    // Video as plain VP8 (and its RTX): offered red/ulpfec, Chromium 156 wraps every VP8
    // packet in RED (RFC 2198) with ULPFEC beside it, which the fixtures are not about.
    const video = a.getTransceivers().find((t) => t.sender.track.kind === 'video');
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const vp8 = codecs.find((c) => c.mimeType === 'video/VP8');
    video.setCodecPreferences([vp8, ...codecs.filter((c) => c.mimeType === 'video/rtx')]);
    const offer = await a.createOffer();
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = await b.createAnswer();
    await b.setLocalDescription(answer);
    await a.setRemoteDescription(answer);
    const t0 = Date.now();
    while (a.iceConnectionState !== 'connected' && a.iceConnectionState !== 'completed') {
      if (Date.now() - t0 > 15000) throw new Error(`ice ${a.iceConnectionState}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    await new Promise((res) => setTimeout(res, duration));
    const stats = {};
    for (const [name, pc] of [['sender', a], ['receiver', b]]) {
      stats[name] = [];
      (await pc.getStats()).forEach((s) => {
        if (['outbound-rtp', 'inbound-rtp', 'candidate-pair'].includes(s.type)) {
          if (s.type !== 'candidate-pair' || s.nominated) stats[name].push(s);
        }
      });
    }
    const out = { offer: a.localDescription.sdp, answer: b.localDescription.sdp, stats };
    a.close();
    b.close();
    return out;
  }, DURATION);
  writeFileSync(join(out, 'offer.sdp'), r.offer);
  writeFileSync(join(out, 'answer.sdp'), r.answer);
  const info = {
    browser: browser.version(),
    flags: FLAGS,
    date: new Date().toISOString(),
    stats: r.stats,
  };
  writeFileSync(join(out, 'info.json'), JSON.stringify(info, null, 1));
  for (const [name, list] of Object.entries(r.stats)) {
    for (const s of list) {
      if (s.type !== 'candidate-pair') {
        console.log(`${name} ${s.type} ${s.kind} ssrc=${s.ssrc} packets=${s.packetsSent ?? s.packetsReceived}`
          + (s.nackCount !== undefined ? ` nacks=${s.nackCount}` : '')
          + (s.pliCount !== undefined ? ` plis=${s.pliCount}` : '')
          + (s.framesDecoded !== undefined ? ` decoded=${s.framesDecoded}` : '')
          + (s.retransmittedPacketsSent !== undefined ? ` rtx=${s.retransmittedPacketsSent}` : ''));
      }
    }
  }
} finally {
  await browser.close();
}
