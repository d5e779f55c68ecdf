//! Rooms across several signaling nodes through Redis pub/sub.
//!
//! Every node publishes [`ClusterMessage`]s on one channel and subscribes to it; the hub
//! does the rest (membership, heartbeats, forgetting silent nodes). When Redis goes away
//! the link retries with backoff and, once back, the hub says hello and announces its
//! peers again.

use crate::cluster::ClusterMessage;
use crate::hub::HubConfig;
use crate::service::SignalService;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// The pub/sub channel every node shares.
pub const CHANNEL: &str = "peerlink:signal:v1";

/// Connects to Redis at `url` (`redis://host:port/`), then starts a [`SignalService`] whose
/// rooms are shared with every other node on the same Redis.
pub async fn start(
    url: &str,
    config: HubConfig,
    default_host: &str,
) -> Result<SignalService, ::redis::RedisError> {
    let client = ::redis::Client::open(url)?;
    // Both connections up before the hub says hello, so the answers are heard. The
    // connection manager reconnects by itself after Redis restarts.
    let publisher = ::redis::aio::ConnectionManager::new(client.clone()).await?;
    let mut subscriber = client.get_async_pubsub().await?;
    subscriber.subscribe(CHANNEL).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let service = SignalService::start(config, default_host, Some(tx));
    tokio::spawn(publish(publisher, rx, service.clone()));
    tokio::spawn(subscribe(client, subscriber, service.clone()));
    Ok(service)
}

async fn publish(
    mut conn: ::redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<ClusterMessage>,
    service: SignalService,
) {
    let mut failing = false;
    while let Some(msg) = rx.recv().await {
        let result: Result<i64, _> =
            ::redis::cmd("PUBLISH").arg(CHANNEL).arg(msg.encode()).query_async(&mut conn).await;
        match result {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot publish to redis; other nodes miss news until it is back");
            }
            Err(_) => {}
            Ok(_) if failing => {
                // Others missed what failed: tell them everything again.
                failing = false;
                tracing::info!("publishing to redis again; announcing this node's peers");
                service.resync_cluster().await;
            }
            Ok(_) => {}
        }
    }
}

async fn subscribe(client: ::redis::Client, mut pubsub: ::redis::aio::PubSub, service: SignalService) {
    let mut backoff = Duration::from_millis(250);
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else { continue };
                match ClusterMessage::decode(&text) {
                    Some(msg) => service.handle_cluster(msg).await,
                    None => tracing::debug!("ignoring a malformed message on {CHANNEL}"),
                }
            }
        }
        tracing::warn!("redis subscription lost; rooms are not shared until it is back");
        pubsub = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            match client.get_async_pubsub().await {
                Ok(mut p) => match p.subscribe(CHANNEL).await {
                    Ok(()) => break p,
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to redis"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot reach redis"),
            }
        };
        backoff = Duration::from_millis(250);
        tracing::info!("redis subscription back; announcing this node's peers again");
        service.resync_cluster().await;
    }
}
