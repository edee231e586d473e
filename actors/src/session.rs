//! One agent connection: registration, or a replication session (Hello, extents, bookmarks).
//!
//! Shape (as in tokio's mini-redis): the listener accepts and spawns `handle_connection`; a session owns a
//! reader loop (this task), a frame writer task, and a cache writer thread that group-commits extents
//! (append, one fsync per disk, then Ack). Anything wrong with the peer's bytes ends this session only.

use crate::cache::{Cache, DiskLog, DiskMeta, MachineMeta};
use crate::hub::{Hub, StopReason};
use crate::machines::DiskFact;
use crate::registry::{AgentRegistry, Refusal};
use crate::segment::Record;
use crate::stats::Stats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch};
use wire::{ErrorCode, ErrorFrame, Frame};

/// Extent bytes an agent may have unacknowledged; bounds the appliance's memory per session.
pub const WINDOW_BYTES: u32 = 64 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle agent pings well within this; a silent peer is dropped so its session does not linger.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything a session needs from the appliance.
#[derive(Clone)]
pub struct SessionContext {
    pub cache: Arc<Cache>,
    pub registry: Arc<dyn AgentRegistry>,
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    /// Wakes the compressor when new durable records exist.
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("peer closed the connection")]
    Closed,
    #[error("bad frame: {0}")]
    BadFrame(#[from] wire::WireError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("cache: {0}")]
    Cache(String),
    #[error("timed out waiting for the agent")]
    Timeout,
    #[error("appliance shutting down")]
    Shutdown,
    #[error("replaced by a newer session of the same agent")]
    Replaced,
    #[error("disconnected by the appliance")]
    Disconnected,
}

enum ToWriter {
    Records(Vec<(usize, Record)>),
}

