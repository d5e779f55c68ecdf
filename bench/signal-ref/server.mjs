// The signaling server self-hosters typically write by hand: Node.js and the `ws` package,
// rooms in a Map, JSON in and out. It speaks Peerlink's protocol (join / signal / leave;
// welcome / peer-joined / peer-left / signal / error) with the same 64 KiB frame limit, no
// rate limit, no keepalive. Used only as the benchmark reference for `peerlink serve`.
//
//   node server.mjs PORT      (prints "listening on PORT")
import { WebSocketServer } from 'ws';
import { randomBytes } from 'node:crypto';

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port, maxPayload: 1 << 20, path: '/ws' });
const rooms = new Map(); // room -> Map(id -> {ws, name})

const send = (ws, msg) => ws.send(JSON.stringify(msg));
const error = (ws, code, message) => send(ws, { type: 'error', code, message });

wss.on('connection', (ws) => {
  let me = null; // {id, room}
  const leave = () => {
    if (!me) return;
    const peers = rooms.get(me.room);
    peers.delete(me.id);
    if (peers.size === 0) rooms.delete(me.room);
    for (const p of peers.values()) send(p.ws, { type: 'peer-left', id: me.id });
    me = null;
  };
  ws.on('message', (data, isBinary) => {
    if (isBinary) return error(ws, 'bad-request', 'text frames only');
    if (data.length > 65536) return error(ws, 'too-large', 'frame too large');
    let msg;
    try { msg = JSON.parse(data); } catch { return error(ws, 'bad-request', 'not JSON'); }
    if (msg.type === 'join') {
      if (me) return error(ws, 'already-joined', 'already in a room');
      if (typeof msg.room !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(msg.room)) {
        return error(ws, 'bad-room', 'bad room');
      }
      if (typeof msg.name !== 'string' || msg.name.length < 1 || msg.name.length > 32) {
        return error(ws, 'bad-name', 'bad name');
      }
      const peers = rooms.get(msg.room) || new Map();
      rooms.set(msg.room, peers);
      const id = randomBytes(8).toString('hex');
      send(ws, {
        type: 'welcome', id, room: msg.room, iceServers: [],
        peers: [...peers.entries()].map(([pid, p]) => ({ id: pid, name: p.name })),
      });
      for (const p of peers.values()) send(p.ws, { type: 'peer-joined', peer: { id, name: msg.name } });
      peers.set(id, { ws, name: msg.name });
      me = { id, room: msg.room };
    } else if (msg.type === 'signal') {
      if (!me) return error(ws, 'not-joined', 'join first');
      const target = rooms.get(me.room).get(msg.to);
      if (!target || msg.to === me.id) return error(ws, 'unknown-peer', 'no such peer');
      send(target.ws, { type: 'signal', from: me.id, data: msg.data });
    } else if (msg.type === 'leave') {
      leave();
    } else {
      error(ws, 'unknown-type', 'unknown type');
    }
  });
  ws.on('close', leave);
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening on ${wss.address().port}`));
