// A Pion test peer for tests/e2e/interop-matrix.sh, speaking our signaling protocol
// (docs/signaling.md) over golang.org/x/net/websocket: it joins ROOM, offers when someone is
// already there (a "chat" data channel) or answers the newcomer's offer, trickles candidates
// both ways (null at the end), sends "hello from pion" once the channel opens and waits for
// EXPECT. It is given only the servers of the `welcome`, relay-only when RELAY is 1. Prints
// one JSON line in the shape of tests/interop/w3c-peer.mjs's result and exits 0 when the
// message came. With -media it has audio and video instead of the channel (media.go): it sends
// VP8 from -ivf and Opus from -ogg for -seconds once connected (send, sendrecv), receives
// what comes (recv, sendrecv; into -out DIR), and is done -seconds after connecting, or when
// the other peer leaves; it exits 0 when it was connected.
//
// Built offline in GOPATH mode against Debian's Pion packages (as bench/media-ref is):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o pion-peer ./tests/interop/pion-peer
//	pion-peer [-media send|recv|sendrecv -ivf F -ogg F -seconds S -out DIR] WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/pion/webrtc"
	"golang.org/x/net/websocket"
)

type peerInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type serverMsg struct {
	Type       string             `json:"type"`
	Peers      []peerInfo         `json:"peers"`
	IceServers []webrtc.ICEServer `json:"iceServers"`
	From       string             `json:"from"`
	Data       json.RawMessage    `json:"data"`
	Code       string             `json:"code"`
	Message    string             `json:"message"`
}

type signalData struct {
	Description *webrtc.SessionDescription `json:"description,omitempty"`
}

type selectedPair struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

type result struct {
	Stack                 string        `json:"stack"`
	OK                    bool          `json:"ok"`
	Role                  string        `json:"role"`
	Events                []string      `json:"events"`
	Got                   *string       `json:"got"`
	OpenMs                *int64        `json:"openMs"`
	EarlyCandidates       int           `json:"earlyCandidates"`
	AddCandidateErrors    []string      `json:"addCandidateErrors"`
	RemoteEndOfCandidates bool          `json:"remoteEndOfCandidates"`
	LocalCandidates       []string      `json:"localCandidates"`
	RemoteCandidates      []string      `json:"remoteCandidates"`
	Selected              *selectedPair `json:"selected"`
	LocalSdp              string        `json:"localSdp"`
	RemoteSdp             string        `json:"remoteSdp"`
	Ms                    int64         `json:"ms"`
	ConnectedMs           *int64        `json:"connectedMs"`
	Media                 interface{}   `json:"media"`
}

