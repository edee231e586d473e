//! The actor tree: a root supervisor starting the receiver, compressor and uploader actors, each on its own
//! arbiter (thread). actix's `Supervisor` restarts an actor that stops; a panic inside a handler is caught
//! and turned into a stop, so a bug costs a restart (with backoff), never the appliance.

use crate::cache::Cache;
use crate::compress::{Compressor, Work};
use crate::hub::Hub;
use crate::ratelimit::UploadLimiter;
use crate::registry::AgentRegistry;
use crate::session::SessionContext;
use crate::stats::Stats;
use crate::upload::Uploader;
use actix::prelude::*;
use futures::FutureExt;
use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use vault::Vault;

/// Settings of the data path.
#[derive(Clone, Debug)]
pub struct DataPathConfig {
    pub listen: std::net::SocketAddr,
    pub maps_dir: PathBuf,
    pub compress_threads: usize,
    pub batch_bytes: u64,
    pub pack_target_bytes: usize,
    pub full_map_every: u32,
    /// Pack uploads of one batch in flight at once.
    pub upload_concurrency: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Starting,
    Running,
    Restarting,
    Stopped,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ActorHealth {
    pub state: ActorState,
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// Each actor's state, for /healthz and status.
#[derive(Debug, Default)]
pub struct Health(Mutex<BTreeMap<&'static str, ActorHealth>>);

impl Health {
    fn set(&self, name: &'static str, state: ActorState, err: Option<String>) {
        let mut m = self.0.lock().expect("health lock");
        let e = m.entry(name).or_insert(ActorHealth {
            state,
            restarts: 0,
            last_error: None,
        });
        e.state = state;
        if err.is_some() {
            e.last_error = err;
        }
    }

    fn count_restart(&self, name: &'static str) {
        let mut m = self.0.lock().expect("health lock");
        if let Some(e) = m.get_mut(name) {
            e.restarts += 1;
            e.state = ActorState::Restarting;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, ActorHealth> {
        self.0.lock().expect("health lock").clone()
    }

    pub fn all_running(&self) -> bool {
        let m = self.0.lock().expect("health lock");
        !m.is_empty() && m.values().all(|h| h.state == ActorState::Running)
    }
}

/// Test hook: makes the next N compressor rounds panic, to prove that supervision keeps data safe.
#[derive(Debug, Default)]
pub struct FaultInjection {
    pub compressor_panics: AtomicU32,
    pub uploader_panics: AtomicU32,
}

/// What every actor shares.
#[derive(Clone)]
pub struct Shared {
    pub cache: Arc<Cache>,
    pub vault: Vault,
    pub hub: Arc<Hub>,
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    pub faults: Arc<FaultInjection>,
    pub config: DataPathConfig,
    wake: Arc<Notify>,
    busy: Arc<AtomicBool>,
    upload_limiter: Arc<UploadLimiter>,
}

impl Shared {
    /// Sets the upload bandwidth limit in bytes per second (0 = unlimited). Pack uploads that start from
    /// now on use it; uploads waiting under the old limit take their turn again under the new one.
    pub fn set_upload_limit(&self, bytes_per_sec: u64) {
        self.upload_limiter.set_limit(bytes_per_sec);
    }

    /// The upload bandwidth limit in bytes per second (0 = unlimited).
    pub fn upload_limit(&self) -> u64 {
        self.upload_limiter.limit()
    }

    /// Counts a supervisor restart of `name` in the metrics and in its health.
    fn note_restart(&self, name: &'static str) {
        self.stats.actor_restarts.fetch_add(1, Ordering::Relaxed);
        self.health.count_restart(name);
    }
}

fn backoff(restarts: u32) -> Duration {
    Duration::from_millis((100u64 << restarts.min(7)).min(10_000))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

// ---------------------------------------------------------------- uploader

pub struct UploaderActor {
    shared: Shared,
    uploader: Option<Uploader>,
    restarts: u32,
}

impl Actor for UploaderActor {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        let s = &self.shared;
        self.uploader = Some(
            Uploader::new(
                s.vault.clone(),
                s.cache.clone(),
                s.config.maps_dir.clone(),
                s.config.pack_target_bytes,
                s.config.full_map_every,
            )
            .with_concurrency(s.config.upload_concurrency)
            .with_limiter(s.upload_limiter.clone()),
        );
        s.health.set("uploader", ActorState::Running, None);
    }
}

impl Supervised for UploaderActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts += 1;
        self.shared.note_restart("uploader");
        self.uploader = None;
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Upload(pub Work);

impl Handler<Upload> for UploaderActor {
    type Result = AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, msg: Upload, _: &mut Context<Self>) -> Self::Result {
        let shared = self.shared.clone();
        // After a failure the actor is stopping (with backoff); work that arrives meanwhile is refused, and
        // the compressor resumes from the committed cursors once the uploader is back.
        let Some(mut up) = self.uploader.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                "uploader is restarting".to_string()
            ))));
        };
        let fut = async move {
            let res = AssertUnwindSafe(async {
                if shared.faults.uploader_panics.load(Ordering::SeqCst) > 0 {
                    shared.faults.uploader_panics.fetch_sub(1, Ordering::SeqCst);
                    panic!("injected uploader fault");
                }
                match msg.0 {
                    Work::Batch(b) => {
                        let n = up.commit_batch(b).await.map_err(|e| e.to_string())?;
                        shared.stats.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
                    }
                    Work::Point(p) => {
                        let outcome = up.commit_point(&p).await.map_err(|e| e.to_string())?;
                        if let Some(committed) = outcome.committed {
                            shared.stats.points_committed.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(machine = %p.machine_id, point = %outcome.point_id, "recovery point committed");
                            shared.stats.machines.point_committed(committed);
                        }
                        shared.hub.send(
                            &p.machine_id,
                            wire::Frame::PointDurable(wire::PointDurable {
                                bookmark_id: p.bookmark_id,
                                point_id: outcome.point_id,
                            }),
                        );
                    }
                }
                Ok::<_, String>(())
            })
            .catch_unwind()
            .await;
            (up, res)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(up, res), act, ctx| match res {
                Ok(Ok(())) => {
                    act.uploader = Some(up);
                    Ok(())
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "uploader failed; restarting it");
                    act.shared
                        .health
                        .set("uploader", ActorState::Restarting, Some(e.clone()));
                    ctx.run_later(backoff(act.restarts), |_, ctx| ctx.stop());
                    Err(e)
                }
                Err(p) => {
                    let e = panic_message(&*p);
                    tracing::error!(panic = %e, "uploader panicked; restarting it");
                    act.shared
                        .health
                        .set("uploader", ActorState::Restarting, Some(e.clone()));
                    ctx.stop();
                    Err(e)
                }
            },
        )))
    }
}

