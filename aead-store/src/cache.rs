//! An in-memory cache in front of the AEAD directory, kept true by a `notify` watcher.
//!
//! Only found AEADs are cached ("not found" always asks the disk, so a key rsync just
//! created is served on the next request). Every change the watcher reports for a file named
//! like a public id drops that id; anything it cannot map to one id (a directory renamed or
//! removed, a key-handle directory appearing, an overflowed or failed watch) drops
//! everything. A generation counter stops a lookup that read the disk before an
//! invalidation from caching what it read.
//!
//! If the watch cannot be set up (inotify limits: the layout has one directory per key, so a
//! million keys need a million watches), the cache still answers, but confirms every hit
//! against the file's inode, size and modification time first.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hsm_proto::{Aead, KeyHandle, Nonce, PublicId};
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::{FsStore, Store, StoreError, StoredAead};

/// Public id bytes, length-prefixed: ids are at most 8 bytes.
type Key = [u8; 9];

fn key(id: &PublicId) -> Key {
    let b = id.to_bytes();
    let mut k = [0u8; 9];
    k[0] = b.len() as u8;
    k[1..=b.len()].copy_from_slice(&b);
    k
}

/// One cached YubiKey AEAD: 56 bytes plus the map's overhead.
struct Entry {
    kh: u32,
    nonce: [u8; 6],
    aead: [u8; 30],
    /// Where it was read from and what the file looked like, to confirm hits when no
    /// watch is running.
    path: Box<Path>,
    stamp: (u64, u64, i64),
}

fn stamp(path: &Path) -> Option<(u64, u64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime_nsec() ^ (m.mtime() << 30)))
}

struct Inner {
    map: RwLock<HashMap<Key, Entry>>,
    generation: AtomicU64,
    watching: AtomicBool,
    base: PathBuf,
}

impl Inner {
    fn flush(&self, why: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.map.write() {
            debug!(why, entries = m.len(), "AEAD cache flushed");
            m.clear();
        }
    }

    fn forget(&self, id: &PublicId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.map.write() {
            m.remove(&key(id));
        }
    }

    fn on_event(&self, res: notify::Result<notify::Event>) {
        let ev = match res {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "AEAD directory watch reported an error; flushing the cache");
                self.flush("watch error");
                return;
            }
        };
        if ev.need_rescan() {
            self.flush("watch overflow");
            return;
        }
        if matches!(
            ev.kind,
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
        ) {
            return;
        }
        for p in &ev.paths {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') {
                // rsync's and our own temp files.
                continue;
            }
            let is_create = matches!(ev.kind, EventKind::Create(_));
            match PublicId::new(name) {
                // Two characters is also a layout directory name: treat as a directory.
                Ok(id) if name.len() > 2 => self.forget(&id),
                _ if is_create && p.parent() != Some(self.base.as_path()) => {}
                _ => self.flush("directory changed"),
            }
        }
    }
}

/// [`FsStore`] with a watched in-memory cache.
pub struct CachedStore {
    disk: FsStore,
    inner: Arc<Inner>,
    max_entries: usize,
    _watcher: Option<RecommendedWatcher>,
}

impl CachedStore {
    /// Default cap on cached AEADs; past it lookups still work, from disk.
    pub const DEFAULT_MAX_ENTRIES: usize = 2_000_000;

    /// Starts watching `disk`'s directory.
    pub fn new(disk: FsStore, max_entries: usize) -> CachedStore {
        let base = std::fs::canonicalize(disk.base()).unwrap_or_else(|_| disk.base().to_path_buf());
        let inner = Arc::new(Inner {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            base: base.clone(),
        });
        let cb = inner.clone();
        let watcher = notify::recommended_watcher(move |res| cb.on_event(res)).and_then(|mut w| {
            w.watch(&base, RecursiveMode::Recursive)?;
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => {
                inner.watching.store(true, Ordering::SeqCst);
                Some(w)
            }
            Err(e) => {
                warn!(error = %e, dir = %base.display(), "cannot watch the AEAD directory; every cached answer is confirmed on disk instead");
                None
            }
        };
        CachedStore {
            disk,
            inner,
            max_entries,
            _watcher: watcher,
        }
    }

    /// True while the watcher runs (false: hits are confirmed by `stat`).
    pub fn is_watching(&self) -> bool {
        self.inner.watching.load(Ordering::SeqCst)
    }

    /// The store on disk.
    pub fn disk(&self) -> &FsStore {
        &self.disk
    }

    /// Drops everything cached.
    pub fn flush(&self) {
        self.inner.flush("requested");
    }
}

impl Store for CachedStore {
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        let k = key(id);
        if let Ok(m) = self.inner.map.read() {
            if let Some(e) = m.get(&k) {
                let fresh = self.is_watching() || stamp(&e.path) == Some(e.stamp);
                if fresh {
                    return Ok(Some(StoredAead {
                        key_handle: KeyHandle(e.kh),
                        nonce: Nonce(e.nonce),
                        aead: Aead::new(&e.aead).map_err(|_| StoreError::Malformed {
                            path: e.path.to_path_buf(),
                            reason: "cache",
                        })?,
                        path: e.path.to_path_buf(),
                    }));
                }
            }
        }
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let found = self.disk.lookup_disk(id)?;
        if let Some(s) = &found {
            if let (Ok(aead), Some(st)) = (<[u8; 30]>::try_from(s.aead.as_bytes()), stamp(&s.path))
            {
                if let Ok(mut m) = self.inner.map.write() {
                    if self.inner.generation.load(Ordering::SeqCst) == generation
                        && (m.len() < self.max_entries || m.contains_key(&k))
                    {
                        m.insert(
                            k,
                            Entry {
                                kh: s.key_handle.0,
                                nonce: s.nonce.0,
                                aead,
                                path: s.path.clone().into_boxed_path(),
                                stamp: st,
                            },
                        );
                    }
                }
            }
        }
        Ok(found)
    }

    fn len(&self) -> Option<usize> {
        self.inner.map.read().ok().map(|m| m.len())
    }
}
