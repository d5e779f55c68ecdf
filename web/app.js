// Peerlink browser app: joins a room through the signaling server, then runs a mesh of
// RTCPeerConnections (one per other participant) carrying camera/microphone, chat and files;
// or, in a room the server runs in SFU mode, one connection to the server ("sfu") carrying
// our media up and everyone else's down. Rooms switch modes as they grow and shrink; the
// tiles stay and change source once the new connections deliver (see "Room modes" below).
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
// A mode switch keeps the old connections until the new ones deliver video, at most this long
// once the new side delivered anything (and at most SWITCH_CAP_MS in all).
const SWITCH_BOUND_MS = 3000;
const SWITCH_CAP_MS = 8000;
const SWITCH_POLL_MS = 200;
const SWITCH_STREAK = 2;
const CLOSE_SPACING_MS = 300;
// Back to a mesh, the connections come up one round of meshRound at a time, this far apart.
const MESH_ROUND_MS = 350;
// The others switch at about the same time but not at once: the old connections stay this
// much longer after all our tiles moved, so theirs can move before we close, unless they said
// theirs moved ({"moved": ...} signals, see checkSwitch).
const SWITCH_MARGIN_MS = 2000;
const SFU_REOPEN_MS = 3000;
const SFU_LOST_MS = 4000;

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
  peers: new Map(), // id -> { peer, tile }: mesh connections
  mode: 'mesh', // how the room carries media: 'mesh' or 'sfu' (welcome.mode, mode messages)
  roster: new Map(), // id -> name: the room's members in joining order, us included
  tiles: new Map(), // id -> Tile of a remote participant, whatever carries its media
  sfu: null, // { peer, streams: Map publisher id -> MediaStream, opened }: connection to "sfu"
  switching: null, // the mode switch in progress (see beginSwitch)
  meshTimers: [], // mesh connections still to make after a switch (onMode)
  speaker: null, // who has the floor, as the server says in a room through it
  forwarding: null, // whose video the server forwards us (with last-N), null: everyone's
  switches: [], // finished switches, for tests: { to, ms, moved, forced, at: {id: ms moved}, early, heard }
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
    reason: record.reason, receivers: record.receivers ?? null, confirmed: record.confirmed ?? null,
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
    mode: app.mode,
    switching: app.switching ? app.switching.to : null,
    switches: app.switches,
    sfu: app.sfu ? {
      connectionState: app.sfu.peer.pc.connectionState,
      signalingState: app.sfu.peer.pc.signalingState,
      chatOpen: app.sfu.peer.chatOpen,
      streams: [...app.sfu.streams].map(([id, st]) => ({ id, tracks: st.getTracks().map((t) => `${t.kind}:${t.readyState}`) })),
    } : null,
    tiles: [...app.tiles].map(([id, t]) => ({ id, name: app.roster.get(id) ?? null, source: t.node.dataset.source || null })),
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
      onWelcome, onPeerJoined, onPeerLeft, onSignal, onMode, onError: showServerError, onState: showSignalState,
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
  app.mode = msg.mode === 'sfu' ? 'sfu' : 'mesh';
  clearMeshTimers();
  showMode();
  // The server lists the others in joining order and puts us last.
  app.roster = new Map(peers.map((p) => [p.id, cleanName(p.name)]));
  app.roster.set(id, app.name);
  if (rejoined && id === app.selfId && app.mode === 'sfu') {
    app.rejoins++;
    rejoinSfu(peers);
    return;
  }
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
    // Back in a mesh from a room through the server: the server's connection goes once the
    // mesh delivers.
    if (app.sfu) {
      app.sfu.peer.retiring = true;
      beginSwitch('mesh');
    }
    pruneTiles();
    return;
  }
  // A new session (first join, or the server could not give our id back): the others know us
  // by a new id now, so every connection starts afresh.
  if (app.peers.size || app.sfu) systemLine('Rejoined the room as a newcomer; reconnecting to everyone.');
  cancelSwitch();
  closeSfu();
  for (const pid of [...app.peers.keys()]) removePeer(pid);
  pruneTiles();
  app.selfId = id;
  if (app.mode === 'sfu') {
    openSfu();
    for (const p of peers) tileOf(p.id);
    renderAllTiles();
    return;
  }
  for (const p of peers.slice(0, MAX_PEERS - 1)) addPeer(p.id, p.name, true);
  if (peers.length >= MAX_PEERS) notice(`This room has more than ${MAX_PEERS} participants; connected to the first ${MAX_PEERS - 1}.`);
}

