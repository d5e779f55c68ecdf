// A headless Chromium media peer for judging native peers (`peerlink play|record|echo`): one
// Chromium, one page, that joins a room through our signaling server exactly as DESIGN.md
// "Signaling protocol" says (join; the newcomer offers to every peer in its welcome; peers
// already in the room answer; perfect negotiation, polite = our id sorts after the other's;
// trickle candidates, `{"candidate":null}` ends them; only the iceServers from the welcome),
// sends fake camera/microphone media and/or plays what it receives, stays connected for
// --duration seconds after the connection is up, then prints ONE JSON line of getStats()
// figures to stdout and exits 0. Diagnostics go to stderr, prefixed with [NAME].
//
//   node media-peer.mjs --server ws://127.0.0.1:PORT/ws --room R [options]
//
//   --server URL        signaling WebSocket (required). The page is opened on the same
//                       host's http origin (a 404 page of our own server, then its content is
//                       replaced), so Local Network Access checks do not block the socket.
//   --room R            room (required)
//   --name N            name in the room (default chromium-PID)
//   --send LIST         video,audio | video | audio | none (default none): fake camera/mic
//   --codec C           vp8|vp9|h264|av1: the video codec to send (and to offer/answer).
//                       Applied with setCodecPreferences on every video transceiver, as
//                       offerer and as answerer; after each negotiation the sender is also
//                       pinned to it with RTCRtpSender.setParameters (encodings[0].codec)
//                       when Chromium picked another negotiated codec (see --no-force-codec).
//   --h264-profile P    baseline (42e01f, else 42001f) | main (4d001f) | high (640c1f, else
//                       64001f); default baseline. Debian's Chromium 156 has no High at all
//                       (it sends 42001f, 42e01f, 4d001f; also receives f4001f): exit 3.
//   --list-codecs       print {"usable":["vp8","h264-baseline",...],"send":[..],"recv":[..]}
//                       (what this Chromium can both send and receive) and exit; no server
//   --no-force-codec    do not pin the sender with setParameters; only preferences
//   --recv              attach received tracks to <video>/<audio> elements that play
//   --relay             iceTransportPolicy 'relay' (only the server's TURN)
//   --duration SECS     time connected before the stats are taken (default 10)
//   --timeout SECS      bound on getting connected (default 20); exit 2 when exceeded
//   --expect-peers N    wait for N connected remote peers before the duration starts (1)
//   --size WxH          camera size asked for (default 320x240)
//   --fps N             camera frame rate asked for (default 15)
//   --mdns              keep Chromium's mDNS host candidates (default: raw IPs, by
//                       --disable-features=WebRtcHideLocalIpsWithMdns)
//   --stats-every SECS  also print a one-line progress summary to stderr this often (0: off)
// Each option can also come from the environment as MP_<NAME> (MP_SERVER, MP_ROOM, MP_SEND,
// MP_CODEC, MP_H264_PROFILE, MP_RECV=1, MP_RELAY=1, MP_DURATION, ...); argv wins.
// CHROMIUM=path overrides /usr/bin/chromium. playwright-core gives each launch a fresh,
// temporary user data dir, removed on close.
//
// Exit codes: 0 stats printed; 1 bad usage or page/script error; 2 not connected in time
// (a JSON line with "ok":false and the state history is still printed); 3 the codec asked
// for cannot be sent by this Chromium (e.g. no AV1 encoder).
//
// Output (one line): {"ok":true,"name","id","room","wanted":{codec,fmtp},"durationMs",
//   "peers":[{"id","name","role":"offerer"|"answerer","polite","states":[{t,connection,ice,
//   signaling}],"pair":{local,remote,protocol,rtt},"outbound":[{kind,codec,fmtp,framesSent,
//   framesEncoded,frameWidth,frameHeight,nackCount,retransmittedPacketsSent,packetsSent,
//   qualityLimitationReason,...}],"inbound":[{kind,codec,fmtp,framesDecoded,framesReceived,
//   frameWidth,frameHeight,freezeCount,totalFreezesDuration,framesDropped,packetsLost,nackCount,
//   pliCount,retransmittedPacketsReceived,keyFramesDecoded,totalSamplesReceived,concealedSamples,
//   concealmentEvents,...}],
//   "codecCheck":{wanted,sent,ok,forced}}],"log":[...],"audioTimeline":[{t,points:[{peer,packets,
//   samples,concealed}]}] (every 250 ms while connected)}
import { launchChromium } from './chromium.mjs';

