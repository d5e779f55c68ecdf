// A file receiver on libdatachannel (node-datachannel), a stack we did not write, for
// tests/e2e/transfer-path.sh: it joins ROOM through our signaling (docs/signaling.md) before
// the sender does, answers the sender's offer (trickled candidates both ways), takes one file
// on a `file` channel as docs/file-transfer.md says (header, binary chunks, trailer), checks
// the size and the SHA-256, answers `ack` (or `error`), and prints one JSON line:
// {ok, bytes, seconds (first chunk to last), sha256, error}. Exits 0 when the file checked.
//
//   node file-recv.mjs WS_URL ROOM [TIMEOUT_MS]
import { createHash } from 'node:crypto';
import ndc from 'node-datachannel';
import WebSocket from 'ws';

const [url, room, timeoutArg] = process.argv.slice(2);
const result = { ok: false, bytes: 0, seconds: null, sha256: null, error: null };
const finish = (error) => {
  if (error && !result.error) result.error = error;
  console.log(JSON.stringify(result));
  setTimeout(() => process.exit(result.ok ? 0 : 1), 500);
};
setTimeout(() => finish('timed out'), Number(timeoutArg || 120000)).unref();

const ws = new WebSocket(url);
const signal = (to, data) => ws.send(JSON.stringify({ type: 'signal', to, data }));
let pc = null;
let remoteSet = false;
const early = [];

function receive(dc) {
  let header = null;
  let first = 0;
  let last = 0;
  const hash = createHash('sha256');
  const refuse = (reason) => {
    dc.sendMessage(JSON.stringify({ type: 'error', reason }));
    finish(reason);
  };
  dc.onMessage((m) => {
    if (typeof m !== 'string') {
      if (!header) return refuse('data before header');
      const now = performance.now();
      if (!first) first = now;
      last = now;
      hash.update(m);
      result.bytes += m.length;
      if (result.bytes > header.size) refuse('more data than announced');
      return;
    }
    const msg = JSON.parse(m);
    if (msg.type === 'file' && !header) {
      header = msg;
      console.error(`receiving ${msg.name} (${msg.size} bytes)`);
    } else if (msg.type === 'end' && header) {
      result.sha256 = hash.digest('hex');
      result.seconds = first ? (last - first) / 1000 : 0;
      if (result.bytes !== header.size) return refuse(`size mismatch: ${result.bytes} of ${header.size}`);
      if (result.sha256 !== String(msg.sha256).toLowerCase()) return refuse('sha256 mismatch');
      dc.sendMessage(JSON.stringify({ type: 'ack', sha256: result.sha256 }));
      result.ok = true;
      finish();
    } else {
      refuse(`unexpected ${msg.type} message`);
    }
  });
}

function answer(from, description) {
  pc = new ndc.PeerConnection('file-recv', { iceServers: [] });
  // JSEP order: the answer first, then the candidates gathered for it.
  let described = false;
  const held = [];
  const candidate = (c) => (described ? signal(from, { candidate: c }) : held.push(c));
  pc.onLocalDescription((sdp, type) => {
    signal(from, { description: { type, sdp } });
    described = true;
    for (const c of held.splice(0)) signal(from, { candidate: c });
  });
  pc.onLocalCandidate((c, mid) => candidate({ candidate: c.replace(/^a=/, ''), sdpMid: mid, sdpMLineIndex: 0 }));
  pc.onGatheringStateChange((state) => state === 'complete' && candidate(null));
  pc.onDataChannel((dc) => (dc.getLabel() === 'file' ? receive(dc) : null));
  pc.setRemoteDescription(description.sdp, description.type);
  remoteSet = true;
  for (const c of early.splice(0)) pc.addRemoteCandidate(c.candidate, c.sdpMid ?? '0');
}

ws.on('open', () => ws.send(JSON.stringify({ type: 'join', room, name: 'libdatachannel' })));
ws.on('error', (e) => finish(`signaling: ${e.message}`));
ws.on('message', (raw) => {
  const m = JSON.parse(String(raw));
  if (m.type === 'welcome') console.error('joined room');
  if (m.type === 'error') finish(`signaling error: ${m.code}`);
  if (m.type !== 'signal' || !m.data) return;
  const { description, candidate } = m.data;
  if (description && description.type === 'offer' && !pc) answer(m.from, description);
  else if (candidate && remoteSet) pc.addRemoteCandidate(candidate.candidate, candidate.sdpMid ?? '0');
  else if (candidate) early.push(candidate);
});
