//! Watch mode's discovery: file-system events, debounced, plus periodic rescans as the safety net.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::debounce::{Change, Debouncer};
use crate::engine::{Batch, Engine, ITEM_QUEUE};
use crate::filter;
use crate::scan::Found;

pub use crate::settings::{WatchMode, WatchSettings};

/// What to tell the user when inotify runs out of watches.
pub fn inotify_limit_message() -> String {
    let current = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    format!(
        "the system's limit of watched folders is reached (fs.inotify.max_user_watches = {current}); \
         raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and add that line to \
         /etc/sysctl.d/90-tanova.conf to keep it), or set watch_mode to \"poll\". \
         Falling back to polling for now"
    )
}
/// The longest wait between checks for a folder that has gone away.
const MAX_ROOT_RETRY: Duration = Duration::from_secs(60);
/// When a new folder is scanned the second time ([`Discovery::on_notice`]):
/// notify adds its watch right after reporting it, so a second is ample
/// even on a busy machine; the periodic rescan remains the safety net.
const NEW_FOLDER_RESCAN: Duration = Duration::from_secs(1);

/// What the watcher's callback passes on.
type Notice = notify::Result<Event>;
/// File-system events queued for discovery. When it is full (discovery is
/// blocked behind a busy or paused pipeline), events are dropped and a rescan replaces them.
const NOTICE_QUEUE: usize = 4096;
/// While a rescan for lost events is owed but another scan still runs,
/// how often discovery looks again.
const OWED_RESCAN_CHECK: Duration = Duration::from_millis(500);

/// The watcher's side of the bounded event queue.
#[derive(Clone)]
struct Notices {
    tx: mpsc::Sender<Notice>,
    /// Set when events were lost (dropped here, or by the kernel): a rescan
    /// is owed, and stays owed until one starts. Asked for at once instead,
    /// it was lost whenever another scan still ran (one that may have passed
    /// the files those events were about), and they waited for the periodic
    /// rescan (ten minutes).
    rescan_owed: Arc<AtomicBool>,
}

impl Notices {
    fn send(&self, notice: Notice) {
        if self.tx.try_send(notice).is_err() && !self.rescan_owed.swap(true, Ordering::Relaxed) {
            tracing::warn!("file-system events were dropped while the agent was busy; rescanning");
        }
    }

    /// Events were lost: rescan the folder as soon as no other scan runs.
    fn owe_rescan(&self) {
        self.rescan_owed.store(true, Ordering::Relaxed);
    }

    fn owed(&self) -> bool {
        self.rescan_owed.load(Ordering::Relaxed)
    }
}

