//! Two peers on real UDP sockets on loopback, each driven by its own task, with the
//! descriptions and trickled candidates handed across in the test (the signaling server's
//! job): a data channel opens and carries messages both ways, including 1 MB with
//! back-pressure; closing ends it. Connections of one side may share a certificate (as an
//! SFU's do).

use peerlink_io::{Peer, PeerConfig};
use peerlink_rtc::{Certificate, ChannelConfig, ChannelEvent, RtcConfig, RtcEvent};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn config() -> PeerConfig {
    PeerConfig { addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], ..PeerConfig::default() }
}

/// Waits for an event matching `want`, handing trickled candidates to `other` meanwhile.
async fn wait(peer: &mut Peer, other: &Peer, want: impl Fn(&RtcEvent) -> bool) -> RtcEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let e = tokio::time::timeout_at(deadline, peer.next_event())
            .await
            .expect("timed out")
            .expect("peer gone");
        if let RtcEvent::LocalCandidate(c) = &e {
            other.add_ice_candidate(c);
        }
        if want(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn two_peers_open_a_channel_and_talk() {
    let mut a = Peer::start(config()).await.unwrap();
    let mut b = Peer::start(config()).await.unwrap();
    let chat = a.create_data_channel(ChannelConfig::reliable("chat")).await.unwrap();
    let offer = a.create_offer().await.unwrap();
    let answer = b.set_remote_description(offer).await.unwrap().expect("an answer");
    assert!(a.set_remote_description(answer).await.unwrap().is_none());

    // Both sides drain their events concurrently (candidates go across as they come).
    let opened = wait(&mut b, &a, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Incoming { .. }))).await;
    let RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) = opened else { unreachable!() };
    assert_eq!((id, label.as_str()), (chat, "chat"));
    wait(&mut a, &b, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Open(_)))).await;

    a.send(chat, b"hello".to_vec(), false).await.unwrap();
    b.send(chat, b"hi".to_vec(), false).await.unwrap();
    let got = wait(&mut b, &a, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { .. }))).await;
    assert_eq!(
        got,
        RtcEvent::Channel(ChannelEvent::Message { id: chat, data: b"hello".to_vec(), binary: false })
    );
    let got = wait(&mut a, &b, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { .. }))).await;
    assert_eq!(
        got,
        RtcEvent::Channel(ChannelEvent::Message { id: chat, data: b"hi".to_vec(), binary: false })
    );

    // 1 MB in 16 KiB messages, waiting on the low-water event above 256 KiB buffered.
    a.set_buffered_amount_low_threshold(chat, 64 * 1024);
    let sender = async {
        for i in 0..64u8 {
            while a.buffered_amount(chat).await > 256 * 1024 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            a.send(chat, vec![i; 16 * 1024], true).await.unwrap();
        }
    };
    let receiver = async {
        let mut total = 0;
        let mut next = 0u8;
        while total < 1 << 20 {
            let e = wait(&mut b, &a, |e| {
                matches!(e, RtcEvent::Channel(ChannelEvent::Message { binary: true, .. }))
            })
            .await;
            let RtcEvent::Channel(ChannelEvent::Message { data, .. }) = e else { unreachable!() };
            assert!(data.iter().all(|&x| x == next), "message {next} out of order or damaged");
            next += 1;
            total += data.len();
        }
        total
    };
    let ((), total) = tokio::join!(sender, receiver);
    assert_eq!(total, 1 << 20);

    a.close().await;
    let ended = wait(&mut b, &a, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Ended { .. }))).await;
    assert!(matches!(ended, RtcEvent::Channel(ChannelEvent::Ended { .. })));
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let mut a = Peer::start(config()).await.unwrap();
    let mut b = Peer::start(config()).await.unwrap();
    a.create_data_channel(ChannelConfig::reliable("chat")).await.unwrap();
    let offer = a.create_offer().await.unwrap();
    let answer = b.set_remote_description(offer).await.unwrap().expect("an answer");
    assert!(a.set_remote_description(answer).await.unwrap().is_none());
    wait(&mut b, &a, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Incoming { .. }))).await;
    wait(&mut a, &b, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Open(_)))).await;
    // No close(): the task driving `a` must notice that nobody can reach it any more and
    // close the association (the other side hears it at once; a driver left running would
    // answer consent checks for ever, and only a lost path ends a connection after 30 s).
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline, b.next_event())
            .await
            .expect("the dropped peer never closed")
            .expect("peer gone");
        if matches!(e, RtcEvent::Channel(ChannelEvent::Ended { .. })) {
            break;
        }
    }
}