/// Runs one connection to its end. `agent_id` is the identity from the client certificate, if any.
pub async fn handle_connection<S>(
    ctx: SessionContext,
    stream: S,
    agent_id: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = wire::FrameReader::new(rd);
    let mut wr = BufWriter::new(wr);
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, rd.read_frame())
        .await
        .map_err(|_| SessionEnd::Timeout)??
        .ok_or(SessionEnd::Closed)?;
    let Some(agent_id) = agent_id else {
        // Without a client certificate the only thing an agent may do is register.
        let Frame::Register(reg) = first else {
            return refuse(
                &mut wr,
                ErrorCode::Protocol,
                "register first: no client certificate",
            )
            .await;
        };
        return match ctx
            .registry
            .register(&reg.passphrase, &reg.hostname, reg.bios_uuid.as_deref())
        {
            Ok(c) => {
                tracing::info!(agent = %c.agent_id, hostname = %reg.hostname, "agent registered");
                let f = Frame::Registered(wire::Registered {
                    agent_id: c.agent_id,
                    cert_pem: c.cert_pem,
                    key_pem: c.key_pem,
                    ca_pem: c.ca_pem,
                });
                wire::write_frame(&mut wr, &f).await?;
                wr.flush().await.map_err(wire::WireError::Io)?;
                Ok(())
            }
            Err(r) => {
                let code = match r {
                    Refusal::BadPassphrase => ErrorCode::BadPassphrase,
                    _ => ErrorCode::Internal,
                };
                let _ = send_error(&mut wr, code, &r.to_string()).await;
                Err(SessionEnd::Refused(r))
            }
        };
    };
    if let Err(r) = ctx.registry.admit(&agent_id) {
        let code = match r {
            Refusal::Revoked(_) => ErrorCode::Revoked,
            _ => ErrorCode::UnknownAgent,
        };
        let _ = send_error(&mut wr, code, &r.to_string()).await;
        return Err(SessionEnd::Refused(r));
    }
    let Frame::Hello(hello) = first else {
        return refuse(&mut wr, ErrorCode::Protocol, "expected Hello").await;
    };
    if hello.agent_id != agent_id {
        return refuse(
            &mut wr,
            ErrorCode::Protocol,
            "Hello names another agent than the certificate",
        )
        .await;
    }
    if hello.min_version > wire::WIRE_VERSION || hello.max_version < wire::WIRE_VERSION {
        return refuse(
            &mut wr,
            ErrorCode::UnsupportedVersion,
            "no common protocol version",
        )
        .await;
    }
    if hello.disks.is_empty() || hello.disks.len() > 256 {
        return refuse(
            &mut wr,
            ErrorCode::Protocol,
            "an agent replicates 1 to 256 disks",
        )
        .await;
    }
    for d in &hello.disks {
        let ok = !d.disk_id.is_empty()
            && d.disk_id.len() <= 64
            && d.disk_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return refuse(
                &mut wr,
                ErrorCode::Protocol,
                "disk ids are 1-64 characters of [A-Za-z0-9_-]",
            )
            .await;
        }
        // The vault refuses larger disks; accepting one here would fail every point of this machine later.
        if d.size_bytes == 0 || d.size_bytes > vault::MAX_DISK_BYTES {
            return refuse(
                &mut wr,
                ErrorCode::Protocol,
                "disk size must be between 1 byte and 64 TiB",
            )
            .await;
        }
    }
    ctx.registry.seen(&agent_id, &hello.hostname);
    // One session per agent: a reconnect replaces the old session, which must have stopped writing first.
    let (_claim, mut replaced) = ctx.hub.claim(&agent_id).await;
    // A revocation between the admission above and the claim found no session to end; asking again now
    // closes that gap (a revocation after this point finds the claim and ends this session).
    if let Err(r) = ctx.registry.admit(&agent_id) {
        let _ = send_error(&mut wr, ErrorCode::Revoked, &r.to_string()).await;
        return Err(SessionEnd::Refused(r));
    }
    let meta = MachineMeta {
        machine_id: agent_id.clone(),
        hostname: hello.hostname.clone(),
        disks: hello
            .disks
            .iter()
            .map(|d| DiskMeta {
                disk_id: d.disk_id.clone(),
                size_bytes: d.size_bytes,
                label: d.label.clone(),
            })
            .collect(),
    };
    let logs = ctx
        .cache
        .register_machine(meta)
        .map_err(|e| SessionEnd::Cache(e.to_string()))?;
    let welcome = wire::Welcome {
        version: wire::WIRE_VERSION,
        window_bytes: WINDOW_BYTES,
        resume: logs
            .iter()
            .enumerate()
            .map(|(i, l)| wire::Resume {
                disk_index: i as u16,
                durable_seq: l.durable_seq(),
            })
            .collect(),
    };
    tracing::info!(agent = %agent_id, hostname = %hello.hostname, disks = logs.len(), "session started");
    // Connected for the catalog until this guard drops at the end of the session (a panic included).
    let machine = ctx.stats.machines.session_started(
        &agent_id,
        &hello.hostname,
        hello
            .disks
            .iter()
            .map(|d| DiskFact {
                disk_id: d.disk_id.clone(),
                size_bytes: d.size_bytes,
                label: d.label.clone(),
            })
            .collect(),
    );
    wire::write_frame(&mut wr, &Frame::Welcome(welcome)).await?;
    wr.flush().await.map_err(wire::WireError::Io)?;

    let (out_tx, out_rx) = mpsc::unbounded_channel::<Frame>();
    ctx.hub.attach(&agent_id, out_tx.clone());
    let writer_task = tokio::spawn(frame_writer(wr, out_rx));
    // The cache writer thread: bounded queue, so a full cache stops this task from reading the socket.
    let (rec_tx, rec_rx) = mpsc::channel::<ToWriter>(64);
    let thread_ctx = ctx.clone();
    let thread_logs = logs.clone();
    let thread_out = out_tx.clone();
    let thread_stop = shutdown.clone();
    let cache_thread = std::thread::Builder::new()
        .name(format!("cache-{}", &agent_id[..agent_id.len().min(8)]))
        .spawn(move || cache_writer(thread_ctx, thread_logs, rec_rx, thread_out, thread_stop))
        .map_err(|e| SessionEnd::Cache(e.to_string()))?;

    let sizes: Vec<u64> = hello.disks.iter().map(|d| d.size_bytes).collect();
    let mut last_seq: Vec<u64> = logs.iter().map(|l| l.durable_seq()).collect();
    let result = loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(IDLE_TIMEOUT, rd.read_frame()) => match f {
                Err(_) => break Err(SessionEnd::Timeout),
                // An agent that exits without a TLS close_notify has still ended its session normally.
                Ok(Err(wire::WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Err(SessionEnd::Closed),
                Ok(Err(e)) => break Err(SessionEnd::BadFrame(e)),
                Ok(Ok(None)) => break Err(SessionEnd::Closed),
                Ok(Ok(Some(f))) => f,
            },
            _ = shutdown.changed() => break Err(SessionEnd::Shutdown),
            _ = replaced.changed() => match *replaced.borrow() {
                StopReason::Disconnected => break Err(SessionEnd::Disconnected),
                _ => break Err(SessionEnd::Replaced),
            },
        };
        match frame {
            Frame::Extent(e) => {
                let i = e.disk_index as usize;
                if i >= logs.len() {
                    break Err(SessionEnd::Protocol(format!(
                        "extent for unknown disk index {i}"
                    )));
                };
                let size = sizes[i];
                if e.seq <= last_seq[i] {
                    break Err(SessionEnd::Protocol(format!(
                        "extent seq {} is not after {}",
                        e.seq, last_seq[i]
                    )));
                }
                let end = e.offset.checked_add(e.data.len() as u64);
                if end.is_none_or(|end| end > size.next_multiple_of(wire::BLOCK_SIZE)) {
                    break Err(SessionEnd::Protocol(format!(
                        "extent at {} runs past the disk's end",
                        e.offset
                    )));
                }
                last_seq[i] = e.seq;
                ctx.stats
                    .bytes_received
                    .fetch_add(e.data.len() as u64, Ordering::Relaxed);
                machine.entry().add_bytes(e.data.len() as u64);
                let rec = Record::Extent {
                    seq: e.seq,
                    offset: e.offset,
                    data: e.data,
                };
                if rec_tx
                    .send(ToWriter::Records(vec![(i, rec)]))
                    .await
                    .is_err()
                {
                    break Err(SessionEnd::Cache("cache writer stopped".into()));
                }
            }
            Frame::Bookmark(b) => {
                let recs = logs
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let seq = b
                            .seqs
                            .iter()
                            .find(|s| s.disk_index as usize == i)
                            .map_or(last_seq[i], |s| s.seq);
                        (
                            i,
                            Record::Bookmark {
                                last_seq: seq.min(last_seq[i]),
                                bookmark_id: b.bookmark_id,
                                app_consistent: b.kind == wire::PointKind::App,
                            },
                        )
                    })
                    .collect();
                if logs
                    .iter()
                    .all(|l| l.committed().bookmark_id >= b.bookmark_id)
                {
                    // A bookmark re-sent after a reconnect whose point is already in the vault.
                    let _ = out_tx.send(Frame::PointDurable(wire::PointDurable {
                        bookmark_id: b.bookmark_id,
                        point_id: crate::upload::point_id(b.bookmark_id),
                    }));
                    continue;
                }
                if rec_tx.send(ToWriter::Records(recs)).await.is_err() {
                    break Err(SessionEnd::Cache("cache writer stopped".into()));
                }
            }
            Frame::Ping(n) => {
                let _ = out_tx.send(Frame::Pong(n));
            }
            Frame::Pong(_) => {}
            Frame::Error(e) => {
                break Err(SessionEnd::Protocol(format!(
                    "agent reported {}: {}",
                    e.code, e.message
                )))
            }
            other => {
                break Err(SessionEnd::Protocol(format!(
                    "unexpected {} frame",
                    other.name()
                )))
            }
        }
    };
    // Drain: everything read so far is still written and acknowledged before the session ends.
    drop(rec_tx);
    let _ = tokio::task::spawn_blocking(move || cache_thread.join()).await;
    if let Err(e) = &result {
        let (code, msg) = match e {
            SessionEnd::BadFrame(_) => (ErrorCode::BadFrame, e.to_string()),
            SessionEnd::Protocol(_) => (ErrorCode::Protocol, e.to_string()),
            SessionEnd::Cache(_) => (ErrorCode::Internal, e.to_string()),
            _ => (ErrorCode::Other(0), String::new()),
        };
        if code != ErrorCode::Other(0) {
            let _ = out_tx.send(Frame::Error(ErrorFrame { code, message: msg }));
        }
    }
    ctx.hub.detach(&agent_id, &out_tx);
    drop(out_tx);
    let _ = writer_task.await;
    drop(machine);
    result
}