const HELP = 'usage: node media-peer.mjs --server ws://HOST:PORT/ws --room R [--name N] '
  + '[--send video,audio|none] [--codec vp8|vp9|h264|av1] [--h264-profile baseline|main|high] '
  + '[--no-force-codec] [--list-codecs] [--recv] [--relay] [--duration S] [--timeout S] [--expect-peers N] '
  + '[--size WxH] [--fps N] [--mdns] [--stats-every S]';
const FLAGS = new Set(['recv', 'relay', 'mdns', 'no-force-codec', 'list-codecs', 'help']);
const VALUES = new Set(['server', 'room', 'name', 'send', 'codec', 'h264-profile', 'duration', 'timeout',
  'expect-peers', 'size', 'fps', 'stats-every']);

function parseArgs(argv) {
  const o = {};
  for (const k of [...FLAGS, ...VALUES]) {
    const v = process.env[`MP_${k.toUpperCase().replace(/-/g, '_')}`];
    if (v !== undefined && v !== '') o[k] = FLAGS.has(k) ? !['0', 'false', 'no'].includes(v) : v;
  }
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) usage(`unexpected argument ${argv[i]}`);
    const [, k, inline] = m;
    if (FLAGS.has(k)) o[k] = true;
    else if (VALUES.has(k)) {
      const v = inline !== undefined ? inline : argv[++i];
      if (v === undefined) usage(`--${k} needs a value`);
      o[k] = v;
    } else usage(`unknown option --${k}`);
  }
  return o;
}
function usage(msg) {
  if (msg) process.stderr.write(`media-peer: ${msg}\n`);
  process.stderr.write(`${HELP}\n`);
  process.exit(1);
}

