//! An in-memory cache in front of the AEAD directory, kept true by an inotify watch.
//!
//! # What is cached
//! Only AEADs that were found, keyed by public id; "not found" is never cached, so a key
//! that rsync has just created is served by the next lookup (a miss reads the disk, then
//! caches what it found). Entries are compact ([`ENTRY_BYTES`]); AEADs of other lengths
//! than a YubiKey's 30 bytes are served from disk each time.
//!
//! # How it stays true
//! A supervisor thread owns a recursive inotify watch on the base (see `inotify_watch`: it
//! reports only changes, never the opens our own reads cause, each as a path and how it
//! changed) and maps each changed path back to what it can affect ([`crate::layout`]'s
//! inverse mapping):
//! - a name that is a public id (an AEAD file, rsync renaming its temp file into place,
//!   a deletion) drops that id;
//! - a layout directory (`cc`, `bb`, …) drops every id starting with the bytes its path
//!   spells (a range of the ordered map); when it is created or renamed into place the
//!   same range is dropped again 250 ms and 2 s later, because the watch on a new directory
//!   is added only after the kernel reported the directory, and a file changed in that gap
//!   raises no event (this re-scan of the new subtree is what closes that race);
//! - a key-handle directory (any spelling) re-lists the base and empties the cache;
//! - a permission change counts as any change (it decides whether a lookup can read the
//!   file), except on the base itself, which rsync touches on every run;
//! - dot-files (rsync's `.<name>.XXXXXX`, our `.<id>.tmp.XXXXXX`) and other names are
//!   ignored; reads are not even reported;
//! - a watch error, an overflow, or the base itself moving away: the cache
//!   is emptied and bypassed (every lookup reads the disk) while the watch is set up again
//!   from scratch, retried with back-off if that fails; answers are never stale meanwhile.
//!
//! A lookup that read the disk only caches its result if nothing was invalidated while it
//! read (a generation counter), so a reload cannot resurrect what an event dropped.
//!
//! # Cost at scale
//! The map holds at most [`ENTRY_BYTES`] per AEAD (≈ 95 MB for 1,000,000) and is bounded by
//! `max_entries` (beyond it, lookups still work, from disk). The watch is the larger cost:
//! inotify needs one watch per directory, and pyhsm's layout has about one directory per
//! AEAD, so 1,000,000 AEADs need `fs.inotify.max_user_watches` above ~1.1 million (about
//! 1 KB of kernel memory each, plus the watch's own map of directory names). If the watch
//! cannot be set up,
//! the store works uncached and says so ([`CachedStore::is_watching`], a warning in the log).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::inotify_watch::{Change, Event, RecursiveWatch};
use otp_core::{Aead, KeyHandle, Nonce, OtpAead, PublicId};
use tracing::{debug, warn};

use crate::fs_store::Found;
use crate::layout::{aead_path_in, classify, KeyHandleDirs, Layout, Place};
use crate::walk::Walk;
use crate::{AeadKey, AeadSource, FsStore, Sealed, Store, StoreError, StoredAead, WalkEntry};

/// Measured memory per cached AEAD, map overhead included (see the `memory_per_entry`
/// test): 1,000,000 AEADs take 71 MB (random ids) to 93 MB (sequential ids).
pub const ENTRY_BYTES: usize = 96;

/// When a new directory's range is dropped again, after the watch on it is surely in place.
const RESCAN_AFTER: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(2)];
/// Back-off between attempts to set the watch up again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The map key: the id's bytes zero-padded to 8, then its length. Ordered so that every id
/// below a layout directory is one range.
type Key = [u8; 9];

fn key(id: &PublicId) -> Key {
    let b = id.to_bytes();
    let mut k = [0u8; 9];
    let n = b.len().min(8);
    k[..n].copy_from_slice(&b[..n]);
    k[8] = n as u8;
    k
}

/// The leading bytes of ids (at most 8), as a layout directory's path spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    bytes: [u8; 8],
    len: u8,
}

impl Prefix {
    fn new(b: &[u8]) -> Prefix {
        let n = b.len().min(8);
        let mut bytes = [0u8; 8];
        bytes[..n].copy_from_slice(&b[..n]);
        Prefix {
            bytes,
            len: n as u8,
        }
    }