/// Feed `tx` with the files that appear or change under the engine's folder until `cancel`.
/// `watching` is told once the folder is watched: the caller's initial full
/// sync starts after that, so a file written in between is either walked or
/// heard of (a restart raced a CV written meanwhile and missed it).
pub async fn run(
    engine: Engine,
    root: PathBuf,
    settings: WatchSettings,
    tx: mpsc::Sender<Batch>,
    rescan_now: Arc<tokio::sync::Notify>,
    watching: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) {
    let close_events = cfg!(target_os = "linux") && settings.mode == WatchMode::Events;
    let mut watch = Discovery {
        engine,
        root,
        debouncer: Debouncer::new(settings.settle, close_events),
        tx,
        settings,
        new_dirs: Vec::new(),
        root_removed: false,
    };
    let (tx, mut notices) = mpsc::channel::<Notice>(NOTICE_QUEUE);
    let notice_tx = Notices {
        tx,
        rescan_owed: Arc::new(AtomicBool::new(false)),
    };
    let mut watcher = watch.start_watcher(&notice_tx);
    let _ = watching.send(());
    let (scan_tx, mut scanned) = mpsc::channel::<Batch>(ITEM_QUEUE);
    let mut rescan = every(watch.rescan_period(&watcher));
    let mut scanning: Option<tokio::task::JoinHandle<()>> = None;
    // When the folder is gone: when to look again, and the current backoff.
    let mut root_gone: Option<(tokio::time::Instant, Duration)> = None;

    loop {
        let next_due = watch
            .debouncer
            .next_due()
            .map(tokio::time::Instant::from_std);
        let root_check = root_gone.map(|(at, _)| at);
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(notice) = notices.recv() => match notice {
                Ok(event) => {
                    if watch.on_notice(event, &scan_tx) {
                        notice_tx.owe_rescan();
                    }
                }
                Err(e) => {
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                        tracing::error!("{}", inotify_limit_message());
                        watcher = None;
                        rescan = every(watch.settings.poll_every);
                    } else {
                        tracing::warn!("file-system events: {e}; rescanning");
                        notice_tx.owe_rescan();
                    }
                }
            },
            _ = tokio::time::sleep(OWED_RESCAN_CHECK), if notice_tx.owed() => {}
            _ = sleep_until(next_due), if next_due.is_some() => watch.check_due().await,
            Some(batch) = scanned.recv() => watch.on_scanned(batch).await,
            _ = rescan_now.notified() => {
                if watch.root.is_dir() {
                    start_scan(&watch, &mut scanning, watch.root.clone(), &scan_tx);
                }
            }
            _ = rescan.tick() => {
                if watch.root.is_dir() {
                    start_scan(&watch, &mut scanning, watch.root.clone(), &scan_tx);
                } else if root_gone.is_none() {
                    root_gone = Some(watch.folder_gone(Duration::from_secs(1)));
                }
            }
            _ = sleep_until(root_check), if root_check.is_some() => {
                let (_, backoff) = root_gone.expect("checked above");
                if watch.root.is_dir() {
                    tracing::info!("the folder {} is back; rescanning", watch.root.display());
                    root_gone = None;
                    watcher = watch.start_watcher(&notice_tx);
                    // Without a watcher now (poll mode, or no watches left), rescans come every poll_interval.
                    rescan = every(watch.rescan_period(&watcher));
                    start_scan(&watch, &mut scanning, watch.root.clone(), &scan_tx);
                } else {
                    root_gone = Some(watch.folder_gone((backoff * 2).min(MAX_ROOT_RETRY)));
                }
            }
        }
        // Events were lost: rescan once no other scan runs (one that runs
        // now may have passed the files those events were about). A folder
        // that is gone is scanned whole when it is back.
        if notice_tx.owed() && !is_running(&scanning) {
            notice_tx.rescan_owed.store(false, Ordering::Relaxed);
            if watch.root.is_dir() {
                start_scan(&watch, &mut scanning, watch.root.clone(), &scan_tx);
            }
        }
        if root_gone.is_none() && watch.root_removed {
            watch.root_removed = false;
            watcher = None;
            root_gone = Some(watch.folder_gone(Duration::from_secs(1)));
        }
    }
    drop(watcher);
}

