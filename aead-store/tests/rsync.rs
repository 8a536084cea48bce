//! Replication as sites run it: real `rsync -a --delete` copies a store, written by our
//! writer, into a directory that a watched, cached store serves from, while lookups run
//! continuously in other threads.
//!
//! Checked: every AEAD present before and after a sync is found once synced (and never
//! goes missing during the sync), no lookup ever returns an AEAD that is not byte-identical
//! to one the source held for that id, new AEADs are served and deleted ones stop being
//! served within 1 s after rsync finishes.
//!
//! rsync must be installed (CI's `.ci/run` installs it); without it this test fails.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aead_store::layout::{aead_path, write_dir};
use aead_store::{CachedStore, FsStore};
use otp_core::{Aead, KeyHandle, PublicId};

const KH: KeyHandle = KeyHandle(0x20);
/// Ids the readers ask for: some never exist.
const ASKED: u64 = 480;

fn id(n: u64) -> PublicId {
    PublicId::from_number(n, 12).unwrap()
}

/// Distinct bytes per id and version, so a torn, stale or mixed-up read shows.
fn aead(n: u64, version: u8) -> Aead {
    let mut b = [version; 30];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[29] = version ^ 0x5a;
    Aead::new(&b).unwrap()
}

fn rsync(src: &Path, dst: &Path) {
    let out = Command::new("rsync")
        .arg("-a")
        .arg("--delete")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run rsync ({e}): this test needs rsync installed \
                 (apt-get install rsync; CI's .ci/run does)"
            )
        });
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the source holds, shared with the readers.
#[derive(Default)]
struct Truth {
    /// Every version the source ever held, per id: the only AEADs a reader may see.
    ever: HashMap<u64, HashSet<u8>>,
    /// Ids that are in the destination and stay in the source across the running sync:
    /// a reader must never find them missing.
    stable: HashSet<u64>,
}

struct Source {
    dir: tempfile::TempDir,
    store: FsStore,
    now: HashMap<u64, u8>,
    truth: Arc<RwLock<Truth>>,
}

impl Source {
    fn path(&self, n: u64) -> PathBuf {
        aead_path(&write_dir(self.dir.path(), KH), &id(n))
    }

    fn put(&mut self, n: u64, version: u8) {
        let force = self.now.contains_key(&n);
        self.truth
            .write()
            .unwrap()
            .ever
            .entry(n)
            .or_default()
            .insert(version);
        self.store
            .write(
                KH,
                &id(n),
                &id(n).to_nonce().unwrap(),
                &aead(n, version),
                force,
            )
            .unwrap();
        // rsync's quick check compares size and modification time; replacements have the
        // same size, so give each version its own time rather than sleeping a second.
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + u64::from(version));
        std::fs::File::options()
            .write(true)
            .open(self.path(n))
            .and_then(|f| f.set_modified(when))
            .unwrap();
        self.now.insert(n, version);
    }

    fn delete(&mut self, n: u64) {
        std::fs::remove_file(self.path(n)).unwrap();
        self.now.remove(&n);
    }
}