    /// The first and last keys of ids starting with this prefix.
    fn range(&self) -> (Key, Key) {
        let n = usize::from(self.len);
        let (mut lo, mut hi) = ([0u8; 9], [0xffu8; 9]);
        lo[..n].copy_from_slice(&self.bytes[..n]);
        hi[..n].copy_from_slice(&self.bytes[..n]);
        (lo, hi)
    }
}

/// One cached YubiKey AEAD: 38 bytes, alignment 1. Neither the key nor the path is
/// stored: both follow from the key directory's index (a version-1 or -2 file must name its
/// directory's key, a version-0 file takes it) and the layout. A YubiHSM 2 AEAD is its
/// nonce and the 30 bytes after it, so it fits the same entry.
#[derive(Clone, Copy)]
struct Entry {
    nonce: [u8; 6],
    aead: [u8; 30],
    /// Index of the key-handle directory << 1 | 1 for the documented layout.
    place: [u8; 2],
}

const MAX_DIR_INDEX: usize = (1 << 15) - 1;

impl Entry {
    fn new(f: &Found) -> Option<Entry> {
        let (nonce, aead) = match &f.stored.sealed {
            Sealed::Hsm1 { nonce, aead, .. } => {
                (nonce.0, <[u8; 30]>::try_from(aead.as_bytes()).ok()?)
            }
            Sealed::Hsm2 { aead, .. } => (aead.nonce(), <[u8; 30]>::try_from(&aead.0[6..]).ok()?),
        };
        if f.dir_index > MAX_DIR_INDEX {
            return None;
        }
        let place = (f.dir_index as u16) << 1 | u16::from(f.layout == Layout::Documented);
        Some(Entry {
            nonce,
            aead,
            place: place.to_le_bytes(),
        })
    }

    fn stored(&self, dirs: &KeyHandleDirs, id: &PublicId) -> Option<StoredAead> {
        let place = u16::from_le_bytes(self.place);
        let (kh, dir) = dirs.get(usize::from(place >> 1))?;
        let layout = if place & 1 == 1 {
            Layout::Documented
        } else {
            Layout::Code
        };
        let sealed = match kh {
            AeadKey::Handle(key_handle) => Sealed::Hsm1 {
                key_handle,
                nonce: Nonce(self.nonce),
                aead: Aead::new(&self.aead).ok()?,
            },
            AeadKey::OtpKey(key_id) => Sealed::Hsm2 {
                key_id,
                aead: OtpAead::from_yubihsm1(self.nonce, self.aead),
            },
        };
        Some(StoredAead {
            sealed,
            source: AeadSource::file(aead_path_in(dir, id, layout)),
        })
    }
}

struct Cache {
    map: BTreeMap<Key, Entry>,
    /// The key-handle directories entries' indexes refer to; replaced (and the map emptied)
    /// whenever a directory directly under the base changes.
    dirs: Arc<KeyHandleDirs>,
}

/// What the caller's threads and the supervisor share.
struct Shared {
    disk: FsStore,
    cache: RwLock<Cache>,
    /// Bumped (under the write lock) by every invalidation; see the module doc.
    generation: AtomicU64,
    /// False while no trustworthy watch runs: lookups then bypass the cache.
    watching: AtomicBool,
    max_entries: usize,
}