async fn frame_writer<W: AsyncWrite + Unpin>(
    mut wr: BufWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) {
    while let Some(f) = rx.recv().await {
        if wire::write_frame(&mut wr, &f).await.is_err() {
            return;
        }
        // Batch whatever else is queued before paying for a flush.
        while let Ok(f) = rx.try_recv() {
            if wire::write_frame(&mut wr, &f).await.is_err() {
                return;
            }
        }
        if wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Group commit: take everything queued, append per disk, fsync each touched disk once, then Ack.
fn cache_writer(
    ctx: SessionContext,
    logs: Vec<Arc<DiskLog>>,
    mut rx: mpsc::Receiver<ToWriter>,
    out: mpsc::UnboundedSender<Frame>,
    stop: watch::Receiver<bool>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch: Vec<(usize, Record)> = Vec::new();
        let ToWriter::Records(r) = first;
        batch.extend(r);
        let mut bytes: u64 = batch.iter().map(|(_, r)| r.encoded_len()).sum();
        // A group commit is a small part of the cache budget, so a full cache can always make room for it.
        let limit = (ctx.cache.max_bytes() / 4).clamp(1 << 20, 64 << 20);
        while bytes < limit {
            match rx.try_recv() {
                Ok(ToWriter::Records(r)) => {
                    bytes += r.iter().map(|(_, r)| r.encoded_len()).sum::<u64>();
                    batch.extend(r);
                }
                Err(_) => break,
            }
        }
        // At shutdown a wait for cache space ends without writing: those records were never acknowledged.
        if !ctx.cache.reserve(bytes, &|| *stop.borrow()) {
            return;
        }
        let mut per_disk: Vec<Vec<Record>> = vec![Vec::new(); logs.len()];
        for (i, r) in batch {
            per_disk[i].push(r);
        }
        for (i, recs) in per_disk.iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let res = logs[i].append(recs).and_then(|_| logs[i].sync());
            match res {
                Ok(durable) => {
                    let _ = out.send(Frame::Ack(wire::Ack {
                        disk_index: i as u16,
                        durable_seq: durable,
                    }));
                }
                Err(e) => {
                    // Nothing of this batch is acknowledged; the agent resends it after reconnecting.
                    tracing::error!(error = %e, disk = %logs[i].disk_id, "cache append failed");
                    let _ = logs[i].rollback();
                    ctx.cache.unreserve(bytes);
                    let _ = out.send(Frame::Error(ErrorFrame {
                        code: ErrorCode::Internal,
                        message: format!("appliance cache write failed: {e}"),
                    }));
                    return;
                }
            }
        }
        ctx.stats.extents_durable.fetch_add(1, Ordering::Relaxed);
        (ctx.wake)();
    }
}

async fn send_error<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    code: ErrorCode,
    message: &str,
) -> Result<(), wire::WireError> {
    wire::write_frame(
        w,
        &Frame::Error(ErrorFrame {
            code,
            message: message.to_string(),
        }),
    )
    .await?;
    w.flush().await.map_err(wire::WireError::Io)
}

async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    code: ErrorCode,
    message: &str,
) -> Result<(), SessionEnd> {
    let _ = send_error(w, code, message).await;
    Err(SessionEnd::Protocol(message.to_string()))
}
