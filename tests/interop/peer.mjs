// A native test peer speaking our signaling protocol for tests/e2e/interop-matrix.sh: werift
// or libdatachannel (node-datachannel's own API behind a thin W3C-shaped adapter), both
// running the code Firefox runs (w3c-peer.mjs). It joins ROOM, offers when someone is already
// there (a "chat" data channel) or answers the newcomer's offer, trickles candidates both ways
// (null at the end), sends "hello from STACK" once the channel opens and waits for EXPECT. It is given only
// the servers of the `welcome` (iceServers), relay-only with RELAY=1. Prints one JSON line
// (the result; SDPs included) and exits 0 when the message came, 1 otherwise.
// With MEDIA (werift only: a JSON object { send, ivf, ogg, seconds, untilLeft, out }) it has
// audio and video instead of the channel: VP8 from the IVF file and Opus from the Ogg file
// sent for `seconds - 1` once connected, as RTP packets cut here (rtp-media.mjs); what comes
// in counted per packet and per whole frame, the video written to OUT/in-video.ivf.
//
//   node peer.mjs werift|libdatachannel WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS [MEDIA]]
import { join } from 'node:path';
import WebSocket from 'ws';
import { IvfWriter, Vp8Assembler, opusSamples, readIvf, readOggOpus, vp8FrameInfo, vp8Payloads } from './rtp-media.mjs';
import { w3cPeer } from './w3c-peer.mjs';

const [stack, url, room, relayArg, expect, timeoutArg, mediaArg] = process.argv.slice(2);
const media = mediaArg ? JSON.parse(mediaArg) : null;
const o = { stack, url, room, relay: relayArg === '1', expect, timeoutMs: Number(timeoutArg || 20000), media };

/** werift's tracks: the files' frames as RTP packets in real time, and what comes in counted. */
function weriftMedia(w) {
  const counts = {};
  const count = (key, codec) => (counts[key] = counts[key] || { codec, packets: 0, frames: 0 });
  const tracks = {};
  const writers = [];
  const send = (track, key, codec, units, clock) => {
    // units: [{ payloads, ticks }], one a frame; sent at their times for seconds - 1.
    const c = count(key, codec);
    const start = Date.now();
    let seq = Math.floor(Math.random() * 0x8000);
    let ts = Math.floor(Math.random() * 0x7fffffff);
    let elapsed = 0;
    let i = 0;
    const step = () => {
      while (i < units.length && elapsed / clock <= Date.now() - start && elapsed / clock < (media.seconds - 1) * 1000) {
        const u = units[i++];
        u.payloads.forEach((payload, k) => {
          const header = new w.RtpHeader({ sequenceNumber: seq, timestamp: ts, marker: k === u.payloads.length - 1, payloadType: 96 });
          seq = (seq + 1) & 0xffff;
          track.writeRtp(new w.RtpPacket(header, payload));
          c.packets++;
        });
        c.frames++;
        ts = (ts + u.ticks) >>> 0;
        elapsed += u.ticks;
      }
      if (i < units.length && elapsed / clock < (media.seconds - 1) * 1000) setTimeout(step, 5);
    };
    step();
  };
  return {
    async addTracks(pc) {
      tracks.video = new w.MediaStreamTrack({ kind: 'video' });
      tracks.audio = new w.MediaStreamTrack({ kind: 'audio' });
      pc.addTrack(tracks.audio);
      pc.addTrack(tracks.video);
    },
    onConnected() {
      if (!tracks.video) return;
      const ivf = readIvf(media.ivf);
      const frameTicks = Math.round((90000 * ivf.scale) / ivf.rate);
      send(tracks.video, 'out-video', 'video/VP8', ivf.frames.map((f) => ({ payloads: vp8Payloads(f), ticks: frameTicks })), 90);
      send(tracks.audio, 'out-audio', 'audio/opus', readOggOpus(media.ogg).map((p) => ({ payloads: [p], ticks: opusSamples(p) })), 48);
    },
    onTrack(ev) {
      const kind = ev.track.kind;
      const c = count(`in-${kind}`, ev.track.codec ? ev.track.codec.mimeType : kind);
      const asm = new Vp8Assembler();
      const ivf = kind === 'video' && media.out ? new IvfWriter(join(media.out, 'in-video.ivf')) : null;
      if (ivf) {
        writers.push(ivf);
        c.file = join(media.out, 'in-video.ivf');
      }
      ev.track.onReceiveRtp.subscribe((rtp) => {
        c.packets++;
        if (kind !== 'video') {
          c.frames++;
          return;
        }
        const frame = asm.push(rtp.header, rtp.payload);
        if (!frame) return;
        c.frames++;
        const info = vp8FrameInfo(frame);
        if (info.key) Object.assign(c, { keyframes: (c.keyframes || 0) + 1, width: info.width, height: info.height });
        if (ivf) ivf.write(frame, rtp.header.timestamp);
      });
    },
    result() {
      for (const x of writers.splice(0)) x.close();
      return counts;
    },
  };
}

async function weriftPeer() {
  const w = await import('werift');
  return w3cPeer(o, { RTCPeerConnection: w.RTCPeerConnection, WebSocket, onJoined: () => console.error('joined'), media: media ? weriftMedia(w) : undefined });
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