enum Forget {
    All,
    Id(Key),
    Range(Prefix),
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        // Nothing panics while holding the lock, and every update leaves the map valid.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, what: Forget) {
        let mut c = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        match what {
            Forget::All => c.map.clear(),
            Forget::Id(k) => {
                c.map.remove(&k);
            }
            Forget::Range(prefix) => {
                let (lo, hi) = prefix.range();
                let doomed: Vec<Key> = c.map.range(lo..=hi).map(|(k, _)| *k).collect();
                for k in doomed {
                    c.map.remove(&k);
                }
            }
        }
    }

    /// Empties the cache and replaces the directory list; whether the cache is in use does
    /// not change.
    fn relist(&self, dirs: KeyHandleDirs) {
        let mut c = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        c.map.clear();
        c.dirs = Arc::new(dirs);
    }

    /// Empties the cache and sets whether it may be used, with a fresh directory list.
    fn reset(&self, dirs: Option<KeyHandleDirs>, watching: bool) {
        let mut c = self.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        c.map.clear();
        if let Some(d) = dirs {
            c.dirs = Arc::new(d);
        }
        self.watching.store(watching, Ordering::SeqCst);
    }

    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        if !self.watching.load(Ordering::SeqCst) {
            return self.disk.lookup(id);
        }
        let k = key(id);
        let (generation, dirs) = {
            let c = self.read();
            if let Some(hit) = c.map.get(&k).and_then(|e| e.stored(&c.dirs, id)) {
                return Ok(Some(hit));
            }
            (self.generation.load(Ordering::SeqCst), c.dirs.clone())
        };
        let Some(found) = self.disk.find(&dirs, id)? else {
            return Ok(None);
        };
        if let Some(entry) = Entry::new(&found) {
            let mut c = self.write();
            if self.watching.load(Ordering::SeqCst)
                && self.generation.load(Ordering::SeqCst) == generation
                && (c.map.len() < self.max_entries || c.map.contains_key(&k))
            {
                c.map.insert(k, entry);
            }
        }
        Ok(Some(found.stored))
    }
}

enum Msg {
    /// A report from the watcher of `epoch` (`None`: injected by a test, as current).
    Event {
        epoch: Option<u64>,
        event: Event,
    },
    Shutdown,
}

/// The thread that owns the watcher and applies what it reports.
struct Supervisor {
    shared: Arc<Shared>,
    /// The watched directory, symlinks resolved: what the watch reports paths under.
    base: PathBuf,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    watcher: Option<RecursiveWatch>,
    /// Which watcher is current: reports of replaced ones still invalidate, but their
    /// errors no longer count.
    epoch: u64,
    /// Ranges to drop again, one queue per delay of [`RESCAN_AFTER`], so each is in time
    /// order and due entries are at the front.
    later: [VecDeque<(Instant, Prefix)>; 2],
    retry: Option<(Instant, Duration)>,
}

impl Supervisor {
    /// (Re)creates the watch; true if the cache is in use again.
    fn start_watch(&mut self) -> bool {
        self.watcher = None;
        self.epoch += 1;
        let (epoch, tx) = (self.epoch, self.tx.clone());
        let handler = move |event: Event| {
            let _ = tx.send(Msg::Event {
                epoch: Some(epoch),
                event,
            });
        };
        let watched = RecursiveWatch::new(&self.base, handler);
        let listed = watched.and_then(|w| {
            Ok((
                w,
                KeyHandleDirs::read(self.shared.disk.base()).map_err(|e| e.to_string())?,
            ))
        });
        match listed {
            Ok((w, dirs)) => {
                self.watcher = Some(w);
                self.shared.reset(Some(dirs), true);
                self.retry = None;
                debug!(dir = %self.base.display(), "watching the AEAD directory");
                true
            }
            Err(e) => {
                self.shared.reset(None, false);
                // A full watch table stays full until an administrator raises the limit;
                // re-walking the tree every few seconds would only burn CPU.
                let wait = if e.contains("max_user_watches") {
                    RETRY_MAX
                } else {
                    self.retry
                        .map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX))
                };
                self.retry = Some((Instant::now() + wait, wait));
                warn!(error = %e, dir = %self.base.display(), retry_in = ?wait,
                    "cannot watch the AEAD directory; serving AEADs from disk, uncached");
                false
            }
        }
    }

    /// The watch can no longer be trusted: stop using the cache, set the watch up again.
    fn lost(&mut self, why: &str) {
        warn!(
            why,
            "AEAD directory watch lost; cache emptied, watching again"
        );
        self.shared.reset(None, false);
        self.later.iter_mut().for_each(VecDeque::clear);
        self.retry = None;
        self.start_watch();
    }

    fn on_event(&mut self, epoch: Option<u64>, event: Event) {
        let current = match epoch {
            Some(e) => e == self.epoch,
            None => true,
        };
        let (path, change) = match event {
            Event::Changed { path, change } => (path, change),
            Event::Failed(e) => {
                if current {
                    self.lost(&format!("watch error: {e}"));
                }
                return;
            }
            Event::Overflow => {
                if current {
                    self.lost("events were lost (overflow)");
                }
                return;
            }
        };
        // A directory created or moved in may hold files changed before its watch was
        // added: its range is dropped again later (see the module doc).
        let creates = matches!(change, Change::Created | Change::Moved);
        match classify(&self.base, &path) {
            Place::Unrelated => {}
            Place::Id(id) => self.shared.forget(Forget::Id(key(&id))),
            Place::Prefix(bytes) => {
                let prefix = Prefix::new(&bytes);
                self.shared.forget(Forget::Range(prefix));
                if creates {
                    let now = Instant::now();
                    for (queue, after) in self.later.iter_mut().zip(RESCAN_AFTER) {
                        if queue.back().map(|(_, p)| p) != Some(&prefix) {
                            queue.push_back((now + after, prefix));
                        }
                    }
                }
            }
            Place::KeyHandleDir => match KeyHandleDirs::read(self.shared.disk.base()) {
                Ok(dirs) => self.shared.relist(dirs),
                Err(e) => self.lost(&e.to_string()),
            },
            Place::Base => {
                // rsync -a sets the base's times and mode on every run: not a loss.
                let gone = matches!(change, Change::Removed | Change::Moved | Change::Written);
                if current && gone {
                    self.lost("the AEAD directory itself was moved or removed");
                }
            }
            Place::Outside => self.shared.forget(Forget::All),
        }
    }

    fn run(mut self) {
        loop {
            let next = self
                .later
                .iter()
                .filter_map(|q| q.front().map(|(t, _)| *t))
                .chain(self.retry.map(|(t, _)| t))
                .min();
            let msg = match next {
                Some(t) => self
                    .rx
                    .recv_timeout(t.saturating_duration_since(Instant::now())),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Event { epoch, event }) => self.on_event(epoch, event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            for queue in &mut self.later {
                while let Some((_, prefix)) = queue.front().filter(|(t, _)| *t <= now).copied() {
                    queue.pop_front();
                    self.shared.forget(Forget::Range(prefix));
                }
            }
            if self.retry.is_some_and(|(t, _)| t <= now) {
                self.start_watch();
            }
        }
    }
}