func main() {
	mediaMode := flag.String("media", "", "send, recv or sendrecv: audio and video instead of a data channel")
	ivfPath := flag.String("ivf", "", "VP8 IVF file to send")
	oggPath := flag.String("ogg", "", "Opus Ogg file to send (one packet a page)")
	seconds := flag.Float64("seconds", 4, "seconds of media to send; done this long after connecting")
	outDir := flag.String("out", "", "folder for what is received (in-video.ivf, in-audio.ogg)")
	flag.Parse()
	args := flag.Args()
	if len(args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: pion-peer [-media send|recv|sendrecv -ivf F -ogg F -seconds S -out DIR] WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS]")
		os.Exit(2)
	}
	url, room, relay, expect := args[0], args[1], args[2] == "1", args[3]
	timeout := 20 * time.Second
	if len(args) > 4 {
		if ms, err := strconv.Atoi(args[4]); err == nil {
			timeout = time.Duration(ms) * time.Millisecond
		}
	}
	t0 := time.Now()
	r := &result{Stack: "pion", Events: []string{}, AddCandidateErrors: []string{}, LocalCandidates: []string{}, RemoteCandidates: []string{}}
	var mu sync.Mutex // r and the socket's writes
	note := func(format string, a ...interface{}) {
		mu.Lock()
		r.Events = append(r.Events, fmt.Sprintf("%dms ", time.Since(t0).Milliseconds())+fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	finish := func() {
		mu.Lock()
		r.Ms = time.Since(t0).Milliseconds()
		out, _ := json.Marshal(r)
		ok := r.OK
		mu.Unlock()
		fmt.Println(string(out))
		if ok {
			os.Exit(0)
		}
		os.Exit(1)
	}

	ws, err := websocket.Dial(url, "", "http://localhost/")
	if err != nil {
		note("signaling connection failed: %v", err)
		finish()
	}
	var remoteID string
	send := func(data interface{}) {
		mu.Lock()
		defer mu.Unlock()
		if err := websocket.JSON.Send(ws, map[string]interface{}{"type": "signal", "to": remoteID, "data": data}); err != nil {
			r.Events = append(r.Events, "send: "+err.Error())
		}
	}
	done := make(chan struct{})
	var doneOnce sync.Once
	var pc *webrtc.PeerConnection
	var media *mediaState
	var videoOut, audioOut *webrtc.TrackLocalStaticSample
	if *mediaMode != "" {
		media = newMediaState(*outDir)
	}
	finishSoon := func(d time.Duration) {
		time.AfterFunc(d, func() { doneOnce.Do(func() { close(done) }) })
	}

	wire := func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() {
			ms := time.Since(t0).Milliseconds()
			mu.Lock()
			r.OpenMs = &ms
			mu.Unlock()
			note("channel %q open", dc.Label())
			if err := dc.SendText("hello from pion"); err != nil {
				note("send: %v", err)
			}
		})
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			text := string(m.Data)
			note("message %q", text)
			if text == expect {
				mu.Lock()
				r.Got = &text
				mu.Unlock()
				time.AfterFunc(300*time.Millisecond, func() { doneOnce.Do(func() { close(done) }) })
			}
		})
	}
	makePc := func(servers []webrtc.ICEServer) {
		config := webrtc.Configuration{ICEServers: servers}
		if relay {
			config.ICETransportPolicy = webrtc.ICETransportPolicyRelay
		}
		var err error
		pc, err = webrtc.NewPeerConnection(config)
		if err != nil {
			note("new peer connection: %v", err)
			finish()
		}
		pc.OnICECandidate(func(c *webrtc.ICECandidate) {
			if c == nil {
				note("end of local candidates")
				send(map[string]interface{}{"candidate": nil})
				return
			}
			init := c.ToJSON()
			mu.Lock()
			r.LocalCandidates = append(r.LocalCandidates, init.Candidate)
			mu.Unlock()
			send(map[string]interface{}{"candidate": init})
		})
		var connectedOnce sync.Once
		pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
			note("connection %s", s)
			if s != webrtc.PeerConnectionStateConnected || media == nil {
				return
			}
			connectedOnce.Do(func() {
				ms := time.Since(t0).Milliseconds()
				mu.Lock()
				r.ConnectedMs = &ms
				mu.Unlock()
				finishSoon(time.Duration(*seconds * float64(time.Second)))
				if videoOut == nil {
					return
				}
				// Sending stops a little before the end: what is sent last comes back (echo).
				sendFor := *seconds - 1
				go func() {
					if err := sendFile(*ivfPath, func(in io.Reader) error { return media.sendIVF(in, videoOut, sendFor) }); err != nil {
						note("send video: %v", err)
					}
				}()
				go func() {
					if err := sendFile(*oggPath, func(in io.Reader) error { return media.sendOgg(in, audioOut, sendFor) }); err != nil {
						note("send audio: %v", err)
					}
				}()
			})
		})
		pc.OnDataChannel(wire)
		if media == nil {
			return
		}
		pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			note("track %s %s", t.Kind(), t.Codec().MimeType)
			go media.receive(t)
		})
		if *mediaMode == "recv" {
			return
		}
		if videoOut, audioOut, err = media.addSendTracks(pc); err != nil {
			note("add tracks: %v", err)
			finish()
		}
	}
	addCandidate := func(raw json.RawMessage) {
		if string(raw) == "null" {
			mu.Lock()
			r.RemoteEndOfCandidates = true
			mu.Unlock()
			// Pion v3 takes an empty candidate as the end of candidates.
			if err := pc.AddICECandidate(webrtc.ICECandidateInit{}); err != nil {
				mu.Lock()
				r.AddCandidateErrors = append(r.AddCandidateErrors, "end-of-candidates: "+err.Error())
				mu.Unlock()
			}
			return
		}
		var c webrtc.ICECandidateInit
		if err := json.Unmarshal(raw, &c); err != nil {
			note("bad candidate %s", raw)
			return
		}
		mu.Lock()
		r.RemoteCandidates = append(r.RemoteCandidates, c.Candidate)
		mu.Unlock()
		if err := pc.AddICECandidate(c); err != nil {
			mu.Lock()
			r.AddCandidateErrors = append(r.AddCandidateErrors, c.Candidate+": "+err.Error())
			mu.Unlock()
		}
	}

	// Sets a description made by CreateOffer or CreateAnswer and sends it.
	setAndSend := func(desc webrtc.SessionDescription, err error) {
		if err == nil {
			err = pc.SetLocalDescription(desc)
		}
		if err != nil {
			note("local %s: %v", desc.Type, err)
			return
		}
		mu.Lock()
		r.LocalSdp = desc.SDP
		mu.Unlock()
		send(map[string]interface{}{"description": desc})
	}

	go func() {
		described := false
		var early []json.RawMessage
		for {
			var m serverMsg
			if err := websocket.JSON.Receive(ws, &m); err != nil {
				note("signaling closed: %v", err)
				return
			}
			switch m.Type {
			case "welcome":
				note("welcome, %d peer(s) present", len(m.Peers))
				fmt.Fprintln(os.Stderr, "joined")
				makePc(m.IceServers)
				if len(m.Peers) > 0 {
					mu.Lock()
					r.Role = "offer"
					remoteID = m.Peers[0].ID
					mu.Unlock()
					if media == nil {
						dc, err := pc.CreateDataChannel("chat", nil)
						if err != nil {
							note("create data channel: %v", err)
							continue
						}
						wire(dc)
					} else if *mediaMode == "recv" {
						for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
							if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
								note("add transceiver: %v", err)
							}
						}
					}
					setAndSend(pc.CreateOffer(nil))
				} else {
					mu.Lock()
					r.Role = "answer"
					mu.Unlock()
				}
			case "signal":
				mu.Lock()
				if remoteID == "" {
					remoteID = m.From
				}
				mu.Unlock()
				var d signalData
				var probe map[string]json.RawMessage
				if json.Unmarshal(m.Data, &d) != nil || json.Unmarshal(m.Data, &probe) != nil {
					note("bad signal %s", m.Data)
					continue
				}
				if d.Description != nil {
					note("remote %s", d.Description.Type)
					mu.Lock()
					r.RemoteSdp = d.Description.SDP
					mu.Unlock()
					described = true
					if err := pc.SetRemoteDescription(*d.Description); err != nil {
						note("set remote description: %v", err)
						continue
					}
					if d.Description.Type == webrtc.SDPTypeOffer {
						setAndSend(pc.CreateAnswer(nil))
					}
					for _, c := range early {
						addCandidate(c)
					}
					early = nil
				} else if raw, ok := probe["candidate"]; ok {
					// A candidate, or null for the end of candidates.
					if !described {
						// It cannot be applied before its description: the sender broke
						// trickle ICE's order (RFC 8838 §8). Kept and applied late.
						mu.Lock()
						r.EarlyCandidates++
						mu.Unlock()
						early = append(early, raw)
					} else {
						addCandidate(raw)
					}
				}
			case "peer-left":
				note("peer left")
				if media != nil {
					// Give the last packets a moment to arrive.
					finishSoon(500 * time.Millisecond)
				}
			case "error":
				note("signaling error %s: %s", m.Code, m.Message)
			}
		}
	}()

	mu.Lock()
	err = websocket.JSON.Send(ws, map[string]string{"type": "join", "room": room, "name": "pion"})
	mu.Unlock()
	if err != nil {
		note("join: %v", err)
		finish()
	}
	select {
	case <-done:
	case <-time.After(timeout):
		note("timed out")
	}
	if pc != nil && media != nil {
		for _, t := range pc.GetTransceivers() {
			if s := t.Sender(); s != nil && s.Transport() != nil {
				if pair, err := s.Transport().ICETransport().GetSelectedCandidatePair(); err == nil && pair != nil {
					mu.Lock()
					r.Selected = &selectedPair{Local: pair.Local.Typ.String(), Remote: pair.Remote.Typ.String()}
					mu.Unlock()
					break
				}
			}
		}
	}
	if pc != nil {
		if sctp := pc.SCTP(); sctp != nil {
			if pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair(); err == nil && pair != nil {
				mu.Lock()
				r.Selected = &selectedPair{Local: pair.Local.Typ.String(), Remote: pair.Remote.Typ.String()}
				mu.Unlock()
			}
		}
	}
	mu.Lock()
	r.OK = r.Got != nil && *r.Got == expect && r.OpenMs != nil
	if media != nil {
		r.OK = r.ConnectedMs != nil
	}
	mu.Unlock()
	if pc != nil {
		pc.Close()
	}
	if media != nil {
		// The receivers end with the connection and close their files.
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		r.Media = media.snapshot()
		mu.Unlock()
	}
	ws.Close()
	finish()
}
