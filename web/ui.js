// DOM helpers. Everything that comes from the network or a user is put in with textContent
// (or as a property such as href = an object URL we made); nothing is ever parsed as HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n;
  let i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// A tile that changes source (a room switching between a mesh and the server) readies the new
// stream in a hidden second <video> and swaps once that one has a frame, so the picture never
// goes blank while the element loads; at most this long.
const SWAP_WAIT_MS = 1500;

/** A participant tile: video, name, connection state, network details. */
export class Tile {
  constructor({ key, name, self }) {
    const node = $('tile-template').content.firstElementChild.cloneNode(true);
    node.dataset.peer = key;
    if (self) node.classList.add('self');
    this.node = node;
    this.video = node.querySelector('video');
    this.nameEl = node.querySelector('.tile-name');
    this.stateEl = node.querySelector('.tile-state');
    this.netEl = node.querySelector('.tile-net');
    this.unmuteBtn = node.querySelector('.unmute');
    this.self = self;
    this.pending = null; // { stream, video, timer }: the next source, readied in a hidden <video>
    this.setName(name);
    if (self) this.video.muted = true; // never play our own microphone back
    this.unmuteBtn.onclick = () => {
      this.video.muted = false;
      this.unmuteBtn.hidden = true;
      this.video.play().catch(() => {});
    };
  }

  setName(name) {
    this.nameEl.textContent = this.self ? `${name} (you)` : name;
  }

  setStream(stream) {
    const hasVideo = !!stream && stream.getVideoTracks().some((t) => t.readyState === 'live');
    if (this.pending?.stream === stream) return;
    const showing = !!this.video.srcObject && !this.video.paused && this.video.readyState >= 2
      && !this.node.classList.contains('no-video');
    if (stream && hasVideo && showing && this.video.srcObject !== stream && !this.self) {
      this.prepare(stream);
      return;
    }
    this.cancelSwap();
    this.node.classList.toggle('no-video', !hasVideo);
    if (this.video.srcObject === stream && (!stream || !this.video.paused)) return;
    this.video.srcObject = stream;
    if (!stream) return;
    const p = this.video.play();
    // Our own picture: nothing to do if it cannot play (e.g. the tile was removed meanwhile).
    if (p && this.self) p.catch(() => {});
    if (p && !this.self) {
      p.catch(() => {
        // Autoplay with sound refused (no user gesture yet): play muted, offer to unmute.
        this.video.muted = true;
        this.unmuteBtn.hidden = false;
        this.video.play().catch(() => {});
      });
    }
  }

  /** Readies `stream` in a hidden <video>; it replaces the shown one once it has a frame. */
  prepare(stream) {
    this.cancelSwap();
    const v = el('video', 'standby');
    v.playsInline = true;
    v.autoplay = true;
    v.muted = true; // until it is the one shown
    this.video.after(v);
    v.srcObject = stream;
    const pending = { stream, video: v, timer: null };
    this.pending = pending;
    const swap = () => {
      if (this.pending !== pending) return;
      this.pending = null;
      clearTimeout(pending.timer);
      const old = this.video;
      v.classList.remove('standby');
      this.video = v;
      old.remove();
      old.srcObject = null;
      this.node.classList.toggle('no-video', !stream.getVideoTracks().some((t) => t.readyState === 'live'));
      if (!old.muted) {
        v.muted = false;
        v.play().catch(() => {
          v.muted = true;
          this.unmuteBtn.hidden = false;
          v.play().catch(() => {});
        });
      }
    };
    v.addEventListener('loadeddata', swap, { once: true });
    pending.timer = setTimeout(swap, SWAP_WAIT_MS);
    v.play().catch(() => {});
  }

  cancelSwap() {
    if (!this.pending) return;
    clearTimeout(this.pending.timer);
    this.pending.video.remove();
    this.pending.video.srcObject = null;
    this.pending = null;
  }

  setState(text, kind) {
    this.stateEl.textContent = text;
    this.stateEl.dataset.state = kind || text;
    this.node.dataset.state = kind || text;
  }

  setNet(text) {
    this.netEl.textContent = text;
  }
}

/** One row in the file list, updated in place as the transfer progresses. */
export class TransferRow {
  constructor(key) {
    this.node = el('li', 'transfer');
    this.node.dataset.transfer = key;
    const head = el('div', 'transfer-head');
    this.title = el('span', 'transfer-name');
    this.peer = el('span', 'transfer-peer muted');
    head.append(this.title, this.peer);
    this.bar = el('progress');
    this.bar.max = 1;
    this.bar.value = 0;
    const foot = el('div', 'transfer-foot');
    this.info = el('span', 'transfer-info muted');
    this.status = el('span', 'transfer-status');
    foot.append(this.info, this.status);
    this.node.append(head, this.bar, foot);
    this.link = null;
  }

  update(t, peerName) {
    this.node.dataset.status = t.status;
    this.node.dataset.direction = t.direction;
    this.title.textContent = t.name || '…';
    this.peer.textContent = `${t.direction === 'send' ? 'to' : 'from'} ${peerName}`;
    this.bar.value = t.size ? t.bytes / t.size : (t.status === 'confirmed' || t.status === 'verified' ? 1 : 0);
    const end = t.finished ?? performance.now();
    const secs = Math.max((end - t.started) / 1000, 0.001);
    const rate = t.bytes / secs;
    this.info.textContent = `${formatBytes(t.bytes)} / ${formatBytes(t.size)} · ${formatBytes(Math.round(rate))}/s`;
    const labels = {
      waiting: 'waiting', sending: 'sending', receiving: 'receiving', verifying: 'verifying',
      confirmed: 'delivered, SHA-256 confirmed', verified: 'SHA-256 verified', failed: 'failed',
    };
    this.status.textContent = t.status === 'failed' && t.reason ? `failed: ${t.reason}`
      : t.status === 'confirmed' && t.receivers ? `delivered, SHA-256 confirmed by ${t.confirmed} of ${t.receivers}`
        : labels[t.status] || t.status;
    if (t.url && !this.link) {
      this.link = el('a', 'btn small primary save', 'Save');
      this.link.href = t.url;
      this.link.download = t.name;
      this.link.title = `Save ${t.name}`;
      this.node.append(this.link);
    }
  }
}
