// A client of a room in SFU mode written from docs/signaling.md alone (not the app's code),
// for headless Chromium pages: joins, makes ONE RTCPeerConnection to the peer "sfu", offers
// its fake camera and microphone (optionally as 3 simulcast layers), answers the server's
// offers (perfect negotiation, the page polite), and chats over the "chat" channel
// (text out, {from, text} in). Used by sfu-room.mjs, sfu-lastn.mjs and sfu-native.mjs.

// Runs in the page: the whole client.
export function client({ ws, room, name, simulcast, camera = true, size = [640, 480] }) {
  const state = { id: null, mode: null, pcs: 0, log: [], streams: {}, chat: [], errors: [], speaker: null, speakers: [], forwarding: null };
  window.__sfu = state;
  const log = (m) => state.log.push(`${Math.round(performance.now())} ${m}`);
  let pc = null;
  let makingOffer = false;
  const sock = new WebSocket(ws);
  const send = (data) => sock.send(JSON.stringify({ type: 'signal', to: 'sfu', data }));
  const start = async (iceServers) => {
    // camera false: the microphone alone (a page that mostly watches).
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: camera && { width: size[0], height: size[1], frameRate: 15 } });
    // Muted audio still flows, as silence (RFC 6464 level 127).
    window.__mute = (muted) => media.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    pc = new RTCPeerConnection({ iceServers });
    state.pcs += 1;
    for (const track of media.getTracks()) {
      const init = { direction: 'sendonly', streams: [media] };
      if (track.kind === 'video' && simulcast) {
        init.sendEncodings = [
          { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
          { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 400000 },
          { rid: 'f', maxBitrate: 1200000 },
        ];
      }
      pc.addTransceiver(track, init);
    }
    // Chat through the server: text out, {from, text} in.
    const chat = pc.createDataChannel('chat', { ordered: true });
    chat.onmessage = (e) => state.chat.push(JSON.parse(e.data));
    window.__chat = chat;
    pc.onnegotiationneeded = async () => {
      try {
        makingOffer = true;
        await pc.setLocalDescription();
        send({ description: pc.localDescription });
      } catch (e) {
        state.errors.push(`offer: ${e}`);
      } finally {
        makingOffer = false;
      }
    };
    pc.onicecandidate = (e) => send({ candidate: e.candidate });
    pc.onconnectionstatechange = () => log(`connection ${pc.connectionState}`);
    pc.ontrack = (e) => {
      const id = e.streams[0] ? e.streams[0].id : '?';
      const s = state.streams[id] || (state.streams[id] = { tracks: {} });
      s.tracks[e.track.kind] = e.track.id;
      log(`track ${e.track.kind} from ${id}`);
      if (e.track.kind === 'video') {
        // A sink, so the video is decoded as an app would.
        const v = document.createElement('video');
        v.muted = true;
        v.autoplay = true;
        v.playsInline = true;
        v.srcObject = new MediaStream([e.track]);
        document.body.appendChild(v);
      }
    };
  };
  sock.onopen = () => sock.send(JSON.stringify({ type: 'join', room, name }));
  sock.onmessage = async (e) => {
    const m = JSON.parse(e.data);
    if (m.type === 'welcome') {
      state.id = m.id;
      state.mode = m.mode;
      log(`welcome mode ${m.mode}`);
      if (m.mode === 'sfu') await start(m.iceServers);
    } else if (m.type === 'error') {
      state.errors.push(`${m.code}: ${m.message}`);
    } else if (m.type === 'signal' && m.from === 'sfu' && typeof m.data.speaker === 'string') {
      state.speaker = m.data.speaker;
      state.speakers.push(m.data.speaker);
      log(`speaker ${m.data.speaker}`);
    } else if (m.type === 'signal' && m.from === 'sfu' && Array.isArray(m.data.forwarding)) {
      state.forwarding = m.data.forwarding;
      log(`forwarding ${m.data.forwarding.join(',')}`);
    } else if (m.type === 'signal' && m.from === 'sfu' && pc) {
      const { description, candidate } = m.data;
      try {
        if (description) {
          // Perfect negotiation, polite: our offer gives way to the server's (an offer
          // applied in have-local-offer rolls ours back implicitly).
          await pc.setRemoteDescription(description);
          if (description.type === 'offer') {
            await pc.setLocalDescription();
            send({ description: pc.localDescription });
          }
        } else if (candidate !== undefined) {
          await pc.addIceCandidate(candidate);
        }
      } catch (err) {
        state.errors.push(`signal: ${err}`);
      }
    }
  };
  window.__leave = () => {
    sock.send(JSON.stringify({ type: 'leave' }));
    if (pc) pc.close();
    sock.close();
  };
}

/** Opens a page in a context of its own in `browser` and runs the client in it. */
export async function openPage(browser, origin, { ws, room, name, simulcast = true, camera = true, size }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`# ${name} page error: ${e}`));
  // The page must load from the origin: on a failed load the page stays on about:blank, where
  // navigator.mediaDevices is missing (not a secure context), and a late navigation would
  // destroy the client mid-test. A failed load is retried, with its error printed.
  const url = `${origin}/sfu-test-page-${name}`;
  for (let attempt = 1; ; attempt += 1) {
    try {
      await page.goto(url, { timeout: 10000 });
      break;
    } catch (e) {
      console.log(`# ${name}: loading ${url} failed (attempt ${attempt} of 3): ${String(e.message || e).split('\n')[0]}`);
      if (attempt === 3) throw e;
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  const usable = await page.evaluate(() => window.isSecureContext && !!navigator.mediaDevices);
  if (!usable) throw new Error(`${name}: ${page.url()} is not a secure context with navigator.mediaDevices`);
  // Keep a handle on the peer connection for getStats.
  await page.evaluate(() => {
    const Original = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Original {
      constructor(...a) { super(...a); window.__sfuPc = this; }
    };
  });
  await page.evaluate(client, { ws, room, name, simulcast, camera, size });
  return { name, page, context };
}

// Per remote stream id: frames decoded (and their size) and audio packets received, from getStats.
export async function receiving(p) {
  return p.page.evaluate(async () => {
    const state = window.__sfu;
    const pc = window.__sfuPc;
    const res = { id: state.id, mode: state.mode, pcs: state.pcs, errors: state.errors.slice(), streams: {} };
    if (!pc) return res;
    const byTrack = {};
    for (const [sid, s] of Object.entries(state.streams)) {
      for (const [kind, tid] of Object.entries(s.tracks)) byTrack[tid] = { sid, kind };
    }
    const live = new Set(pc.getTransceivers()
      .filter((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv')
      .map((t) => t.receiver.track.id));
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const t = byTrack[r.trackIdentifier];
      if (!t || !live.has(r.trackIdentifier)) return;
      const s = res.streams[t.sid] || (res.streams[t.sid] = { frames: 0, audio: 0 });
      if (r.kind === 'video') {
        s.frames = r.framesDecoded || 0;
        s.width = r.frameWidth || 0;
        s.height = r.frameHeight || 0;
      }
      else s.audio = r.packetsReceived || 0;
    });
    return res;
  });
}


// Per simulcast layer the page sends: rid, width and bytes sent so far, from getStats.
export async function sending(p) {
  return p.page.evaluate(async () => {
    const layers = [];
    (await window.__sfuPc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') layers.push({ rid: r.rid, width: r.frameWidth || 0, sent: r.bytesSent });
    });
    return { id: window.__sfu.id, layers };
  });
}
