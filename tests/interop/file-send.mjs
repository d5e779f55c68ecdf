// A file sender on libdatachannel (node-datachannel), a stack we did not write, for
// tests/e2e/transfer-path.sh and bench/datachannel-sack.sh: it joins ROOM through our signaling
// (docs/signaling.md) after the receiver, offers to the peer its `welcome` lists (trickled
// candidates both ways), sends FILE on a `file` channel as docs/file-transfer.md says (header,
// 65,536-byte binary chunks with back-pressure at 4 MiB / 1 MiB, trailer), waits for the
// receiver's `ack` and checks its SHA-256. Prints one JSON line {ok, bytes, sha256, error} and
// exits 0 only when the receiver acknowledged the file's own digest.
//
//   node file-send.mjs WS_URL ROOM FILE [TIMEOUT_MS]
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import ndc from 'node-datachannel';
import WebSocket from 'ws';

const [url, room, path, timeoutArg] = process.argv.slice(2);
const data = readFileSync(path);
const sha256 = createHash('sha256').update(data).digest('hex');
const result = { ok: false, bytes: 0, sha256, error: null };
const finish = (error) => {
  if (error && !result.error) result.error = error;
  console.log(JSON.stringify(result));
  setTimeout(() => process.exit(result.ok ? 0 : 1), 300);
};
setTimeout(() => finish('timed out'), Number(timeoutArg || 120000)).unref();

const ws = new WebSocket(url);
const signal = (to, d) => ws.send(JSON.stringify({ type: 'signal', to, data: d }));
let pc = null;
let remoteSet = false;
const early = [];

function send(dc) {
  const CHUNK = 65536;
  let sent = 0;
  let trailer = false;
  const pump = () => {
    while (sent < data.length && dc.bufferedAmount() < 4 << 20) {
      const n = Math.min(CHUNK, data.length - sent);
      dc.sendMessageBinary(data.subarray(sent, sent + n));
      sent += n;
    }
    if (sent === data.length && !trailer) {
      trailer = true;
      result.bytes = sent;
      dc.sendMessage(JSON.stringify({ type: 'end', sha256 }));
    }
  };
  dc.setBufferedAmountLowThreshold(1 << 20);
  dc.onBufferedAmountLow(pump);
  dc.onOpen(() => {
    dc.sendMessage(JSON.stringify({ type: 'file', name: basename(path), size: data.length, mime: 'application/octet-stream' }));
    pump();
  });
  dc.onMessage((m) => {
    let msg;
    try { msg = JSON.parse(String(m)); } catch { return finish('unparsable answer'); }
    if (msg.type === 'ack' && String(msg.sha256).toLowerCase() === sha256) {
      result.ok = true;
      dc.close();
      finish();
    } else if (msg.type === 'ack') {
      finish('the receiver acknowledged another digest');
    } else {
      finish(`refused: ${msg.reason ?? msg.type}`);
    }
  });
  dc.onClosed(() => result.ok || finish('channel closed before the answer'));
}

function offer(to) {
  pc = new ndc.PeerConnection('file-send', { iceServers: [] });
  let described = false;
  const held = [];
  const candidate = (c) => (described ? signal(to, { candidate: c }) : held.push(c));
  pc.onLocalDescription((sdp, type) => {
    signal(to, { description: { type, sdp } });
    described = true;
    for (const c of held.splice(0)) signal(to, { candidate: c });
  });
  pc.onLocalCandidate((c, mid) => candidate({ candidate: c.replace(/^a=/, ''), sdpMid: mid, sdpMLineIndex: 0 }));
  pc.onGatheringStateChange((state) => state === 'complete' && candidate(null));
  send(pc.createDataChannel('file', { ordered: true }));
}

ws.on('open', () => ws.send(JSON.stringify({ type: 'join', room, name: 'libdatachannel-send' })));
ws.on('error', (e) => finish(`signaling: ${e.message}`));
ws.on('message', (raw) => {
  const m = JSON.parse(String(raw));
  if (m.type === 'welcome') {
    console.error('joined room');
    if (!m.peers?.length) return finish('nobody in the room to send to');
    offer(m.peers[0].id);
  }
  if (m.type === 'error') finish(`signaling error: ${m.code}`);
  if (m.type !== 'signal' || !m.data || !pc) return;
  const { description, candidate } = m.data;
  if (description && description.type === 'answer' && !remoteSet) {
    pc.setRemoteDescription(description.sdp, description.type);
    remoteSet = true;
    for (const c of early.splice(0)) pc.addRemoteCandidate(c.candidate, c.sdpMid ?? '0');
  } else if (candidate && remoteSet) pc.addRemoteCandidate(candidate.candidate, candidate.sdpMid ?? '0');
  else if (candidate) early.push(candidate);
});