// ---------------------------------------------------------------- compressor

pub struct CompressorActor {
    shared: Shared,
    uploader: Addr<UploaderActor>,
    restarts: u32,
    generation: u64,
}

impl Actor for CompressorActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let shared = self.shared.clone();
        let uploader = self.uploader.clone();
        let delay = if self.restarts == 0 {
            Duration::ZERO
        } else {
            backoff(self.restarts)
        };
        let fut = async move {
            tokio::time::sleep(delay).await;
            compressor_loop(shared, uploader).await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let msg = match res {
                Ok(()) => return,
                Err(e) => e,
            };
            tracing::error!(error = %msg, "compressor stopped; restarting it");
            act.shared
                .health
                .set("compressor", ActorState::Restarting, Some(msg));
            ctx.stop();
        }));
        self.shared
            .health
            .set("compressor", ActorState::Running, None);
    }
}

impl Supervised for CompressorActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts += 1;
        self.shared.note_restart("compressor");
    }
}

/// Sealed batches handed to the uploader and not yet committed: while one batch's packs are written and
/// fsync'd, the next is queued, so the uploader never waits for the compressor at the end of a batch.
const UPLOADS_IN_FLIGHT: usize = 2;

/// Reads durable records, seals them and hands them to the uploader, waiting for each hand-off so the
/// amount of sealed data in memory stays bounded. Ends with an error (the actor restarts and resumes from
/// the committed cursors) on a panic, a cache error or a failed upload.
async fn compressor_loop(shared: Shared, uploader: Addr<UploaderActor>) -> Result<(), String> {
    let index =
        crate::upload::with_retry("load chunk index", 8, || shared.vault.load_chunk_index())
            .await
            .map_err(|e| format!("loading the chunk index: {e}"))?;
    let known: HashSet<_> = index.iter().map(|(id, _)| *id).collect();
    let mut comp = Compressor::new(
        shared.cache.clone(),
        shared.vault.clone(),
        known,
        shared.config.compress_threads,
        shared.config.batch_bytes,
    );
    let mut pending: std::collections::VecDeque<Request<UploaderActor, Upload>> =
        Default::default();
    loop {
        shared.busy.store(true, Ordering::SeqCst);
        let faults = shared.faults.clone();
        let work = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if faults.compressor_panics.load(Ordering::SeqCst) > 0 {
                faults.compressor_panics.fetch_sub(1, Ordering::SeqCst);
                panic!("injected compressor fault");
            }
            comp.next_work()
        }))
        .map_err(|p| panic_message(&*p))?
        .map_err(|e| e.to_string())?;
        if work.is_empty() {
            if let Some(p) = pending.pop_front() {
                p.await.map_err(|e| e.to_string())??;
                continue; // the upload may have released a bookmark wait
            }
            shared.busy.store(false, Ordering::SeqCst);
            tokio::select! {
                _ = shared.wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
            continue;
        }
        for w in work {
            if let Work::Batch(b) = &w {
                shared
                    .stats
                    .bytes_compressed_in
                    .fetch_add(b.plain_bytes, Ordering::Relaxed);
            }
            // Uploads overlap with sealing the next batch; at most UPLOADS_IN_FLIGHT sealed batches
            // wait in memory, so a slow store holds the compressor back instead of growing memory.
            if pending.len() >= UPLOADS_IN_FLIGHT {
                if let Some(p) = pending.pop_front() {
                    p.await.map_err(|e| e.to_string())??;
                }
            }
            pending.push_back(uploader.send(Upload(w)));
        }
    }
}

