// Peerlink browser app: joins a room through the signaling server, then runs a mesh of
// RTCPeerConnections (one per other participant) carrying camera/microphone, chat and files.
//
//   /?room=NAME[&name=ME][&token=T][&relay=1]
//
// Modules: signaling.js (WebSocket, reconnect), peer.js (one peer connection, perfect
// negotiation, chat channel, stats), files.js (file channels), sha256.js, ui.js (DOM).
// Test hook: window.peerlinkState is a read-only snapshot of what the page sees.

import { Signaling } from './signaling.js';
import { Peer, MAX_CHAT_CHARS } from './peer.js';
import { sendFile, receiveFile, MAX_FILE_SIZE } from './files.js';
import { $, el, Tile, TransferRow, formatBytes } from './ui.js';

const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
const MAX_PEERS = 6; // participants in a mesh, us included
const MEDIA_TIMEOUT_MS = 10000;

export function validRoom(room) {
  return typeof room === 'string' && ROOM_RE.test(room);
}

export function validName(name) {
  if (typeof name !== 'string') return false;
  const n = [...name].length;
  return n >= 1 && n <= 32 && !CONTROL_RE.test(name) && name.trim() === name;
}

const params = new URLSearchParams(location.search);
const app = {
  room: null,
  name: null,
  token: params.get('token') || null,
  relayOnly: params.get('relay') === '1',
  selfId: null,
  iceServers: [],
  signaling: null,
  signalState: 'idle',
  localStream: null,
  media: 'pending',
  selfTile: null,
  peers: new Map(), // id -> { peer, tile }
  chat: [],
  transfers: new Map(), // key -> { record, row, peerId, peerName }
  errors: [],
  transferSeq: 0,
  rejoins: 0, // welcomes that gave our id back after a lost signaling connection
  everJoined: false,
  statsTimer: null,
  joinProblem: '',
};

// ---- read-only state for tests and debugging ----------------------------------------------

function snapshot() {
  const peers = [...app.peers.values()].map(({ peer }) => ({
    id: peer.id,
    name: peer.name,
    polite: peer.polite,
    connectionState: peer.pc.connectionState,
    iceConnectionState: peer.pc.iceConnectionState,
    signalingState: peer.pc.signalingState,
    localCandidateType: peer.stats.local,
    remoteCandidateType: peer.stats.remote,
    relayProtocol: peer.stats.relayProtocol,
    rttMs: peer.stats.rtt,
    framesDecoded: peer.stats.framesDecoded,
    frameWidth: peer.stats.width,
    frameHeight: peer.stats.height,
    chatOpen: peer.chatOpen,
    iceRestarts: peer.restarts,
    serial: peer.serial,
    inRoom: !peer.away,
  }));
  const transfers = [...app.transfers.values()].map(({ record, peerId, peerName }) => ({
    direction: record.direction, peerId, peerName, name: record.name, size: record.size,
    mime: record.mime, bytes: record.bytes, sha256: record.sha256, status: record.status,
    reason: record.reason,
    ms: record.finished ? Math.round(record.finished - record.started) : null,
  }));
  return JSON.parse(JSON.stringify({
    room: app.room,
    name: app.name,
    selfId: app.selfId,
    relayOnly: app.relayOnly,
    signaling: app.signalState,
    rejoins: app.rejoins,
    joinProblem: app.joinProblem,
    view: $('join').hidden ? 'call' : 'join',
    fileToast: $('file-toast').hidden ? null : $('file-toast-text').textContent,
    media: app.media,
    iceServers: app.iceServers.map((s) => ({ urls: s.urls })),
    peers,
    chat: app.chat,
    chatReceived: app.chat.filter((m) => !m.mine && !m.system),
    filesReceived: transfers.filter((t) => t.direction === 'receive' && t.status === 'verified'),
    filesSent: transfers.filter((t) => t.direction === 'send'),
    transfers,
    errors: app.errors,
  }));
}
Object.defineProperty(window, 'peerlinkState', { get: snapshot, enumerable: true });

