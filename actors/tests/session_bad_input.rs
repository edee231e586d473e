//! A registered agent that sends bad input (an impossible disk size, an extent past the disk's end or with
//! an overflowing offset, a seq that goes backwards, a frame out of place) gets an Error frame and its session
//! ends; nothing of the bad extent reaches the cache. Runs the real session over an in-memory stream.

use actors::cache::Cache;
use actors::hub::Hub;
use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use actors::session::{handle_connection, SessionContext, SessionEnd};
use actors::stats::Stats;
use std::sync::Arc;
use wire::{DiskInfo, ErrorCode, Extent, Frame, Hello};

struct Admit;
impl AgentRegistry for Admit {
    fn register(&self, _: &str, _: &str, _: Option<&str>) -> Result<AgentCredentials, Refusal> {
        Err(Refusal::BadPassphrase)
    }
    fn admit(&self, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
    fn identify(&self, _: &[u8]) -> Option<String> {
        None
    }
    fn seen(&self, _: &str, _: &str) {}
}

fn hello(size: u64) -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent_id: "a1".into(),
        hostname: "h".into(),
        disks: vec![DiskInfo {
            disk_id: "disk0".into(),
            size_bytes: size,
            label: "x".into(),
        }],
    })
}

fn extent(seq: u64, offset: u64) -> Frame {
    Frame::Extent(Extent {
        disk_index: 0,
        seq,
        offset,
        data: vec![1u8; 65536].into(),
    })
}

/// Sends `frames`, returns what the appliance answered and how the session ended.
async fn run(cache: Arc<Cache>, frames: Vec<Frame>) -> (Vec<Frame>, Result<(), SessionEnd>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let ctx = SessionContext {
        cache,
        registry: Arc::new(Admit),
        hub: Arc::new(Hub::default()),
        stats: Arc::new(Stats::default()),
        wake: Arc::new(|| {}),
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let session = tokio::spawn(handle_connection(ctx, server, Some("a1".into()), stop));
    let (mut rd, mut wr) = tokio::io::split(client);
    for f in &frames {
        wire::write_frame(&mut wr, f).await.unwrap();
    }
    tokio::io::AsyncWriteExt::flush(&mut wr).await.unwrap();
    let mut answers = Vec::new();
    while let Ok(Some(f)) = wire::read_frame(&mut rd).await {
        answers.push(f);
    }
    drop(wr);
    (answers, session.await.unwrap())
}

fn error_code(answers: &[Frame]) -> Option<ErrorCode> {
    answers.iter().find_map(|f| match f {
        Frame::Error(e) => Some(e.code),
        _ => None,
    })
}

#[tokio::test]
async fn impossible_disk_sizes_are_refused() {
    let t = tempfile::tempdir().unwrap();
    for size in [0, u64::MAX, vault::MAX_DISK_BYTES + 1] {
        let cache = Cache::open(t.path(), 1 << 30).unwrap();
        let (answers, end) = run(cache, vec![hello(size)]).await;
        assert_eq!(
            error_code(&answers),
            Some(ErrorCode::Protocol),
            "size {size}: {answers:?}"
        );
        assert!(matches!(end, Err(SessionEnd::Protocol(_))));
    }
}

#[tokio::test]
async fn bad_extents_end_the_session_and_are_not_cached() {
    let t = tempfile::tempdir().unwrap();
    let size = 4 * 65536;
    let cases: Vec<(&str, Vec<Frame>)> = vec![
        ("past the end", vec![hello(size), extent(1, 4 * 65536)]),
        (
            "overflowing offset",
            vec![hello(size), extent(1, u64::MAX - 65535)],
        ),
        (
            "seq going back",
            vec![hello(size), extent(2, 0), extent(2, 65536)],
        ),
        ("frame out of place", vec![hello(size), hello(size)]),
    ];
    for (what, frames) in cases {
        let dir = t.path().join(what.replace(' ', "-"));
        let cache = Cache::open(&dir, 1 << 30).unwrap();
        let (answers, end) = run(cache.clone(), frames).await;
        assert!(
            matches!(answers.first(), Some(Frame::Welcome(_))),
            "{what}: {answers:?}"
        );
        assert_eq!(
            error_code(&answers),
            Some(ErrorCode::Protocol),
            "{what}: {answers:?}"
        );
        assert!(
            matches!(end, Err(SessionEnd::Protocol(_))),
            "{what}: {end:?}"
        );
        let log = cache.disk("a1", "disk0").unwrap();
        let good = if what == "seq going back" { 1 } else { 0 };
        let (records, _) = log.read_from(&log.start_pos(), u64::MAX).unwrap();
        assert_eq!(
            records.len(),
            good,
            "{what}: only the valid extents before the bad one are cached"
        );
    }
}
