//! Reloads files that can change while the receiver runs (TLS certificates
//! and keys, the token file): polled for changes every interval, and
//! reloaded at once on SIGHUP.
//!
//! A change is a different modification time, length or inode, so that an
//! atomic rename and a Kubernetes secret update both count. A failed reload
//! keeps what was loaded before, is logged once and counted, and is tried
//! again when the files change again or on the next SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::metrics::{Metrics, ReloadLabel};

/// How often the files are checked: a rotated certificate is in use within
/// seconds, and a few `stat` calls per interval cost nothing.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Something loaded from files that can be loaded again.
pub trait Reloadable: Send + Sync {
    /// A bounded name for logs and metrics, such as `tls` or `tokens`.
    fn kind(&self) -> &'static str;
    /// The files it is loaded from.
    fn files(&self) -> Vec<PathBuf>;
    /// Loads the files again; on error the previous state stays in force.
    fn reload(&self) -> Result<(), String>;
}

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The stamp of `path`, following symbolic links; `None` when it cannot be
/// read.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

/// A reloadable item and the stamps of its files when last loaded.
struct Watched {
    item: Arc<dyn Reloadable>,
    stamps: Mutex<Vec<Option<FileStamp>>>,
}

impl Watched {
    fn new(item: Arc<dyn Reloadable>) -> Self {
        let stamps = current_stamps(item.as_ref());
        Watched {
            item,
            stamps: Mutex::new(stamps),
        }
    }

    /// Reloads when a file changed, or always when `force` is set.
    fn check(&self, force: bool, metrics: &Metrics) {
        let now = current_stamps(self.item.as_ref());
        {
            let mut stamps = self
                .stamps
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if !force && *stamps == now {
                return;
            }
            *stamps = now;
        }
        let kind = self.item.kind();
        let result = match self.item.reload() {
            Ok(()) => {
                tracing::info!(kind, "reloaded after a change of its files");
                "ok"
            }
            Err(error) => {
                tracing::error!(kind, %error, "reloading failed; the previous version stays in force until the files change again");
                "failed"
            }
        };
        metrics
            .reloads
            .get_or_create(&ReloadLabel {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

fn current_stamps(item: &dyn Reloadable) -> Vec<Option<FileStamp>> {
    item.files().iter().map(|path| stamp(path)).collect()
}

/// Polls `items` every `interval` and reloads all of them on SIGHUP, until
/// `shutdown` turns true.
pub fn spawn(
    items: Vec<Arc<dyn Reloadable>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let watched: Vec<Watched> = items.into_iter().map(Watched::new).collect();
    tokio::spawn(async move {
        if watched.is_empty() {
            return;
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = ticker.tick() => false,
                Some(()) = next_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP received; reloading certificates and tokens");
                    true
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            for item in &watched {
                item.check(force, &metrics);
            }
        }
    })
}

async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        path: PathBuf,
        reloads: AtomicUsize,
        fail: bool,
    }

    impl Reloadable for Counting {
        fn kind(&self) -> &'static str {
            "test"
        }

        fn files(&self) -> Vec<PathBuf> {
            vec![self.path.clone()]
        }

        fn reload(&self) -> Result<(), String> {
            self.reloads.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err("broken".to_owned())
            } else {
                Ok(())
            }
        }
    }

    fn counting(dir: &Path, fail: bool) -> Arc<Counting> {
        let path = dir.join("watched.pem");
        std::fs::write(&path, "first").unwrap();
        Arc::new(Counting {
            path,
            reloads: AtomicUsize::new(0),
            fail,
        })
    }

    #[test]
    fn check_reloads_only_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let item = counting(dir.path(), false);
        let watched = Watched::new(item.clone());
        let metrics = Metrics::default();

        watched.check(false, &metrics);
        let unchanged = item.reloads.load(Ordering::SeqCst);
        std::fs::write(&item.path, "second, longer").unwrap();
        watched.check(false, &metrics);
        watched.check(false, &metrics);
        let changed = item.reloads.load(Ordering::SeqCst);
        watched.check(true, &metrics);

        assert_eq!(unchanged, 0, "no reload while the file is unchanged");
        assert_eq!(changed, 1, "one reload per change");
        assert_eq!(item.reloads.load(Ordering::SeqCst), 2, "forced reload");
    }

    #[test]
    fn check_failure_waits_for_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let item = counting(dir.path(), true);
        let watched = Watched::new(item.clone());
        let metrics = Metrics::default();

        std::fs::write(&item.path, "second, longer").unwrap();
        watched.check(false, &metrics);
        watched.check(false, &metrics);

        assert_eq!(
            item.reloads.load(Ordering::SeqCst),
            1,
            "a failed reload is not retried until the file changes again"
        );
    }

    #[test]
    fn stamp_sees_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "same").unwrap();
        let before = stamp(&path);
        let replacement = dir.path().join("cert.pem.new");
        std::fs::write(&replacement, "same").unwrap();
        std::fs::rename(&replacement, &path).unwrap();

        let after = stamp(&path);

        assert!(before.is_some(), "stamp of an existing file");
        assert_ne!(before, after, "a renamed-over file has a new inode");
        assert_eq!(stamp(&dir.path().join("missing")), None, "missing file");
    }
}