function onPeerJoined(p) {
  if (p.id === app.selfId) return;
  // The server moves a rejoining peer to the end of the room's order.
  app.roster.delete(p.id);
  app.roster.set(p.id, cleanName(p.name));
  if (app.mode === 'sfu') {
    const known = app.tiles.has(p.id);
    tileOf(p.id);
    renderTile(p.id);
    if (!known) systemLine(`${cleanName(p.name)} joined`);
    return;
  }
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
  const name = app.roster.get(id);
  app.roster.delete(id);
  app.sfu?.streams.delete(id);
  const entry = app.peers.get(id);
  if (entry && app.mode === 'mesh') {
    peerAway(entry.peer);
    return;
  }
  // Through the server, a peer's media ends with its session (the server drops it).
  if (entry) removePeer(id);
  const had = app.tiles.has(id);
  dropTile(id);
  if (had && !app.tiles.has(id)) systemLine(`${name ?? 'Someone'} left`);
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
  if (from !== 'sfu' && data && (data.moved === 'sfu' || data.moved === 'mesh')) {
    // A participant shows our video from the new path now (never a new connection).
    const sw = app.switching;
    if (sw && sw.to === data.moved) sw.theirs.add(from);
    return;
  }
  if (from === 'sfu' && data && typeof data.speaker === 'string') {
    // (The server may still be forwarding to us a moment after a switch to a mesh.)
    if (app.mode === 'sfu') showSpeaker(data.speaker);
    return;
  }
  if (from === 'sfu' && data && Array.isArray(data.forwarding)) {
    if (app.mode === 'sfu') showForwarding(data.forwarding);
    return;
  }
  if (from === 'sfu') {
    app.sfu?.peer.handleSignal(data);
    return;
  }
  let entry = app.peers.get(from);
  if (!entry) {
    // Through the server, nobody makes a connection to us (a late signal of a mesh).
    if (app.mode === 'sfu' || app.peers.size >= MAX_PEERS - 1) return;
    entry = addPeer(from, app.roster.get(from) ?? '…', false);
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
  cancelSwitch();
  closeSfu();
  app.speaker = null;
  app.forwarding = null;
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
  const tile = tileOf(id, name);
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
        // A mesh connection replaced by the server's: gone once it ends (the other side
        // closed it), its tile carried on by the server's streams.
        if (p.retiring && p.ended && app.peers.get(p.id)?.peer === p) removePeer(p.id);
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
  renderPeer(peer);
  return entry;
}

function removePeer(id) {
  const entry = app.peers.get(id);
  if (!entry) return;
  entry.peer.close();
  app.peers.delete(id);
  dropTile(id);
  renderTile(id);
}

/** The tile of participant `id`, made on first use. */
function tileOf(id, name) {
  let tile = app.tiles.get(id);
  if (!tile) {
    tile = new Tile({ key: id, name: cleanName(name ?? app.roster.get(id)), self: false });
    tile.node.classList.toggle('speaking', id === app.speaker);
    tile.node.classList.toggle('paused', isPaused(tile, id));
    app.tiles.set(id, tile);
    $('tiles').append(tile.node);
    layoutTiles();
  }
  return tile;
}

/** Removes the tile of `id` once nothing carries its media: no mesh connection, and not a
 * member of a room whose media comes through the server. */
function dropTile(id) {
  const tile = app.tiles.get(id);
  if (!tile || app.peers.has(id) || (app.sfu && app.roster.has(id))) return;
  tile.node.remove();
  app.tiles.delete(id);
  layoutTiles();
}

function pruneTiles() {
  for (const id of [...app.tiles.keys()]) dropTile(id);
}

function renderPeer(peer) {
  const entry = app.peers.get(peer.id);
  if (!entry || entry.peer !== peer) return;
  renderTile(peer.id);
}

/** Shows participant `id` from the source its tile follows now (see sourceOf). */
function renderTile(id) {
  const tile = app.tiles.get(id);
  if (!tile) return;
  const entry = app.peers.get(id);
  const source = sourceOf(id);
  tile.node.dataset.source = source;
  if (source === 'sfu') {
    renderFromSfu(id, tile);
    return;
  }
  if (!entry) {
    tile.setStream(null);
    tile.setState('waiting');
    return;
  }
  const { peer } = entry;
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
  if (app.sfu) {
    try {
      await app.sfu.peer.refreshStats();
    } catch { /* closed meanwhile */ }
    renderAllTiles();
  }
}

function renderAllTiles() {
  for (const id of app.tiles.keys()) renderTile(id);
}

function layoutTiles() {
  const n = $('tiles').children.length;
  $('tiles').dataset.count = String(n);
}

// ---- room modes: a mesh, or through the server (SFU) ----------------------------------------
//
// Each remote participant has one tile, whatever carries its media. A switch (a mode
// message, or a welcome in the other mode after a rejoin) makes the new connections first:
// to "sfu", one connection to the server; to "mesh", one per peer, offering to the peers that
// joined before us as a newcomer does, one pair at a time (meshRound; after a mode message). Each tile keeps showing the
// old source until the new one decodes frames of that participant (its receiver's getStats
// framesDecoded advancing, polled every SWITCH_POLL_MS), then follows the new one (its
// <video> swapped once that has a frame). Once our tile of a participant shows the new
// source we tell that participant ({"moved": <mode>}); what carried video between two
// participants closes when both said so (checkSwitch), or after SWITCH_MARGIN_MS for peers
// that do not say, and whatever is left once every tile moved (or the bound passed). So no
// tile goes black while the new path comes up.

function showMode() {
  const label = $('room-label');
  label.dataset.mode = app.mode;
  label.title = app.mode === 'sfu'
    ? 'Media goes through the server (too many participants for direct connections).'
    : 'Media goes directly between the participants.';
}

/** The server says who has the floor (rooms through the server): that tile is outlined. */
function showSpeaker(id) {
  app.speaker = id;
  for (const [key, tile] of app.tiles) tile.node.classList.toggle('speaking', key === id);
  app.selfTile?.node.classList.toggle('speaking', id === app.selfId);
}

/** The server forwards us only these participants' video (last-N): the others' tiles say
 *  their picture is paused. `null`: everyone's. */
function showForwarding(ids) {
  app.forwarding = ids;
  for (const [key, tile] of app.tiles) tile.node.classList.toggle('paused', isPaused(tile, key));
}

/** Whether `id`'s tile shows a video the server does not forward (not one without video). */
function isPaused(tile, id) {
  const video = tile.node.querySelector('video');
  const hasVideo = !!video?.srcObject?.getVideoTracks?.().length;
  return hasVideo && !!app.forwarding && !app.forwarding.includes(id);
}

function onMode(mode) {
  if (mode === app.mode || !app.selfId) return;
  app.mode = mode;
  clearMeshTimers();
  showMode();
  if (mode === 'sfu') {
    for (const { peer } of app.peers.values()) peer.retiring = true;
    if (!app.sfu || app.sfu.peer.retiring) {
      closeSfu();
      openSfu();
    }
    if (app.peers.size) beginSwitch('sfu');
    else cancelSwitch();
    return;
  }
  // Back to a mesh (no speaker news from the server there): connect as newcomers do, each
  // offering to those who joined before it.
  showSpeaker(null);
  showForwarding(null);
  if (app.sfu) app.sfu.peer.retiring = true;
  // The connections come up in rounds, each page setting up one at a time: several set up at
  // once stall the video the page still shows from the server for up to a second.
  const ids = [...app.roster.keys()];
  const me = ids.indexOf(app.selfId);
  ids.forEach((id, i) => {
    if (id === app.selfId) return;
    const entry = app.peers.get(id);
    if (entry && !entry.peer.ended) {
      entry.peer.retiring = false;
      return;
    }
    if (entry) removePeer(id);
    // Both sides make the connection in their pair's round (an offer that comes first makes
    // it in onSignal).
    const open = () => {
      if (app.mode !== 'mesh' || !app.roster.has(id) || app.peers.has(id)) return;
      if (app.peers.size < MAX_PEERS - 1) addPeer(id, app.roster.get(id), i < me);
    };
    const round = meshRound(i, me, ids.length);
    if (round === 0) open();
    else app.meshTimers.push(setTimeout(open, round * MESH_ROUND_MS));
  });
  if (app.sfu) beginSwitch('mesh');
  else cancelSwitch();
}

function clearMeshTimers() {
  app.meshTimers.forEach(clearTimeout);
  app.meshTimers = [];
}

/** The round (0, 1, ...) in which the participants at positions `a` and `b` of a roster of `n`
 * connect: a round-robin schedule (the circle method), the same on every page, in which each
 * participant meets exactly one other per round. */
function meshRound(a, b, n) {
  const m = n % 2 ? n + 1 : n; // with a bye for an odd roster
  const last = m - 1;
  if (a === last) return (2 * b) % last;
  if (b === last) return (2 * a) % last;
  return (a + b) % last;
}

/** Our connection to the server of a room in SFU mode: polite, our tracks sendonly, one
 * stream per other participant (stream id = its peer id), chat relayed by the server. */
function openSfu() {
  const peer = new Peer({
    id: 'sfu',
    name: 'server',
    selfId: app.selfId,
    sfu: true,
    iceServers: app.iceServers,
    relayOnly: app.relayOnly,
    localStream: app.localStream,
    initiator: true,
    signal: (data) => app.signaling?.signal('sfu', data),
    on: {
      change: (p) => onSfuChange(p),
      track: (p, ev) => onSfuTrack(p, ev),
      chat: (p, text, from) => {
        if (from === app.selfId) return;
        chatLine({ from, name: app.roster.get(from) ?? '…', text, mine: false });
      },
      // A file another participant sent, fanned out by the server (its header says who).
      fileChannel: (p, ch) => startReceive(relayedSender(), ch),
      log: (p, text) => console.warn(`server connection: ${text}`),
    },
  });
  app.sfu = { peer, streams: new Map(), opened: performance.now() };
}

function closeSfu() {
  if (!app.sfu) return;
  const { peer } = app.sfu;
  app.sfu = null;
  peer.close();
  pruneTiles();
  renderAllTiles();
}

/** Same id granted after a lost signaling connection, the room in SFU mode. A connection to
 * the server that still works stays (the server kept us); otherwise a new one. */
function rejoinSfu(peers) {
  for (const { peer } of app.peers.values()) peer.retiring = true;
  // (A connection that looks up may still be dead: a restarted server; onSfuChange replaces it
  // once ICE says so.)
  if (!app.sfu || app.sfu.peer.retiring || app.sfu.peer.pc.connectionState !== 'connected') replaceSfu();
  for (const p of peers) tileOf(p.id);
  pruneTiles();
  if (app.peers.size) beginSwitch('sfu');
  renderAllTiles();
}

/** A new connection to the server in place of ours; the tiles stay. */
function replaceSfu() {
  const old = app.sfu;
  openSfu();
  old?.peer.close();
  renderAllTiles();
}

let sfuReopened = 0;
function onSfuChange(p) {
  if (app.sfu?.peer !== p) return;
  renderAllTiles();
  // The server dropped our connection, or stopped answering for SFU_LOST_MS (e.g. it
  // restarted): a new one, while the room is still through the server and we are in it.
  const now = performance.now();
  if (p.pc.connectionState !== 'disconnected') {
    p.lostSince = null;
  } else if (!p.lostSince) {
    p.lostSince = now;
    setTimeout(() => onSfuChange(p), SFU_LOST_MS + 50);
  }
  const lost = p.ended || (p.lostSince && now - p.lostSince >= SFU_LOST_MS);
  if (lost && !p.retiring && app.mode === 'sfu' && app.signalState === 'joined' && now - sfuReopened > SFU_REOPEN_MS) {
    sfuReopened = now;
    console.warn('server connection lost; making a new one');
    replaceSfu();
  }
}

function onSfuTrack(p, ev) {
  if (app.sfu?.peer !== p) return;
  const stream = ev.streams[0];
  if (!stream || stream.id === app.selfId) return;
  const id = stream.id;
  app.sfu.streams.set(id, stream);
  // The server stops a track's section when its publisher leaves.
  stream.onremovetrack = () => renderTile(id);
  ev.track.onunmute = () => renderTile(id);
  ev.track.onended = () => renderTile(id);
  if (app.roster.has(id)) tileOf(id);
  renderTile(id);
}

function renderFromSfu(id, tile) {
  const link = app.sfu?.peer;
  const stream = app.sfu?.streams.get(id);
  tile.setName(app.roster.get(id) ?? '…');
  tile.setStream(stream && stream.getTracks().length ? stream : null);
  if (!link) {
    tile.setState('waiting');
    return;
  }
  const s = link.pc.connectionState;
  tile.setState(s === 'new' ? 'waiting' : s, s);
  const st = link.stats;
  const parts = ['via server'];
  if (st.rtt !== null) parts.push(`${st.rtt} ms`);
  const video = liveVideo(stream);
  const v = video && st.tracks.get(video.id);
  if (v?.width) parts.push(`${v.width}×${v.height}${v.fps ? ` ${Math.round(v.fps)} fps` : ''}`);
  tile.setNet(parts.join(' · '));
}

function liveVideo(stream) {
  return stream ? stream.getVideoTracks().filter((t) => t.readyState === 'live').pop() || null : null;
}

/** Which connection the tile of `id` shows: during a switch the old one until the new one
 * delivers that participant's video; otherwise the room's mode; whichever exists. */
function sourceOf(id) {
  const sw = app.switching;
  let want = app.mode;
  if (sw && !sw.moved.has(id)) want = sw.to === 'sfu' ? 'mesh' : 'sfu';
  const hasMesh = app.peers.has(id);
  const hasSfu = !!app.sfu?.streams.has(id);
  if (want === 'mesh' && !hasMesh && (hasSfu || app.sfu)) return 'sfu';
  if (want === 'sfu' && !hasSfu && hasMesh) return 'mesh';
  return want;
}

function beginSwitch(to) {
  cancelSwitch();
  const sw = { to, started: performance.now(), delivered: null, allMoved: null, moved: new Set(),
    seen: new Map(), movedAt: new Map(), told: new Set(), theirs: new Set(), early: 0, lastClose: -Infinity,
    at: {}, wall: Date.now(), timer: null, busy: false };
  app.switching = sw;
  sw.timer = setInterval(() => checkSwitch(sw), SWITCH_POLL_MS);
  renderAllTiles();
}

function cancelSwitch() {
  if (!app.switching) return;
  clearInterval(app.switching.timer);
  app.switching = null;
}

async function checkSwitch(sw) {
  if (app.switching !== sw || sw.busy) return;
  sw.busy = true;
  let frames;
  try {
    frames = await framesFrom(sw.to);
  } finally {
    sw.busy = false;
  }
  if (app.switching !== sw) return;
  for (const id of app.tiles.keys()) {
    const f = frames.get(id);
    if (sw.moved.has(id) || f === undefined) continue;
    // Frames decoded in SWITCH_STREAK polls in a row: the new path flows (a first key frame
    // alone may be followed by a stall while the sender's new encoder settles).
    const seen = sw.seen.get(id);
    const streak = seen && f > seen.frames ? seen.streak + 1 : 0;
    sw.seen.set(id, { frames: f, streak });
    if (streak >= SWITCH_STREAK) {
      sw.moved.add(id);
      sw.delivered ??= performance.now();
      sw.at[id.slice(0, 6)] = Math.round(performance.now() - sw.started);
      sw.movedAt.set(id, performance.now());
      renderTile(id);
    }
  }
  // Once our tile shows the new source (its <video> swapped, ui.js prepare), its owner is
  // told: it may then close what carried our video to it once it also moved ours. (To the
  // server, only peers we had a mesh connection with need to know.)
  for (const id of sw.moved) {
    const tile = app.tiles.get(id);
    if (sw.told.has(id) || !tile || tile.pending) continue;
    sw.told.add(id);
    if (sw.to === 'mesh' || app.peers.has(id)) app.signaling?.signal(id, { moved: sw.to });
  }
  // To the server: each mesh connection goes once both its ends show the server's video, or
  // SWITCH_MARGIN_MS after our tile moved when the other end does not say (a native peer, an
  // older app); one at a time, CLOSE_SPACING_MS apart (a close tears down a connection's
  // encoders and decoders at once). Decoding both paths of everyone is what a small machine
  // cannot afford for long.
  if (sw.to === 'sfu') {
    for (const [id, at] of sw.movedAt) {
      const entry = app.peers.get(id);
      const now = performance.now();
      if (!entry?.peer.retiring || now - sw.lastClose < CLOSE_SPACING_MS) continue;
      const both = sw.told.has(id) && sw.theirs.has(id);
      if (both || now - at >= SWITCH_MARGIN_MS) {
        if (both) sw.early += 1;
        sw.lastClose = now;
        removePeer(id);
      }
    }
  }
  const oldSide = (id) => (sw.to === 'sfu' ? app.peers.has(id) : !!app.sfu?.streams.has(id));
  const waiting = [...app.tiles.keys()].filter((id) => !sw.moved.has(id) && oldSide(id));
  const now = performance.now();
  const bound = sw.delivered === null ? SWITCH_CAP_MS : Math.min(SWITCH_CAP_MS, sw.delivered - sw.started + SWITCH_BOUND_MS);
  if (!waiting.length) sw.allMoved ??= now;
  // Nobody still needs the old path from us, and our tiles show the new one: to the server,
  // every old mesh connection closed; back to a mesh, every other participant of the room
  // (with or without a connection with us yet) said it shows our video from the mesh.
  const others = [...app.roster.keys()].filter((id) => id !== app.selfId);
  const heard = sw.to === 'sfu'
    ? ![...app.peers.values()].some(({ peer }) => peer.retiring)
    : others.length > 0 && others.every((id) => sw.theirs.has(id)) && [...sw.moved].every((id) => sw.told.has(id));
  const early = waiting.length || (now - sw.allMoved < SWITCH_MARGIN_MS && !heard);
  if (early && now - sw.started < bound) return;
  finishSwitch(sw, waiting, !waiting.length && heard);
}

/** Frames decoded so far per participant on the connection(s) of mode `to`. Only the video
 * receivers' stats: cheaper than each connection's whole report, several times a second. */
async function framesFrom(to) {
  const tracks = []; // [participant id, pc, remote video track]
  if (to === 'sfu' && app.sfu) {
    for (const [id, stream] of app.sfu.streams) tracks.push([id, app.sfu.peer.pc, liveVideo(stream)]);
  } else if (to === 'mesh') {
    for (const [id, { peer }] of app.peers) tracks.push([id, peer.pc, liveVideo(peer.remoteStream)]);
  }
  const out = new Map();
  await Promise.all(tracks.map(async ([id, pc, track]) => {
    const receiver = track && pc.getReceivers().find((r) => r.track === track);
    if (!receiver) return;
    try {
      (await receiver.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') out.set(id, s.framesDecoded || 0);
      });
    } catch { /* closed meanwhile */ }
  }));
  return out;
}

