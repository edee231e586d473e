//! One replication connection: Hello/Welcome, then three cooperating parts until it ends:
//! the driver (scans on a blocking thread, bookmarks, waits), the writer (frames to a large
//! `BufWriter`, flushed when its queue drains) and the reader (acks -> tracker, points, errors).
//! They run inside one future, so dropping the session stops all of them.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, watch};
use wire::{
    Bookmark, DiskInfo, DiskSeq, ErrorCode, ErrorFrame, Extent, Frame, Hello, PointDurable,
    PointKind, WireError, WIRE_VERSION,
};

use crate::agent::Agent;
use crate::flight::{Flight, Pending};
use crate::scan::{scan_disk, ScanEnd, ScanStats};
use crate::state::unix_millis;
use crate::tls;
use crate::tracker::Tracker;

/// Bytes buffered before the TLS stream sees them: large writes mean few records and syscalls.
const WRITE_BUFFER: usize = 1024 * 1024;
const READ_BUFFER: usize = 64 * 1024;
/// Extents queued between the scanner thread and the writer.
const SEND_QUEUE: usize = 8;
const TRACKER_SYNC_EVERY: Duration = Duration::from_secs(5);

/// What a session is for.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Scan once, bookmark with this id, return when its point is durable.
    Once { bookmark_id: u64 },
    /// Scan, bookmark, sleep `interval`, forever.
    Continuous { interval: Duration },
}

/// How a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Retrying cannot help (revoked, unknown agent, unsupported version...).
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// Reconnect after a backoff.
    #[error("{0:#}")]
    Retry(anyhow::Error),
}

impl SessionError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SessionError::Retry(_))
    }
}

fn retry(e: impl Into<anyhow::Error>) -> SessionError {
    SessionError::Retry(e.into())
}

/// An Error frame from the appliance: fatal when it is about who we are.
pub fn appliance_error(e: &ErrorFrame) -> SessionError {
    let err = anyhow!("the appliance refused: {}: {}", e.code, e.message);
    match e.code {
        ErrorCode::Revoked
        | ErrorCode::UnknownAgent
        | ErrorCode::BadPassphrase
        | ErrorCode::UnsupportedVersion => SessionError::Fatal(err),
        _ => SessionError::Retry(err),
    }
}

/// A TLS alert saying our certificate is not accepted is as final as a `revoked` Error frame.
fn wire_error(e: WireError) -> SessionError {
    if let WireError::Io(io) = &e {
        if let Some(rustls::Error::AlertReceived(alert)) =
            io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            use rustls::AlertDescription as A;
            if matches!(
                alert,
                A::CertificateRevoked
                    | A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateExpired
                    | A::AccessDenied
            ) {
                return SessionError::Fatal(anyhow!(
                    "the appliance rejected this agent's certificate ({alert:?}); it may be revoked: register again"
                ));
            }
        }
    }
    retry(anyhow::Error::from(e).context("connection to the appliance failed"))
}

/// A disk opened for one session.
pub struct OpenDisk {
    pub index: u16,
    pub disk_id: String,
    pub path: String,
    pub file: Arc<File>,
    pub tracker: Arc<Tracker>,
}

/// Opens every disk and its tracker (sized to the disk as it is now).
pub fn open_disks(agent: &Agent) -> anyhow::Result<Vec<OpenDisk>> {
    let mut out = Vec::new();
    for (i, d) in agent.disks.iter().enumerate() {
        let mut file = File::open(&d.path).with_context(|| format!("opening disk {}", d.path))?;
        // seek works for block devices too, where metadata().len() is 0
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("measuring disk {}", d.path))?;
        let tracker = Tracker::open(&agent.state.tracker_path(&d.disk_id), size)
            .with_context(|| format!("opening the tracker of {}", d.path))?;
        out.push(OpenDisk {
            index: i as u16,
            disk_id: d.disk_id.clone(),
            path: d.path.clone(),
            file: Arc::new(file),
            tracker: Arc::new(tracker),
        });
    }
    Ok(out)
}

