//! `Hub::disconnect` ends a live session at once (what revoking an agent does): the session drains what
//! it read into the cache, acknowledges it, closes, and the machine stops counting as connected. A session
//! whose agent is revoked between its admission and its claim is refused. Runs the real session over an
//! in-memory stream.

use actors::cache::Cache;
use actors::hub::Hub;
use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use actors::session::{handle_connection, SessionContext, SessionEnd};
use actors::stats::Stats;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt};
use wire::{DiskInfo, ErrorCode, Extent, Frame, Hello};

/// Admits the agent the first `admits` times it is asked, then reports it revoked.
struct RevokedAfter {
    admits: AtomicU32,
}

impl AgentRegistry for RevokedAfter {
    fn register(&self, _: &str, _: &str, _: Option<&str>) -> Result<AgentCredentials, Refusal> {
        Err(Refusal::BadPassphrase)
    }
    fn admit(&self, id: &str) -> Result<(), Refusal> {
        let left = self.admits.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Refusal::Revoked(id.into()));
        }
        self.admits.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
    fn identify(&self, _: &[u8]) -> Option<String> {
        None
    }
    fn seen(&self, _: &str, _: &str) {}
}

fn context(cache: Arc<Cache>, admits: u32) -> SessionContext {
    SessionContext {
        cache,
        registry: Arc::new(RevokedAfter {
            admits: AtomicU32::new(admits),
        }),
        hub: Arc::new(Hub::default()),
        stats: Arc::new(Stats::default()),
        wake: Arc::new(|| {}),
    }
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent_id: "a1".into(),
        hostname: "db01".into(),
        disks: vec![DiskInfo {
            disk_id: "disk0".into(),
            size_bytes: 16 * 65536,
            label: "sda".into(),
        }],
    })
}

async fn next<R: AsyncRead + Unpin>(rd: &mut R) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(30), wire::read_frame(rd))
        .await
        .expect("the appliance answers")
        .ok()
        .flatten()
}

#[tokio::test]
async fn disconnect_ends_the_live_session_after_draining_it() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::open(t.path(), 1 << 30).unwrap();
    // Admitted at the handshake and at the claim; revoked afterwards (a reconnect would be refused).
    let ctx = context(cache.clone(), 2);
    let (hub, stats) = (ctx.hub.clone(), ctx.stats.clone());
    assert!(!hub.disconnect("a1"), "nothing to end yet");

    let (client, server) = tokio::io::duplex(1 << 20);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let session = tokio::spawn(handle_connection(ctx, server, Some("a1".into()), stop));
    let (mut rd, mut wr) = tokio::io::split(client);
    wire::write_frame(&mut wr, &hello()).await.unwrap();
    wr.flush().await.unwrap();
    assert!(matches!(next(&mut rd).await, Some(Frame::Welcome(_))));
    for seq in 1..=3u64 {
        let extent = Frame::Extent(Extent {
            disk_index: 0,
            seq,
            offset: (seq - 1) * 65536,
            data: vec![seq as u8; 65536].into(),
        });
        wire::write_frame(&mut wr, &extent).await.unwrap();
    }
    wr.flush().await.unwrap();
    // Wait until all three are durable, so the session is surely in its read loop.
    loop {
        match next(&mut rd).await {
            Some(Frame::Ack(a)) if a.durable_seq == 3 => break,
            Some(Frame::Ack(_)) => continue,
            other => panic!("expected Acks, got {other:?}"),
        }
    }
    let facts = stats.machines.get("a1").unwrap();
    assert!(facts.connected);
    assert_eq!(facts.bytes_received, 3 * 65536);
    assert_eq!(facts.hostname, "db01");
    assert_eq!(facts.disks[0].size_bytes, 16 * 65536);
    assert_eq!(hub.connected(), ["a1"]);

    assert!(hub.disconnect("a1"));
    let end = tokio::time::timeout(Duration::from_secs(30), session)
        .await
        .expect("the session ends at once")
        .unwrap();
    assert!(matches!(end, Err(SessionEnd::Disconnected)), "{end:?}");
    // The stream closes without an error frame: the agent reconnects and learns it is revoked then.
    while let Some(f) = next(&mut rd).await {
        assert!(!matches!(f, Frame::Error(_)), "{f:?}");
    }
    assert!(!stats.machines.get("a1").unwrap().connected);
    assert!(hub.connected().is_empty());
    assert!(!hub.disconnect("a1"), "already ended");
    let log = cache.disk("a1", "disk0").unwrap();
    assert_eq!(log.durable_seq(), 3, "what was read before the kick stays");
}

#[tokio::test]
async fn a_revocation_before_the_claim_is_caught_after_it() {
    let t = tempfile::tempdir().unwrap();
    let cache = Cache::open(t.path(), 1 << 30).unwrap();
    // Admitted at the handshake only: revoked by the time the session has claimed the agent.
    let ctx = context(cache.clone(), 1);
    let stats = ctx.stats.clone();
    let (client, server) = tokio::io::duplex(1 << 20);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let session = tokio::spawn(handle_connection(ctx, server, Some("a1".into()), stop));
    let (mut rd, mut wr) = tokio::io::split(client);
    wire::write_frame(&mut wr, &hello()).await.unwrap();
    wr.flush().await.unwrap();
    match next(&mut rd).await {
        Some(Frame::Error(e)) => assert_eq!(e.code, ErrorCode::Revoked),
        other => panic!("expected a revoked error, got {other:?}"),
    }
    let end = session.await.unwrap();
    assert!(
        matches!(end, Err(SessionEnd::Refused(Refusal::Revoked(_)))),
        "{end:?}"
    );
    assert!(
        stats.machines.get("a1").is_none(),
        "never counted connected"
    );
    assert!(cache.disk("a1", "disk0").is_none(), "nothing cached");
}
