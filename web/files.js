// File transfer over data channels; the framing is specified in docs/file-transfer.md:
//   one new ordered, reliable channel labelled "file" per transfer and direction;
//   sender: text {"type":"file","name","size","mime"}, binary chunks, text {"type":"end","sha256"};
//   receiver: text {"type":"ack","sha256"} or {"type":"error","reason"}; the sender then closes.
// The sender hashes while it reads; the receiver hashes while it receives (sha256.js), so
// neither needs the whole file at once for hashing. The receiver keeps the chunks in memory
// to offer the file for saving.

import { Sha256 } from './sha256.js';

export const CHUNK = 16 * 1024; // what we send; receivers must accept up to MAX_CHUNK
export const MAX_CHUNK = 64 * 1024;
export const MAX_FILE_SIZE = 2 * 1024 ** 3; // in-memory reception in a browser tab
const READ_BLOCK = 1024 * 1024;
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;
const ANSWER_TIMEOUT_MS = 60000;
const OPEN_TIMEOUT_MS = 30000;

/** A display- and download-safe file name: no path, no control characters, at most 255 chars. */
export function safeFileName(name) {
  let n = String(name ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, '');
  n = n.split(/[/\\]/).pop().trim().replace(/^\.+/, '');
  n = [...n].slice(0, 255).join('');
  return n || 'file';
}

function safeMime(mime) {
  return typeof mime === 'string' && /^[\w.+-]{1,64}\/[\w.+-]{1,128}$/.test(mime)
    ? mime : 'application/octet-stream';
}

/**
 * Sends one File/Blob on a fresh "file" channel.
 * @param {RTCDataChannel} ch  created by the caller (Peer.openFileChannel), not yet open
 * @param {File} file
 * @param {(t: object) => void} update  called with the transfer record as it changes
 * @returns {Promise<object>} the transfer record once finished (status confirmed|failed)
 */
export async function sendFile(ch, file, update) {
  const t = {
    direction: 'send', name: safeFileName(file.name), size: file.size, mime: safeMime(file.type),
    bytes: 0, started: performance.now(), finished: null, sha256: null, status: 'waiting', reason: null,
  };
  const emit = () => update({ ...t });
  emit();
  let closed = false;
  let answer = null;
  let wake = null; // resolves the current wait (open, low water, answer, close)
  const poke = () => { if (wake) { const w = wake; wake = null; w(); } };
  const until = (cond, ms, what) => new Promise((resolve, reject) => {
    const timer = ms ? setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) : null;
    const check = () => {
      if (cond()) { clearTimeout(timer); resolve(); return; }
      if (closed) { clearTimeout(timer); reject(new Error('channel closed')); return; }
      wake = check;
    };
    check();
  });
  ch.binaryType = 'arraybuffer';
  ch.bufferedAmountLowThreshold = LOW_WATER;
  ch.onopen = poke;
  ch.onbufferedamountlow = poke;
  ch.onclose = () => { closed = true; poke(); };
  ch.onmessage = (ev) => {
    if (typeof ev.data !== 'string') return;
    try {
      const m = JSON.parse(ev.data);
      if (m && (m.type === 'ack' || m.type === 'error')) { answer = m; poke(); }
    } catch { /* not ours */ }
  };

  try {
    if (file.size > MAX_FILE_SIZE) throw new Error('file too large');
    await until(() => ch.readyState === 'open', OPEN_TIMEOUT_MS, 'the channel to open');
    ch.send(JSON.stringify({ type: 'file', name: t.name, size: t.size, mime: t.mime }));
    t.status = 'sending';
    t.started = performance.now();
    const hash = new Sha256();
    let offset = 0;
    let lastEmit = 0;
    while (offset < file.size) {
      if (answer) throw new Error(`receiver: ${answer.reason || 'refused'}`);
      // Back-pressure: let the SCTP send buffer drain to LOW_WATER before adding more.
      if (ch.bufferedAmount > HIGH_WATER) {
        await until(() => ch.bufferedAmount <= LOW_WATER || answer, 0);
        continue;
      }
      if (ch.readyState !== 'open') throw new Error('channel closed');
      const block = new Uint8Array(await file.slice(offset, offset + READ_BLOCK).arrayBuffer());
      for (let i = 0; i < block.length; i += CHUNK) {
        const chunk = block.subarray(i, i + CHUNK);
        hash.update(chunk);
        ch.send(chunk);
      }
      offset += block.length;
      t.bytes = offset - ch.bufferedAmount;
      const now = performance.now();
      if (now - lastEmit > 150) { lastEmit = now; emit(); }
    }
    t.sha256 = hash.hexDigest();
    ch.send(JSON.stringify({ type: 'end', sha256: t.sha256 }));
    t.status = 'verifying';
    // Keep progress moving while the buffer drains, then wait for the receiver's verdict.
    const progress = setInterval(() => {
      if (ch.readyState === 'open') { t.bytes = Math.max(0, t.size - ch.bufferedAmount); emit(); }
    }, 200);
    try {
      // The answer's time starts once everything left: through the server, a slow receiver
      // holds the sender back for a while before the server drops it.
      ch.bufferedAmountLowThreshold = 0;
      await until(() => ch.bufferedAmount === 0 || answer, 0);
      await until(() => answer, ANSWER_TIMEOUT_MS, "the receiver's answer");
    } finally {
      clearInterval(progress);
    }
    if (answer.type === 'ack' && answer.sha256 === t.sha256) {
      t.status = 'confirmed';
      // Fanned out by the server of a room in SFU mode: how many of how many confirmed.
      if (Number.isSafeInteger(answer.receivers) && Number.isSafeInteger(answer.confirmed)) {
        t.receivers = answer.receivers;
        t.confirmed = answer.confirmed;
      }
    } else if (answer.type === 'ack') {
      throw new Error('receiver computed a different SHA-256');
    } else {
      throw new Error(`receiver: ${String(answer.reason || 'error').slice(0, 200)}`);
    }
    t.bytes = t.size;
  } catch (e) {
    t.status = 'failed';
    t.reason = e.message || String(e);
  } finally {
    t.finished = performance.now();
    ch.onbufferedamountlow = null;
    ch.close();
    emit();
  }
  return { ...t };
}

