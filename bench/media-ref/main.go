// Pion's receive path for bench/media.sh, on the packets crates/media/examples/recv_bench.rs
// wrote (--write): pion/srtp DecryptRTP (AES_CM_128_HMAC_SHA1_80, replay protection with the
// window SessionSRTP uses), pion/rtp Packet.Unmarshal, and webrtc's samplebuilder with the
// VP8 depacketizer, samples popped as they complete. SessionSRTP is bound to a socket, so
// the context is driven directly, as the session does per packet; each packet is decrypted
// into a buffer of its own, as TrackRemote.ReadRTP allocates one per packet (the
// samplebuilder keeps the packets it is given).
//
// Built in GOPATH mode against Debian's Pion packages (GO111MODULE=off, GOPATH=/usr/share/gocode):
// webrtc v3 lies there without its /v3 suffix, and this file is in no module, so its
// import path is written the GOPATH way (srtp's v2 directory is really there).
//
//	media_ref FILE [REPS]
//
// Prints the median of REPS passes, each with a fresh context and samplebuilder made outside
// the clock: packets=P frames=F bytes=B packet_ns=X frame_ns=Y, where F and B count what
// came out and frame_ns divides by the frames that went in (as the Rust side does).
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/srtp/v2"
	"github.com/pion/webrtc/pkg/media/samplebuilder"
)

const (
	ticksPerFrame = 3000
	// The Rust depacketizer's default reorder depth, in packets.
	maxLate = 512
	// SessionSRTP's default (srtp.SessionSRTP uses 64 unless told otherwise).
	replayWindow = 64
)

type input struct {
	key, salt []byte
	frameLens []int
	packets   [][]byte
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "media_ref: "+format+"\n", args...)
	os.Exit(1)
}

func readInput(path string) input {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	at := 0
	take := func(n int) []byte {
		if len(b)-at < n {
			fail("%s is truncated", path)
		}
		at += n
		return b[at-n : at]
	}
	var in input
	in.key = take(16)
	in.salt = take(14)
	frames := int(binary.BigEndian.Uint32(take(4)))
	for i := 0; i < frames; i++ {
		in.frameLens = append(in.frameLens, int(binary.BigEndian.Uint32(take(4))))
	}
	count := int(binary.BigEndian.Uint32(take(4)))
	for i := 0; i < count; i++ {
		n := int(binary.BigEndian.Uint16(take(2)))
		in.packets = append(in.packets, take(n))
	}
	if at != len(b) {
		fail("%s has %d bytes left over", path, len(b)-at)
	}
	return in
}

type receiver struct {
	ctx *srtp.Context
	sb  *samplebuilder.SampleBuilder
}

func newReceiver(in *input) receiver {
	ctx, err := srtp.CreateContext(in.key, in.salt, srtp.ProtectionProfileAes128CmHmacSha1_80,
		srtp.SRTPReplayProtection(replayWindow))
	if err != nil {
		fail("%v", err)
	}
	return receiver{ctx, samplebuilder.New(maxLate, &codecs.VP8Packet{}, 90000)}
}

// receive runs every packet through the receive path and hands each sample's length and
// RTP timestamp to onSample.
func (r receiver) receive(packets [][]byte, onSample func(n int, ts uint32)) {
	var header rtp.Header
	for _, p := range packets {
		buf := make([]byte, len(p))
		plain, err := r.ctx.DecryptRTP(buf, p, &header)
		if err != nil {
			continue
		}
		pkt := &rtp.Packet{}
		if pkt.Unmarshal(plain) != nil {
			continue
		}
		r.sb.Push(pkt)
		for s, ts := r.sb.PopWithTimestamp(); s != nil; s, ts = r.sb.PopWithTimestamp() {
			onSample(len(s.Data), ts)
		}
	}
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fail("usage: media_ref FILE [REPS]")
	}
	reps := 15
	if len(os.Args) == 3 {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil || n < 1 {
			fail("REPS must be a positive number")
		}
		reps = n
	}
	in := readInput(os.Args[1])

	// The samplebuilder lets a frame go only once a packet after it has arrived, so the last
	// frame stays inside: every other one must come out, whole and in order.
	want := len(in.frameLens) - 1
	wantBytes := 0
	for _, n := range in.frameLens[:want] {
		wantBytes += n
	}
	got := 0
	newReceiver(&in).receive(in.packets, func(n int, ts uint32) {
		if got >= want || n != in.frameLens[got] || ts != uint32(got*ticksPerFrame) {
			fail("sample %d: %d bytes at %d, want %d bytes at %d", got, n, ts, in.frameLens[got], got*ticksPerFrame)
		}
		got++
	})
	if got != want {
		fail("%d frames out, want %d", got, want)
	}

	times := make([]float64, 0, reps)
	for i := 0; i < reps; i++ {
		r := newReceiver(&in)
		frames, bytes := 0, 0
		t0 := time.Now()
		r.receive(in.packets, func(n int, _ uint32) {
			frames++
			bytes += n
		})
		times = append(times, float64(time.Since(t0).Nanoseconds()))
		if frames != want || bytes != wantBytes {
			fail("pass %d: %d frames of %d bytes out, want %d of %d", i, frames, bytes, want, wantBytes)
		}
	}
	sort.Float64s(times)
	median := times[len(times)/2]
	fmt.Printf("packets=%d frames=%d bytes=%d packet_ns=%.1f frame_ns=%.1f\n",
		len(in.packets), want, wantBytes, median/float64(len(in.packets)), median/float64(len(in.frameLens)))
}