// ---------------------------------------------------------------- receiver

pub struct ReceiverActor {
    shared: Shared,
    ctx: SessionContext,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: watch::Receiver<bool>,
    restarts: u32,
}

impl Actor for ReceiverActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = self.shared.config.listen;
        let (acceptor, sctx, shutdown) = (
            self.acceptor.clone(),
            self.ctx.clone(),
            self.shutdown.clone(),
        );
        let delay = if self.restarts == 0 {
            Duration::ZERO
        } else {
            backoff(self.restarts)
        };
        let health = self.shared.health.clone();
        let fut = async move {
            tokio::time::sleep(delay).await;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "replication listener ready");
            health.set("receiver", ActorState::Running, None);
            crate::receiver::serve(listener, acceptor, sctx, shutdown).await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            if let Err(e) = res {
                tracing::error!(error = %e, "replication listener failed; restarting it");
                act.shared
                    .health
                    .set("receiver", ActorState::Restarting, Some(e.to_string()));
            } else {
                act.shared.health.set("receiver", ActorState::Stopped, None);
                if *act.shutdown.borrow() {
                    return;
                }
            }
            ctx.stop();
        }));
    }
}

impl Supervised for ReceiverActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts += 1;
        self.shared.note_restart("receiver");
    }
}

// ---------------------------------------------------------------- root

/// The running data path: the actors' arbiters and the handles to stop them.
pub struct DataPath {
    pub shared: Shared,
    shutdown: watch::Sender<bool>,
    arbiters: Vec<Arbiter>,
    _receiver: Addr<ReceiverActor>,
    _compressor: Addr<CompressorActor>,
    _uploader: Addr<UploaderActor>,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath").finish_non_exhaustive()
    }
}

impl DataPath {
    /// Starts the tree. Must be called inside an actix System.
    pub fn start(
        config: DataPathConfig,
        cache: Arc<Cache>,
        vault: Vault,
        registry: Arc<dyn AgentRegistry>,
        acceptor: tokio_rustls::TlsAcceptor,
        faults: Arc<FaultInjection>,
    ) -> DataPath {
        let wake = Arc::new(Notify::new());
        let shared = Shared {
            cache: cache.clone(),
            vault,
            hub: Arc::new(Hub::default()),
            stats: Arc::new(Stats::default()),
            health: Arc::new(Health::default()),
            faults,
            config,
            wake: wake.clone(),
            busy: Arc::new(AtomicBool::new(true)),
            upload_limiter: Arc::new(UploadLimiter::default()),
        };
        for name in ["receiver", "compressor", "uploader"] {
            shared.health.set(name, ActorState::Starting, None);
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let arbiters: Vec<Arbiter> = (0..3).map(|_| Arbiter::new()).collect();
        let s = shared.clone();
        let uploader =
            Supervisor::start_in_arbiter(&arbiters[2].handle(), move |_| UploaderActor {
                shared: s,
                uploader: None,
                restarts: 0,
            });
        let (s, up) = (shared.clone(), uploader.clone());
        let compressor =
            Supervisor::start_in_arbiter(&arbiters[1].handle(), move |_| CompressorActor {
                shared: s,
                uploader: up,
                restarts: 0,
                generation: 0,
            });
        let sctx = SessionContext {
            cache,
            registry,
            hub: shared.hub.clone(),
            stats: shared.stats.clone(),
            wake: Arc::new(move || wake.notify_one()),
        };
        let s = shared.clone();
        let receiver =
            Supervisor::start_in_arbiter(&arbiters[0].handle(), move |_| ReceiverActor {
                shared: s,
                ctx: sctx,
                acceptor,
                shutdown: shutdown_rx,
                restarts: 0,
            });
        DataPath {
            shared,
            shutdown,
            arbiters,
            _receiver: receiver,
            _compressor: compressor,
            _uploader: uploader,
        }
    }

    /// True when every durable record in the cache has been committed to the vault.
    pub fn idle(&self) -> bool {
        !self.shared.busy.load(Ordering::SeqCst)
    }

    /// Stops accepting, lets sessions drain (their data is acknowledged), then waits up to `upload_wait`
    /// for the pipeline to commit what the cache holds. Whatever is left stays in the cache for next start.
    pub async fn shutdown(self, upload_wait: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + upload_wait;
        // Let the receiver see the signal and drain before judging the pipeline idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut idle_since: Option<tokio::time::Instant> = None;
        while tokio::time::Instant::now() < deadline {
            let receiver_done = self
                .shared
                .health
                .snapshot()
                .get("receiver")
                .is_none_or(|h| h.state != ActorState::Running);
            // Idle must hold longer than the compressor's 1 s poll, so the last records a session wrote
            // before it drained are seen.
            if receiver_done && self.idle() {
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > Duration::from_millis(1500) {
                    break;
                }
            } else {
                idle_since = None;
            }
            self.shared.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for a in &self.arbiters {
            a.stop();
        }
        for a in self.arbiters {
            let _ = tokio::task::spawn_blocking(move || a.join()).await;
        }
    }
}
