//! A recursive inotify watch that reports only changes.
//!
//! It asks the kernel only for what changes the store (create, delete, rename, write, the
//! base going away) and reports each as an [`Event`]: a path and how it changed. Attribute
//! changes are asked for too: a permission change decides whether a file can be read, and
//! reads do not cause them. Opens are not: in pyhsm's layout every AEAD has a directory of
//! its own, so the walk that sets the watch up opens every directory, and every lookup opens
//! a file; a watch that asked for `IN_OPEN` (as the `notify` crate's inotify backend always
//! does) would overflow the kernel's event queue (16 384 by default) from our own reads on a
//! store of more than about 16 k keys, flushing the cache and rebuilding the watch over and
//! over.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use inotify::{EventMask, Inotify, WatchMask, Watches};

/// What the watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Something at `path` (a file or directory below the base, or the base) changed.
    Changed {
        /// What changed.
        path: PathBuf,
        /// How.
        change: Change,
    },
    /// The kernel's event queue overflowed: events were lost, anything may have changed.
    Overflow,
    /// The watch failed, and may have stopped: why.
    Failed(String),
}

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Created: a file, a directory (now watched too, with what it holds), a link.
    Created,
    /// Deleted; for the base, also moved away.
    Removed,
    /// Renamed into or out of its directory.
    Moved,
    /// Its bytes were written.
    Written,
    /// Its permissions, owner or times changed.
    Attributes,
}

/// What a change to the store looks like to inotify.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
}

type Handler = Box<dyn FnMut(Event) + Send>;

/// Watches a directory tree until dropped.
pub struct RecursiveWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Every watched directory, by watch id: one entry per AEAD directory, so a million keys
/// mean 1.2 million entries. Each holds its parent's id and its own name (two letters in
/// pyhsm's layout, kept inline) rather than a full path, which would cost about three times
/// the memory; paths are rebuilt for the rare event.
struct Tree {
    watches: Watches,
    /// The watched base directory (the root of every rebuilt path).
    base: PathBuf,
    dirs: HashMap<i32, Node>,
}

struct Node {
    /// The parent directory's watch id; `None` for the base.
    parent: Option<i32>,
    name: Name,
}

/// A directory name: inline when short, boxed otherwise.
enum Name {
    Short { len: u8, bytes: [u8; 14] },
    Long(Box<OsStr>),
}

impl Name {
    fn new(name: &OsStr) -> Name {
        use std::os::unix::ffi::OsStrExt;
        let b = name.as_bytes();
        if b.len() <= 14 {
            let mut bytes = [0u8; 14];
            bytes[..b.len()].copy_from_slice(b);
            Name::Short {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Name::Long(name.into())
        }
    }

    fn as_os_str(&self) -> &OsStr {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Name::Short { len, bytes } => OsStr::from_bytes(&bytes[..usize::from(*len)]),
            Name::Long(b) => b,
        }
    }
}

impl Tree {
    /// The path of a watched directory, rebuilt from the names up to the base.
    fn path(&self, id: i32) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = id;
        loop {
            let node = self.dirs.get(&at)?;
            match node.parent {
                Some(p) => {
                    names.push(node.name.as_os_str());
                    at = p;
                }
                None => break,
            }
            // A cycle cannot come from a walk that follows no symlinks; stop anyway.
            if names.len() > 64 {
                return None;
            }
        }
        let mut path = self.base.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    /// Adds a watch on `dir` (the base, or a directory below a watched `parent`) and every
    /// directory below it (symlinks are not followed).
    fn add(&mut self, dir: &Path, parent: Option<i32>) -> Result<(), String> {
        let mut todo = vec![(dir.to_path_buf(), parent)];
        while let Some((d, parent)) = todo.pop() {
            match self.watches.add(&d, mask()) {
                Ok(wd) => {
                    let id = wd.get_watch_descriptor_id();
                    let name = Name::new(d.file_name().unwrap_or_default());
                    self.dirs.insert(id, Node { parent, name });
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            todo.push((e.path(), Some(id)));
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                    return Err(format!(
                        "the inotify watch limit is reached (one watch per AEAD directory): raise fs.inotify.max_user_watches ({e})"
                    ))
                }
                // Gone already, or not a directory any more: nothing to watch.
                Err(_) if d != dir => continue,
                Err(e) => return Err(format!("{}: {e}", d.display())),
            }
        }
        Ok(())
    }
}