/// The `a=fingerprint` of a description.
fn fingerprint(sdp: &str) -> String {
    let line = sdp.lines().find(|l| l.starts_with("a=fingerprint:")).expect("a fingerprint");
    line.trim().to_owned()
}

#[tokio::test]
async fn connections_sharing_a_certificate_each_complete_their_handshake() {
    let certificate = Certificate::generate().unwrap();
    let shared = || PeerConfig {
        rtc: RtcConfig { certificate: Some(certificate.clone()), ..RtcConfig::default() },
        ..config()
    };
    // One side's two connections (an SFU's to two participants), both handshaking at once.
    let (mut s1, mut s2) = (Peer::start(shared()).await.unwrap(), Peer::start(shared()).await.unwrap());
    let (mut a, mut b) = (Peer::start(config()).await.unwrap(), Peer::start(config()).await.unwrap());
    let mut answers = Vec::new();
    for (client, server) in [(&a, &s1), (&b, &s2)] {
        client.create_data_channel(ChannelConfig::reliable("chat")).await.unwrap();
        let offer = client.create_offer().await.unwrap();
        let answer = server.set_remote_description(offer).await.unwrap().expect("an answer");
        answers.push(fingerprint(&answer.sdp));
        assert!(client.set_remote_description(answer).await.unwrap().is_none());
    }
    let ours = format!("a=fingerprint:{}", certificate.fingerprint());
    assert_eq!(answers, [ours.clone(), ours]);
    let opened = |e: &RtcEvent| matches!(e, RtcEvent::Channel(ChannelEvent::Open(_)));
    let incoming = |e: &RtcEvent| matches!(e, RtcEvent::Channel(ChannelEvent::Incoming { .. }));
    // Both pairs were started before either is waited for: their handshakes overlap.
    wait(&mut s1, &a, incoming).await;
    wait(&mut s2, &b, incoming).await;
    wait(&mut a, &s1, opened).await;
    wait(&mut b, &s2, opened).await;
}

#[tokio::test]
async fn the_bandwidth_estimate_is_read_without_waiting_for_the_task() {
    use peerlink_rtc::{Codec, Direction, MediaKind, TrackConfig};
    let a = Peer::start(config()).await.unwrap();
    let receiving = PeerConfig {
        rtc: RtcConfig { accept_media: Some(Direction::RecvOnly), ..RtcConfig::default() },
        ..config()
    };
    let mut b = Peer::start(receiving).await.unwrap();
    let video = a
        .add_transceiver(MediaKind::Video, Direction::SendOnly, TrackConfig::new(MediaKind::Video))
        .await
        .unwrap();
    // No media sent yet: no estimate either way.
    assert_eq!(a.latest_bandwidth_estimate(), None);
    let offer = a.create_offer().await.unwrap();
    let answer = b.set_remote_description(offer).await.unwrap().expect("an answer");
    assert!(a.set_remote_description(answer).await.unwrap().is_none());
    wait(&mut b, &a, |e| matches!(e, RtcEvent::Track { .. })).await;
    // VP8 key frames of 3 packets, 30 a second, with the receiver's feedback coming back.
    let (b_handle, mut b_events) = b.split();
    let drain = tokio::spawn(async move { while b_events.next().await.is_some() {} });
    let frame = |key: bool| {
        let mut f = vec![if key { 0x10 } else { 0x11 }, 0, 0, 0x9d, 0x01, 0x2a, 64, 0, 48, 0];
        f.resize(3000, 0x55);
        f
    };
    let mut estimate = None;
    for i in 0..150u32 {
        a.write_frame(video, Some(Codec::Vp8), i * 3000, frame(i % 30 == 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(33)).await;
        estimate = a.latest_bandwidth_estimate();
        if estimate.is_some() && i > 60 {
            break;
        }
    }
    let asked = a.bandwidth_estimate().await;
    let (Some(latest), Some(asked)) = (estimate, asked) else {
        panic!("no estimate: latest {estimate:?}, asked {asked:?}");
    };
    // The same estimator, read a turn or two apart.
    assert!(latest >= asked / 2 && latest <= asked * 2, "latest {latest}, asked {asked}");
    drop(b_handle);
    drain.abort();
}
