// Media for a test peer that takes and gives RTP packets (werift): VP8 frames read from an IVF
// file and Opus packets from an Ogg file (both made by ffmpeg) cut into RTP payloads here
// (RFC 7741, RFC 7587), and received VP8 put back together into whole frames (the packets of
// one timestamp from the start of partition 0 to the marker, no sequence number missing) and
// written to an IVF file for ffmpeg to judge. No codec: the files are encoded already.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

/** An IVF file's frames: { rate, scale, frames: [Buffer] } (a 32-byte header, then 12 bytes
 * before each frame: size and time). */
export function readIvf(path) {
  const b = readFileSync(path);
  if (b.toString('latin1', 0, 4) !== 'DKIF') throw new Error(`${path}: not IVF`);
  const headerSize = b.readUInt16LE(6);
  const out = { rate: b.readUInt32LE(16), scale: b.readUInt32LE(20), frames: [] };
  for (let at = headerSize; at + 12 <= b.length;) {
    const size = b.readUInt32LE(at);
    if (at + 12 + size > b.length) break;
    out.frames.push(b.subarray(at + 12, at + 12 + size));
    at += 12 + size;
  }
  return out;
}

/** The Opus packets of an Ogg file (RFC 7845), OpusHead and OpusTags left out. */
export function readOggOpus(path) {
  const b = readFileSync(path);
  const packets = [];
  let partial = [];
  for (let at = 0; at + 27 <= b.length;) {
    if (b.toString('latin1', at, at + 4) !== 'OggS') throw new Error(`${path}: no Ogg page at ${at}`);
    const segments = b[at + 26];
    let body = at + 27 + segments;
    for (let i = 0; i < segments; i++) {
      const lace = b[at + 27 + i];
      partial.push(b.subarray(body, body + lace));
      body += lace;
      if (lace < 255) {
        packets.push(Buffer.concat(partial));
        partial = [];
      }
    }
    at = body;
  }
  return packets.filter((p) => !/^Opus(Head|Tags)/.test(p.toString('latin1', 0, 8)));
}

/** Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 §3.1). */
export function opusSamples(p) {
  const config = p[0] >> 3;
  const frameMs = config < 12 ? [10, 20, 40, 60][config & 3] : config < 16 ? [10, 20][config & 1] : [2.5, 5, 10, 20][config & 3];
  const count = [1, 2, 2, (p[1] ?? 0) & 0x3f][p[0] & 3];
  return Math.round(48 * frameMs * count);
}

/** RFC 7741 §4.2: payloads of at most `max` bytes, a one-byte descriptor each (S on the first,
 * partition 0). */
export function vp8Payloads(frame, max = 1200) {
  const out = [];
  for (let at = 0; at < frame.length; at += max - 1) {
    out.push(Buffer.concat([Buffer.from([at === 0 ? 0x10 : 0x00]), frame.subarray(at, at + max - 1)]));
  }
  return out;
}

/** The VP8 payload descriptor's length and whether the packet starts partition 0
 * (RFC 7741 §4.2). */
function vp8Descriptor(p) {
  let n = 1;
  if (p[0] & 0x80) {
    const x = p[1];
    n = 2;
    if (x & 0x80) n += p[n] & 0x80 ? 2 : 1;
    if (x & 0x40) n += 1;
    if (x & 0x30) n += 1;
  }
  return { length: n, start: (p[0] & 0x10) !== 0 && (p[0] & 0x0f) === 0 };
}

/** Whole VP8 frames from RTP packets ({ sequenceNumber, timestamp, marker, payload }). */
export class Vp8Assembler {
  constructor() { this.pending = new Map(); }

  /** The frame this packet completes, or null. */
  push(h, payload) {
    const ps = this.pending.get(h.timestamp) || [];
    ps.push({ seq: h.sequenceNumber, marker: h.marker, payload });
    this.pending.set(h.timestamp, ps);
    const head = ps.find((q) => vp8Descriptor(q.payload).start);
    const tail = ps.find((q) => q.marker);
    if (!head || !tail) return null;
    const bySeq = new Map(ps.map((q) => [q.seq, q]));
    const parts = [];
    for (let s = head.seq; ; s = (s + 1) & 0xffff) {
      const q = bySeq.get(s);
      if (!q) return null;
      parts.push(q.payload.subarray(vp8Descriptor(q.payload).length));
      if (s === tail.seq) break;
    }
    this.pending.delete(h.timestamp);
    for (const ts of this.pending.keys()) if (((h.timestamp - ts) >>> 0) < 0x80000000 && h.timestamp - ts > 90000) this.pending.delete(ts);
    return Buffer.concat(parts);
  }
}

/** Key frame or not, and the size a key frame gives (RFC 6386 §9.1). */
export function vp8FrameInfo(f) {
  if (f.length < 10 || (f[0] & 1) !== 0) return { key: false };
  return { key: true, width: f.readUInt16LE(6) & 0x3fff, height: f.readUInt16LE(8) & 0x3fff };
}

/** An IVF file of VP8 frames timed by the RTP clock (1/90000). */
export class IvfWriter {
  constructor(path) {
    this.fd = openSync(path, 'w');
    this.frames = 0;
    this.first = null;
    const h = Buffer.alloc(32);
    h.write('DKIF', 0, 'latin1');
    h.writeUInt16LE(32, 6);
    h.write('VP80', 8, 'latin1');
    h.writeUInt16LE(320, 12);
    h.writeUInt16LE(240, 14);
    h.writeUInt32LE(90000, 16);
    h.writeUInt32LE(1, 20);
    writeSync(this.fd, h);
  }

  write(frame, timestamp) {
    if (this.first === null) this.first = timestamp;
    const h = Buffer.alloc(12);
    h.writeUInt32LE(frame.length, 0);
    h.writeBigUInt64LE(BigInt((timestamp - this.first) >>> 0), 4);
    writeSync(this.fd, h);
    writeSync(this.fd, frame);
    this.frames++;
  }

  close() {
    const n = Buffer.alloc(4);
    n.writeUInt32LE(this.frames);
    writeSync(this.fd, n, 0, 4, 24);
    closeSync(this.fd);
  }
}