function finishSwitch(sw, waiting, heard = false) {
  clearInterval(sw.timer);
  app.switching = null;
  // (early: old connections closed on both ends' word; heard: the switch ended on the others'
  // word rather than at the margin or the bound.)
  app.switches.push({ to: sw.to, ms: Math.round(performance.now() - sw.started), moved: sw.moved.size,
    forced: waiting.length, at: sw.at, wall: sw.wall, early: sw.early, heard });
  if (sw.to === 'sfu' && app.mode === 'sfu') {
    // One at a time: closing a connection tears down its encoders and decoders at once.
    const old = [...app.peers].filter(([, { peer }]) => peer.retiring);
    old.forEach(([id, { peer }], i) => setTimeout(() => {
      if (app.peers.get(id)?.peer === peer && peer.retiring) removePeer(id);
    }, i * CLOSE_SPACING_MS));
  } else if (sw.to === 'mesh' && app.mode === 'mesh' && app.sfu?.peer.retiring) {
    closeSfu();
  }
  renderAllTiles();
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
  // Through the server when its chat channel is open (it relays to everyone), else over
  // the mesh (also during a switch to the server, until its channel opens).
  const others = app.roster.size - 1;
  if (app.sfu && !app.sfu.peer.retiring && app.sfu.peer.sendChat(text)) delivered = Math.max(others, 1);
  else for (const { peer } of app.peers.values()) if (peer.sendChat(text)) delivered++;
  chatLine({ from: app.selfId, name: app.name, text, mine: true, delivered });
  if (delivered) return;
  if (app.mode === 'sfu' && app.sfu?.peer.pc.connectionState === 'connected'
      && performance.now() - app.sfu.opened > 5000) {
    systemLine('Not delivered: this server does not relay chat in rooms through the server.');
    return;
  }
  systemLine(app.peers.size || app.sfu ? 'Not delivered yet: still connecting.' : 'Nobody else is here yet.');
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
    // (A relayed file's sender is known from its header on.)
    entry.peerId = peer.id;
    entry.peerName = peer.name;
    entry.record = t;
    row.update(t, peer.name);
  };
}