// ---- start-up: join form or straight into the room ------------------------------------------

function init() {
  const room = params.get('room');
  let name = params.get('name');
  if (name === null) {
    try { name = localStorage.getItem('peerlink.name'); } catch { name = null; }
  }
  name = name ? name.trim() : name;
  if (validRoom(room) && validName(name)) {
    start(room, name);
    return;
  }
  showJoin(room || '', name || '');
  if (room && !validRoom(room)) setProblem('That room name is not valid: use 1-64 letters, digits, "_", "." or "-", starting with a letter or digit.');
}

function showJoin(room, name) {
  $('join').hidden = false;
  $('call').hidden = true;
  $('controls').hidden = true;
  const roomInput = $('room-input');
  const nameInput = $('name-input');
  roomInput.value = room;
  nameInput.value = name;
  (room && validRoom(room) ? nameInput : roomInput).focus();
  $('join-form').onsubmit = (ev) => {
    ev.preventDefault();
    const r = roomInput.value.trim();
    const n = nameInput.value.trim();
    if (!validRoom(r)) {
      setProblem('Room: 1-64 letters, digits, "_", "." or "-", starting with a letter or digit.');
      roomInput.focus();
      return;
    }
    if (!validName(n)) {
      setProblem('Name: 1-32 characters, no control characters.');
      nameInput.focus();
      return;
    }
    setProblem('');
    start(r, n);
  };
}

function setProblem(text) {
  $('join-problem').textContent = text;
}

async function start(room, name) {
  app.room = room;
  app.name = name;
  app.joinProblem = '';
  app.selfId = null;
  app.everJoined = false;
  try { localStorage.setItem('peerlink.name', name); } catch { /* private mode */ }
  // The shareable address: the room, plus the test/auth switches that were given.
  const q = new URLSearchParams({ room });
  if (params.get('name') !== null) q.set('name', name);
  if (app.token) q.set('token', app.token);
  if (app.relayOnly) q.set('relay', '1');
  history.replaceState(null, '', `${location.pathname}?${q}`);
  document.title = `${room} · Peerlink`;

  $('join').hidden = true;
  $('call').hidden = false;
  $('controls').hidden = false;
  $('room-label').hidden = false;
  $('room-label').textContent = room;
  $('copy-link').hidden = false;
  $('signal-state').hidden = false;
  wireControls();

  app.selfTile = new Tile({ key: 'self', name, self: true });
  app.selfTile.setState('local', 'local');
  $('tiles').append(app.selfTile.node);
  layoutTiles();

  await openMedia();
  app.selfTile.setStream(app.localStream);
  updateMediaButtons();

  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  app.signaling = new Signaling({
    url: `${proto}//${location.host}/ws`,
    join: { room, name, token: app.token },
    handlers: {
      onWelcome, onPeerJoined, onPeerLeft, onSignal, onError: showServerError, onState: showSignalState,
    },
  });
  app.signaling.start();
  clearInterval(app.statsTimer);
  app.statsTimer = setInterval(refreshStats, 1000);
}

async function openMedia() {
  const attempts = [
    { audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 } } },
    { audio: true, video: false },
  ];
  let lastError = null;
  for (const constraints of attempts) {
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error('getUserMedia is not available here (needs https or localhost)');
      const stream = await withTimeout(navigator.mediaDevices.getUserMedia(constraints), MEDIA_TIMEOUT_MS);
      app.localStream = stream;
      app.media = constraints.video ? 'audio+video' : 'audio';
      if (!constraints.video) notice(`Camera unavailable (${lastError}); joined with microphone only.`);
      return;
    } catch (e) {
      lastError = e.name || e.message || String(e);
    }
  }
  app.media = 'none';
  notice(`Camera and microphone unavailable (${lastError}); joined receive-only. Chat and files work.`);
}

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), ms))]);
}

// ---- signaling events ---------------------------------------------------------------------

