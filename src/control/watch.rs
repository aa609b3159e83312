//! Reload on a change of the config file, seen through the `notify` crate.
//!
//! The watch is on the file's directory, not the file: editors save by writing a new file and
//! renaming it over the old one, and Kubernetes ConfigMaps swap a `..data` symlink, and neither
//! touches the watched inode. When the config path is a symlink to a file in another directory,
//! that directory is watched too. An event on the config file (by name, or its link's target's),
//! or on a Kubernetes `..data` swap, starts a short quiet period (events keep coming while a file
//! is written); after it, the file is read and reloaded only if its content differs from what was
//! last seen. Events on other files are ignored: an access log written beside the config under
//! load must not hold a reload back.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::control::Control;

/// Quiet time after the last event before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `control`'s config file until the returned watcher is dropped.
pub fn watch_config(control: Control) -> notify::Result<notify::RecommendedWatcher> {
    let path = control.status().path;
    let names = names_of(&path);
    let (changed, mut received) = mpsc::unbounded_channel();
    // Sorted on notify's thread: an event on another file in the directory (an access log
    // written beside the config) never wakes the proxy's runtime.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if concerns(&event, &names) {
            // The receiver is gone only when the proxy is stopping.
            changed.send(()).ok();
        }
    })?;
    for directory in directories_of(&path) {
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        info!(directory = %directory.display(), "watching the config file for changes");
    }
    let mut last_seen = std::fs::read(&path).ok();
    tokio::spawn(async move {
        while received.recv().await.is_some() {
            // Debounce: wait until the file has been quiet for a while.
            let mut quiet_until = tokio::time::Instant::now() + DEBOUNCE;
            loop {
                match tokio::time::timeout_at(quiet_until, received.recv()).await {
                    Ok(Some(())) => quiet_until = tokio::time::Instant::now() + DEBOUNCE,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
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

/// The file names whose events concern the config at `path`: its own; when it is a symlink, the
/// first name its link goes through (`current` of `current/proxy.toml`, which `ln -sfn` swaps);
/// and its final target's.
fn names_of(path: &Path) -> Vec<OsString> {
    let link = std::fs::read_link(path).ok();
    let through = link
        .as_deref()
        .and_then(|link| link.components().next())
        .map(|first| first.as_os_str().to_os_string());
    let target = std::fs::canonicalize(path)
        .ok()
        .and_then(|target| target.file_name().map(OsString::from));
    let mut names = Vec::new();
    for name in [path.file_name().map(OsString::from), through, target]
        .into_iter()
        .flatten()
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Whether `event` may have changed the config: it names one of `names`, or a Kubernetes
/// ConfigMap's `..data` link or directories (`..2026_11_27...`), or it is an error or a rescan
/// that names no file.
fn concerns(event: &notify::Result<notify::Event>, names: &[OsString]) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            warn!(%error, "config watch error");
            return true;
        }
    };
    if !changes(&event.kind) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.iter().any(|known| known == name) || name.to_string_lossy().starts_with("..")
            })
        })
}

/// Whether an event of this kind can mean the file changed. Opening, reading and closing a file
/// unwritten cannot; and reading the file after a change makes such events, which, taken for a
/// change, read it again every quiet period for as long as the proxy runs.
fn changes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
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

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn reading_the_config_file_is_not_a_change() {
        let names = names_of(Path::new("/etc/fulcrum/proxy.toml"));
        let path = "/etc/fulcrum/proxy.toml";
        for kind in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Open(AccessMode::Read),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
            AccessKind::Any,
        ] {
            assert!(
                !concerns(&event(EventKind::Access(kind), path), &names),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn writing_replacing_or_removing_the_config_file_is_a_change() {
        let names = names_of(Path::new("/etc/fulcrum/proxy.toml"));
        let path = "/etc/fulcrum/proxy.toml";
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(concerns(&event(kind, path), &names), "{kind:?}");
        }
        // Other files in the directory are not the config's.
        let other = event(
            EventKind::Modify(ModifyKind::Any),
            "/etc/fulcrum/access.log",
        );
        assert!(!concerns(&other, &names));
    }
}
