//! What the SFU tests share: signaling and the SFU in this process, on loopback.

use peerlink_signal::hub::HubConfig;
use peerlink_signal::SignalService;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Signaling for `hub` with the SFU beside it, relaying on 127.0.0.1; its HTTP address.
pub async fn serve(hub: HubConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = SignalService::start(hub, "localhost", None);
    let sfu = peerlink_server::sfu::SfuConfig {
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..peerlink_server::sfu::SfuConfig::default()
    };
    peerlink_server::sfu::start(signal.clone(), sfu).await;
    let router = signal.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}