const opt = parseArgs(process.argv.slice(2));
if (opt.help) usage();
if (!opt['list-codecs'] && (!opt.server || !opt.room)) usage('--server and --room are required');
const name = opt.name || `chromium-${process.pid}`;
const send = (opt.send || 'none').split(',').map((s) => s.trim()).filter((s) => s && s !== 'none');
for (const s of send) if (!['video', 'audio'].includes(s)) usage(`--send takes video, audio or none, not ${s}`);
const codec = opt.codec ? opt.codec.toLowerCase() : null;
if (codec && !['vp8', 'vp9', 'h264', 'av1'].includes(codec)) usage(`unknown codec ${codec}`);
const h264Profile = (opt['h264-profile'] || 'baseline').toLowerCase();
if (!['baseline', 'main', 'high'].includes(h264Profile)) usage('--h264-profile is baseline, main or high');
const num = (k, d) => {
  const v = opt[k] === undefined ? d : Number(opt[k]);
  if (!Number.isFinite(v) || v < 0) usage(`--${k} takes a number`);
  return v;
};
const duration = num('duration', 10);
const timeout = num('timeout', 20);
const expectPeers = Math.max(1, Math.floor(num('expect-peers', 1)));
const fps = num('fps', 15);
const statsEvery = num('stats-every', 0);
const sizeM = /^(\d+)x(\d+)$/.exec(opt.size || '320x240');
if (!sizeM) usage('--size is WxH, e.g. 320x240');
const [width, height] = [Number(sizeM[1]), Number(sizeM[2])];
let origin;
if (opt['list-codecs']) origin = null;
else try {
  const u = new URL(opt.server);
  if (!['ws:', 'wss:'].includes(u.protocol)) throw new Error('not ws: or wss:');
  origin = `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
} catch (e) {
  usage(`bad --server ${opt.server}: ${e.message}`);
}

const t0 = Date.now();
const err = (msg) => process.stderr.write(`[${name}] ${((Date.now() - t0) / 1000).toFixed(2)}s ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- Browser side: stringified into the page. No closures over Node values. ----
function pageCode() {
  const S = {
    cfg: null, ws: null, id: null, peers: new Map(), iceServers: [], log: [], t0: performance.now(),
    local: null, wanted: null, names: new Map(),
  };
  window.__mp = S;
  // H.264 profile-level-id prefixes by profile, in order of preference.
  const H264 = { baseline: ['42e0', '4200'], main: ['4d00'], high: ['640c', '6400'] };
  const profileOf = (fmtp) => ((/profile-level-id=([0-9a-f]{6})/i.exec(fmtp || '') || [])[1] || '').toLowerCase();
  // The entries of a capability list that are codec (and H.264 profile), best first
  // (H.264: the preferred profile-level-id first, packetization-mode=1 before 0).
  function matching(caps, codec, profile) {
    const rank = (x) => {
      if (x.mimeType.toLowerCase() !== `video/${codec}`) return -1;
      if (codec !== 'h264') return 0;
      const i = H264[profile].findIndex((pre) => profileOf(x.sdpFmtpLine).startsWith(pre));
      return i < 0 ? -1 : i * 2 + (/packetization-mode=1/.test(x.sdpFmtpLine || '') ? 0 : 1);
    };
    return caps.filter((x) => rank(x) >= 0).sort((a, b) => rank(a) - rank(b));
  }
  window.mpCodecs = () => {
    const list = (caps) => caps.map((x) => `${x.mimeType.replace('video/', '')}${x.sdpFmtpLine ? ` ${x.sdpFmtpLine}` : ''}`);
    const send = RTCRtpSender.getCapabilities('video').codecs;
    const recv = RTCRtpReceiver.getCapabilities('video').codecs;
    const usable = [];
    for (const codec of ['vp8', 'vp9', 'h264', 'av1']) {
      for (const profile of codec === 'h264' ? Object.keys(H264) : ['']) {
        if (matching(send, codec, profile).length && matching(recv, codec, profile).length) usable.push(profile ? `${codec}-${profile}` : codec);
      }
    }
    return { usable, send: list(send), recv: list(recv) };
  };
  const now = () => Math.round(performance.now() - S.t0);
  const log = (m) => { S.log.push(`${now()} ${m}`); if (S.log.length > 400) S.log.shift(); window.mpLog(m); };
  const descJson = (d) => ({ type: d.type, sdp: d.sdp });
  // The codec names of a description's video sections, in order ("VP8 rtx VP9 ...").
  const videoCodecs = (d) => {
    if (!d || !d.sdp) return '-';
    return d.sdp.split(/\r?\nm=/).slice(1).filter((m) => m.startsWith('video')).map((m) => {
      const pts = m.split(/\r?\n/)[0].split(' ').slice(3);
      const names = pts.map((pt) => (new RegExp(`a=rtpmap:${pt} ([^/]+)`).exec(m) || [])[1] || pt);
      return names.filter((n) => n !== 'rtx').slice(0, 6).join(' ');
    }).join(' | ') || 'no video';
  };

  // The codec list for setCodecPreferences: the wanted codec (H.264: the wanted profile,
  // packetization-mode=1 first), then rtx. null when the browser has none of it.
  function prefs() {
    const c = S.cfg;
    if (!c.codec) return null;
    const caps = RTCRtpReceiver.getCapabilities('video').codecs;
    const chosen = matching(caps, c.codec, c.h264Profile);
    if (!chosen.length) return null;
    return [...chosen, ...caps.filter((x) => x.mimeType.toLowerCase() === 'video/rtx')];
  }
  function canSend() {
    const c = S.cfg;
    if (!c.codec || !c.send.includes('video')) return true;
    return matching(RTCRtpSender.getCapabilities('video').codecs, c.codec, c.h264Profile).length > 0;
  }
  const codecOk = (mime, fmtp) => {
    const c = S.cfg;
    if (!c.codec || !mime) return null;
    if (mime.toLowerCase() !== `video/${c.codec}`) return false;
    if (c.codec !== 'h264') return true;
    return profileOf(fmtp).startsWith(H264[c.h264Profile][0].slice(0, 2));
  };
  function applyPrefs(pc) {
    const p = prefs();
    if (!p) return;
    for (const t of pc.getTransceivers()) {
      if (t.stopped || t.receiver.track.kind !== 'video') continue;
      try { t.setCodecPreferences(p); } catch (e) { log(`setCodecPreferences: ${e.message}`); }
    }
  }
  // After a negotiation: if the video sender's first negotiated codec is not the wanted one
  // (Chromium as answerer), pin encodings[0].codec to the wanted one when it was negotiated.
  async function pinCodec(peer) {
    const c = S.cfg;
    if (!c.codec || !c.forceCodec || !S.local) return;
    for (const t of peer.pc.getTransceivers()) {
      const s = t.sender;
      if (!s.track || s.track.kind !== 'video') continue;
      const params = s.getParameters();
      const negotiated = params.codecs || [];
      const want = matching(negotiated, c.codec, c.h264Profile)[0];
      if (!want) {
        log(`codec: ${c.codec} was not negotiated (negotiated: ${negotiated.map((x) => x.mimeType).join(' ') || 'none'})`);
        continue;
      }
      const first = negotiated.find((x) => !/rtx|red|ulpfec|flexfec/i.test(x.mimeType));
      const cur = params.encodings && params.encodings[0] && params.encodings[0].codec;
      if (cur ? codecOk(cur.mimeType, cur.sdpFmtpLine) : (first && first === want)) continue;
      if (!first || codecOk(first.mimeType, first.sdpFmtpLine)) continue;
      try {
        for (const e of params.encodings) e.codec = want;
        await s.setParameters(params);
        peer.forced = true;
        log(`codec: negotiated first ${first.mimeType} ${first.sdpFmtpLine || ''}; pinned the sender to ${want.mimeType} ${want.sdpFmtpLine || ''}`);
      } catch (e) {
        log(`codec: setParameters(encodings[0].codec) failed: ${e.message}`);
      }
    }
  }

  function signal(to, data) {
    if (S.ws && S.ws.readyState === 1) S.ws.send(JSON.stringify({ type: 'signal', to, data }));
  }

  function attach(track, streams) {
    if (!S.cfg.recv) return;
    const el = document.createElement(track.kind === 'video' ? 'video' : 'audio');
    el.autoplay = true;
    el.playsInline = true;
    el.srcObject = new MediaStream([track]);
    el.dataset.track = track.id;
    document.getElementById('remote').appendChild(el);
    el.play().then(() => log(`playing remote ${track.kind} ${track.id} (stream ${streams[0] ? streams[0].id : '-'})`),
      (e) => log(`play() of remote ${track.kind} failed: ${e.message}`));
  }

  function newPeer(id, peerName, initiator) {
    const c = S.cfg;
    const pc = new RTCPeerConnection({ iceServers: S.iceServers, iceTransportPolicy: c.relay ? 'relay' : 'all' });
    const peer = {
      id, name: peerName, pc, polite: S.id > id, role: initiator ? 'offerer' : 'answerer', makingOffer: false,
      ignoreOffer: false, inbox: Promise.resolve(), states: [], created: now(), connectedAt: null, forced: false,
    };
    S.peers.set(id, peer);
    const state = (what) => {
      peer.states.push({ t: now(), what, connection: pc.connectionState, ice: pc.iceConnectionState, signaling: pc.signalingState });
      if (pc.connectionState === 'connected' && peer.connectedAt === null) {
        peer.connectedAt = now();
        log(`connected to ${peerName} (${id}) ${peer.connectedAt - peer.created} ms after the first signal`);
      }
    };
    pc.onconnectionstatechange = () => { state('connection'); log(`${peerName}: connection ${pc.connectionState}`); };
    pc.oniceconnectionstatechange = () => state('ice');
    pc.onicecandidate = ({ candidate }) => signal(id, { candidate: candidate ? candidate.toJSON() : null });
    pc.ontrack = ({ track, streams }) => { log(`${peerName}: remote ${track.kind} track`); attach(track, streams); };
    pc.onnegotiationneeded = async () => {
      try {
        peer.makingOffer = true;
        applyPrefs(pc);
        await pc.setLocalDescription();
        signal(id, { description: descJson(pc.localDescription) });
      } catch (e) {
        log(`${peerName}: offer failed: ${e.message}`);
      } finally {
        peer.makingOffer = false;
      }
    };
    if (initiator) {
      // What the newcomer offers: its own tracks (sendrecv with --recv), recvonly for the
      // kinds it does not send when --recv, and a data channel when there is nothing else.
      for (const kind of ['video', 'audio']) {
        const track = S.local && S.local.getTracks().find((t) => t.kind === kind);
        if (track) pc.addTransceiver(track, { direction: c.recv ? 'sendrecv' : 'sendonly', streams: [S.local] });
        else if (c.recv) pc.addTransceiver(kind, { direction: 'recvonly' });
      }
      if (!pc.getTransceivers().length) pc.createDataChannel('media-peer');
      applyPrefs(pc);
    }
    return peer;
  }

  // The answerer side: offered transceivers get our tracks; directions follow --recv.
  function attachLocal(peer) {
    const c = S.cfg;
    for (const t of peer.pc.getTransceivers()) {
      if (t.stopped || t.currentDirection === 'stopped') continue;
      const kind = t.receiver.track.kind;
      const track = S.local && S.local.getTracks().find((x) => x.kind === kind);
      const used = peer.pc.getTransceivers().some((o) => o !== t && o.sender.track === track);
      if (track && !t.sender.track && !used) {
        t.sender.replaceTrack(track);
        t.sender.setStreams(S.local);
        t.direction = c.recv ? 'sendrecv' : 'sendonly';
      } else if (!t.sender.track) {
        t.direction = 'recvonly';
      }
    }
    applyPrefs(peer.pc);
  }

  async function onSignal(peer, data) {
    const pc = peer.pc;
    if ('description' in data && data.description) {
      const d = data.description;
      const collision = d.type === 'offer' && (peer.makingOffer || pc.signalingState !== 'stable');
      peer.ignoreOffer = !peer.polite && collision;
      if (peer.ignoreOffer) { log(`${peer.name}: glare, ignoring their offer (impolite)`); return; }
      await pc.setRemoteDescription({ type: d.type, sdp: d.sdp });
      if (d.type === 'offer') {
        attachLocal(peer);
        await pc.setLocalDescription();
        signal(peer.id, { description: descJson(pc.localDescription) });
      }
      if (pc.signalingState === 'stable') {
        const [o, a] = d.type === 'offer' ? [pc.remoteDescription, pc.localDescription] : [pc.localDescription, pc.remoteDescription];
        log(`${peer.name}: negotiated; video offered [${videoCodecs(o)}], answered [${videoCodecs(a)}]`);
        await pinCodec(peer);
      }
    } else if ('candidate' in data) {
      try {
        await pc.addIceCandidate(data.candidate === null ? undefined : data.candidate);
      } catch (e) {
        if (!peer.ignoreOffer) log(`${peer.name}: addIceCandidate: ${e.message}`);
      }
    }
  }

  window.mpStart = async (cfg) => {
    S.cfg = cfg;
    document.title = `media-peer ${cfg.name}`;
    if (!canSend()) return { error: 'codec', message: `this Chromium cannot send ${cfg.codec} (not in RTCRtpSender.getCapabilities)` };
    if (cfg.codec && !prefs()) return { error: 'codec', message: `this Chromium has no ${cfg.codec}${cfg.codec === 'h264' ? ` ${cfg.h264Profile}` : ''} in RTCRtpReceiver.getCapabilities` };
    const p = prefs();
    S.wanted = p ? { codec: p[0].mimeType, fmtp: p[0].sdpFmtpLine || null } : null;
    if (cfg.send.length) {
      S.local = await navigator.mediaDevices.getUserMedia({
        video: cfg.send.includes('video') ? { width: { exact: cfg.width }, height: { exact: cfg.height }, frameRate: { ideal: cfg.fps, max: cfg.fps } } : false,
        audio: cfg.send.includes('audio'),
      });
      const v = S.local.getVideoTracks()[0];
      if (v) {
        const st = v.getSettings();
        log(`camera ${st.width}x${st.height} @ ${st.frameRate} fps`);
        const el = document.getElementById('local');
        el.srcObject = new MediaStream([v]);
        el.play().catch(() => {});
      }
    }
    await new Promise((resolve, reject) => {
      const ws = new WebSocket(cfg.server);
      S.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', room: cfg.room, name: cfg.name }));
      ws.onerror = () => reject(new Error(`WebSocket ${cfg.server} failed`));
      ws.onclose = (e) => log(`signaling closed (${e.code})`);
      ws.onmessage = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch { return; }
        if (m.type === 'welcome') {
          S.id = m.id;
          S.iceServers = Array.isArray(m.iceServers) ? m.iceServers : [];
          log(`joined ${m.room} as ${m.id}; ${m.peers.length} peer(s) here; iceServers ${S.iceServers.map((s) => [].concat(s.urls).join(' ')).join(', ') || 'none'}`);
          for (const p2 of m.peers) {
            S.names.set(p2.id, p2.name);
            newPeer(p2.id, p2.name, true);
          }
          resolve();
        } else if (m.type === 'peer-joined') {
          S.names.set(m.peer.id, m.peer.name);
          log(`${m.peer.name} (${m.peer.id}) joined`);
        } else if (m.type === 'peer-left') {
          const peer = S.peers.get(m.id);
          if (peer) {
            log(`${peer.name} left`);
            peer.left = now();
          }
        } else if (m.type === 'signal') {
          if (!m.data || typeof m.data !== 'object') return;
          let peer = S.peers.get(m.from);
          if (!peer) peer = newPeer(m.from, S.names.get(m.from) || m.from, false);
          peer.inbox = peer.inbox.then(() => onSignal(peer, m.data)).catch((e) => log(`${peer.name}: signal: ${e.message}`));
        } else if (m.type === 'error') {
          log(`server error ${m.code}: ${m.message}`);
          if (!S.id) reject(new Error(`server error ${m.code}: ${m.message}`));
        }
      };
    });
    return { id: S.id };
  };

  window.mpConnected = () => [...S.peers.values()].filter((p) => p.pc.connectionState === 'connected').length;

  window.mpProgress = async () => {
    const out = [];
    for (const p of S.peers.values()) {
      const parts = [`${p.name}:${p.pc.connectionState}`];
      (await p.pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') parts.push(`sent ${s.framesSent} ${s.frameWidth || 0}x${s.frameHeight || 0}`);
        if (s.type === 'inbound-rtp' && s.kind === 'video') parts.push(`decoded ${s.framesDecoded} ${s.frameWidth || 0}x${s.frameHeight || 0}`);
        if (s.type === 'inbound-rtp' && s.kind === 'audio') parts.push(`samples ${s.totalSamplesReceived}`);
      });
      out.push(parts.join(' '));
    }
    return out.join('; ');
  };

  // Received audio over time: concealment can be judged over the time packets flowed (a
  // receiver conceals once a stream ends, which is not a defect of the stream).
  window.mpAudioPoint = async () => {
    const points = [];
    for (const p of S.peers.values()) {
      (await p.pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          points.push({ peer: p.id, packets: s.packetsReceived || 0, samples: s.totalSamplesReceived || 0, concealed: s.concealedSamples || 0 });
        }
      });
    }
    return points;
  };

  window.mpCollect = async () => {
    const peers = [];
    for (const p of S.peers.values()) {
      const stats = new Map();
      (await p.pc.getStats()).forEach((s) => stats.set(s.id, s));
      const codecOf = (s) => {
        const c = s.codecId && stats.get(s.codecId);
        return c ? { codec: c.mimeType, fmtp: c.sdpFmtpLine || null, payloadType: c.payloadType } : { codec: null, fmtp: null };
      };
      const pick = (s, keys) => Object.fromEntries(keys.filter((k) => s[k] !== undefined).map((k) => [k, s[k]]));
      const outbound = [];
      const inbound = [];
      let pair = null;
      for (const s of stats.values()) {
        if (s.type === 'outbound-rtp') {
          outbound.push({ kind: s.kind, mid: s.mid, ssrc: s.ssrc, ...codecOf(s), ...pick(s, ['framesSent', 'framesEncoded', 'keyFramesEncoded',
            'frameWidth', 'frameHeight', 'framesPerSecond', 'nackCount', 'pliCount', 'firCount', 'retransmittedPacketsSent', 'packetsSent',
            'bytesSent', 'qualityLimitationReason', 'qualityLimitationDurations', 'encoderImplementation', 'targetBitrate', 'active']) });
        } else if (s.type === 'inbound-rtp') {
          inbound.push({ kind: s.kind, mid: s.mid, ssrc: s.ssrc, ...codecOf(s), ...pick(s, ['framesDecoded', 'framesReceived', 'keyFramesDecoded',
            'frameWidth', 'frameHeight', 'framesPerSecond', 'freezeCount', 'totalFreezesDuration', 'pauseCount', 'totalPausesDuration',
            'framesDropped', 'packetsReceived', 'packetsLost', 'bytesReceived', 'nackCount', 'pliCount', 'firCount', 'jitter',
            'retransmittedPacketsReceived', 'retransmittedBytesReceived', 'packetsDiscarded',
            'decoderImplementation', 'totalSamplesReceived', 'concealedSamples', 'silentConcealedSamples', 'concealmentEvents',
            'totalAudioEnergy', 'jitterBufferDelay', 'jitterBufferEmittedCount']) });
        } else if (s.type === 'transport' && s.selectedCandidatePairId) {
          const cp = stats.get(s.selectedCandidatePairId);
          if (cp) {
            const cand = (c) => (c ? { type: c.candidateType, protocol: c.protocol, address: c.address, port: c.port, relayProtocol: c.relayProtocol } : null);
            pair = { local: cand(stats.get(cp.localCandidateId)), remote: cand(stats.get(cp.remoteCandidateId)),
              rtt: cp.currentRoundTripTime, bytesSent: cp.bytesSent, bytesReceived: cp.bytesReceived,
              dtls: s.dtlsState, tls: s.tlsVersion, srtpCipher: s.srtpCipher };
          }
        }
      }
      const video = outbound.find((o) => o.kind === 'video');
      const codecCheck = S.cfg.codec && video ? {
        wanted: S.wanted, sent: video.codec, sentFmtp: video.fmtp, ok: codecOk(video.codec, video.fmtp), forced: p.forced,
      } : null;
      peers.push({ id: p.id, name: p.name, role: p.role, polite: p.polite, createdAt: p.created, connectedAt: p.connectedAt, left: p.left || null,
        connectionState: p.pc.connectionState, states: p.states, pair, outbound, inbound, codecCheck });
    }
    return { id: S.id, wanted: S.wanted, peers, log: S.log };
  };

  window.mpLeave = () => {
    try { if (S.ws && S.ws.readyState === 1) S.ws.send(JSON.stringify({ type: 'leave' })); } catch { /* closing */ }
    for (const p of S.peers.values()) p.pc.close();
  };
}