/// A timer that fires every `period`, starting one period from now; a late
/// tick delays the next rather than bunching them.
fn every(period: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn is_running(scanning: &Option<tokio::task::JoinHandle<()>>) -> bool {
    scanning.as_ref().is_some_and(|h| !h.is_finished())
}

/// Start a rescan of `dir` unless one is still running.
fn start_scan(
    watch: &Discovery,
    scanning: &mut Option<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
    tx: &mpsc::Sender<Batch>,
) {
    if is_running(scanning) {
        return;
    }
    tracing::debug!("rescanning {}", dir.display());
    *scanning = Some(watch.engine.scan_into(dir, tx.clone()));
}

struct Discovery {
    engine: Engine,
    root: PathBuf,
    debouncer: Debouncer,
    tx: mpsc::Sender<Batch>,
    settings: WatchSettings,
    /// Folders that appeared since the last event, to be scanned.
    new_dirs: Vec<PathBuf>,
    /// The watched folder itself was removed or moved away.
    root_removed: bool,
}

impl Discovery {
    /// Take in one event from the queue; new folders are scanned at once, since
    /// files written before their watch was added produce no event, and again
    /// [`NEW_FOLDER_RESCAN`] later: notify reports a folder before it watches
    /// it, so the first scan can run before the watch exists, and a file
    /// written between the two makes no event either. Returns true when a
    /// full rescan is due (the kernel's event queue overflowed).
    fn on_notice(&mut self, event: Event, scans: &mpsc::Sender<Batch>) -> bool {
        let untrusted = self.on_event(event);
        for dir in self.new_dirs.drain(..) {
            self.engine.scan_into(dir.clone(), scans.clone());
            let (engine, scans) = (self.engine.clone(), scans.clone());
            tokio::spawn(async move {
                tokio::time::sleep(NEW_FOLDER_RESCAN).await;
                if !scans.is_closed() {
                    engine.scan_into(dir, scans);
                }
            });
        }
        untrusted
    }

    /// Take in one event. Returns true when the events cannot be trusted and a full rescan is due.
    fn on_event(&mut self, event: Event) -> bool {
        if event.need_rescan() {
            tracing::warn!("file-system events were lost (queue overflow); rescanning");
            return true;
        }
        let now = Instant::now();
        for path in &event.paths {
            if path == &self.root {
                let gone = matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
                );
                self.root_removed |= gone && !self.root.is_dir();
                continue;
            }
            if self.is_hidden(path) {
                continue;
            }
            let appeared = matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
            );
            if appeared && path.is_dir() {
                self.new_dirs.push(path.clone());
                continue;
            }
            if !filter::is_candidate_path(path) {
                continue;
            }
            match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.debouncer.change(path.clone(), Change::Closed, now)
                }
                EventKind::Create(CreateKind::File | CreateKind::Any) => {
                    self.debouncer.change(path.clone(), Change::Created, now)
                }
                EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                    self.debouncer.change(path.clone(), Change::Written, now)
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    self.debouncer.change(path.clone(), Change::Appeared, now)
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Any)) if path.exists() => {
                    self.debouncer.change(path.clone(), Change::Appeared, now)
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Any))
                | EventKind::Remove(_) => self.debouncer.forget(path),
                _ => {}
            }
        }
        false
    }

    /// Hidden files and folders below the root are not watched.
    fn is_hidden(&self, path: &Path) -> bool {
        path.strip_prefix(&self.root).map_or(true, |rel| {
            rel.components()
                .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with('.')))
        })
    }

    /// Send the files that fell due to the pipeline, which reads each once two
    /// looks at it agree (or at once when its writer closed it).
    async fn check_due(&mut self) {
        for (path, closed) in self.debouncer.take_due(Instant::now()) {
            // Followed here; `item_for` leaves symlinks out unless configured.
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            if let Some(item) = self.engine.item_for(&path, closed) {
                let _ = self.tx.send(vec![item]).await;
            }
        }
    }

    /// A rescan found this: files the debouncer is waiting on are left to it.
    async fn on_scanned(&mut self, mut batch: Batch) {
        batch.retain(|item| !matches!(item, (Found::File { path, .. }, _) if self.debouncer.is_pending(path)));
        if !batch.is_empty() {
            let _ = self.tx.send(batch).await;
        }
    }

    fn rescan_period(&self, watcher: &Option<RecommendedWatcher>) -> Duration {
        if watcher.is_some() {
            self.settings.rescan_every
        } else {
            self.settings.poll_every
        }
    }

    /// Start the OS watcher; `None` (with the reason logged) means rescans only.
    fn start_watcher(&self, notices: &Notices) -> Option<RecommendedWatcher> {
        if self.settings.mode == WatchMode::Poll {
            return None;
        }
        let notices = notices.clone();
        let started = notify::recommended_watcher(move |notice| {
            notices.send(notice);
        })
        .and_then(|mut w| w.watch(&self.root, RecursiveMode::Recursive).map(|()| w));
        match started {
            Ok(w) => Some(w),
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                tracing::error!("{}", inotify_limit_message());
                None
            }
            Err(e) => {
                tracing::error!(
                    "cannot watch {} for changes ({e}); polling every {}s instead",
                    self.root.display(),
                    self.settings.poll_every.as_secs()
                );
                None
            }
        }
    }

    fn folder_gone(&self, retry_in: Duration) -> (tokio::time::Instant, Duration) {
        tracing::error!(
            "the folder {} is gone or unreadable; checking again in {}s",
            self.root.display(),
            retry_in.as_secs()
        );
        (tokio::time::Instant::now() + retry_in, retry_in)
    }
}
