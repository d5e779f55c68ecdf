package main

// Media for the Pion peer (-media): VP8 from an IVF file and Opus from an Ogg file, both made
// by ffmpeg, sent in real time through Pion's own packetizers; what comes in is counted per
// RTP packet and per whole frame (VP8 frames assembled here from consecutive sequence numbers,
// first packet to marker) and written to DIR/in-video.ivf and DIR/in-audio.ogg for ffmpeg to
// judge.

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc"
	"github.com/pion/webrtc/pkg/media"
	"github.com/pion/webrtc/pkg/media/ivfreader"
	"github.com/pion/webrtc/pkg/media/oggreader"
	"github.com/pion/webrtc/pkg/media/oggwriter"
)

// streamCount is one direction of one kind, in the shape w3c-peer.mjs reports.
type streamCount struct {
	Codec     string `json:"codec,omitempty"`
	Packets   int    `json:"packets"`
	Frames    int    `json:"frames"`
	Keyframes int    `json:"keyframes,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	File      string `json:"file,omitempty"`
}

type mediaState struct {
	mu     sync.Mutex
	counts map[string]*streamCount // "out-video", "in-audio", ...
	outDir string
}

func newMediaState(outDir string) *mediaState {
	return &mediaState{counts: map[string]*streamCount{}, outDir: outDir}
}

func (m *mediaState) count(key string) *streamCount {
	c := m.counts[key]
	if c == nil {
		c = &streamCount{}
		m.counts[key] = c
	}
	return c
}

// snapshot copies the counts for the result.
func (m *mediaState) snapshot() map[string]streamCount {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]streamCount{}
	for k, v := range m.counts {
		out[k] = *v
	}
	return out
}

// addSendTracks adds a VP8 and an Opus track (sendrecv transceivers, as addTrack makes).
func (m *mediaState) addSendTracks(pc *webrtc.PeerConnection) (video, audio *webrtc.TrackLocalStaticSample, err error) {
	video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "pion")
	if err != nil {
		return nil, nil, err
	}
	audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "pion")
	if err != nil {
		return nil, nil, err
	}
	for _, t := range []webrtc.TrackLocal{video, audio} {
		sender, err := pc.AddTrack(t)
		if err != nil {
			return nil, nil, err
		}
		// RTCP must be read for the interceptors (NACK responder, reports) to run.
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	return video, audio, nil
}

// sendFile runs send on the file at path.
func sendFile(path string, send func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return send(f)
}

// sendIVF writes an IVF file's frames to the track in real time for at most `seconds`.
func (m *mediaState) sendIVF(in io.Reader, track *webrtc.TrackLocalStaticSample, seconds float64) error {
	r, h, err := ivfreader.NewWith(in)
	if err != nil {
		return err
	}
	step := time.Duration(float64(time.Second) * float64(h.TimebaseNumerator) / float64(h.TimebaseDenominator))
	start := time.Now()
	for i := 0; float64(i)*step.Seconds() < seconds; i++ {
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * step)))
		if err := track.WriteSample(media.Sample{Data: frame, Duration: step}); err != nil {
			return err
		}
		m.mu.Lock()
		c := m.count("out-video")
		c.Codec, c.Frames = "video/VP8", c.Frames+1
		c.Packets += (len(frame) + 1199) / 1200 // an estimate: Pion cuts at its MTU
		m.mu.Unlock()
	}
	return nil
}

// sendOgg writes an Ogg file's Opus packets (one a page: ffmpeg -page_duration 20000) in real
// time for at most `seconds`.
func (m *mediaState) sendOgg(in io.Reader, track *webrtc.TrackLocalStaticSample, seconds float64) error {
	r, _, err := oggreader.NewWith(in)
	if err != nil {
		return err
	}
	start := time.Now()
	var granule uint64
	sent := time.Duration(0)
	for sent.Seconds() < seconds {
		page, h, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.GranulePosition <= granule {
			continue // OpusTags, or a page that ends no packet
		}
		d := time.Duration(h.GranulePosition-granule) * time.Second / 48000
		granule = h.GranulePosition
		time.Sleep(time.Until(start.Add(sent)))
		if err := track.WriteSample(media.Sample{Data: page, Duration: d}); err != nil {
			return err
		}
		sent += d
		m.mu.Lock()
		c := m.count("out-audio")
		c.Codec, c.Frames, c.Packets = "audio/opus", c.Frames+1, c.Packets+1
		m.mu.Unlock()
	}
	return nil
}

// receive counts a remote track's packets and whole frames and writes them to a file.
func (m *mediaState) receive(track *webrtc.TrackRemote) {
	kind := track.Kind().String()
	key := "in-" + kind
	m.mu.Lock()
	c := m.count(key)
	c.Codec = track.Codec().MimeType
	m.mu.Unlock()
	var ivf *ivfWriter
	var ogg *oggwriter.OggWriter
	if m.outDir != "" {
		path := filepath.Join(m.outDir, key+".ivf")
		if kind == "audio" {
			path = filepath.Join(m.outDir, key+".ogg")
			ogg, _ = oggwriter.New(path, 48000, 2)
		} else {
			ivf, _ = newIVFWriter(path)
		}
		m.mu.Lock()
		c.File = path
		m.mu.Unlock()
	}
	defer func() {
		if ogg != nil {
			ogg.Close()
		}
		if ivf != nil {
			ivf.close()
		}
	}()
	asm := newVP8Assembler()
	for {
		p, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		m.mu.Lock()
		c.Packets++
		if kind == "audio" {
			c.Frames++
			if ogg != nil {
				_ = ogg.WriteRTP(p)
			}
		} else if frame, ok := asm.push(p); ok {
			c.Frames++
			if len(frame) >= 10 && frame[0]&1 == 0 { // RFC 6386 §9.1: a key frame's header
				c.Keyframes++
				c.Width = int(binary.LittleEndian.Uint16(frame[6:8]) & 0x3fff)
				c.Height = int(binary.LittleEndian.Uint16(frame[8:10]) & 0x3fff)
			}
			if ivf != nil {
				ivf.write(frame, p.Timestamp)
			}
		}
		m.mu.Unlock()
	}
}

// vp8Assembler makes whole frames of VP8 packets: the packets of one timestamp from the one
// that starts partition 0 to the one with the marker, every sequence number in between.
type vp8Assembler struct {
	pending map[uint32][]*rtp.Packet
}

func newVP8Assembler() *vp8Assembler { return &vp8Assembler{pending: map[uint32][]*rtp.Packet{}} }

func (a *vp8Assembler) push(p *rtp.Packet) ([]byte, bool) {
	ps := append(a.pending[p.Timestamp], p)
	a.pending[p.Timestamp] = ps
	var head, tail *rtp.Packet
	bySeq := map[uint16]*rtp.Packet{}
	for _, q := range ps {
		bySeq[q.SequenceNumber] = q
		if (&codecs.VP8Packet{}).IsPartitionHead(q.Payload) {
			head = q
		}
		if q.Marker {
			tail = q
		}
	}
	if head == nil || tail == nil {
		return nil, false
	}
	var frame []byte
	for s := head.SequenceNumber; ; s++ {
		q := bySeq[s]
		if q == nil {
			return nil, false
		}
		var d codecs.VP8Packet
		data, err := d.Unmarshal(q.Payload)
		if err != nil {
			return nil, false
		}
		frame = append(frame, data...)
		if s == tail.SequenceNumber {
			break
		}
	}
	delete(a.pending, p.Timestamp)
	// Anything far older than this frame will not complete any more.
	for ts := range a.pending {
		if int32(p.Timestamp-ts) > 90000 {
			delete(a.pending, ts)
		}
	}
	return frame, true
}

// ivfWriter writes VP8 frames to an IVF file (a 32-byte header, 12 bytes before each frame),
// times in the RTP clock (1/90000).
type ivfWriter struct {
	f      *os.File
	frames uint32
	first  uint32
}

func newIVFWriter(path string) (*ivfWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	h := make([]byte, 32)
	copy(h[0:], "DKIF")
	binary.LittleEndian.PutUint16(h[6:], 32)
	copy(h[8:], "VP80")
	binary.LittleEndian.PutUint16(h[12:], 320)
	binary.LittleEndian.PutUint16(h[14:], 240)
	binary.LittleEndian.PutUint32(h[16:], 90000)
	binary.LittleEndian.PutUint32(h[20:], 1)
	if _, err := f.Write(h); err != nil {
		f.Close()
		return nil, err
	}
	return &ivfWriter{f: f}, nil
}

func (w *ivfWriter) write(frame []byte, ts uint32) {
	if w.frames == 0 {
		w.first = ts
	}
	h := make([]byte, 12)
	binary.LittleEndian.PutUint32(h[0:], uint32(len(frame)))
	binary.LittleEndian.PutUint64(h[4:], uint64(ts-w.first))
	_, _ = w.f.Write(h)
	_, _ = w.f.Write(frame)
	w.frames++
}

func (w *ivfWriter) close() {
	n := make([]byte, 4)
	binary.LittleEndian.PutUint32(n, w.frames)
	_, _ = w.f.WriteAt(n, 24)
	w.f.Close()
}
