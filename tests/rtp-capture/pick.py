#!/usr/bin/env python3
# Chooses the fixtures from a capture.sh pcap: a few RTP packets (Opus, VP8, an RTX
# retransmission, an RTX padding-only probe) and RTCP datagrams (the sender's SR compounds, the
# receiver's RR compound, transport-cc feedback, a generic NACK, and PLI / FIR / REMB if any
# were sent), each datagram written as it was on the wire, one .bin file each; the SDP offer and
# answer are copied beside them. Prints what it chose (and what it could not find), for the
# README. Its own small parser only classifies; the Rust test is what checks the packets.
#   pick.py CAPTURE.pcap OFFER.sdp ANSWER.sdp OUT_DIR
import os, shutil, struct, sys

pcap, offer, answer, out = sys.argv[1:5]


def datagrams(path):
    d = open(path, 'rb').read()
    i = 24
    while i < len(d):
        _, _, caplen, _ = struct.unpack('<IIII', d[i:i + 16])
        ip = d[i + 16:i + 16 + caplen]
        i += 16 + caplen
        ihl = (ip[0] & 15) * 4
        yield ip[ihl + 8:]


def sdp_sections(path):
    """Per m-section: kind, mid, {pt: rtpmap}, {pt: fmtp}, {id: uri}, [ssrc]."""
    sections = []
    for line in open(path).read().splitlines():
        if line.startswith('m='):
            sections.append({'kind': line[2:].split()[0], 'rtpmap': {}, 'fmtp': {}, 'extmap': {}, 'ssrcs': []})
        elif not sections:
            continue
        elif line.startswith('a=mid:'):
            sections[-1]['mid'] = line[6:]
        elif line.startswith('a=rtpmap:'):
            pt, name = line[9:].split(' ', 1)
            sections[-1]['rtpmap'][int(pt)] = name
        elif line.startswith('a=fmtp:'):
            pt, params = line[7:].split(' ', 1)
            sections[-1]['fmtp'][int(pt)] = params
        elif line.startswith('a=extmap:'):
            i, uri = line[9:].split(' ', 1)
            sections[-1]['extmap'][int(i.split('/')[0])] = uri
        elif line.startswith('a=ssrc:'):
            ssrc = int(line[7:].split(' ')[0])
            if ssrc not in sections[-1]['ssrcs']:
                sections[-1]['ssrcs'].append(ssrc)
    return sections


def rtp_extensions(p):
    cc = p[0] & 15
    at = 12 + 4 * cc
    if not p[0] & 0x10:
        return {}
    profile, words = struct.unpack('!HH', p[at:at + 4])
    data = p[at + 4:at + 4 + 4 * words]
    ext, j = {}, 0
    while j < len(data):
        if data[j] == 0:
            j += 1
            continue
        if profile == 0xBEDE:
            i, n = data[j] >> 4, (data[j] & 15) + 1
            if i == 15:
                break
            ext[i] = data[j + 1:j + 1 + n]
            j += 1 + n
        else:
            i, n = data[j], data[j + 1]
            ext[i] = data[j + 2:j + 2 + n]
            j += 2 + n
    return ext


def rtcp_packets(p):
    j = 0
    while j + 4 <= len(p):
        n = (struct.unpack('!H', p[j + 2:j + 4])[0] + 1) * 4
        yield p[j + 1], p[j] & 31, p[j:j + n]
        j += n


sec = sdp_sections(offer)
audio = next(s for s in sec if s['kind'] == 'audio')
video = next(s for s in sec if s['kind'] == 'video')
pt_of = lambda s, name: next(pt for pt, n in s['rtpmap'].items() if n.lower().startswith(name))
opus, vp8 = pt_of(audio, 'opus/'), pt_of(video, 'vp8/')
rtx = next(pt for pt, f in video['fmtp'].items() if f == f'apt={vp8}')
sender_ssrcs = set(audio['ssrcs'] + video['ssrcs'])
print(f'offer: opus {opus}, vp8 {vp8}, rtx {rtx}; audio ssrcs {audio["ssrcs"]}, video ssrcs {video["ssrcs"]}')
print(f'audio extmap {audio["extmap"]}\nvideo extmap {video["extmap"]}')

rtp = {'opus': [], 'vp8': [], 'rtx': [], 'rtx_padding': []}
rtcp = {'sr': [], 'rr': [], 'twcc': [], 'nack': [], 'pli': [], 'fir': [], 'remb': [], 'other': []}
for p in datagrams(pcap):
    if not p or not 128 <= p[0] <= 191:
        continue  # STUN
    if 192 <= p[1] <= 223:
        kinds = [(t, f) for t, f, _ in rtcp_packets(p)]
        first = kinds[0]
        if first[0] == 200:
            rtcp['sr'].append(p)
        elif first[0] == 201:
            rtcp['rr'].append(p)
        elif first == (205, 15):
            rtcp['twcc'].append(p)
        elif first == (205, 1):
            rtcp['nack'].append(p)
        elif first == (206, 1):
            rtcp['pli'].append(p)
        elif first == (206, 4):
            rtcp['fir'].append(p)
        elif first == (206, 15) and p[12:16] == b'REMB':
            rtcp['remb'].append(p)
        else:
            rtcp['other'].append(p)
        continue
    pt = p[1] & 0x7f
    if pt == opus:
        rtp['opus'].append(p)
    elif pt == vp8:
        rtp['vp8'].append(p)
    elif pt == rtx:
        pad = p[-1] if p[0] & 0x20 else 0
        cc = p[0] & 15
        hdr = 12 + 4 * cc + (4 + 4 * struct.unpack('!H', p[14 + 4 * cc:16 + 4 * cc])[0] if p[0] & 0x10 else 0)
        (rtp['rtx_padding'] if len(p) - hdr - pad == 0 else rtp['rtx']).append(p)
