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
  setInterval(refreshStats, 1000);
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

function onWelcome(msg) {
  // A new session (first join or after a reconnect): the others know us by a new id now.
  for (const id of [...app.peers.keys()]) removePeer(id, false);
  app.selfId = String(msg.id);
  app.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
  const peers = Array.isArray(msg.peers) ? msg.peers : [];
  for (const p of peers.slice(0, MAX_PEERS - 1)) {
    if (p && typeof p.id === 'string' && p.id !== app.selfId) addPeer(p.id, p.name, true);
  }
  if (peers.length >= MAX_PEERS) notice(`This room has more than ${MAX_PEERS} participants; connected to the first ${MAX_PEERS - 1}.`);
}

function onPeerJoined(p) {
  if (app.peers.has(p.id) || p.id === app.selfId) return;
  if (app.peers.size >= MAX_PEERS - 1) {
    notice(`${cleanName(p.name)} joined, but a call holds at most ${MAX_PEERS} people.`);
    return;
  }
  addPeer(p.id, p.name, false);
  systemLine(`${cleanName(p.name)} joined`);
}

function onPeerLeft(id) {
  const entry = app.peers.get(id);
  if (!entry) return;
  systemLine(`${entry.peer.name} left`);
  removePeer(id, true);
}

function onSignal(from, data) {
  let entry = app.peers.get(from);
  if (!entry) {
    if (app.peers.size >= MAX_PEERS - 1) return;
    entry = addPeer(from, '…', false);
  }
  entry.peer.handleSignal(data);
}

function showServerError(code, message) {
  app.errors.push({ code, message });
  showBanner(`Server: ${message || code} (${code})`, 'error');
}

function showSignalState(state, detail) {
  app.signalState = state;
  const pill = $('signal-state');
  pill.dataset.state = state;
  const labels = { connecting: 'connecting…', joining: 'joining…', joined: 'online', closed: 'left' };
  pill.textContent = state === 'reconnecting' ? `offline, retrying in ${Math.ceil(detail / 1000)} s` : labels[state] || state;
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
      change: (p) => renderPeer(p),
      chat: (p, text) => chatLine({ from: p.id, name: p.name, text, mine: false }),
      fileChannel: (p, ch) => startReceive(p, ch),
      log: (p, text) => console.warn(`peer ${p.name}: ${text}`),
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
  receiveFile(ch, newTransfer(peer));
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
