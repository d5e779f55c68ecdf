// One RTCPeerConnection to one remote peer, negotiated with the W3C "perfect negotiation"
// pattern (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example):
// - any change (tracks, first data channel, ICE restart) fires onnegotiationneeded and we offer;
// - when offers cross (glare), the impolite side ignores the remote offer and the polite side
//   rolls its own back (implicitly, inside setRemoteDescription) and answers.
// Politeness is decided by comparing ids: the peer whose id sorts after the other's is polite.
// The same class makes the one connection to the server in a room in SFU mode (peer id "sfu",
// docs/signaling.md "Rooms in SFU mode"): there we are always polite, send our tracks
// sendonly, and receive one stream per other participant (stream id = its peer id).
//
// Chat: an in-band (DCEP) ordered, reliable channel labelled "chat", opened by the peer that
// offers first (the newcomer). Each text message is one chat message, plain UTF-8 text.
// If a connection comes up without one (e.g. a native peer that opened none), we open it.
// Files: one in-band channel labelled "file" per transfer (see files.js and docs/file-transfer.md).

const CHAT_LABEL = 'chat';
const CHAT_GRACE_MS = 1500;
// The newcomer offers. When two peers join at once through different signaling servers, each
// can be told of the other as already present and both wait: after this long without an offer
// the waiting side offers itself (perfect negotiation settles a glare).
const OFFER_FALLBACK_MS = 4000;
export const MAX_CHAT_CHARS = 4000;
let serials = 0;

export class Peer {
  /**
   * @param {object} o
   * @param {string} o.id, o.name, o.selfId
   * @param {RTCIceServer[]} o.iceServers
   * @param {boolean} o.relayOnly     iceTransportPolicy "relay" (test hook ?relay=1)
   * @param {MediaStream|null} o.localStream
   * @param {boolean} o.initiator     true: we offer now (we are the newcomer)
   * @param {(data: object) => void} o.signal     sends {description} / {candidate} to the peer
   * @param {object} o.on  callbacks: change(peer), chat(peer, text, from), fileChannel(peer, channel),
   *                       log(peer, text), reset(peer, offerData) (an offer it cannot take),
   *                       track(peer, event) (instead of collecting tracks in remoteStream)
   * @param {boolean} [o.sfu]  the connection to the server of a room in SFU mode: polite, our
   *                       tracks sendonly, chat messages from the server are {"from","text"}
   */
  constructor(o) {
    this.id = o.id;
    this.name = o.name;
    this.sfu = !!o.sfu;
    this.polite = this.sfu || o.selfId > o.id;
    this.signalOut = o.signal;
    this.on = o.on;
    this.localStream = o.localStream;
    this.mediaAttached = false;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.closed = false;
    this.chatChannels = [];
    this.remoteStream = new MediaStream();
    this.stats = { local: null, remote: null, rtt: null, framesDecoded: 0, fps: null, width: 0, height: 0,
      tracks: new Map() };
    this.inbox = Promise.resolve();
    this.restarts = 0;
    // Not in the signaling room (peer-left, or missing from a welcome after our rejoin) while
    // the connection still works: kept until that connection ends.
    this.away = false;
    this.hadChat = false; // a chat channel was open at some point
    this.negotiated = false; // a remote description was applied
    this.serial = ++serials; // tells a kept connection from a new one to the same id
    // Being replaced after a switch of room mode: closes soon, no ICE restart meanwhile.
    this.retiring = false;

    const pc = new RTCPeerConnection({
      iceServers: o.iceServers,
      iceTransportPolicy: o.relayOnly ? 'relay' : 'all',
    });
    this.pc = pc;

    pc.ontrack = (ev) => {
      if (this.on.track) {
        this.on.track(this, ev);
        return;
      }
      const { track } = ev;
      this.remoteStream.addTrack(track);
      track.onended = () => {
        this.remoteStream.removeTrack(track);
        this.on.change(this);
      };
      this.on.change(this);
    };
    pc.onicecandidate = ({ candidate }) => {
      this.signalOut({ candidate: candidate ? candidate.toJSON() : null });
    };
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.signalOut({ description: descriptionJson(pc.localDescription) });
      } catch (e) {
        this.on.log(this, `offer failed: ${e.message || e}`);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      // (The server's connection is made anew by the app instead.)
      if (s === 'failed' && !this.away && !this.retiring && !this.sfu) {
        // ICE restart: new credentials, new candidates, through onnegotiationneeded.
        this.restarts++;
        this.on.log(this, 'connection failed, restarting ICE');
        pc.restartIce();
      }
      if (s === 'connected') this.ensureChat();
      this.on.change(this);
    };
    pc.oniceconnectionstatechange = () => this.on.change(this);
    pc.ondatachannel = ({ channel }) => {
      if (channel.label === CHAT_LABEL) this.wireChat(channel);
      else if (channel.label === 'file') this.on.fileChannel(this, channel);
      else channel.close();
    };

