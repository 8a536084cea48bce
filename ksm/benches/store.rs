//! AEAD store benchmark: for 1 k / 100 k / 1 M AEADs, the key generation rate through an HSM
//! (the real `generate-keys` path: HSM-made secrets, atomic fsynced writes), lookup latency
//! (p50/p99) cold (first lookup of an id: read from disk) and cached, and memory.
//!
//! `cargo bench -p ksm --bench store` (sizes: `KSM_BENCH_SIZES=1000,100000`; directory:
//! `KSM_BENCH_DIR`). Results go to stdout as Markdown rows for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use aead_store::{CachedStore, FsStore};
use common::*;
use hsm_proto::{emulator, PublicId};
use ksm::tools::generate_keys;
use rand::Rng;

fn generation_rate() -> f64 {
    let dir = bench_dir();
    let (kh, _) = demo_key();
    let cfg = ksm::device::demo_config().unwrap();
    let (mut hsm, _) = emulator::soft_hsm(&cfg).unwrap();
    let store = FsStore::open(dir.path(), vec![kh]).unwrap();
    let n = 2000;
    let plan = generate_keys::Plan {
        key_handles: vec![kh],
        start: PublicId::from_number(1, 12).unwrap(),
        count: n,
        public_id_chars: 12,
        random_nonce: false,
        force: false,
    };
    let t = Instant::now();
    generate_keys::generate(&mut hsm, &store, &plan, &mut std::io::sink()).unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("# AEAD store benchmark ({cores} cores)\n");
    println!("generate-keys through the soft HSM (random secret in the HSM, AEAD, atomic write with 2 fsyncs): {:.0} keys/s\n", generation_rate());
    println!("| AEADs | bulk create (no fsync) | open + watch | watching | cold p50 | cold p99 | cached p50 | cached p99 | RSS growth, all cached | per AEAD |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (kh, _) = demo_key();
    for n in sizes(&[1_000, 100_000, 1_000_000]) {
        let dir = bench_dir();
        let t = Instant::now();
        bulk_store(dir.path(), n);
        let create = t.elapsed();
        let rss0 = e2e_tests::rss_bytes(std::process::id());
        let t = Instant::now();
        let store = CachedStore::new(
            FsStore::open(dir.path(), vec![kh]).unwrap(),
            CachedStore::DEFAULT_MAX_ENTRIES,
        );
        let open = t.elapsed();
        let mut rng = rand::thread_rng();
        let sample: Vec<PublicId> = (0..10_000.min(n))
            .map(|_| PublicId::from_number(rng.gen_range(1..=n), 12).unwrap())
            .collect();
        let time = |ids: &[PublicId]| {
            let mut v: Vec<Duration> = ids
                .iter()
                .map(|id| {
                    let t = Instant::now();
                    assert!(store.lookup(id).unwrap().is_some());
                    t.elapsed()
                })
                .collect();
            v.sort();
            v
        };
        let cold = time(&sample);
        let cached = time(&sample);
        // Fill the cache with every AEAD to see what memory a fully cached store takes.
        for i in 1..=n {
            let _ = store.lookup(&PublicId::from_number(i, 12).unwrap());
        }
        let grown = e2e_tests::rss_bytes(std::process::id()).saturating_sub(rss0);
        println!(
            "| {n} | {:.1} s | {:.2} s | {} | {} | {} | {} | {} | {:.1} MB | {} B |",
            create.as_secs_f64(),
            open.as_secs_f64(),
            if store.is_watching() {
                "yes"
            } else {
                "no (inotify limit)"
            },
            us(pct(&cold, 0.5)),
            us(pct(&cold, 0.99)),
            us(pct(&cached, 0.5)),
            us(pct(&cached, 0.99)),
            grown as f64 / 1e6,
            grown / n.max(1),
        );
        drop(store);
    }
}