function onWelcome(msg, { rejoined } = {}) {
  app.everJoined = true;
  app.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
  const id = String(msg.id);
  const peers = (Array.isArray(msg.peers) ? msg.peers : [])
    .filter((p) => p && typeof p.id === 'string' && p.id !== id);
  if (rejoined && id === app.selfId) {
    // Back after a lost signaling connection under the same id: the others still know us.
    // Working connections stay as they are (no new offer); only peers we have no working
    // connection with are offered to, as a newcomer would.
    app.rejoins++;
    const listed = new Set(peers.map((p) => p.id));
    for (const { peer } of [...app.peers.values()]) {
      if (!listed.has(peer.id)) peerAway(peer); // reconnecting too, or gone
    }
    for (const p of peers) {
      const entry = app.peers.get(p.id);
      if (entry?.peer.live) {
        entry.peer.away = false;
        renderPeer(entry.peer);
        continue;
      }
      if (entry) removePeer(p.id);
      if (app.peers.size < MAX_PEERS - 1) addPeer(p.id, p.name, true);
    }
    return;
  }
  // A new session (first join, or the server could not give our id back): the others know us
  // by a new id now, so every connection starts afresh.
  if (app.peers.size) systemLine('Rejoined the room as a newcomer; reconnecting to everyone.');
  for (const pid of [...app.peers.keys()]) removePeer(pid);
  app.selfId = id;
  for (const p of peers.slice(0, MAX_PEERS - 1)) addPeer(p.id, p.name, true);
  if (peers.length >= MAX_PEERS) notice(`This room has more than ${MAX_PEERS} participants; connected to the first ${MAX_PEERS - 1}.`);
}

function onPeerJoined(p) {
  if (p.id === app.selfId) return;
  const entry = app.peers.get(p.id);
  if (entry) {
    // Someone we know, back in the room after losing signaling (or a server restart): keep a
    // working connection; one that ended or never came up starts again (they will offer).
    const { peer } = entry;
    if (peer.live || (!peer.away && !peer.ended)) {
      peer.away = false;
      peer.name = cleanName(p.name);
      renderPeer(peer);
      return;
    }
    removePeer(p.id);
  } else if (app.peers.size >= MAX_PEERS - 1) {
    notice(`${cleanName(p.name)} joined, but a call holds at most ${MAX_PEERS} people.`);
    return;
  }
  addPeer(p.id, p.name, false);
  if (!entry) systemLine(`${cleanName(p.name)} joined`);
}

function onPeerLeft(id) {
  const entry = app.peers.get(id);
  if (!entry) return;
  peerAway(entry.peer);
}

/** The peer is not in the signaling room. Its session may have ended because it left, or only
 * because its signaling connection was lost (a blip, a server restart): a working connection
 * is kept until it ends by itself; anything else goes now. */
function peerAway(peer) {
  if (peer.live && !peer.ended) {
    peer.away = true;
    renderPeer(peer);
    return;
  }
  systemLine(`${peer.name} left`);
  removePeer(peer.id);
}

/** A peer that is away goes once its connection ends (failed, closed, chat channel closed). */
function checkAway(peer) {
  const entry = app.peers.get(peer.id);
  if (!entry || entry.peer !== peer || !peer.away || !peer.ended) return;
  systemLine(`${peer.name} left`);
  removePeer(peer.id);
}

function onSignal(from, data) {
  let entry = app.peers.get(from);
  if (!entry) {
    if (app.peers.size >= MAX_PEERS - 1) return;
    entry = addPeer(from, '…', false);
  }
  entry.peer.handleSignal(data);
}

// Join refusals, with what the user can do about each.
const JOIN_REFUSALS = {
  'room-full': 'Try again later, or pick another room.',
  'bad-room': 'Pick another room name.',
  'bad-name': 'Pick another name.',
  unauthorized: 'This room needs a valid invitation link.',
};

