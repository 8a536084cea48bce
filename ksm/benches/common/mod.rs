//! Helpers shared by the benchmarks: building large AEAD directories and tables fast,
//! statistics, process memory.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aead_store::format;
use aead_store::layout::aead_path;
use hsm_proto::{aead, Aead, AesKey, KeyHandle, Nonce, PublicId, YubiKeySecret};
use test_support::db::PgSchema;

/// The demo device's key handle 0x20 and its key (public test key).
pub fn demo_key() -> (KeyHandle, AesKey) {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../fixtures/otp-vectors.json")).unwrap();
    (
        KeyHandle(0x20),
        AesKey::from_hex(v["key_handles"]["0x20"].as_str().unwrap()).unwrap(),
    )
}

/// The secret of benchmark key `n` (deterministic, so OTPs can be made for it).
pub fn secret(n: u64) -> YubiKeySecret {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&n.to_le_bytes());
    key[8..].copy_from_slice(&(n ^ 0x5a5a_5a5a).to_le_bytes());
    let mut uid = [0u8; 6];
    uid.copy_from_slice(&n.to_be_bytes()[2..]);
    YubiKeySecret { key, uid }
}

/// Benchmark key `i` (ids 1..=n): its public id, nonce (the public id's) and AEAD, sealed
/// under the demo's key handle 0x20 as `generate-keys` would, so the demo decodes its OTPs.
pub fn bench_aead(i: u64) -> (PublicId, Nonce, Aead) {
    let (kh, key) = demo_key();
    let id = PublicId::from_number(i, 12).unwrap();
    let nonce = id.to_nonce().unwrap();
    let a = aead::seal(&key, kh, &nonce, &*secret(i).to_bytes()).unwrap();
    (id, nonce, a)
}

/// Writes `n` AEADs (ids 1..=n) as version-1 files in pyhsm's layout, without fsync: test
/// data for lookups, not a measure of the store's (atomic, fsynced) writer.
pub fn bulk_store(base: &Path, n: u64) {
    let (kh, _) = demo_key();
    let kh_dir = base.join(kh.canonical());
    for i in 1..=n {
        let (id, nonce, a) = bench_aead(i);
        let p = aead_path(&kh_dir, &id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format::write_v1(kh, &nonce, &a)).unwrap();
    }
}

/// The same `n` AEADs as [`bulk_store`], as rows of pyhsm's `aead_table` in `pg` (made by
/// `ksm store db-init`), in one `COPY … FROM STDIN`: test data again, loaded the fast way.
pub fn bulk_pg(pg: &PgSchema, n: u64) {
    use std::io::Write as _;
    let (kh, _) = demo_key();
    let mut psql = pg
        .psql()
        .args([
            "-q",
            "-c",
            "COPY aead_table (public_id, keyhandle, nonce, aead) FROM STDIN",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("psql: apt-get install postgresql-client");
    {
        let mut w = std::io::BufWriter::new(psql.stdin.take().unwrap());
        for i in 1..=n {
            let (id, nonce, a) = bench_aead(i);
            // COPY's text format: `\\x…` is bytea's hex literal `\x…` with its backslash escaped.
            writeln!(
                w,
                "{}\t{}\t\\\\x{}\t\\\\x{}",
                id.as_str(),
                kh.0,
                hex::encode(nonce.0),
                hex::encode(a.as_bytes())
            )
            .unwrap();
        }
        w.flush().unwrap();
    }
    assert!(
        psql.wait().unwrap().success(),
        "COPY into aead_table failed"
    );
}

/// `p`-th percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Human-readable microseconds.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Sizes to run, from `KSM_BENCH_SIZES` (comma-separated) or the default.
pub fn sizes(default: &[u64]) -> Vec<u64> {
    std::env::var("KSM_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Where big benchmark trees go (`KSM_BENCH_DIR`, default the system temp dir).
pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var("KSM_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}