/// [`FsStore`] with an in-memory cache kept true by a watcher (see the module doc).
///
/// Dropping it stops the watcher thread.
pub struct CachedStore {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
}

impl CachedStore {
    /// Default bound on cached AEADs (at most about 190 MB); past it, lookups still work, from disk.
    pub const DEFAULT_MAX_ENTRIES: usize = 2_000_000;

    /// Starts watching `disk`'s directory and caching up to `max_entries` AEADs. If the
    /// watch cannot be set up the store still answers, from disk, and keeps retrying.
    pub fn new(disk: FsStore, max_entries: usize) -> CachedStore {
        Self::start(disk, max_entries, true)
    }

    /// As [`CachedStore::new`], but sets the watch up in the background, serving from disk
    /// meanwhile: with a million keys the walk that adds one watch per directory takes about
    /// a minute, and a daemon must not wait for it before it answers.
    pub fn spawn(disk: FsStore, max_entries: usize) -> CachedStore {
        Self::start(disk, max_entries, false)
    }

    fn start(disk: FsStore, max_entries: usize, wait: bool) -> CachedStore {
        let base = disk.base().to_path_buf();
        let shared = Arc::new(Shared {
            disk,
            cache: RwLock::new(Cache {
                map: BTreeMap::new(),
                dirs: Arc::new(KeyHandleDirs::default()),
            }),
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            max_entries,
        });
        let (tx, rx) = mpsc::channel();
        let mut sup = Supervisor {
            shared: shared.clone(),
            base,
            tx: tx.clone(),
            rx,
            watcher: None,
            epoch: 0,
            later: [VecDeque::new(), VecDeque::new()],
            retry: None,
        };
        // `new`: set up before returning, so that `is_watching` is meaningful on return.
        if wait {
            sup.start_watch();
        }
        let spawned = std::thread::Builder::new()
            .name("aead-store-watch".into())
            .spawn(move || {
                if !wait {
                    sup.start_watch();
                }
                sup.run()
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the AEAD watcher thread; serving uncached");
            shared.reset(None, false);
        }
        CachedStore { shared, tx }
    }

    /// True while the watch runs and the cache is in use (false: every lookup reads the
    /// disk).
    pub fn is_watching(&self) -> bool {
        self.shared.watching.load(Ordering::SeqCst)
    }

    /// The store on disk.
    pub fn disk(&self) -> &FsStore {
        &self.shared.disk
    }

    /// Empties the cache.
    pub fn flush(&self) {
        self.shared.forget(Forget::All);
    }

    /// How many AEADs are cached.
    pub fn len(&self) -> usize {
        self.shared.read().map.len()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The AEAD of `id`: from memory, or from disk (then cached). See [`FsStore::lookup`].
    pub fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        self.shared.lookup(id)
    }

    /// [`FsStore::write`], then drops `id` from the cache at once (the watcher would too,
    /// a moment later).
    pub fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        let written = self.shared.disk.write(kh, id, nonce, aead, force);
        self.shared.forget(Forget::Id(key(id)));
        written
    }