/**
 * Receives one transfer on a "file" channel opened by the remote peer.
 * @param {RTCDataChannel} ch
 * @param {(t: object) => void} update  called with the transfer record as it changes; once
 *        verified the record carries `url` (an object URL for a Blob of the file).
 */
export function receiveFile(ch, update) {
  ch.binaryType = 'arraybuffer';
  const t = {
    direction: 'receive', name: null, size: 0, mime: null, bytes: 0, started: performance.now(),
    finished: null, sha256: null, status: 'waiting', reason: null, url: null, from: null,
  };
  const emit = () => update({ ...t });
  let hash = null;
  let parts = [];
  let lastEmit = 0;

  const fail = (reason, tell = true) => {
    if (t.status === 'failed' || t.status === 'verified') return;
    t.status = 'failed';
    t.reason = reason;
    t.finished = performance.now();
    parts = [];
    if (tell && ch.readyState === 'open') ch.send(JSON.stringify({ type: 'error', reason }));
    emit();
    // The sender closes after our answer; close ourselves if it does not.
    setTimeout(() => ch.close(), 5000);
  };

  ch.onmessage = (ev) => {
    if (t.status === 'failed' || t.status === 'verified') return;
    if (typeof ev.data === 'string') {
      let m;
      try { m = JSON.parse(ev.data); } catch { fail('bad header'); return; }
      if (!m || typeof m !== 'object') { fail('bad message'); return; }
      if (m.type === 'file' && !hash) {
        if (!Number.isSafeInteger(m.size) || m.size < 0) { fail('bad size'); return; }
        if (m.size > MAX_FILE_SIZE) { fail('file too large'); return; }
        if (typeof m.name !== 'string') { fail('bad name'); return; }
        t.name = safeFileName(m.name);
        // Relayed by the server of a room in SFU mode: who sent it (a peer id).
        if (typeof m.from === 'string') t.from = m.from;
        t.size = m.size;
        t.mime = safeMime(m.mime);
        t.status = 'receiving';
        t.started = performance.now();
        hash = new Sha256();
        emit();
      } else if (m.type === 'end' && hash) {
        if (t.bytes !== t.size) { fail(`size mismatch: got ${t.bytes} of ${t.size} bytes`); return; }
        const digest = hash.hexDigest();
        t.sha256 = digest;
        if (typeof m.sha256 !== 'string' || m.sha256.toLowerCase() !== digest) {
          fail('sha256 mismatch');
          return;
        }
        ch.send(JSON.stringify({ type: 'ack', sha256: digest }));
        t.status = 'verified';
        t.finished = performance.now();
        t.url = URL.createObjectURL(new Blob(parts, { type: t.mime }));
        parts = [];
        emit();
      } else {
        fail(`unexpected ${String(m.type).slice(0, 32)} message`);
      }
      return;
    }
    if (!hash) { fail('data before header'); return; }
    const buf = ev.data;
    if (buf.byteLength > MAX_CHUNK * 4) { fail('chunk too large'); return; }
    if (t.bytes + buf.byteLength > t.size) { fail('more data than announced'); return; }
    hash.update(buf);
    parts.push(buf);
    t.bytes += buf.byteLength;
    const now = performance.now();
    if (now - lastEmit > 150) { lastEmit = now; emit(); }
  };
  ch.onclose = () => {
    if (t.status !== 'verified' && t.status !== 'failed') fail('channel closed before the end', false);
  };
  emit();
}