/// Waits until the destination serves exactly what the source holds, for every id asked
/// about, and fails with the differences if that takes longer than 1 s.
fn served_within_one_second(dst: &CachedStore, src: &Source, round: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut wrong = Vec::new();
        for n in 1..=ASKED {
            let got = dst.lookup(&id(n)).unwrap();
            let want = src.now.get(&n).map(|v| aead(n, *v));
            if got.as_ref().map(|s| s.hsm1_aead().unwrap()) != want.as_ref() {
                wrong.push(n);
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{round}: {} ids not served as in the source 1 s after rsync finished: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rsync_into_a_watched_store_while_serving() {
    let truth = Arc::new(RwLock::new(Truth::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut src = Source {
        store: FsStore::open(dir.path(), vec![KH]).unwrap(),
        dir,
        now: HashMap::new(),
        truth: truth.clone(),
    };
    for n in 1..=300 {
        src.put(n, 1);
    }
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Arc::new(FsStore::open(dst_dir.path(), vec![KH]).unwrap().watch());
    assert!(dst.is_watching(), "the watch could not be set up");

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (dst, stop, reads, failures, truth) = (
                dst.clone(),
                stop.clone(),
                reads.clone(),
                failures.clone(),
                truth.clone(),
            );
            let dst_base = dst_dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut n = r * 7;
                while !stop.load(Ordering::Relaxed) {
                    n = n % ASKED + 1;
                    // Read what must hold before asking, so a concurrent update of the
                    // truth cannot make a correct answer look wrong.
                    let (allowed, must_exist) = {
                        let t = truth.read().unwrap();
                        let allowed: Vec<Aead> = t
                            .ever
                            .get(&n)
                            .map(|vs| vs.iter().map(|v| aead(n, *v)).collect())
                            .unwrap_or_default();
                        (allowed, t.stable.contains(&n))
                    };
                    let problem = match dst.lookup(&id(n)) {
                        Ok(Some(s)) if !allowed.contains(s.hsm1_aead().unwrap()) => {
                            Some(format!("{n}: AEAD {:?} was never in the source", s.sealed))
                        }
                        Ok(Some(s))
                            if !FsStore::path_of(&s.source)
                                .is_some_and(|p| p.starts_with(&dst_base))
                                || s.key_handle() != Some(KH) =>
                        {
                            Some(format!("{n}: wrong path or handle {s:?}"))
                        }
                        Ok(Some(_)) => None,
                        Ok(None) if must_exist => Some(format!("{n}: missing during a sync")),
                        Ok(None) => None,
                        Err(e) => Some(format!("{n}: lookup failed during a sync: {e}")),
                    };
                    if let Some(p) = problem {
                        failures.lock().unwrap().push(p);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let set_stable = |ids: BTreeSet<u64>| truth.write().unwrap().stable = ids.into_iter().collect();
    let started = Instant::now();

    // Round 0: the first copy into the empty destination.
    rsync(src.dir.path(), dst_dir.path());
    served_within_one_second(&dst, &src, "first sync");
    set_stable((1..=300).collect());

    // Round 1: new keys, replaced keys, deleted keys.
    for n in 301..=360 {
        src.put(n, 1);
    }
    for n in 1..=50 {
        src.put(n, 2);
    }
    set_stable((1..=250).collect());
    for n in 251..=300 {
        src.delete(n);
    }
    rsync(src.dir.path(), dst_dir.path());
    served_within_one_second(&dst, &src, "second sync");
    set_stable(src.now.keys().copied().collect());

    // Round 2: delete some replaced ones, replace others again, add more.
    let mut keep: BTreeSet<u64> = src.now.keys().copied().collect();
    for n in 1..=25 {
        keep.remove(&n);
    }
    set_stable(keep);
    for n in 1..=25 {
        src.delete(n);
    }
    for n in 100..=130 {
        src.put(n, 3);
    }
    for n in 361..=420 {
        src.put(n, 1);
    }
    rsync(src.dir.path(), dst_dir.path());
    served_within_one_second(&dst, &src, "third sync");

    // Round 3: a whole subtree deleted at once.
    let subtree: Vec<u64> = src.now.keys().copied().filter(|n| *n >= 0x100).collect();
    let mut keep: BTreeSet<u64> = src.now.keys().copied().collect();
    for n in &subtree {
        keep.remove(n);
    }
    set_stable(keep);
    for n in subtree {
        src.delete(n);
    }
    rsync(src.dir.path(), dst_dir.path());
    served_within_one_second(&dst, &src, "fourth sync");

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} bad answers, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        reads.load(Ordering::Relaxed) > 2000,
        "readers ran during the syncs ({} reads)",
        reads.load(Ordering::Relaxed)
    );
    assert!(dst.is_watching());
    assert!(!dst.is_empty(), "lookups were served from the cache");
    assert!(started.elapsed() < Duration::from_secs(20));
}