for k, v in list(rtp.items()) + list(rtcp.items()):
    print(f'{k}: {len(v)} seen')

chosen = {}
ext = lambda p: rtp_extensions(p)
# Opus: the first packet (it carries mid; Chromium stops sending mid once the receiver's RTCP
# acknowledges the stream) and a later one without mid, flagged as voice.
chosen['rtp-opus-first.bin'] = rtp['opus'][0]
later = [p for p in rtp['opus'][50:] if 4 not in ext(p)] or rtp['opus'][50:]
voiced = [p for p in later if 1 in ext(p) and ext(p)[1][0] & 0x80]
chosen['rtp-opus.bin'] = (voiced or later)[0]
# VP8: the first packet (a key frame's start, with mid) and a later frame's last packet (marker).
chosen['rtp-vp8-first.bin'] = rtp['vp8'][0]
chosen['rtp-vp8-marker.bin'] = next(p for p in rtp['vp8'][100:] if p[1] & 0x80)
# RTX: a retransmission whose original sequence number a captured NACK asks for, and a
# padding-only probe.
nacked = set()
nack_of = {}
for d in rtcp['nack']:
    for t, f, pkt in rtcp_packets(d):
        if (t, f) == (205, 1):
            for j in range(12, len(pkt), 4):
                pid, blp = struct.unpack('!HH', pkt[j:j + 4])
                for s in [pid] + [(pid + i + 1) & 0xffff for i in range(16) if blp >> i & 1]:
                    nacked.add(s)
                    nack_of.setdefault(s, d)
for p in rtp['rtx']:
    cc = p[0] & 15
    at = 12 + 4 * cc + (4 + 4 * struct.unpack('!H', p[14 + 4 * cc:16 + 4 * cc])[0] if p[0] & 0x10 else 0)
    osn = struct.unpack('!H', p[at:at + 2])[0]
    if osn in nacked:
        chosen['rtp-rtx.bin'] = p
        chosen['rtcp-nack.bin'] = nack_of[osn]
        print(f'rtx retransmits {osn}, asked for by the chosen NACK')
        break
if rtp['rtx_padding']:
    chosen['rtp-rtx-padding.bin'] = rtp['rtx_padding'][0]
# RTCP: the sender's first SR + SDES and first SR + SDES + XR; the receiver's first RR compound
# with a report block per stream; transport-cc: the first feedback, and the first that reports
# a packet as not received (LOSS makes some).
def twcc_symbols(pkt):
    count = struct.unpack('!H', pkt[14:16])[0]
    symbols, j = [], 20
    while len(symbols) < count:
        chunk = struct.unpack('!H', pkt[j:j + 2])[0]
        j += 2
        if not chunk & 0x8000:
            symbols += [chunk >> 13 & 3] * (chunk & 0x1fff)
        elif not chunk & 0x4000:
            symbols += [chunk >> (13 - i) & 1 for i in range(14)]
        else:
            symbols += [chunk >> (12 - 2 * i) & 3 for i in range(7)]
    return symbols[:count]


chosen['rtcp-sr-sdes.bin'] = next(p for p in rtcp['sr'] if [t for t, _, _ in rtcp_packets(p)] == [200, 202])
srx = [p for p in rtcp['sr'] if [t for t, _, _ in rtcp_packets(p)] == [200, 202, 207]]
if srx:
    chosen['rtcp-sr-sdes-xr.bin'] = srx[0]
chosen['rtcp-rr-xr.bin'] = next((p for p in rtcp['rr'] if p[0] & 31 == 2), rtcp['rr'][0])
chosen['rtcp-twcc-first.bin'] = rtcp['twcc'][0]
lossy = [p for p in rtcp['twcc'] if 0 in twcc_symbols(p) and set(twcc_symbols(p)) - {0}]
if lossy:
    chosen['rtcp-twcc-loss.bin'] = lossy[0]
else:
    print('no transport-cc feedback reporting a lost packet')
for name in ('pli', 'fir', 'remb'):
    if rtcp[name]:
        chosen[f'rtcp-{name}.bin'] = rtcp[name][0]
    else:
        print(f'no {name.upper()} in this capture')
if rtcp['other']:
    chosen['rtcp-other.bin'] = rtcp['other'][0]

os.makedirs(out, exist_ok=True)
for name in sorted(chosen):
    p = chosen[name]
    open(os.path.join(out, name), 'wb').write(p)
    if 192 <= p[1] <= 223:
        what = ' + '.join(f'{t}/{f}' for t, f, _ in rtcp_packets(p))
    else:
        what = (f'pt {p[1] & 127} seq {struct.unpack("!H", p[2:4])[0]} ts {struct.unpack("!I", p[4:8])[0]} '
                f'ssrc {struct.unpack("!I", p[8:12])[0]} m={p[1] >> 7} p={p[0] >> 5 & 1} '
                f'ext {dict((i, v.hex()) for i, v in ext(p).items())}')
    print(f'{name:24} {len(p):5} bytes  {what}')
shutil.copy(offer, os.path.join(out, 'offer.sdp'))
shutil.copy(answer, os.path.join(out, 'answer.sdp'))