/** The sender of a file the server relays: named once its header arrives. */
function relayedSender() {
  return { id: 'sfu', name: 'someone in the room', relayed: true };
}

function startReceive(peer, ch) {
  const update = newTransfer(peer);
  let announced = null;
  receiveFile(ch, (t) => {
    if (peer.relayed && t.from) {
      peer.id = t.from;
      peer.name = app.roster.get(t.from) ?? 'someone in the room';
    }
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
  // Each file goes on a channel of its own to each target: the peers in a mesh, or the server,
  // which fans it out to everyone else and answers once every receiver checked the SHA-256
  // (docs/file-transfer.md).
  let targets;
  if (app.mode === 'sfu') {
    const link = app.sfu && !app.sfu.peer.retiring ? app.sfu.peer : null;
    if (!link || link.pc.connectionState !== 'connected') {
      notice('Not connected to the server yet; the file was not sent.');
      return;
    }
    targets = [{ link, who: { id: 'sfu', name: 'everyone (through the server)' } }];
  } else {
    targets = [...app.peers.values()].map((e) => e.peer)
      .filter((p) => p.pc.connectionState === 'connected').map((p) => ({ link: p, who: p }));
    if (!targets.length) {
      notice('Nobody is connected yet; the file was not sent.');
      return;
    }
  }
  for (const file of files) {
    if (file.size > MAX_FILE_SIZE) {
      notice(`${file.name} is larger than ${formatBytes(MAX_FILE_SIZE)}; not sent.`);
      continue;
    }
    for (const { link, who } of targets) sendFile(link.openFileChannel(), file, newTransfer(who));
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
  cancelSwitch();
  closeSfu();
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
