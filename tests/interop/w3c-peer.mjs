// A test peer on the W3C RTCPeerConnection API, speaking our signaling protocol
// (docs/signaling.md): join, the newcomer offers (a "chat" data channel), the other answers,
// trickle both ways with a null candidate for end-of-candidates, then one text message each
// way; or, with `o.media`, audio and video instead of the channel (fake camera and
// microphone sent when `o.media.send`, received either way), for `o.media.seconds` once
// connected, or until the other peer leaves with `o.media.untilLeft`. A stack without
// cameras brings its own tracks in `deps.media` (addTracks, onConnected, onTrack, result: see
// peer.mjs). Used as it is by werift in Node (tests/interop/peer.mjs) and, serialised with
// Function.prototype.toString, inside a Firefox page (tests/interop/firefox-peers.mjs): so
// it refers to nothing outside itself, and its dependencies come in `deps`.
//
// Resolves to a plain object: ok, role ('offer' when it joined second), timings, the message
// it got, the selected candidate pair where the stack's getStats tells it, both SDPs (for
// docs/interop.md), and protocol observations (candidates that came before a description,
// errors from addIceCandidate).
export async function w3cPeer(o, deps = {}) {
  const PC = deps.RTCPeerConnection || globalThis.RTCPeerConnection;
  const WS = deps.WebSocket || globalThis.WebSocket;
  const t0 = Date.now();
  const r = {
    stack: o.stack, ok: false, role: null, events: [], got: null, openMs: null,
    earlyCandidates: 0, addCandidateErrors: [], remoteEndOfCandidates: false, connectedMs: null, media: null,
    localCandidates: [], remoteCandidates: [], selected: null, localSdp: null, remoteSdp: null,
  };
  const note = (what) => r.events.push(`${Date.now() - t0}ms ${what}`);
  let pc = null;
  let ws = null;
  let resolveDone;
  const done = new Promise((res) => { resolveDone = res; });
  const timer = setTimeout(() => { note('timed out'); resolveDone(); }, o.timeoutMs || 20000);
  try {
    ws = new WS(o.url);
    await new Promise((res, rej) => {
      ws.onopen = res;
      ws.onerror = () => rej(new Error('signaling connection failed'));
    });
    let remoteId = null;
    let remoteDescribed = false;
    const early = [];
    const send = (data) => ws.send(JSON.stringify({ type: 'signal', to: remoteId, data }));
    const addCandidate = async (c) => {
      try {
        if (c === null) {
          r.remoteEndOfCandidates = true;
          await pc.addIceCandidate(null);
        } else {
          r.remoteCandidates.push(c.candidate);
          await pc.addIceCandidate(c);
        }
      } catch (e) {
        r.addCandidateErrors.push(`${c && c.candidate}: ${e && e.message}`);
      }
    };
    const wire = (dc) => {
      dc.onopen = () => {
        r.openMs = Date.now() - t0;
        note(`channel "${dc.label}" open`);
        dc.send(`hello from ${o.stack}`);
      };
      dc.onmessage = (ev) => {
        const text = typeof ev.data === 'string' ? ev.data : String(ev.data);
        note(`message ${JSON.stringify(text)}`);
        if (text === o.expect) {
          r.got = text;
          // A moment for our own message to be acknowledged before the caller closes.
          setTimeout(resolveDone, 300);
        }
      };
      if (dc.readyState === 'open') dc.onopen();
    };
    const makePc = async (iceServers) => {
      pc = new PC({ iceServers, iceTransportPolicy: o.relay ? 'relay' : 'all' });
      if (o.media && o.media.send && deps.media) {
        await deps.media.addTracks(pc);
      } else if (o.media && o.media.send) {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240, frameRate: 15 } });
        for (const t of stream.getTracks()) pc.addTrack(t, stream);
      }
      pc.onicecandidate = (ev) => {
        const c = ev.candidate;
        if (c && c.candidate) {
          r.localCandidates.push(c.candidate);
          send({ candidate: { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } });
        } else {
          note('end of local candidates');
          send({ candidate: null });
        }
      };
      pc.ondatachannel = (ev) => wire(ev.channel || ev);
      if (deps.media) pc.ontrack = (ev) => deps.media.onTrack(ev);
      pc.onconnectionstatechange = () => {
        note(`connection ${pc.connectionState}`);
        if (pc.connectionState === 'connected' && r.connectedMs === null) {
          r.connectedMs = Date.now() - t0;
          if (o.media) setTimeout(resolveDone, o.media.seconds * 1000);
          if (deps.media) deps.media.onConnected();
        }
      };
    };
    // One message at a time, in arrival order, as the browser app does.
    let queue = Promise.resolve();
    ws.onmessage = (ev) => {
      queue = queue.then(() => handle(JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data))))
        .catch((e) => note(`error: ${e && (e.message || e)}`));
    };
    const handle = async (m) => {
      if (m.type === 'welcome') {
        note(`welcome, ${m.peers.length} peer(s) present`);
        // For the driver: the peer is in the room (a test starting the other side after it).
        globalThis.__plxJoined = true;
        if (deps.onJoined) deps.onJoined();
        await makePc(m.iceServers);
        if (m.peers.length > 0) {
          r.role = 'offer';
          remoteId = m.peers[0].id;
          if (!o.media) {
            wire(pc.createDataChannel('chat'));
          } else if (!o.media.send) {
            pc.addTransceiver('audio', { direction: 'recvonly' });
            pc.addTransceiver('video', { direction: 'recvonly' });
          }
          await pc.setLocalDescription(await pc.createOffer());
          r.localSdp = pc.localDescription.sdp;
          send({ description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
        } else {
          r.role = 'answer';
        }
      } else if (m.type === 'signal') {
        remoteId = remoteId || m.from;
        const d = m.data || {};
        if (d.description) {
          note(`remote ${d.description.type}`);
          r.remoteSdp = d.description.sdp;
          await pc.setRemoteDescription(d.description);
          remoteDescribed = true;
          if (d.description.type === 'offer') {
            await pc.setLocalDescription(await pc.createAnswer());
            r.localSdp = pc.localDescription.sdp;
            send({ description: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
          }
          for (const c of early.splice(0)) await addCandidate(c);
        } else if ('candidate' in d) {
          if (!remoteDescribed) {
            // JSEP: a candidate before its description cannot be applied; the peer that
            // sent it broke trickle ICE's order (RFC 8838 §8). Kept and applied late.
            r.earlyCandidates++;
            early.push(d.candidate);
          } else {
            await addCandidate(d.candidate);
          }
        }
      } else if (m.type === 'peer-left' && o.media && o.media.untilLeft && m.id === remoteId) {
        note('peer left');
        // A moment for the last packets.
        setTimeout(resolveDone, 500);
      } else if (m.type === 'error') {
        note(`signaling error ${m.code}: ${m.message}`);
      }
    };
    ws.send(JSON.stringify({ type: 'join', room: o.room, name: o.name || o.stack }));
    await done;
    if (pc) {
      try {
        const stats = await pc.getStats();
        const byId = new Map();
        stats.forEach((s) => byId.set(s.id, s));
        let pair = null;
        stats.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
        });
        if (!pair) {
          stats.forEach((s) => {
            if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') pair = pair || s;
          });
        }
        if (pair) {
          const l = byId.get(pair.localCandidateId);
          const rc = byId.get(pair.remoteCandidateId);
          r.selected = { local: l && l.candidateType, remote: rc && rc.candidateType };
        }
        if (deps.media) {
          r.media = deps.media.result();
        } else if (o.media) {
          r.media = {};
          stats.forEach((s) => {
            if (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp') return;
            const codec = byId.get(s.codecId);
            r.media[`${s.type === 'inbound-rtp' ? 'in' : 'out'}-${s.kind}`] = {
              codec: codec && codec.mimeType, packets: s.packetsReceived ?? s.packetsSent,
              frames: s.framesDecoded ?? s.framesEncoded, width: s.frameWidth, height: s.frameHeight,
              nacks: s.nackCount, plis: s.pliCount,
            };
          });
        }
      } catch (e) {
        note(`getStats: ${e && e.message}`);
      }
    }
    r.ok = o.media ? r.connectedMs !== null : r.got === o.expect && r.openMs !== null;
  } catch (e) {
    note(`error: ${e && (e.stack || e.message || e)}`);
  } finally {
    clearTimeout(timer);
    r.ms = Date.now() - t0;
    try { if (pc) pc.close(); } catch { /* closing anyway */ }
    try { if (ws) ws.close(); } catch { /* closing anyway */ }
  }
  return r;
}
