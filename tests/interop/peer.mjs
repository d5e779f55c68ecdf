// A native test peer speaking our signaling protocol for tests/e2e/interop-matrix.sh: werift
// or libdatachannel (node-datachannel's own API behind a thin W3C-shaped adapter), both
// running the code Firefox runs (w3c-peer.mjs). It joins ROOM, offers when someone is already
// there (a "chat" data channel) or answers the newcomer's offer, trickles candidates both ways
// (null at the end), sends "hello from STACK" once the channel opens and waits for EXPECT. It is given only
// the servers of the `welcome` (iceServers), relay-only with RELAY=1. Prints one JSON line
// (the result; SDPs included) and exits 0 when the message came, 1 otherwise.
//
//   node peer.mjs werift|libdatachannel WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS]
import WebSocket from 'ws';
import { w3cPeer } from './w3c-peer.mjs';

const [stack, url, room, relayArg, expect, timeoutArg] = process.argv.slice(2);
const o = { stack, url, room, relay: relayArg === '1', expect, timeoutMs: Number(timeoutArg || 20000) };

async function weriftPeer() {
  const { RTCPeerConnection } = await import('werift');
  return w3cPeer(o, { RTCPeerConnection, WebSocket, onJoined: () => console.error('joined') });
}

// RTCIceServer objects (docs/signaling.md: STUN, and TURN with REST credentials whose
// username holds a colon) as node-datachannel's IceServer objects: a URL string could not
// carry such a username.
function ldcIceServers(servers) {
  const out = [];
  for (const s of servers || []) {
    for (const u of [].concat(s.urls || s.url || [])) {
      const m = /^(stuns?|turns?):\[?([^\]?]+?)\]?(?::(\d+))?(?:\?transport=(udp|tcp))?$/.exec(u);
      if (!m) continue;
      const [, scheme, hostname, port, transport] = m;
      if (scheme.startsWith('stun')) {
        out.push({ hostname, port: Number(port || 3478) });
      } else {
        const relayType = scheme === 'turns' ? 'TurnTls' : transport === 'tcp' ? 'TurnTcp' : 'TurnUdp';
        out.push({ hostname, port: Number(port || 3478), username: s.username, password: s.credential, relayType });
      }
    }
  }
  return out;
}

// libdatachannel's own API behind the few W3C calls w3cPeer makes, so both stacks run the
// same signaling code. JSEP's order is kept: candidates are handed on only after
// setLocalDescription (libdatachannel gathers as soon as it has made its description).
async function ldcPeer() {
  const ndc = (await import('node-datachannel')).default;
  const channel = (dc) => {
    const w = { label: dc.getLabel(), readyState: dc.isOpen() ? 'open' : 'connecting', onopen: null, onmessage: null };
    w.send = (text) => dc.sendMessage(text);
    w.close = () => dc.close();
    dc.onOpen(() => { w.readyState = 'open'; if (w.onopen) w.onopen(); });
    dc.onMessage((m) => { if (w.onmessage) w.onmessage({ data: String(m) }); });
    return w;
  };
  class LdcPeerConnection {
    constructor(config) {
      this.pc = new ndc.PeerConnection(stack, {
        iceServers: ldcIceServers(config.iceServers), iceTransportPolicy: config.iceTransportPolicy,
      });
      this.connectionState = 'new';
      this.localDescription = null;
      this.waiting = [];
      this.held = [];
      this.described = false;
      const candidate = (c) => {
        if (this.described) this.onicecandidate({ candidate: c });
        else this.held.push(c);
      };
      this.pc.onLocalDescription((sdp, type) => {
        this.localDescription = { type, sdp };
        for (const w of this.waiting.splice(0)) w();
      });
      this.pc.onLocalCandidate((c, mid) => candidate({ candidate: c.replace(/^a=/, ''), sdpMid: mid, sdpMLineIndex: 0 }));
      this.pc.onGatheringStateChange((st) => { if (st === 'complete') candidate(null); });
      this.pc.onStateChange((st) => {
        this.connectionState = st;
        if (this.onconnectionstatechange) this.onconnectionstatechange();
      });
      this.pc.onDataChannel((dc) => this.ondatachannel({ channel: channel(dc) }));
    }

    createDataChannel(label) { return channel(this.pc.createDataChannel(label)); }

    // libdatachannel makes its offer when the first channel is created and its answer when
    // the offer is set: these wait for that description.
    async description(type) {
      while (!this.localDescription || this.localDescription.type !== type) {
        await new Promise((res) => this.waiting.push(res));
      }
      return this.localDescription;
    }

    createOffer() { return this.description('offer'); }

    createAnswer() { return this.description('answer'); }

    async setLocalDescription() {
      this.described = true;
      setTimeout(() => { for (const c of this.held.splice(0)) this.onicecandidate({ candidate: c }); });
    }

    async setRemoteDescription(d) { this.pc.setRemoteDescription(d.sdp, d.type); }

    // libdatachannel has no call for a remote end-of-candidates.
    async addIceCandidate(c) { if (c) this.pc.addRemoteCandidate(c.candidate, c.sdpMid ?? '0'); }

    async getStats() {
      const p = this.pc.getSelectedCandidatePair();
      if (!p) return new Map();
      return new Map([
        ['t', { type: 'transport', selectedCandidatePairId: 'p' }],
        ['p', { id: 'p', type: 'candidate-pair', localCandidateId: 'l', remoteCandidateId: 'r' }],
        ['l', { id: 'l', candidateType: p.local.type }],
        ['r', { id: 'r', candidateType: p.remote.type }],
      ]);
    }

    close() { this.pc.close(); }
  }
  return w3cPeer(o, { RTCPeerConnection: LdcPeerConnection, WebSocket, onJoined: () => console.error('joined') });
}

const result = stack === 'werift' ? await weriftPeer() : stack === 'libdatachannel' ? await ldcPeer() : null;
if (!result) {
  console.error(`unknown stack ${stack}`);
  process.exit(2);
}
console.log(JSON.stringify(result));
// Native libraries may keep threads alive: leave once the result is out.
process.exit(result.ok ? 0 : 1);