function showServerError(code, message) {
  app.errors.push({ code, message });
  // A signal to a peer that just left: a normal race, nothing to tell the user.
  if (code === 'unknown-peer') return;
  if (JOIN_REFUSALS[code] && app.signalState !== 'joined') {
    if (!app.everJoined) {
      // Never in: back to the join form with the reason, camera off.
      const why = message ? `${message[0].toUpperCase()}${message.slice(1)}.` : `Refused (${code}).`;
      backToJoin(`${why} ${JOIN_REFUSALS[code]}`);
      return;
    }
    // Refused on the way back in (e.g. the room filled up while we were away): the calls we
    // have go on; signaling tries again later.
    notice(`Could not rejoin the room: ${message || code}. Calls in progress go on; trying again.`);
    app.signaling?.reconnect();
    return;
  }
  showBanner(`Server: ${message || code} (${code})`, 'error');
}

function showSignalState(state, detail) {
  app.signalState = state;
  const pill = $('signal-state');
  pill.dataset.state = state;
  const labels = { connecting: 'connecting…', joining: 'joining…', joined: 'online', closed: 'left' };
  // After a first join, being away from signaling does not touch calls: say only that.
  const away = app.everJoined && ['reconnecting', 'connecting', 'joining'].includes(state);
  pill.textContent = away ? 'signaling reconnecting…'
    : state === 'reconnecting' ? `offline, retrying in ${Math.ceil(detail / 1000)} s` : labels[state] || state;
  pill.title = away ? 'The signaling server is out of reach; calls in progress go on.' : '';
}

/** Leaves the call view for the join form, camera and microphone off, with `problem` shown. */
function backToJoin(problem) {
  app.signaling?.close();
  app.signaling = null;
  clearInterval(app.statsTimer);
  for (const id of [...app.peers.keys()]) removePeer(id);
  app.localStream?.getTracks().forEach((t) => t.stop());
  app.localStream = null;
  app.media = 'pending';
  app.selfTile?.node.remove();
  app.selfTile = null;
  layoutTiles();
  app.signalState = 'idle';
  for (const id of ['room-label', 'copy-link', 'signal-state']) $(id).hidden = true;
  app.joinProblem = problem;
  showJoin(app.room, app.name);
  setProblem(problem);
}

// ---- peers --------------------------------------------------------------------------------

function cleanName(name) {
  const n = typeof name === 'string' ? name.replace(/[\u0000-\u001f\u007f-\u009f]/g, '') : '';
  return [...n].slice(0, 32).join('') || 'anonymous';
}

function addPeer(id, name, initiator) {
  const peerId = id;
  const tile = new Tile({ key: id, name: cleanName(name), self: false });
  const peer = new Peer({
    id,
    name: cleanName(name),
    selfId: app.selfId,
    iceServers: app.iceServers,
    relayOnly: app.relayOnly,
    localStream: app.localStream,
    initiator,
    signal: (data) => app.signaling.signal(peerId, data),
    on: {
      change: (p) => {
        renderPeer(p);
        checkAway(p);
      },
      chat: (p, text) => chatLine({ from: p.id, name: p.name, text, mine: false }),
      fileChannel: (p, ch) => startReceive(p, ch),
      log: (p, text) => console.warn(`peer ${p.name}: ${text}`),
      reset: (p, data) => {
        const entry = app.peers.get(p.id);
        if (!entry || entry.peer !== p) return;
        removePeer(p.id);
        addPeer(p.id, p.name, false).peer.handleSignal(data);
      },
    },
  });
  const entry = { peer, tile };
  app.peers.set(id, entry);
  $('tiles').append(tile.node);
  layoutTiles();
  renderPeer(peer);
  return entry;
}

function removePeer(id) {
  const entry = app.peers.get(id);
  if (!entry) return;
  entry.peer.close();
  entry.tile.node.remove();
  app.peers.delete(id);
  layoutTiles();
}