impl RecursiveWatch {
    /// Watches `base` and everything below it; `handler` gets each [`Event`].
    pub fn new(
        base: &Path,
        handler: impl FnMut(Event) + Send + 'static,
    ) -> Result<RecursiveWatch, String> {
        let inotify = Inotify::init().map_err(|e| format!("inotify: {e}"))?;
        let mut tree = Tree {
            watches: inotify.watches(),
            base: base.to_path_buf(),
            dirs: HashMap::new(),
        };
        tree.add(base, None)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, base) = (stop.clone(), base.to_path_buf());
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Box::new(handler)));
        let thread = std::thread::Builder::new()
            .name("aead-store-inotify".into())
            .spawn(move || read_loop(inotify, tree, base, s, handler))
            .map_err(|e| e.to_string())?;
        Ok(RecursiveWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RecursiveWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(
    mut inotify: Inotify,
    mut tree: Tree,
    base: PathBuf,
    stop: Arc<AtomicBool>,
    handler: Arc<Mutex<Handler>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let emit = |ev: Event| {
        if let Ok(mut h) = handler.lock() {
            h(ev);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let ready = {
            let mut fds = [nix::poll::PollFd::new(
                inotify.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u8))
        };
        match ready {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                emit(Event::Failed(format!("inotify poll: {e}")));
                return;
            }
        }
        let events: Vec<(i32, EventMask, Option<PathBuf>)> = match inotify.read_events(&mut buf) {
            Ok(evs) => evs
                .map(|e| {
                    (
                        e.wd.get_watch_descriptor_id(),
                        e.mask,
                        e.name.map(|n: &OsStr| PathBuf::from(n)),
                    )
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                emit(Event::Failed(format!("inotify read: {e}")));
                return;
            }
        };
        for (wd, m, name) in events {
            if m.contains(EventMask::Q_OVERFLOW) {
                emit(Event::Overflow);
                continue;
            }
            if m.contains(EventMask::IGNORED) {
                tree.dirs.remove(&wd);
                continue;
            }
            let Some(dir) = tree.path(wd) else {
                continue;
            };
            let path = match &name {
                Some(n) => dir.join(n),
                None => dir.clone(),
            };
            let is_dir = m.contains(EventMask::ISDIR);
            let change = if m.contains(EventMask::CREATE) {
                Change::Created
            } else if m.contains(EventMask::DELETE) {
                Change::Removed
            } else if m.intersects(EventMask::MOVED_FROM | EventMask::MOVED_TO) {
                Change::Moved
            } else if m.intersects(EventMask::CLOSE_WRITE | EventMask::MODIFY) {
                Change::Written
            } else if m.contains(EventMask::ATTRIB) {
                // A file or directory made unreadable (or readable again) changes what a
                // lookup finds, though not a byte of it changed.
                Change::Attributes
            } else if m.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                // Only the base's own removal matters; below it the parent reports it.
                if dir != base {
                    continue;
                }
                Change::Removed
            } else {
                continue;
            };
            // A directory that appears (rsync creates them, or moves one in) is watched,
            // with everything already inside it.
            if is_dir && m.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                if let Err(e) = tree.add(&path, Some(wd)) {
                    emit(Event::Failed(e));
                }
            }
            emit(Event::Changed { path, change });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Paths are rebuilt from parent ids and names: events deep in the tree, in directories
    /// that appeared after the watch started, and under long names all name the right path.
    #[test]
    fn events_carry_full_paths_rebuilt_from_names() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("0x20/cc/cc/de")).unwrap();
        let (tx, rx) = mpsc::channel();
        let _w = RecursiveWatch::new(base.path(), move |ev| {
            if let Event::Changed { path, .. } = ev {
                let _ = tx.send(path);
            }
        })
        .unwrap();
        let wait_for = |want: &Path| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(path) = rx.recv_timeout(Duration::from_millis(100)) {
                    if path == want {
                        return;
                    }
                }
            }
            panic!("no event for {}", want.display());
        };
        let deep = base.path().join("0x20/cc/cc/de/ccccde");
        std::fs::write(&deep, b"x").unwrap();
        wait_for(&deep);
        // A new directory (as rsync makes them) is watched, with what is put inside it.
        let long = base
            .path()
            .join("0x20/cc/cc/a-directory-name-longer-than-fourteen-bytes");
        std::fs::create_dir(&long).unwrap();
        wait_for(&long);
        std::thread::sleep(Duration::from_millis(100));
        let inside = long.join("f");
        std::fs::write(&inside, b"y").unwrap();
        wait_for(&inside);
        // Permissions count as a change.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o000)).unwrap();
        wait_for(&deep);
    }
}
