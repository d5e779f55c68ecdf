// A Pion test peer for tests/e2e/interop-matrix.sh, speaking our signaling protocol
// (docs/signaling.md) over golang.org/x/net/websocket: it joins ROOM, offers when someone is
// already there (a "chat" data channel) or answers the newcomer's offer, trickles candidates
// both ways (null at the end), sends "hello from pion" once the channel opens and waits for
// EXPECT. It is given only the servers of the `welcome`, relay-only when RELAY is 1. Prints
// one JSON line in the shape of tests/interop/w3c-peer.mjs's result and exits 0 when the
// message came.
//
// Built offline in GOPATH mode against Debian's Pion packages (as bench/media-ref is):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o pion-peer ./tests/interop/pion-peer
//	pion-peer WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS]
package main

import (
	"encoding/json"
	"fmt"
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
}

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: pion-peer WS_URL ROOM RELAY(0|1) EXPECT [TIMEOUT_MS]")
		os.Exit(2)
	}
	url, room, relay, expect := os.Args[1], os.Args[2], os.Args[3] == "1", os.Args[4]
	timeout := 20 * time.Second
	if len(os.Args) > 5 {
		if ms, err := strconv.Atoi(os.Args[5]); err == nil {
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
		pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) { note("connection %s", s) })
		pc.OnDataChannel(wire)
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
					dc, err := pc.CreateDataChannel("chat", nil)
					if err != nil {
						note("create data channel: %v", err)
						continue
					}
					wire(dc)
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
	mu.Unlock()
	if pc != nil {
		pc.Close()
	}
	ws.Close()
	finish()
}