function renderPeer(peer) {
  const entry = app.peers.get(peer.id);
  if (!entry || entry.peer !== peer) return;
  const { tile } = entry;
  tile.setName(peer.name);
  tile.setStream(peer.remoteStream.getTracks().length ? peer.remoteStream : null);
  const s = peer.pc.connectionState;
  tile.setState(s === 'new' ? 'waiting' : s, s);
  const st = peer.stats;
  const parts = [];
  if (peer.away) parts.push('away from signaling');
  if (st.local) parts.push(`${st.local} ⇄ ${st.remote}`);
  if (st.rtt !== null) parts.push(`${st.rtt} ms`);
  if (st.width) parts.push(`${st.width}×${st.height}${st.fps ? ` ${Math.round(st.fps)} fps` : ''}`);
  tile.setNet(parts.join(' · '));
}

async function refreshStats() {
  for (const { peer } of app.peers.values()) {
    try {
      await peer.refreshStats();
    } catch { /* closed meanwhile */ }
    renderPeer(peer);
  }
}

function layoutTiles() {
  const n = $('tiles').children.length;
  $('tiles').dataset.count = String(n);
}

// ---- chat ---------------------------------------------------------------------------------

function chatLine(m) {
  app.chat.push({ ...m, at: Date.now() });
  const li = el('li', m.system ? 'system' : m.mine ? 'mine' : 'theirs');
  if (!m.system) li.append(el('span', 'who', m.mine ? 'You' : m.name));
  li.append(el('span', 'text', m.text));
  const log = $('chat-log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom || m.mine) log.scrollTop = log.scrollHeight;
}

function systemLine(text) {
  chatLine({ system: true, text });
}

function sendChat(text) {
  let delivered = 0;
  for (const { peer } of app.peers.values()) if (peer.sendChat(text)) delivered++;
  chatLine({ from: app.selfId, name: app.name, text, mine: true, delivered });
  if (!delivered) systemLine(app.peers.size ? 'Not delivered yet: still connecting.' : 'Nobody else is here yet.');
}

// ---- files --------------------------------------------------------------------------------

function newTransfer(peer) {
  const key = `t${++app.transferSeq}`;
  const row = new TransferRow(key);
  const list = $('transfers');
  list.prepend(row.node);
  $('files-empty').hidden = true;
  const entry = { record: null, row, peerId: peer.id, peerName: peer.name };
  app.transfers.set(key, entry);
  return (t) => {
    entry.record = t;
    row.update(t, peer.name);
  };
}

function startReceive(peer, ch) {
  const update = newTransfer(peer);
  let announced = null;
  receiveFile(ch, (t) => {
    update(t);
    // The file list may be out of sight (below the fold on a phone): say a file is coming.
    const stage = t.status === 'verified' ? 'done' : t.status === 'failed' ? 'failed' : 'coming';
    if (t.name && stage !== announced) {
      announced = stage;
      const what = { coming: `${peer.name} is sending you ${t.name} (${formatBytes(t.size)})`,
        done: `${t.name} from ${peer.name} is ready to save`, failed: `${t.name} from ${peer.name} failed` }[stage];
      fileToast(what);
    }
  });
}

function filesInView() {
  const r = $('transfers').closest('.panel').getBoundingClientRect();
  const view = $('call').getBoundingClientRect();
  return r.top < Math.min(view.bottom, innerHeight) - 40 && r.bottom > Math.max(view.top, 0) + 40;
}

let toastTimer = null;
function fileToast(text) {
  clearTimeout(toastTimer);
  if (filesInView()) {
    $('file-toast').hidden = true;
    return;
  }
  $('file-toast-text').textContent = text;
  $('file-toast').hidden = false;
  toastTimer = setTimeout(() => { $('file-toast').hidden = true; }, 15000);
}

function sendFiles(files) {
  const targets = [...app.peers.values()].map((e) => e.peer)
    .filter((p) => p.pc.connectionState === 'connected');
  if (!targets.length) {
    notice('Nobody is connected yet; the file was not sent.');
    return;
  }
  for (const file of files) {
    if (file.size > MAX_FILE_SIZE) {
      notice(`${file.name} is larger than ${formatBytes(MAX_FILE_SIZE)}; not sent.`);
      continue;
    }
    for (const peer of targets) sendFile(peer.openFileChannel(), file, newTransfer(peer));
  }
}

// ---- controls -----------------------------------------------------------------------------

let controlsWired = false;
function wireControls() {
  if (controlsWired) return;
  controlsWired = true;
  $('chat-form').onsubmit = (ev) => {
    ev.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim().slice(0, MAX_CHAT_CHARS);
    if (!text) return;
    input.value = '';
    sendChat(text);
  };
  $('mute-btn').onclick = () => toggleTrack('audio');
  $('camera-btn').onclick = () => toggleTrack('video');
  $('file-btn').onclick = () => $('file-input').click();
  $('file-input').onchange = (ev) => {
    const files = [...ev.target.files];
    ev.target.value = '';
    if (files.length) sendFiles(files);
  };
  $('leave-btn').onclick = leave;
  $('copy-link').onclick = async () => {
    const link = `${location.origin}${location.pathname}?room=${encodeURIComponent(app.room)}`;
    try {
      await navigator.clipboard.writeText(link);
      $('copy-link').textContent = 'Copied';
    } catch {
      window.prompt('Room link', link);
    }
    setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 1500);
  };
  $('error-close').onclick = () => { $('error').hidden = true; };
  $('file-toast-show').onclick = () => {
    $('file-toast').hidden = true;
    $('transfers').closest('.panel').scrollIntoView({ behavior: 'smooth', block: 'start' });
  };
  $('file-toast-close').onclick = () => { $('file-toast').hidden = true; };
  $('call').addEventListener('scroll', () => {
    if (!$('file-toast').hidden && filesInView()) $('file-toast').hidden = true;
  }, { passive: true });
  const call = $('call');
  call.addEventListener('dragover', (ev) => { ev.preventDefault(); call.classList.add('dropping'); });
  call.addEventListener('dragleave', () => call.classList.remove('dropping'));
  call.addEventListener('drop', (ev) => {
    ev.preventDefault();
    call.classList.remove('dropping');
    const files = [...(ev.dataTransfer?.files || [])];
    if (files.length) sendFiles(files);
  });
  window.addEventListener('pagehide', () => app.signaling?.close());
}