    /// [`FsStore::put`], then drops `id` from the cache at once.
    pub fn put(
        &self,
        id: &PublicId,
        sealed: &Sealed,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        let written = self.shared.disk.put(id, sealed, force);
        self.shared.forget(Forget::Id(key(id)));
        written
    }

    #[cfg(test)]
    fn inject(&self, event: Event) {
        let _ = self.tx.send(Msg::Event { epoch: None, event });
    }
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}

impl FsStore {
    /// This store behind a watched cache of up to [`CachedStore::DEFAULT_MAX_ENTRIES`]
    /// AEADs: what the daemon serves from.
    pub fn watch(self) -> CachedStore {
        CachedStore::new(self, CachedStore::DEFAULT_MAX_ENTRIES)
    }
}

impl Store for CachedStore {
    /// From disk: the cache holds the first AEAD of each id only, and fallbacks are asked
    /// for only while a device is locked or down.
    fn fallbacks(&self, id: &PublicId, after: AeadKey) -> Result<Vec<StoredAead>, StoreError> {
        self.disk().fallbacks(id, after)
    }

    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        CachedStore::lookup(self, id)
    }

    fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        CachedStore::write(self, kh, id, nonce, aead, force)
    }

    fn exists(&self, kh: KeyHandle, id: &PublicId) -> Result<bool, StoreError> {
        Ok(self.disk().existing(kh.into(), id).is_some())
    }

    fn put(&self, id: &PublicId, sealed: &Sealed, force: bool) -> Result<AeadSource, StoreError> {
        CachedStore::put(self, id, sealed, force)
    }

    fn exists_under(&self, key: AeadKey, id: &PublicId) -> Result<bool, StoreError> {
        Ok(self.disk().existing(key, id).is_some())
    }

    fn entries(&self) -> Box<dyn Iterator<Item = WalkEntry> + '_> {
        let walk: Walk<'_> = self.shared.disk.entries();
        Box::new(walk)
    }

    fn len(&self) -> Option<usize> {
        Some(CachedStore::len(self))
    }

    fn watching(&self) -> Option<bool> {
        Some(self.is_watching())
    }

    fn check(&self) -> Result<(), StoreError> {
        Store::check(&self.shared.disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KH: KeyHandle = KeyHandle(0x20);

    fn id(n: u64) -> PublicId {
        PublicId::from_number(n, 12).unwrap()
    }

    fn aead(n: u64, v: u8) -> Aead {
        let mut b = [v; 30];
        b[..8].copy_from_slice(&n.to_le_bytes());
        Aead::new(&b).unwrap()
    }

    fn setup(n: u64) -> (tempfile::TempDir, CachedStore) {
        let d = tempfile::tempdir().unwrap();
        let disk = FsStore::open(d.path(), vec![KH]).unwrap();
        for i in 1..=n {
            disk.write(KH, &id(i), &id(i).to_nonce().unwrap(), &aead(i, 1), false)
                .unwrap();
        }
        let c = disk.watch();
        assert!(c.is_watching());
        (d, c)
    }

    /// Waits (at most 2 s) for `ok`.
    fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: not within 2 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Replaces a file behind the store's back the way rsync does.
    fn rsync_like_replace(path: &Path, bytes: &[u8]) {
        let tmp = path.with_file_name(format!(
            ".{}.Xy12Zq",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn keys_order_ids_so_a_directory_is_a_range() {
        let a = PublicId::new("cccb").unwrap();
        let b = PublicId::new("ccccccbv").unwrap();
        assert_ne!(key(&a), key(&PublicId::new("cccccb").unwrap()));
        let (lo, hi) = Prefix::new(&[0x00]).range();
        assert!(lo <= key(&a) && key(&a) <= hi);
        assert!(lo <= key(&b) && key(&b) <= hi);
        let (lo, hi) = Prefix::new(&[0x00, 0x01]).range();
        assert!(lo <= key(&a) && key(&a) <= hi);
        assert!(!(lo <= key(&b) && key(&b) <= hi));
        let max = PublicId::new("vvvvvvvvvvvvvvvv").unwrap();
        let (lo, hi) = Prefix::new(&[0xff; 8]).range();
        assert!(lo <= key(&max) && key(&max) <= hi);
    }

    #[test]
    fn yubihsm2_aeads_are_cached_and_come_back_as_they_were_read() {
        let d = tempfile::tempdir().unwrap();
        let k5 = AeadKey::OtpKey(otp_core::ObjectId(5));
        let disk = FsStore::open_keys(d.path(), vec![k5, KH.into()]).unwrap();
        let sealed = Sealed::Hsm2 {
            key_id: otp_core::ObjectId(5),
            aead: OtpAead::from_yubihsm1(id(1).to_nonce().unwrap().0, [3; 30]),
        };
        let written = disk.put(&id(1), &sealed, false).unwrap();
        disk.write(KH, &id(2), &id(2).to_nonce().unwrap(), &aead(2, 1), false)
            .unwrap();
        let c = disk.watch();
        let read = StoredAead {
            sealed,
            source: written,
        };
        assert_eq!(c.lookup(&id(1)).unwrap().as_ref(), Some(&read));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(&id(1)).unwrap(), Some(read), "from memory");
        assert_eq!(c.lookup(&id(2)).unwrap().unwrap().key(), KH.into());
        // Put through the cache: dropped at once, the new one read.
        let newer = Sealed::Hsm2 {
            key_id: otp_core::ObjectId(5),
            aead: OtpAead::from_yubihsm1(id(1).to_nonce().unwrap().0, [4; 30]),
        };
        c.put(&id(1), &newer, true).unwrap();
        assert_eq!(c.lookup(&id(1)).unwrap().unwrap().sealed, newer);
    }

    /// The cache holds each id's first AEAD; the fallbacks behind it are the disk's, and
    /// follow a change on disk at once.
    #[test]
    fn fallbacks_behind_a_cached_aead_are_the_disks() {
        let d = tempfile::tempdir().unwrap();
        let k5 = AeadKey::OtpKey(otp_core::ObjectId(5));
        let disk = FsStore::open_keys(d.path(), vec![k5, KH.into()]).unwrap();
        let n = id(1).to_nonce().unwrap();
        let sealed = Sealed::Hsm2 {
            key_id: otp_core::ObjectId(5),
            aead: OtpAead::from_yubihsm1(n.0, [3; 30]),
        };
        disk.put(&id(1), &sealed, false).unwrap();
        disk.write(KH, &id(1), &n, &aead(1, 1), false).unwrap();
        let want = disk.fallbacks(&id(1), k5).unwrap();
        assert_eq!(want.len(), 1);
        let c = disk.watch();
        assert_eq!(c.lookup(&id(1)).unwrap().unwrap().key(), k5);
        assert_eq!(c.len(), 1);
        assert_eq!(Store::fallbacks(&c, &id(1), k5).unwrap(), want);
        c.write(KH, &id(1), &n, &aead(1, 2), true).unwrap();
        assert_eq!(
            Store::fallbacks(&c, &id(1), k5).unwrap()[0].hsm1_aead(),
            Some(&aead(1, 2))
        );
    }

    #[test]
    fn hits_come_from_memory_with_the_right_path() {
        let (d, c) = setup(3);
        let first = c.lookup(&id(2)).unwrap().unwrap();
        assert_eq!(c.len(), 1);
        let again = c.lookup(&id(2)).unwrap().unwrap();
        assert_eq!(first, again);
        assert_eq!(
            FsStore::path_of(&again.source).unwrap(),
            d.path().join("0x20/cc/cc/cc/cc/cc/cd/cccccccccccd")
        );
        assert_eq!(c.lookup(&id(99)).unwrap(), None);
        assert_eq!(c.len(), 1, "not found is not cached");
    }

    #[test]
    fn replace_delete_and_create_are_seen() {
        let (d, c) = setup(3);
        for i in 1..=3 {
            assert!(c.lookup(&id(i)).unwrap().is_some());
        }
        let path = |i: u64| aead_path_in(&d.path().join("0x20"), &id(i), Layout::Code);
        rsync_like_replace(
            &path(1),
            &crate::format::write_v1(KH, &id(1).to_nonce().unwrap(), &aead(1, 2)),
        );
        std::fs::remove_file(path(2)).unwrap();
        eventually("replacement", || {
            c.lookup(&id(1))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone()
                == aead(1, 2)
        });
        eventually("deletion", || c.lookup(&id(2)).unwrap().is_none());
        // A new key in new directories is served at once: misses read the disk.
        let other = FsStore::open(d.path(), vec![KH]).unwrap();
        other
            .write(
                KH,
                &id(0x1234),
                &id(0x1234).to_nonce().unwrap(),
                &aead(0x1234, 1),
                false,
            )
            .unwrap();
        assert!(c.lookup(&id(0x1234)).unwrap().is_some());
        // Temp files are never AEADs.
        std::fs::write(path(3).with_file_name(".cccccccccccf.Ab12Cd"), b"x").unwrap();
        assert_eq!(
            c.lookup(&id(3))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone(),
            aead(3, 1)
        );
    }

    #[test]
    fn a_directory_renamed_away_drops_its_range() {
        let (d, c) = setup(3);
        for i in 1..=3 {
            assert!(c.lookup(&id(i)).unwrap().is_some());
        }
        std::fs::rename(d.path().join("0x20/cc"), d.path().join("0x20/old")).unwrap();
        eventually("rename", || {
            (1..=3).all(|i| c.lookup(&id(i)).unwrap().is_none())
        });
    }

    #[test]
    fn a_new_directory_is_dropped_again_once_its_watch_is_surely_in_place() {
        let (d, c) = setup(2);
        let leaf = aead_path_in(&d.path().join("0x20"), &id(1), Layout::Code);
        let leaf_dir = leaf.parent().unwrap().to_path_buf();
        assert!(c.lookup(&id(1)).unwrap().is_some());
        assert!(c.lookup(&id(2)).unwrap().is_some());
        // As if rsync had just created the leaf directory of id 1: its range is dropped now,
        // and again later, in case a file changed there before the watch was added.
        let real = std::fs::canonicalize(&leaf_dir).unwrap();
        c.inject(Event::Changed {
            path: real,
            change: Change::Created,
        });
        eventually("drop now", || c.len() == 1);
        assert!(c.lookup(&id(1)).unwrap().is_some());
        assert_eq!(c.len(), 2, "cached again at once");
        // Dropped again later, once the watch of the new directory is surely in place.
        eventually("dropped again", || c.len() == 1);
        assert_eq!(
            c.lookup(&id(2))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone(),
            aead(2, 1)
        );
    }

    #[test]
    fn a_new_key_handle_spelling_relists_the_base() {
        let (d, c) = setup(1);
        let c21 = CachedStore::new(
            FsStore::open(d.path(), vec![KeyHandle(0x21), KH]).unwrap(),
            10,
        );
        assert_eq!(
            c21.lookup(&id(1)).unwrap().unwrap().key_handle().unwrap(),
            KH
        );
        // pyhsm writes the same id for 0x21 under a decimal spelling: 0x21 comes first.
        let p = aead_path_in(&d.path().join("33"), &id(1), Layout::Code);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            crate::format::write_v1(KeyHandle(0x21), &id(1).to_nonce().unwrap(), &aead(1, 9)),
        )
        .unwrap();
        eventually("new handle directory", || {
            c21.lookup(&id(1)).unwrap().unwrap().key_handle().unwrap() == KeyHandle(0x21)
        });
        drop(c);
    }

    #[test]
    fn a_lost_watch_bypasses_the_cache_then_recovers() {
        let (_d, c) = setup(2);
        assert!(c.lookup(&id(1)).unwrap().is_some());
        assert_eq!(c.len(), 1);
        // An overflow: everything may have changed.
        c.inject(Event::Overflow);
        eventually("re-watch after overflow", || {
            c.is_watching() && c.is_empty()
        });
        assert!(c.lookup(&id(1)).unwrap().is_some());
        assert_eq!(c.len(), 1);
        c.inject(Event::Failed("inotify read failed".into()));
        eventually("re-watch after error", || c.is_watching() && c.is_empty());
        // An event we cannot map to anything (outside the store): drop everything.
        assert!(c.lookup(&id(2)).unwrap().is_some());
        c.inject(Event::Changed {
            path: PathBuf::from("/"),
            change: Change::Written,
        });
        eventually("flush", || c.is_empty());
    }

    #[test]
    fn a_base_that_goes_away_is_served_uncached_until_it_is_back() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("aeads");
        std::fs::create_dir(&base).unwrap();
        let disk = FsStore::open(&base, vec![KH]).unwrap();
        disk.write(KH, &id(1), &id(1).to_nonce().unwrap(), &aead(1, 1), false)
            .unwrap();
        let c = disk.watch();
        assert!(c.lookup(&id(1)).unwrap().is_some());
        std::fs::rename(&base, root.path().join("old")).unwrap();
        eventually("base moved away", || !c.is_watching());
        assert!(
            c.lookup(&id(1)).is_err(),
            "the base is gone: an error, not a stale answer"
        );
        std::fs::create_dir(&base).unwrap();
        eventually("watching again", || c.is_watching());
        assert_eq!(c.lookup(&id(1)).unwrap(), None);
    }

    #[test]
    fn bounded_by_max_entries() {
        let d = tempfile::tempdir().unwrap();
        let disk = FsStore::open(d.path(), vec![KH]).unwrap();
        for i in 1..=5 {
            disk.write(KH, &id(i), &id(i).to_nonce().unwrap(), &aead(i, 1), false)
                .unwrap();
        }
        let c = CachedStore::new(disk, 3);
        for i in 1..=5 {
            assert_eq!(
                c.lookup(&id(i))
                    .unwrap()
                    .unwrap()
                    .hsm1_aead()
                    .unwrap()
                    .clone(),
                aead(i, 1)
            );
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn the_daemon_can_share_it_between_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<CachedStore>();
        shareable::<FsStore>();
    }

    #[test]
    fn entries_are_compact() {
        assert_eq!(std::mem::size_of::<Entry>(), 38);
        assert_eq!(std::mem::align_of::<Entry>(), 1);
        assert_eq!(std::mem::size_of::<Key>(), 9);
    }

    /// Measures the map's resident memory for 1,000,000 AEADs; the figure is
    /// [`ENTRY_BYTES`]. Run with `cargo test -p aead-store --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "slow; measures memory"]
    fn memory_per_entry() {
        fn rss() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            pages * 4096
        }
        let e = Entry {
            nonce: [0; 6],
            aead: [0; 30],
            place: [0; 2],
        };
        // Ids numbered in sequence as sites generate them, and ids spread at random.
        let spread = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
        // Both maps stay alive, so freed memory is not reused and each delta is its own.
        let mut kept = Vec::new();
        for (what, f) in [
            ("sequential", &(|i: u64| i) as &dyn Fn(u64) -> u64),
            ("random", &spread),
        ] {
            let before = rss();
            let mut m: BTreeMap<Key, Entry> = BTreeMap::new();
            for i in 0..1_000_000u64 {
                let n = f(i) & 0xffff_ffff_ffff;
                m.insert(key(&PublicId::from_number(n, 12).unwrap()), e);
            }
            let per = (rss() - before) / m.len();
            println!("{what}: {} entries, {per} bytes each", m.len());
            assert!(per <= ENTRY_BYTES, "{what}: {per} bytes per entry");
            kept.push(m);
        }
    }
}
