//! Replication as sites run it: real `rsync -a --delete` copies a store into a directory the
//! daemon's cached store is watching, while lookups run. Every AEAD present before and after
//! is found, none is ever read half-written, new ones are served within 1 s, deleted ones
//! stop being served within 1 s.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aead_store::{CachedStore, FsStore, Store};
use hsm_proto::{Aead, KeyHandle, PublicId};

const KH: KeyHandle = KeyHandle(0x20);

fn id(n: u64) -> PublicId {
    PublicId::from_number(n, 12).unwrap()
}

/// Distinct AEAD bytes per id and version, so a torn or stale read is visible.
fn aead(n: u64, version: u8) -> Aead {
    let mut b = [version; 30];
    b[..8].copy_from_slice(&n.to_le_bytes());
    Aead::new(&b).unwrap()
}

fn rsync(src: &Path, dst: &Path) {
    let status = Command::new("rsync")
        .arg("-a")
        .arg("--delete")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .status()
        .expect("rsync is not installed: apt-get install rsync (.ci/run does)");
    assert!(status.success(), "rsync failed");
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} not seen within 1 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn rsync_into_a_watched_store_while_serving() {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let src = FsStore::open(src_dir.path(), vec![KH]).unwrap();
    for n in 1..=300 {
        src.write(KH, &id(n), &id(n).to_nonce().unwrap(), &aead(n, 1), false)
            .unwrap();
    }
    let dst = Arc::new(CachedStore::new(
        FsStore::open(dst_dir.path(), vec![KH]).unwrap(),
        CachedStore::DEFAULT_MAX_ENTRIES,
    ));
    assert!(dst.is_watching());

    // What the source holds now: id -> version. Readers check every answer against it.
    let truth: Arc<Mutex<std::collections::HashMap<u64, u8>>> =
        Arc::new(Mutex::new((1..=300).map(|n| (n, 1)).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (dst, stop, reads) = (dst.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut n = 1 + r;
                while !stop.load(Ordering::Relaxed) {
                    n = n % 420 + 1;
                    match dst.lookup(&id(n as u64)) {
                        Ok(Some(s)) => {
                            let b = s.aead.as_bytes();
                            assert_eq!(&b[..8], &(n as u64).to_le_bytes(), "AEAD of another id");
                            assert!(b[8..].iter().all(|x| *x == b[8]), "torn AEAD for {n}");
                        }
                        Ok(None) => {}
                        Err(e) => panic!("lookup failed mid-sync: {e}"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    rsync(src_dir.path(), dst_dir.path());
    for n in 1..=300 {
        wait_until("initial sync", || {
            dst.lookup(&id(n))
                .unwrap()
                .is_some_and(|s| s.aead == aead(n, 1))
        });
    }

    // Round 2: new keys, replaced keys, deleted keys. rsync's quick check skips files of
    // equal size and modification second, so replacements come a second later, as real
    // ones do.
    std::thread::sleep(Duration::from_millis(1100));
    for n in 301..=400 {
        src.write(KH, &id(n), &id(n).to_nonce().unwrap(), &aead(n, 1), false)
            .unwrap();
    }
    for n in 1..=50 {
        src.write(KH, &id(n), &id(n).to_nonce().unwrap(), &aead(n, 2), true)
            .unwrap();
    }
    for n in 251..=300 {
        std::fs::remove_file(aead_store::layout::aead_path(
            &src_dir.path().join(KH.canonical()),
            &id(n),
        ))
        .unwrap();
    }
    {
        let mut t = truth.lock().unwrap();
        (301..=400).for_each(|n| {
            t.insert(n, 1);
        });
        (1..=50).for_each(|n| {
            t.insert(n, 2);
        });
        (251..=300).for_each(|n| {
            t.remove(&n);
        });
    }
    rsync(src_dir.path(), dst_dir.path());
    let synced = Instant::now();
    let t = truth.lock().unwrap().clone();
    for n in 1..=400u64 {
        match t.get(&n) {
            Some(v) => wait_until("new or replaced AEAD", || {
                dst.lookup(&id(n))
                    .unwrap()
                    .is_some_and(|s| s.aead == aead(n, *v))
            }),
            None => wait_until("deletion", || dst.lookup(&id(n)).unwrap().is_none()),
        }
    }
    assert!(synced.elapsed() < Duration::from_secs(2));

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw a bad answer");
    }
    assert!(
        reads.load(Ordering::Relaxed) > 1000,
        "readers ran during the syncs"
    );
}

#[test]
fn replacing_a_whole_key_handle_directory_flushes_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let disk = FsStore::open(d.path(), vec![KH]).unwrap();
    disk.write(KH, &id(1), &id(1).to_nonce().unwrap(), &aead(1, 1), false)
        .unwrap();
    let cached = CachedStore::new(disk.clone(), 100);
    assert_eq!(cached.lookup(&id(1)).unwrap().unwrap().aead, aead(1, 1));
    std::fs::rename(d.path().join("0x20"), d.path().join("old")).unwrap();
    wait_until("directory rename", || {
        cached.lookup(&id(1)).unwrap().is_none()
    });
}