function toggleTrack(kind) {
  const tracks = app.localStream ? app.localStream.getTracks().filter((t) => t.kind === kind) : [];
  if (!tracks.length) return;
  const enable = !tracks[0].enabled;
  for (const t of tracks) t.enabled = enable;
  updateMediaButtons();
}

function updateMediaButtons() {
  const has = (kind) => !!app.localStream && app.localStream.getTracks().some((t) => t.kind === kind);
  const on = (kind) => has(kind) && app.localStream.getTracks().some((t) => t.kind === kind && t.enabled);
  const mute = $('mute-btn');
  const cam = $('camera-btn');
  mute.disabled = !has('audio');
  cam.disabled = !has('video');
  mute.textContent = has('audio') && !on('audio') ? 'Unmute' : 'Mute';
  cam.textContent = has('video') && !on('video') ? 'Camera on' : 'Camera off';
  mute.setAttribute('aria-pressed', String(has('audio') && !on('audio')));
  cam.setAttribute('aria-pressed', String(has('video') && !on('video')));
  app.selfTile?.node.classList.toggle('camera-off', has('video') && !on('video'));
}

function leave() {
  app.signaling?.close();
  for (const id of [...app.peers.keys()]) removePeer(id);
  app.localStream?.getTracks().forEach((t) => t.stop());
  location.assign(location.pathname);
}

// ---- messages to the user -----------------------------------------------------------------

function showBanner(text, kind) {
  $('error-text').textContent = text;
  $('error').dataset.kind = kind;
  $('error').hidden = false;
}

function notice(text) {
  showBanner(text, 'notice');
}

init();