    if (o.initiator) {
      this.attachMedia(true);
      this.wireChat(pc.createDataChannel(CHAT_LABEL, { ordered: true }));
    } else {
      this.offerTimer = setTimeout(() => {
        if (this.closed || pc.remoteDescription || pc.signalingState !== 'stable') return;
        this.on.log(this, 'no offer came; offering');
        this.attachMedia(true);
        this.wireChat(pc.createDataChannel(CHAT_LABEL, { ordered: true }));
      }, OFFER_FALLBACK_MS);
    }
  }

  /** Whether the connection carries media and data now (or is only briefly interrupted). */
  get live() {
    return !this.closed && ['connected', 'disconnected'].includes(this.pc.connectionState);
  }

  /** Whether a connection that was up has ended: failed, closed, or its chat channel gone. */
  get ended() {
    const s = this.pc.connectionState;
    return this.closed || s === 'failed' || s === 'closed' || (this.hadChat && !this.chatOpen);
  }

  /** Sends our tracks, or asks for the remote ones when we have none (receive-only). */
  attachMedia(initiator) {
    if (this.mediaAttached) return;
    this.mediaAttached = true;
    if (this.localStream && this.sfu) {
      // The server sends the others' tracks in sections of its own: ours only go up.
      for (const track of this.localStream.getTracks()) {
        this.pc.addTransceiver(track, { direction: 'sendonly', streams: [this.localStream] });
      }
    } else if (this.localStream) {
      // addTrack reuses the transceivers a remote offer created, so an answer carries our media.
      for (const track of this.localStream.getTracks()) this.pc.addTrack(track, this.localStream);
    } else if (this.sfu) {
      // Receive-only: the chat channel's section is enough for the first offer.
    } else if (initiator) {
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
      this.pc.addTransceiver('video', { direction: 'recvonly' });
    }
  }

  /** Handles a `data` object relayed by the signaling server, in arrival order. */
  handleSignal(data) {
    this.inbox = this.inbox.then(() => this.processSignal(data)).catch((e) => {
      this.on.log(this, `signal: ${e.message || e}`);
      // An offer this connection cannot take after it was negotiated (e.g. a new DTLS
      // identity: the other side started afresh after losing signaling): start afresh too.
      if (this.negotiated && !this.closed && data?.description?.type === 'offer') this.on.reset?.(this, data);
    });
  }

  async processSignal(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    const pc = this.pc;
    if ('description' in data) {
      const d = data.description;
      if (!d || !['offer', 'answer'].includes(d.type) || typeof d.sdp !== 'string') return;
      const collision = d.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription({ type: d.type, sdp: d.sdp });
      this.negotiated = true;
      if (d.type === 'offer') {
        this.attachMedia(false);
        await pc.setLocalDescription();
        this.signalOut({ description: descriptionJson(pc.localDescription) });
      }
    } else if ('candidate' in data) {
      const c = data.candidate;
      if (c !== null && (typeof c !== 'object' || typeof c.candidate !== 'string')) return;
      try {
        // null ends the remote candidates.
        await pc.addIceCandidate(c === null ? undefined : c);
      } catch (e) {
        if (!this.ignoreOffer) throw e;
      }
    }
  }

  wireChat(channel) {
    this.chatChannels.push(channel);
    channel.onopen = () => {
      this.hadChat = true;
      this.on.change(this);
    };
    channel.onclose = () => {
      this.chatChannels = this.chatChannels.filter((c) => c !== channel);
      this.on.change(this);
    };
    channel.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      if (!this.sfu) {
        this.on.chat(this, ev.data.slice(0, MAX_CHAT_CHARS), this.id);
        return;
      }
      // Relayed by the server: {"from":"<peer id>","text":"..."}.
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!m || typeof m.from !== 'string' || typeof m.text !== 'string') return;
      this.on.chat(this, m.text.slice(0, MAX_CHAT_CHARS), m.from);
    };
  }

  ensureChat() {
    setTimeout(() => {
      if (!this.closed && this.chatChannels.length === 0 && this.pc.connectionState === 'connected') {
        this.wireChat(this.pc.createDataChannel(CHAT_LABEL, { ordered: true }));
      }
    }, CHAT_GRACE_MS);
  }

  get chatOpen() {
    return this.chatChannels.some((c) => c.readyState === 'open');
  }

  sendChat(text) {
    const ch = this.chatChannels.find((c) => c.readyState === 'open');
    if (!ch) return false;
    ch.send(text);
    return true;
  }

  /** Opens a new channel for one file transfer. */
  openFileChannel() {
    const ch = this.pc.createDataChannel('file', { ordered: true });
    ch.binaryType = 'arraybuffer';
    return ch;
  }

  /** Refreshes this.stats from getStats(): selected pair, RTT, inbound video. */
  async refreshStats() {
    if (this.closed) return;
    const report = await this.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    const st = { local: null, remote: null, rtt: null, framesDecoded: 0, fps: null, width: 0, height: 0,
      relayProtocol: null, tracks: new Map() };
    if (pair) {
      const l = report.get(pair.localCandidateId);
      const r = report.get(pair.remoteCandidateId);
      st.local = l ? l.candidateType : null;
      st.remote = r ? r.candidateType : null;
      st.relayProtocol = l && l.relayProtocol ? l.relayProtocol : null;
      if (typeof pair.currentRoundTripTime === 'number') st.rtt = Math.round(pair.currentRoundTripTime * 1000);
    }
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        // Per receiving track, for the tiles of a connection that carries several.
        st.tracks.set(s.trackIdentifier, { framesDecoded: s.framesDecoded || 0,
          fps: typeof s.framesPerSecond === 'number' ? s.framesPerSecond : null,
          width: s.frameWidth || 0, height: s.frameHeight || 0 });
        st.framesDecoded += s.framesDecoded || 0;
        if (typeof s.framesPerSecond === 'number') st.fps = s.framesPerSecond;
        if (s.frameWidth) { st.width = s.frameWidth; st.height = s.frameHeight; }
      }
    });
    this.stats = st;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.offerTimer);
    for (const c of this.chatChannels) c.close();
    this.pc.close();
    for (const t of this.remoteStream.getTracks()) t.stop();
  }
}

function descriptionJson(d) {
  return { type: d.type, sdp: d.sdp };
}