/// Closes the flight window when the session ends, however it ends.
struct CloseOnDrop(Arc<Flight>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs one connection. `welcomed` is set once the appliance accepted the Hello (the caller
/// resets its backoff then).
pub async fn run_session(
    agent: &Agent,
    goal: Goal,
    welcomed: &mut bool,
) -> Result<String, SessionError> {
    let disks = open_disks(agent).map_err(retry)?;
    agent.set_open_trackers(disks.iter().map(|d| d.tracker.clone()).collect());
    agent.status_disks(&disks);
    agent.status.set_state("connecting", false);
    let stream = tls::connect(&agent.registration.appliance, agent.tls.clone())
        .await
        .map_err(retry)?;
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let mut wr = BufWriter::with_capacity(WRITE_BUFFER, wr);

    let hello = Frame::Hello(Hello {
        min_version: WIRE_VERSION,
        max_version: WIRE_VERSION,
        agent_id: agent.registration.agent_id.clone(),
        hostname: agent.registration.hostname.clone(),
        disks: disks
            .iter()
            .map(|d| DiskInfo {
                disk_id: d.disk_id.clone(),
                size_bytes: d.tracker.size_bytes(),
                label: d.path.clone(),
            })
            .collect(),
    });
    wire::write_frame(&mut wr, &hello)
        .await
        .map_err(wire_error)?;
    wr.flush().await.map_err(|e| wire_error(e.into()))?;
    let welcome = match wire::read_frame(&mut rd).await.map_err(wire_error)? {
        Some(Frame::Welcome(w)) => w,
        Some(Frame::Error(e)) => return Err(appliance_error(&e)),
        Some(other) => {
            return Err(retry(anyhow!(
                "protocol error: expected Welcome, got {}",
                other.name()
            )))
        }
        None => {
            return Err(retry(anyhow!(
                "the appliance closed the connection before Welcome"
            )))
        }
    };
    if welcome.version != WIRE_VERSION {
        return Err(SessionError::Fatal(anyhow!(
            "the appliance chose protocol version {}; this agent speaks {WIRE_VERSION}",
            welcome.version
        )));
    }
    *welcomed = true;
    let mut next_seq = Vec::with_capacity(disks.len());
    for d in &disks {
        let durable = welcome
            .resume
            .iter()
            .find(|r| r.disk_index == d.index)
            .map_or(0, |r| r.durable_seq);
        apply_resume(&agent.flight, d, durable).map_err(retry)?;
        next_seq.push(durable + 1);
    }
    tracing::info!(window = welcome.window_bytes, ?next_seq, "session started");
    let session = agent.flight.begin_session(u64::from(welcome.window_bytes));
    let _close = CloseOnDrop(agent.flight.clone());
    agent.status.set_state("syncing", true);
    agent.status_refresh(&disks);
    agent.status.save();

    // Extents and bookmarks share one ordered queue; replies to Pings go on a separate unbounded
    // queue so the reader never blocks behind a full send queue (it must keep reading acks).
    let (out_tx, out_rx) = mpsc::channel::<Frame>(SEND_QUEUE);
    let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel::<Frame>();
    let (point_tx, point_rx) = watch::channel(None::<PointDurable>);
    let result = tokio::select! {
        r = writer(agent, wr, out_rx, ctrl_rx) => r.map(|_| String::new()),
        r = reader(agent, &disks, rd, ctrl_tx, point_tx) => r.map(|_| String::new()),
        r = driver(agent, &disks, goal, session, out_tx, point_rx, next_seq) => r,
        _ = periodic_sync(agent, &disks) => unreachable!("periodic_sync never returns"),
    };
    for d in &disks {
        if let Err(e) = d.tracker.sync() {
            tracing::warn!(disk = %d.path, "tracker fsync failed: {e}");
        }
    }
    agent.status_refresh(&disks);
    result
}

/// Reconciles the tracker with the appliance's durable sequence number for one disk.
fn apply_resume(flight: &Flight, d: &OpenDisk, durable: u64) -> anyhow::Result<()> {
    let i = usize::from(d.index);
    if durable < d.tracker.acked_seq() {
        // The appliance holds less than it once acknowledged: it lost its cache or is a different
        // appliance. Our records describe data it no longer has, so start over for this disk.
        tracing::warn!(
            disk = %d.path,
            durable,
            recorded = d.tracker.acked_seq(),
            "appliance is behind this agent's records; resending the whole disk"
        );
        flight.resolve(i, 0);
        d.tracker.reset()?;
        return Ok(());
    }
    for p in flight.resolve(i, durable) {
        record(&d.tracker, &p)?;
    }
    if durable > d.tracker.acked_seq() {
        d.tracker.set_acked_seq(durable)?;
    }
    Ok(())
}

fn record(tracker: &Tracker, p: &Pending) -> std::io::Result<()> {
    // The disk may have shrunk since the extent was read; what lies past its end is moot.
    let keep = tracker
        .blocks()
        .saturating_sub(p.first_block)
        .min(p.hashes.len() as u64) as usize;
    tracker.record(p.first_block, &p.hashes[..keep])
}

async fn writer<W: AsyncWrite + Unpin>(
    agent: &Agent,
    mut w: BufWriter<W>,
    mut data_rx: mpsc::Receiver<Frame>,
    mut ctrl_rx: mpsc::UnboundedReceiver<Frame>,
) -> Result<(), SessionError> {
    let mut nonce = 0u64;
    loop {
        let mut frame = tokio::select! {
            biased;
            Some(f) = ctrl_rx.recv() => f,
            Some(f) = data_rx.recv() => f,
            // The appliance drops sessions that stay silent; waiting for a point can take long.
            _ = tokio::time::sleep(agent.keepalive()) => {
                nonce += 1;
                Frame::Ping(nonce)
            }
            else => return Err(retry(anyhow!("send queue closed"))),
        };
        // Write everything already queued, then flush once: few, large TLS writes.
        loop {
            if let Frame::Extent(e) = &frame {
                agent.status.lock().bytes_sent += e.data.len() as u64;
            }
            wire::write_frame(&mut w, &frame)
                .await
                .map_err(wire_error)?;
            match ctrl_rx.try_recv().or_else(|_| data_rx.try_recv()) {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        w.flush().await.map_err(|e| wire_error(e.into()))?;
    }
}

async fn reader<R: AsyncRead + Unpin>(
    agent: &Agent,
    disks: &[OpenDisk],
    mut r: R,
    ctrl_tx: mpsc::UnboundedSender<Frame>,
    point_tx: watch::Sender<Option<PointDurable>>,
) -> Result<(), SessionError> {
    loop {
        match wire::read_frame(&mut r).await.map_err(wire_error)? {
            None => return Err(retry(anyhow!("the appliance closed the connection"))),
            Some(Frame::Ack(a)) => {
                let d = disks.get(usize::from(a.disk_index)).ok_or_else(|| {
                    retry(anyhow!(
                        "protocol error: Ack for unknown disk {}",
                        a.disk_index
                    ))
                })?;
                // The invariant: hashes reach the tracker only for acknowledged extents.
                agent
                    .flight
                    .ack_with(usize::from(d.index), a.durable_seq, |p| {
                        record(&d.tracker, p)
                    })
                    .map_err(retry)?;
                if a.durable_seq > d.tracker.acked_seq() {
                    d.tracker.set_acked_seq(a.durable_seq).map_err(retry)?;
                }
            }
            Some(Frame::PointDurable(p)) => {
                tracing::info!(bookmark = p.bookmark_id, point = %p.point_id, "point durable");
                {
                    let mut s = agent.status.lock();
                    s.last_point_id = Some(p.point_id.clone());
                    s.last_point_unix = Some(unix_millis() / 1000);
                }
                agent.status.save();
                point_tx.send_replace(Some(p));
            }
            Some(Frame::Ping(n)) => {
                let _ = ctrl_tx.send(Frame::Pong(n));
            }
            Some(Frame::Pong(_)) => {}
            Some(Frame::Error(e)) => return Err(appliance_error(&e)),
            Some(other) => {
                return Err(retry(anyhow!(
                    "protocol error: unexpected {} from the appliance",
                    other.name()
                )))
            }
        }
    }
}

async fn driver(
    agent: &Agent,
    disks: &[OpenDisk],
    goal: Goal,
    session: u64,
    out_tx: mpsc::Sender<Frame>,
    mut point_rx: watch::Receiver<Option<PointDurable>>,
    mut next_seq: Vec<u64>,
) -> Result<String, SessionError> {
    loop {
        // A block still in flight from the previous pass would be found and sent again.
        agent.flight.drained().await;
        if let Some(d) = disks
            .iter()
            .find(|d| current_size(&d.file) != Some(d.tracker.size_bytes()))
        {
            // The appliance must learn the new size from a new Hello.
            return Err(retry(anyhow!("disk {} changed size; reconnecting", d.path)));
        }
        agent.status.set_state("syncing", true);
        let targets: Vec<_> = disks
            .iter()
            .map(|d| (d.index, d.file.clone(), d.tracker.clone()))
            .collect();
        let flight = agent.flight.clone();
        let tx = out_tx.clone();
        let seqs = next_seq.clone();
        let scanned =
            tokio::task::spawn_blocking(move || scan_all(&targets, &flight, session, &tx, seqs))
                .await
                .map_err(|e| retry(anyhow!("scanner thread failed: {e}")))?;
        let (stats, seqs) = match scanned {
            Ok(v) => v,
            Err(ScanEnd::Stopped) => return Err(retry(anyhow!("session ended during the scan"))),
            Err(ScanEnd::Failed(e)) => return Err(retry(e.context("scanning the disks"))),
        };
        next_seq = seqs;
        agent.status_scanned(&stats);
        let bookmark_id = match goal {
            Goal::Once { bookmark_id } => bookmark_id,
            Goal::Continuous { .. } => agent.state.next_bookmark_id().map_err(retry)?,
        };
        let bookmark = Bookmark {
            bookmark_id,
            kind: PointKind::Crash,
            seqs: disks
                .iter()
                .zip(&next_seq)
                .map(|(d, n)| DiskSeq {
                    disk_index: d.index,
                    seq: n - 1,
                })
                .collect(),
        };
        tracing::info!(
            bookmark_id,
            changed = stats.iter().map(|s| s.changed_blocks).sum::<u64>(),
            "scan done, bookmark sent"
        );
        out_tx
            .send(Frame::Bookmark(bookmark))
            .await
            .map_err(|_| retry(anyhow!("send queue closed")))?;
        agent.status.lock().last_bookmark_id = Some(bookmark_id);
        agent.status_refresh(disks);
        agent.status.save();
        match goal {
            Goal::Once { bookmark_id } => {
                let point = point_rx
                    .wait_for(|p| p.as_ref().is_some_and(|p| p.bookmark_id == bookmark_id))
                    .await
                    .map_err(|_| retry(anyhow!("session ended")))?;
                return Ok(point
                    .as_ref()
                    .map(|p| p.point_id.clone())
                    .unwrap_or_default());
            }
            Goal::Continuous { interval } => {
                agent.status.set_state("idle", true);
                agent.status.save();
                tokio::time::sleep(interval).await;
            }
        }
    }
}

fn current_size(file: &File) -> Option<u64> {
    let mut f: &File = file;
    f.seek(SeekFrom::End(0)).ok()
}

type ScanTarget = (u16, Arc<File>, Arc<Tracker>);

/// Scans every disk in turn (blocking). Returns per-disk stats and the next free sequence numbers.
fn scan_all(
    targets: &[ScanTarget],
    flight: &Flight,
    session: u64,
    tx: &mpsc::Sender<Frame>,
    mut next_seq: Vec<u64>,
) -> Result<(Vec<ScanStats>, Vec<u64>), ScanEnd> {
    let mut all = Vec::new();
    for (index, file, tracker) in targets {
        let i = usize::from(*index);
        let seq = &mut next_seq[i];
        let stats = scan_disk(file, tracker, &|| !flight.is_current(session), &mut |pe| {
            let pending = Pending {
                seq: *seq,
                first_block: pe.first_block,
                hashes: pe.hashes,
                len: pe.data.len() as u64,
            };
            flight
                .reserve(session, i, pending)
                .map_err(|_| ScanEnd::Stopped)?;
            let extent = Extent {
                disk_index: *index,
                seq: *seq,
                offset: pe.first_block * wire::BLOCK_SIZE,
                data: pe.data,
            };
            *seq += 1;
            tx.blocking_send(Frame::Extent(extent))
                .map_err(|_| ScanEnd::Stopped)
        })?;
        all.push(stats);
    }
    Ok((all, next_seq))
}

/// Makes acknowledged tracker entries durable and refreshes status.json now and then.
async fn periodic_sync(agent: &Agent, disks: &[OpenDisk]) {
    let mut tick = tokio::time::interval(TRACKER_SYNC_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let trackers: Vec<_> = disks.iter().map(|d| d.tracker.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in trackers {
                if let Err(e) = t.sync() {
                    tracing::warn!(path = %t.path().display(), "tracker fsync failed: {e}");
                }
            }
        })
        .await;
        agent.status_refresh(disks);
        agent.status.save();
    }
}
