// libdatachannel (node-datachannel) as the echo peer of tests/e2e/echo-peers.sh, in place of
// `peerlink echo` (ECHO=libdatachannel): it joins ROOM with the signaling protocol of
// docs/signaling.md, offers a "chat" data channel to the peer already there (data only, no
// media) with trickle, and sends every message back on the channel, text as text, binary as
// binary. It tells a failure of the page's browser from one of ours: the same page, the same
// server, a stack we did not write on the other end. Runs until SIGINT.
//
//   node ldc-echo.mjs WS_URL ROOM
import WebSocket from 'ws';
import ndc from 'node-datachannel';

const [url, room] = process.argv.slice(2);
if (!url || !room) {
  process.stderr.write('usage: node ldc-echo.mjs WS_URL ROOM\n');
  process.exit(1);
}
const ws = new WebSocket(url);
let pc = null;
let remote = null;
let echoed = 0;
const signal = (data) => ws.send(JSON.stringify({ type: 'signal', to: remote, data }));
ws.on('open', () => ws.send(JSON.stringify({ type: 'join', room, name: 'echo' })));
ws.on('error', (e) => { process.stderr.write(`signaling: ${e.message}\n`); process.exit(1); });
ws.on('message', (raw) => {
  const m = JSON.parse(raw);
  if (m.type === 'welcome') {
    process.stderr.write(`ldc-echo: joined room ${room}\n`);
    if (m.peers.length === 0) {
      process.stderr.write('ldc-echo: nobody in the room: it only offers (use it for the answerer cases)\n');
      return;
    }
    remote = m.peers[0].id;
    pc = new ndc.PeerConnection('echo', { iceServers: [] });
    pc.onLocalDescription((sdp, type) => signal({ description: { type, sdp } }));
    pc.onLocalCandidate((candidate, mid) => signal({ candidate: { candidate, sdpMid: mid, sdpMLineIndex: 0 } }));
    const dc = pc.createDataChannel('chat');
    dc.onMessage((msg) => {
      echoed++;
      if (typeof msg === 'string') dc.sendMessage(msg);
      else dc.sendMessageBinary(msg);
    });
  } else if (m.type === 'signal' && pc) {
    const d = m.data || {};
    if (d.description) pc.setRemoteDescription(d.description.sdp, d.description.type);
    else if (d.candidate && d.candidate.candidate) pc.addRemoteCandidate(d.candidate.candidate, d.candidate.sdpMid || '0');
  } else if (m.type === 'error') {
    process.stderr.write(`signaling error ${m.code}: ${m.message}\n`);
  }
});
process.on('SIGINT', () => {
  process.stderr.write(`ldc-echo: echoed ${echoed} messages\n`);
  if (pc) pc.close();
  ndc.cleanup();
  process.exit(0);
});