const HTML = `<!doctype html><meta charset="utf-8"><title>media-peer</title>
<style>video{width:160px;height:120px;background:#000;margin:2px}</style>
<div><video id="local" muted autoplay playsinline></video></div><div id="remote"></div>`;

const chromiumArgs = [
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Harmless when the page comes from our own loopback server (it does); needed otherwise.
  '--disable-features=LocalNetworkAccessChecks' + (opt.mdns ? '' : ',WebRtcHideLocalIpsWithMdns'),
];

let browser = null;
let exiting = false;
async function finish(code, line) {
  if (exiting) return;
  exiting = true;
  if (line) process.stdout.write(`${JSON.stringify(line)}\n`);
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { err(`${sig}, closing`); finish(130); });
// Everything is bounded: start-up, connecting, the duration, the stats.
setTimeout(() => { err('FAIL overall time limit reached'); finish(1); }, (timeout + duration + 60) * 1000).unref();

try {
  browser = await launchChromium(chromiumArgs);
  const page = await browser.newPage();
  if (opt['list-codecs']) {
    await page.setContent(HTML);
    await page.addScriptTag({ content: `(${pageCode.toString()})();` });
    await finish(0, await page.evaluate(() => window.mpCodecs()));
  }
  page.on('console', (m) => {
    // The 404 is the placeholder page (and its favicon) we load from the server on purpose.
    if (['error', 'warning'].includes(m.type()) && !/status of 404/.test(m.text())) err(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => err(`page error: ${e.message}`));
  page.on('crash', () => { err('FAIL the page crashed'); finish(1); });
  await page.exposeFunction('mpLog', (m) => err(m));
  await page.goto(`${origin}/media-peer`, { timeout: timeout * 1000 });
  await page.setContent(HTML);
  await page.addScriptTag({ content: `(${pageCode.toString()})();` });
  const cfg = {
    server: opt.server, room: opt.room, name, send, codec, h264Profile, recv: !!opt.recv, relay: !!opt.relay,
    width, height, fps, forceCodec: !opt['no-force-codec'],
  };
  const started = await Promise.race([page.evaluate((c) => window.mpStart(c), cfg), sleep(timeout * 1000).then(() => ({ error: 'timeout', message: 'joining took too long' }))]);
  if (started.error === 'codec') { err(`FAIL ${started.message}`); await finish(3, { ok: false, name, room: opt.room, error: started.message }); }
  if (started.error) throw new Error(started.message);
  err(`joined as ${started.id}`);

  const deadline = t0 + timeout * 1000;
  let connected = 0;
  while (Date.now() < deadline) {
    connected = await page.evaluate(() => window.mpConnected());
    if (connected >= expectPeers) break;
    await sleep(100);
  }
  if (connected < expectPeers) {
    const got = await page.evaluate(() => window.mpCollect()).catch((e) => ({ error: String(e) }));
    err(`FAIL ${connected} of ${expectPeers} peer(s) connected within ${timeout} s`);
    await finish(2, { ok: false, name, room: opt.room, error: `${connected} of ${expectPeers} peer(s) connected within ${timeout} s`, ...got });
  }
  const tUp = Date.now();
  err(`${connected} peer(s) connected; staying ${duration} s`);
  const audioTimeline = [];
  let nextProgress = statsEvery > 0 ? tUp + statsEvery * 1000 : Infinity;
  while (Date.now() < tUp + duration * 1000) {
    const left = tUp + duration * 1000 - Date.now();
    await sleep(Math.min(left, 250));
    audioTimeline.push({ t: Date.now() - tUp, points: await page.evaluate(() => window.mpAudioPoint()) });
    if (Date.now() >= nextProgress && Date.now() < tUp + duration * 1000) {
      nextProgress += statsEvery * 1000;
      err(await page.evaluate(() => window.mpProgress()));
    }
  }
  const got = await page.evaluate(() => window.mpCollect());
  got.audioTimeline = audioTimeline;
  const bad = got.peers.filter((p) => p.codecCheck && p.codecCheck.ok === false);
  for (const p of bad) err(`WRONG CODEC to ${p.name}: sending ${p.codecCheck.sent} ${p.codecCheck.sentFmtp || ''}, wanted ${codec}${codec === 'h264' ? ` ${h264Profile}` : ''}`);
  await page.evaluate(() => window.mpLeave()).catch(() => {});
  await finish(0, { ok: true, name, room: opt.room, durationMs: Date.now() - tUp, ...got });
} catch (e) {
  err(`FAIL ${e.message || e}`);
  await finish(1);
}
