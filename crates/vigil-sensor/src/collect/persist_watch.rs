//! The file source of last resort: when eBPF cannot load, persistence
//! locations are watched with inotify (`notify`), so a new cron job, unit or
//! authorized key is still reported — without the acting process, which
//! inotify does not know (the record's process has pid 0).

use super::{FileInfo, RawEvent};
use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{RecursiveMode, Watcher};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use vigil_proto::v1::FileOperation;

pub struct PersistWatch {
    _watcher: notify::RecommendedWatcher,
    /// How many roots are watched.
    pub roots: usize,
}

impl std::fmt::Debug for PersistWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistWatch")
            .field("roots", &self.roots)
            .finish()
    }
}

/// The file operation a notify event stands for, and its paths (new, old).
fn operation(ev: &notify::Event) -> Option<(FileOperation, Vec<u8>, Vec<u8>)> {
    let path = |i: usize| ev.paths.get(i).map(|p| p.as_os_str().as_bytes().to_vec());
    let op = match ev.kind {
        EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Other) => {
            FileOperation::Create
        }
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => FileOperation::Modify,
        EventKind::Modify(ModifyKind::Metadata(_)) => FileOperation::Chmod,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            return Some((FileOperation::Rename, path(1)?, path(0)?));
        }
        // One half of a rename whose other half is outside the watched roots.
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => FileOperation::Create,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => FileOperation::Delete,
        EventKind::Remove(RemoveKind::File | RemoveKind::Any | RemoveKind::Other) => {
            FileOperation::Delete
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => FileOperation::CloseWrite,
        _ => return None,
    };
    Some((op, path(0)?, Vec::new()))
}

impl PersistWatch {
    /// Watches `roots` (path, recursive); events on paths `keep` accepts go to `tx`.
    pub fn start(
        roots: Vec<(PathBuf, bool)>,
        keep: fn(&[u8]) -> bool,
        tx: SyncSender<RawEvent>,
    ) -> Result<PersistWatch, notify::Error> {
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else {
                let _ = tx.try_send(RawEvent::Lost {
                    source: "inotify",
                    count: 1,
                });
                return;
            };
            let Some((operation, path, previous_path)) = operation(&ev) else {
                return;
            };
            if !keep(&path) && !keep(&previous_path) {
                return;
            }
            let info = FileInfo {
                pid: 0,
                unix_ns: crate::pipeline::now_ns(),
                operation,
                path,
                previous_path,
                mode: 0,
                uid: u32::MAX,
                gid: u32::MAX,
                is_dir: false,
                process_uid: u32::MAX,
            };
            if tx.try_send(RawEvent::File(info)).is_err() {
                let _ = tx.try_send(RawEvent::Lost {
                    source: "inotify",
                    count: 1,
                });
            }
        })?;
        let mut n = 0;
        for (root, recursive) in &roots {
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(root, mode) {
                Ok(()) => n += 1,
                Err(e) => tracing::debug!(root = %root.display(), error = %e, "Not watched"),
            }
        }
        Ok(PersistWatch {
            _watcher: watcher,
            roots: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_under_a_watched_root_are_reported_and_others_not() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let _w = PersistWatch::start(
            vec![(dir.path().to_owned(), true)],
            |p| p.ends_with(b".service"),
            tx,
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.txt"), b"x").unwrap();
        let unit = dir.path().join("evil.service");
        std::fs::write(&unit, b"[Service]").unwrap();
        let mut ops = Vec::new();
        while let Ok(RawEvent::File(f)) = rx.recv_timeout(Duration::from_millis(500)) {
            assert!(
                f.path.ends_with(b".service"),
                "{:?}",
                String::from_utf8_lossy(&f.path)
            );
            ops.push(f.operation);
        }
        assert!(ops.contains(&FileOperation::Create), "{ops:?}");
        assert!(ops.contains(&FileOperation::CloseWrite), "{ops:?}");
    }
}
