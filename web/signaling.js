// The signaling client: one WebSocket to /ws speaking the protocol of docs/signaling.md.
// Reconnects with exponential backoff (with jitter) and joins again asking for the id it had,
// so the peers it still has connections with recognise it: a signaling outage or a server
// restart leaves calls alone. onWelcome learns whether the id was granted (`rejoined`).

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class Signaling {
  /**
   * @param {object} opts
   * @param {string} opts.url       ws(s)://host/ws
   * @param {object} opts.join      {room, name, token?}
   * @param {object} opts.handlers  onWelcome(msg, {rejoined}), onPeerJoined(peer), onPeerLeft(id),
   *                                onSignal(from, data), onMode(mode), onError(code, message),
   *                                onState(state, retryMs), onDisconnected()
   */
  constructor({ url, join, handlers }) {
    this.url = url;
    this.join = join;
    this.h = handlers;
    this.ws = null;
    this.backoff = BACKOFF_MIN_MS;
    this.timer = null;
    this.closed = false;
    this.state = 'idle';
    this.id = null; // granted by the last welcome; asked for again on every rejoin...
    this.resume = null; // ...with its resume token, for a server still holding the old socket
  }

  start() {
    this.closed = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.h.onError('websocket', String(e.message || e));
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const msg = { type: 'join', room: this.join.room, name: this.join.name };
      if (this.join.token) msg.token = this.join.token;
      if (this.id) msg.id = this.id;
      if (this.id && this.resume) msg.resume = this.resume;
      ws.send(JSON.stringify(msg));
      this.setState('joining');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      this.dispatch(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) {
        this.setState('closed');
        return;
      }
      this.h.onDisconnected?.();
      this.retry();
    };
    ws.onerror = () => {}; // onclose follows and carries the retry
  }

  dispatch(msg) {
    switch (msg.type) {
      case 'welcome': {
        if (typeof msg.id !== 'string') break;
        this.backoff = BACKOFF_MIN_MS;
        const rejoined = this.id !== null && msg.id === this.id;
        this.id = msg.id;
        this.resume = typeof msg.resume === 'string' ? msg.resume : null;
        this.setState('joined');
        this.h.onWelcome(msg, { rejoined });
        break;
      }
      case 'peer-joined':
        if (msg.peer && typeof msg.peer.id === 'string') this.h.onPeerJoined(msg.peer);
        break;
      case 'peer-left':
        if (typeof msg.id === 'string') this.h.onPeerLeft(msg.id);
        break;
      case 'signal':
        if (typeof msg.from === 'string') this.h.onSignal(msg.from, msg.data);
        break;
      case 'mode':
        if (msg.mode === 'mesh' || msg.mode === 'sfu') this.h.onMode?.(msg.mode);
        break;
      case 'error':
        this.h.onError(String(msg.code ?? 'error'), String(msg.message ?? ''));
        break;
      default:
        break;
    }
  }

  retry() {
    const delay = this.backoff * (0.75 + Math.random() * 0.5);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.setState('reconnecting', Math.round(delay));
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  signal(to, data) {
    return this.send({ type: 'signal', to, data });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) {
      if (this.state === 'joined') this.send({ type: 'leave' });
      this.ws.close();
    }
  }

  /** Drops this connection and tries again after the backoff (e.g. a rejoin was refused). */
  reconnect() {
    if (this.ws) this.ws.close(); // onclose schedules the retry
  }

  setState(state, detail) {
    this.state = state;
    this.h.onState?.(state, detail);
  }
}
