//! Reload on a change of the config file, seen through the `notify` crate.
//!
//! The watch is on the file's directory, not the file: editors save by writing a new file and
//! renaming it over the old one, and Kubernetes ConfigMaps swap a `..data` symlink, and neither
//! touches the watched inode. When the config path is a symlink to a file in another directory,
//! that directory is watched too. Any event in the directory starts a short quiet period (events
//! keep coming while a file is written); after it, the file is read and reloaded only if its
//! content differs from what was last seen, so unrelated files in the directory cost one read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::control::Control;

/// Quiet time after the last event before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `control`'s config file until the returned watcher is dropped.
pub fn watch_config(control: Control) -> notify::Result<notify::RecommendedWatcher> {
    let path = control.status().path;
    let (events, mut received) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // The receiver is gone only when the proxy is stopping.
        events.send(event).ok();
    })?;
    for directory in directories_of(&path) {
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        info!(directory = %directory.display(), "watching the config file for changes");
    }
    let mut last_seen = std::fs::read(&path).ok();
    tokio::spawn(async move {
        while let Some(event) = received.recv().await {
            if let Err(error) = event {
                warn!(%error, "config watch error");
            }
            // Debounce: wait until the directory has been quiet for a while.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, received.recv()).await {}
            let content = std::fs::read(&path).ok();
            if content.is_none() || content == last_seen {
                debug!("config directory changed but the config file did not");
                continue;
            }
            last_seen = content;
            info!(file = %path.display(), "config file changed: reloading");
            // A rejected reload is logged and kept for /status by `Control`.
            control.reload().await.ok();
        }
    });
    Ok(watcher)
}

/// The directory holding `path`, and, when `path` is a symlink to a file elsewhere, the directory
/// holding its target too (an edit there replaces the target, not the link).
fn directories_of(path: &Path) -> Vec<PathBuf> {
    let mut directories = vec![directory_of(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let target_directory = directory_of(&target);
        let same = std::fs::canonicalize(&directories[0]).is_ok_and(|d| d == target_directory);
        if !same {
            directories.push(target_directory);
        }
    }
    directories
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
