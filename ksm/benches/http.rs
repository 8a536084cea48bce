//! HTTP benchmark: throughput and latency of the real daemon under a real load generator
//! (Debian's `wrk`, keep-alive) on 127.0.0.1, at 1, 16, 64 and 256 connections, for the
//! soft-HSM backend and for the emulator over a pty, against the ceiling for any HTTP
//! service here: nginx serving a static `OK` line. Also: a bare driver loop of OTP decodes
//! against the emulator versus the same decodes through the daemon, and decode throughput,
//! start-up time and memory with 1,000 versus 1,000,000 AEADs.
//!
//! `cargo bench -p ksm --bench http` (needs `wrk` and `nginx`: `apt-get install wrk
//! nginx-light`). `KSM_BENCH_SECS` sets each run's length (default 5), `KSM_BENCH_REPS` how
//! many interleaved runs each HTTP cell takes the median of (default 3), `KSM_BENCH_SIZES`
//! the store sizes (default 1000,1000000), `KSM_BENCH_DIR` where the big stores go,
//! `KSM_BENCH_ONLY=http|abuse|store|db|hsm2|val` runs one part. The abuse part holds 10,000 idle
//! connections against the daemon while wrk measures good clients. The db part, run only
//! when asked for, needs PostgreSQL on 127.0.0.1:5432 (user `postgres`, database `test`, as
//! the tests use it): it serves the same AEADs from files and from `aead_table` in a schema
//! of its own, with a hot set of ids and with every id once.
//! `KSM_BENCH_BASELINE=PATH` also runs another `ksm` binary (an older build) on the soft HSM,
//! interleaved with the rest, for a before/after comparison in the same run. The hsm2 part
//! serves the same OTPs through a daemon on the YubiHSM 1 emulator (pty) and one on the
//! YubiHSM 2 emulator (`ksm emulate --hsm2`, connector HTTP), its AEADs made by
//! `ksm migrate-aeads` from the same store. The val part, run only when asked for (it needs
//! PostgreSQL as the db part does), measures YK-VAL verifications of fresh OTPs with their
//! counters in PostgreSQL beside the same daemon's plain decodes (issue 22).
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hsm_proto::otp::{self, Otp, OtpCounters, Token};
use hsm_proto::{Aead, Hsm, KeyHandle, PublicId, Timeouts, YubiKeyAead};
use test_support::db::PgSchema;

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first: nginx's master then stops its workers (SIGKILL would orphan them), and
    /// ksm shuts down cleanly.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `ksm serve` and waits for its "listening" line; returns it, its address and how
/// long start-up took.
fn serve(args: &[&str]) -> (Proc, SocketAddr, Duration) {
    serve_with(Path::new(KSM), args)
}

/// [`serve`] with another `ksm` binary.
fn serve_with(bin: &Path, args: &[&str]) -> (Proc, SocketAddr, Duration) {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .arg("serve")
        .args(args)
        .args(["--port", "0", "--socket", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = e2e_tests::listening_addr(&mut child);
    (Proc(child), addr, t.elapsed())
}

fn nginx(dir: &Path) -> (Proc, SocketAddr) {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n  server {{ listen 127.0.0.1:{port};\n    location / {{ default_type text/plain; return 200 \"OK\\n\"; }} }} }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx: apt-get install nginx-light");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), addr)
}

#[derive(Clone, Copy, Default)]
struct Run {
    /// Successful (2xx) answers per second.
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// Requests answered, good or not.
    requests: u64,
}

fn parse_dur(s: &str) -> Duration {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(0.0);
    Duration::from_secs_f64(match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => 0.0,
    })
}

/// Runs wrk against `addr` with the request paths in `paths` (rotating), `conns`
/// connections.
fn wrk(addr: SocketAddr, paths: &[String], conns: u32, dir: &Path) -> Run {
    wrk_from(addr, paths, 0, conns, dir)
}

/// [`wrk`], its first request for `paths[start % paths.len()]`. The paths go through a file,
/// which a million of them fit (a Lua table literal that size does not load).
fn wrk_from(addr: SocketAddr, paths: &[String], start: u64, conns: u32, dir: &Path) -> Run {
    let list = dir.join("paths.txt");
    let mut text = paths.join("\n");
    text.push('\n');
    std::fs::write(&list, text).unwrap();
    let script = dir.join("paths.lua");
    std::fs::write(
        &script,
        format!("local paths = {{}}\nfor p in io.lines({:?}) do paths[#paths + 1] = p end\nlocal i = 0\nfunction init(args)\n  i = (tonumber(args[1]) or 0) % #paths\nend\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n", list.display().to_string()),
    )
    .unwrap();
    let secs: u64 = std::env::var("KSM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // One wrk thread: the load generator and the server under test split the two cores
    // (a second wrk thread only takes CPU from the server it measures).
    let threads = 1;
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .args(["--", &start.to_string()])
        .output()
        .expect("wrk: apt-get install wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = Run::default();
    let mut total = 0u64;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [n, "requests", "in", ..] => total = n.parse().unwrap_or(0),
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => r.p50 = parse_dur(v),
            ["99%", v] => r.p99 = parse_dur(v),
            ["Non-2xx", "or", "3xx", "responses:", v] => r.errors = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    if total > 0 {
        r.rps *= 1.0 - r.errors as f64 / total as f64;
    }
    r.requests = total;
    r
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn vector_paths() -> (Vec<String>, Vec<(Otp, KeyHandle, YubiKeyAead)>) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("otp-vectors.json")).unwrap(),
    )
    .unwrap();
    let keys = v["yubikeys"].as_array().unwrap();
    let mut decodes = Vec::new();
    let paths = v["otps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let s = o["otp"].as_str().unwrap();
            let otp = Otp::parse(s).unwrap();
            let y = keys
                .iter()
                .find(|y| y["public_id"].as_str() == Some(otp.public_id.as_str()))
                .unwrap();
            decodes.push((
                otp,
                KeyHandle(y["key_handle"].as_u64().unwrap() as u32),
                YubiKeyAead::try_from(
                    &Aead::new(&hex::decode(y["aead"].as_str().unwrap()).unwrap()).unwrap(),
                )
                .unwrap(),
            ));
            format!("/wsapi/decrypt?otp={s}")
        })
        .collect();
    (paths, decodes)
}

/// OTPs for 1,000 ids spread over a bulk store of `n` keys.
fn store_paths(n: u64) -> Vec<String> {
    spread_paths(n, 1000)
}

/// OTPs for `count` ids spread over a bulk store of `n` keys (all of them, each once, when
/// `count` is `n`: 7919 is a prime that divides neither 10^3 nor 10^6); each decodes to
/// `OK counter=0001 low=0001 high=00 use=00`.
fn spread_paths(n: u64, count: u64) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id_n = 1 + (i * 7919) % n;
            let id = PublicId::from_number(id_n, 12).unwrap();
            let s = secret(id_n);
            let t = Token {
                uid: s.uid,
                counters: OtpCounters {
                    use_ctr: 1,
                    session_ctr: 0,
                    ts_high: 0,
                    ts_low: 1,
                },
                rnd: 7,
            };
            format!(
                "/wsapi/decrypt?otp={}",
                otp::encrypt(&s, &id, &t).to_modhex()
            )
        })
        .collect()
}

const CONNS: [u32; 4] = [1, 16, 64, 256];

fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    println!("# HTTP benchmark ({cores} cores, wrk keep-alive on 127.0.0.1)\n");
    let (paths, decodes) = vector_paths();
    // KSM_BENCH_ONLY=http|abuse|store runs one part (e.g. the store table again after
    // raising fs.inotify.max_user_watches).
    let only = std::env::var("KSM_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().map_or(true, |o| o == part);
    if run("http") {
        http_tables(&paths, &decodes, tmp.path());
    }
    if run("abuse") {
        abuse_table(&paths, tmp.path());
    }
    if run("store") {
        store_table(tmp.path());
    }
    // Only when asked for: it needs a PostgreSQL server.
    if only.as_deref() == Some("db") {
        db_table(tmp.path());
    }
    if run("hsm2") {
        hsm2_table(&paths, tmp.path());
    }
    // Only when asked for: it needs a PostgreSQL server.
    if only.as_deref() == Some("val") {
        val_table(tmp.path());
    }
}

/// The client the verification bench signs as, and its key.
const VAL_CLIENT: u32 = 1;
const VAL_SECRET: &str = "mG5be6ZJU1qBGz24yPh/ESM3UdU=";

/// Signed verify requests for the `n` bench keys, `batches` rounds of them: round `k` holds
/// every key once (spread as [`spread_paths`] spreads them) with counter `k + 1`, so every
/// OTP is fresh, and the same key's next OTP comes `n` requests later (far more than the
/// connections in flight, so it never overtakes the one before).
fn verify_paths(n: u64, batches: u16) -> Vec<String> {
    let key = ykval::sign::ClientKey::from_base64(VAL_SECRET).unwrap();
    let mut out = Vec::with_capacity(n as usize * batches as usize);
    for k in 0..batches {
        for i in 0..n {
            let id_n = 1 + (i * 7919) % n;
            let id = PublicId::from_number(id_n, 12).unwrap();
            let s = secret(id_n);
            let t = Token {
                uid: s.uid,
                counters: OtpCounters {
                    use_ctr: k + 1,
                    session_ctr: 0,
                    ts_high: 0,
                    ts_low: 1,
                },
                rnd: 7,
            };
            let otp = otp::encrypt(&s, &id, &t).to_modhex();
            let params = [
                ("id", VAL_CLIENT.to_string()),
                ("otp", otp),
                ("nonce", format!("benchnonce{k:05}x{i:06}")),
            ];
            let h = ykval::sign::sign(&params, &key);
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
                .append_pair("h", &h)
                .finish();
            out.push(format!("/wsapi/2.0/verify?{query}"));
        }
    }
    out
}

/// Verifications (issue 22): one `ksm serve --demo` with 1,000 bench AEADs on disk and
/// `--val-db-url` on a PostgreSQL schema of its own, measured on plain decodes and on
/// signed verifications of fresh OTPs (each an `OK`, so each a counter write and its
/// commit), interleaved, at 1, 16 and 64 connections. Then the counter write alone:
/// sequential `ValDb::record` calls from this process, to show what a commit costs.
fn val_table(tmp: &Path) {
    let n = 1000;
    let dir = tmp.join("val-aeads");
    bulk_store(&dir, n);
    let pg = PgSchema::new();
    let out = Command::new(KSM)
        .args(["val", "db-init", &pg.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "ksm val db-init failed");
    pg.sql(&format!(
        "INSERT INTO clients (id, active, created, secret, email, notes, otp) VALUES ({VAL_CLIENT}, true, 0, '{VAL_SECRET}', NULL, '', '');"
    ));
    let (_d, addr, _) = serve(&[
        "--demo",
        "-B",
        dir.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "--val-db-url",
        &pg.url(),
    ]);
    let decode = spread_paths(n, n);
    let verify = verify_paths(n, 250);
    println!("## Verifications with PostgreSQL counters (issue 22)\n");
    println!("| connections | decode req/s | p50 | p99 | verify req/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for conns in [1, 16, 64] {
        let runs = interleaved_on(&[(addr, &decode), (addr, &verify)], conns, tmp, true);
        println!(
            "| {conns} | {:.0} | {} | {} | {:.0} | {} | {} |",
            runs[0].rps,
            ms(runs[0].p50),
            ms(runs[0].p99),
            runs[1].rps,
            ms(runs[1].p50),
            ms(runs[1].p99)
        );
    }
    let body = e2e_tests::get(addr, "/metrics").body;
    let counts: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("ksm_verifications_total"))
        .collect();
    println!("\nVerification answers: {}", counts.join("; "));
    // The counter write alone, one connection, one call after the other.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(async {
        ykval::ValDb::open(&ykval::ValDbConfig::new(
            aead_store::DbUrl::parse(&pg.url()).unwrap(),
        ))
        .unwrap()
    });
    let mut took = Vec::new();
    rt.block_on(async {
        for i in 0..2000i64 {
            let c = ykval::Counters {
                counter: 1 + i,
                session_use: 0,
            };
            let t = Instant::now();
            let r = db
                .record("cccccccccccb", c, 0, 1, "benchwritewrite01")
                .await;
            took.push(t.elapsed());
            assert!(matches!(r, Ok(ykval::db::Recorded::Accepted(_))), "{r:?}");
        }
    });
    took.sort();
    println!(
        "\nThe counter write alone (read, conditional UPDATE, commit; one connection, 2,000 in a row): p50 {}, p99 {}",
        ms(pct(&took, 0.5)),
        ms(pct(&took, 0.99))
    );
}

/// Runs `wrk` against each of `targets` in turn, `reps` times round, and keeps the median
/// run (by req/s) of each: this VM's figures move by tens of percent from one run to the
/// next, and interleaving exposes every server to the same drift.
fn interleaved(targets: &[(SocketAddr, &[String])], conns: u32, tmp: &Path) -> Vec<Run> {
    interleaved_on(targets, conns, tmp, false)
}

/// [`interleaved`]; with `onwards`, each run against a target starts in its paths where
/// the one before stopped, so no path is asked for twice until all have been.
fn interleaved_on(
    targets: &[(SocketAddr, &[String])],
    conns: u32,
    tmp: &Path,
    onwards: bool,
) -> Vec<Run> {
    let reps: usize = std::env::var("KSM_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    let mut next = vec![0u64; targets.len()];
    for _ in 0..reps.max(1) {
        for (i, (addr, paths)) in targets.iter().enumerate() {
            let r = wrk_from(*addr, paths, next[i], conns, tmp);
            if onwards {
                next[i] += r.requests;
            }
            runs[i].push(r);
        }
    }
    runs.into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            r[r.len() / 2]
        })
        .collect()
}

fn http_tables(paths: &[String], decodes: &[(Otp, KeyHandle, YubiKeyAead)], dir: &Path) {
    let tmp = dir;
    let link = tmp.join("yhsm");
    let emu = Proc(
        Command::new(KSM)
            .args(["emulate", "--pty"])
            .arg(&link)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while !link.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The HSM path: the driver alone, decoding in a loop over the pty. A serial HSM takes one
    // request at a time, so this is the device's ceiling; the daemon's cost is how far below
    // it the same decodes through HTTP stay.
    let mut hsm = Hsm::open_path(&link, Timeouts::default()).unwrap();
    let secs = 5.0;
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        let (otp, kh, aead) = &decodes[(n % decodes.len() as u64) as usize];
        hsm.decode_otp(otp, *kh, otp.public_id.to_nonce().unwrap(), aead)
            .unwrap();
        n += 1;
    }
    let driver = n as f64 / t.elapsed().as_secs_f64();
    drop(hsm);

    let (ng, ng_addr) = nginx(tmp);
    let (soft, soft_addr, _) = serve(&["--demo"]);
    let store = fixtures().join("aead-files/store");
    let (daemon, emu_addr, _) = serve(&[
        "-D",
        link.to_str().unwrap(),
        "-B",
        store.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "0x21",
    ]);
    let baseline =
        std::env::var_os("KSM_BENCH_BASELINE").map(|bin| serve_with(Path::new(&bin), &["--demo"]));
    let ok = ["/".to_string()];
    let mut targets = vec![(ng_addr, &ok[..]), (soft_addr, paths), (emu_addr, paths)];
    if let Some((_, addr, _)) = &baseline {
        targets.push((*addr, paths));
    }
    let cells: Vec<Vec<Run>> = CONNS
        .iter()
        .map(|c| interleaved(&targets, *c, tmp))
        .collect();
    drop(baseline);
    drop(daemon);
    drop(emu);
    drop(soft);
    drop(ng);

    println!("Successful answers per second (non-2xx answers, e.g. `ERR Overloaded`, are not counted; they are listed below the row); median of the interleaved runs.\n");
    println!("| connections | nginx `OK` req/s | soft HSM req/s | ratio | p50 | p99 | emulator (pty) req/s | ratio | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (c, cell) in CONNS.iter().zip(&cells) {
        let (n, s, e) = (cell[0], cell[1], cell[2]);
        println!(
            "| {c} | {:.0} | {:.0} | {:.0}% | {} | {} | {:.0} | {:.0}% | {} | {} |",
            n.rps,
            s.rps,
            100.0 * s.rps / n.rps,
            ms(s.p50),
            ms(s.p99),
            e.rps,
            100.0 * e.rps / n.rps,
            ms(e.p50),
            ms(e.p99)
        );
        if s.errors + e.errors > 0 {
            println!(
                "|   | non-2xx answers: soft {}, emulator {} |",
                s.errors, e.errors
            );
        }
    }
    if cells[0].len() > 3 {
        println!("\nThis build against the baseline (`KSM_BENCH_BASELINE`), both on the soft HSM, in the same interleaved runs:\n");
        println!("| connections | nginx req/s | this build req/s | ratio | p99 | baseline req/s | ratio | p99 |");
        println!("|---|---|---|---|---|---|---|---|");
        for (c, cell) in CONNS.iter().zip(&cells) {
            let (n, s, b) = (cell[0], cell[1], cell[3]);
            println!(
                "| {c} | {:.0} | {:.0} | {:.0}% | {} | {:.0} | {:.0}% | {} |",
                n.rps,
                s.rps,
                100.0 * s.rps / n.rps,
                ms(s.p99),
                b.rps,
                100.0 * b.rps / n.rps,
                ms(b.p99)
            );
        }
    }
    let (one, busy) = (cells[0][2], cells[1][2]);
    println!(
        "\nHSM path over the pty: bare driver loop {driver:.0} decodes/s ({:.0} µs each). Through the daemon with the device kept busy (16 connections): {:.0} req/s, {:.0}% of the driver loop. One request at a time (1 connection): {:.0} req/s ({:.0} µs each, {:.0} µs more than the bare driver).\n",
        1e6 / driver,
        busy.rps,
        100.0 * busy.rps / driver,
        one.rps,
        1e6 / one.rps,
        1e6 / one.rps - 1e6 / driver
    );
}

/// Idle sockets held against `addr` while `stop` is false: 10,000 opened first, then the
/// oldest replaced by a new one every half millisecond (a steady flood of idle connections
/// for the daemon to evict), plus 20 slowloris clients trickling a header a byte at a time.
fn flood(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let mut threads = Vec::new();
    // KSM_BENCH_CHURN_US: pause between replacements (default 500 µs).
    let churn = Duration::from_micros(
        std::env::var("KSM_BENCH_CHURN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
    );
    let s = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    threads.push(std::thread::spawn(move || {
        let mut idle = std::collections::VecDeque::new();
        while idle.len() < 10_000 {
            if let Ok(c) = std::net::TcpStream::connect(addr) {
                idle.push_back(c);
            }
        }
        let _ = ready_tx.send(());
        while !s.load(Ordering::Relaxed) {
            if let Ok(c) = std::net::TcpStream::connect(addr) {
                idle.push_back(c);
                idle.pop_front();
            }
            std::thread::sleep(churn);
        }
    }));
    let _ = ready_rx.recv();
    for _ in 0..20 {
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(mut c) = std::net::TcpStream::connect(addr) else {
                    continue;
                };
                while !s.load(Ordering::Relaxed) && c.write_all(b"G").is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }
    threads
}

/// Good clients (wrk, 64 connections, soft HSM) alone, then while 10,000 idle connections and
/// slowloris clients are held against the same daemon.
fn abuse_table(paths: &[String], tmp: &Path) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let (d, addr, _) = serve(&["--demo"]);
    let clean = wrk(addr, paths, 64, tmp);
    let fds_before = e2e_tests::open_fds(d.0.id());
    let rss_before = e2e_tests::rss_bytes(d.0.id());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = flood(addr, stop.clone());
    // Measure the steady state: let the daemon work through the burst of 10,000 connects
    // queued in its listen backlog first (about a second here).
    let evicted =
        |addr| e2e_tests::metric(addr, "ksm_http_connections_evicted_total ", "").unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while evicted(addr) < 10_000 - 2_048 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let abused = wrk(addr, paths, 64, tmp);
    let fds = e2e_tests::open_fds(d.0.id());
    let mem = e2e_tests::rss_bytes(d.0.id());
    let evicted = evicted(addr);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!("Good clients (64 connections, soft HSM, --max-connections 2048) alone, and while 10,000 idle connections (the oldest replaced every 0.5 ms) and 20 slowloris clients are held against the same daemon.\n");
    println!("| | req/s | p50 | p99 | daemon fds | daemon RSS |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| alone | {:.0} | {} | {} | {fds_before} | {:.1} MB |",
        clean.rps,
        ms(clean.p50),
        ms(clean.p99),
        rss_before as f64 / 1e6
    );
    println!(
        "| under the flood | {:.0} | {} | {} | {fds} | {:.1} MB |",
        abused.rps,
        ms(abused.p50),
        ms(abused.p99),
        mem as f64 / 1e6
    );
    println!("\nIdle connections closed to make room during the flood: {evicted}.\n");
    drop(d);
}

/// Decode answers other than `OK` the daemon at `addr` has given so far (`ERR Unknown
/// public_id` is a 200, which wrk counts as a success).
fn not_ok(addr: SocketAddr) -> u64 {
    e2e_tests::get(addr, "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("ksm_decodes_total{") && !l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls `/metrics` until the store reports its watch running (lookups cached); returns how
/// long that took, or None if it never did within `limit` (e.g. the inotify limit).
fn watch_ready(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if e2e_tests::metric(addr, "ksm_store_watching ", "") == Some(1) {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn store_table(tmp: &Path) {
    println!("| AEADs in store | listening after | cache live after | req/s (16 conns, 1,000 ids) | p99 | daemon RSS after |");
    println!("|---|---|---|---|---|---|");
    for size in sizes(&[1_000, 1_000_000]) {
        let dir = bench_dir();
        bulk_store(dir.path(), size);
        // Write the new files out now, not during the measurement.
        nix::unistd::sync();
        let (d, addr, startup) = serve(&[
            "--demo",
            "-B",
            dir.path().to_str().unwrap(),
            "--key-handles",
            "0x20",
        ]);
        // Measured once the watch runs (a million directories take about a minute to watch);
        // until then lookups are served from disk.
        // pyhsm's layout needs a watch per directory: about 1.2 per AEAD.
        let limit: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let wait = if limit > size * 13 / 10 + 1000 {
            600
        } else {
            0
        };
        let live = watch_ready(addr, Duration::from_secs(wait));
        let ids = store_paths(size);
        let r = interleaved(&[(addr, &ids[..])], 16, tmp);
        let r = r[0];
        let mem = e2e_tests::rss_bytes(d.0.id());
        println!(
            "| {size} | {:.2} s | {} | {:.0} | {} | {:.1} MB |",
            startup.as_secs_f64(),
            live.map(|l| format!("{:.1} s", (startup + l).as_secs_f64()))
                .unwrap_or_else(|| "never (uncached: inotify limit?)".into()),
            r.rps,
            ms(r.p99),
            mem as f64 / 1e6
        );
        if r.errors > 0 {
            println!("|   | non-2xx answers: {} |", r.errors);
        }
    }
}

/// The same `n` AEADs in files and in PostgreSQL (a schema of its own: `ksm store db-init`,
/// then one COPY), each served by `ksm serve --demo` (the database with the default pool of
/// 8), measured in turn at 64 connections: a hot set of 12 ids, then every id once (each run
/// goes on where the one before stopped, so at 1,000,000 rows nearly every request misses the
/// cache and reads a row or a file).
fn db_table(tmp: &Path) {
    let conns = 64;
    println!("Decode at {conns} connections, `ksm serve --demo` over the same AEADs in files and in PostgreSQL (pool of 8); median of the interleaved runs; every answer checked to be `OK`.\n");
    println!("| AEADs | store | loaded in | cache kept true | hot set (12 ids) req/s | p50 | p99 | all ids in turn req/s | p50 | p99 | daemon RSS after |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes(&[1_000, 1_000_000]) {
        let pg = PgSchema::new();
        let url = pg.url();
        let t = Instant::now();
        let init = Command::new(KSM)
            .args(["store", "db-init", &url])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "db-init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        bulk_pg(&pg, size);
        pg.sql("ANALYZE aead_table;");
        let pg_load = t.elapsed();
        let rows: u64 = pg
            .sql("SELECT count(*) FROM aead_table;")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(rows, size);
        let dir = bench_dir();
        let t = Instant::now();
        bulk_store(dir.path(), size);
        nix::unistd::sync();
        let files_load = t.elapsed();

        let (files, f_addr, _) = serve(&[
            "--demo",
            "-B",
            dir.path().to_str().unwrap(),
            "--key-handles",
            "0x20",
        ]);
        let (db, d_addr, _) = serve(&["--demo", "--db-url", &url, "--key-handles", "0x20"]);
        // As in `store_table`: the file store measured once its watch runs, if it can.
        let limit: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let wait = if limit > size * 13 / 10 + 1000 {
            600
        } else {
            0
        };
        let f_watch = watch_ready(f_addr, Duration::from_secs(wait));
        // The database's LISTEN in place: cached AEADs then stay until their row changes.
        let d_watch = watch_ready(d_addr, Duration::from_secs(10));

        let spread = spread_paths(size, size);
        let hot = spread_paths(size, 12);
        let targets = [(f_addr, &spread[..]), (d_addr, &spread[..])];
        let cold = interleaved_on(&targets, conns, tmp, true);
        // Every answer so far was OK, and so is a sample of the spread again (now cached).
        for (addr, _) in &targets {
            assert_eq!(not_ok(*addr), 0, "answers other than OK");
            for p in spread.iter().step_by((size / 50).max(1) as usize) {
                let a = e2e_tests::get(*addr, p);
                assert_eq!(
                    (a.status, a.body.as_str()),
                    (200, "OK counter=0001 low=0001 high=00 use=00\n")
                );
            }
        }
        let targets = [(f_addr, &hot[..]), (d_addr, &hot[..])];
        let warm = interleaved(&targets, conns, tmp);
        for (addr, _) in &targets {
            assert_eq!(not_ok(*addr), 0, "answers other than OK");
        }
        let rss = (
            e2e_tests::rss_bytes(files.0.id()),
            e2e_tests::rss_bytes(db.0.id()),
        );
        drop(files);
        drop(db);
        let (f_watch, d_watch) = (f_watch.is_some(), d_watch.is_some());
        // Printed as soon as measured: removing a million files takes minutes.
        let rows = [
            ("files", files_load, f_watch, cold[0], warm[0], rss.0),
            ("PostgreSQL", pg_load, d_watch, cold[1], warm[1], rss.1),
        ];
        for (store, load, watching, c, w, rss) in rows {
            println!(
                "| {size} | {store} | {:.1} s | {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.1} MB |",
                load.as_secs_f64(),
                if watching { "yes" } else { "no" },
                w.rps,
                ms(w.p50),
                ms(w.p99),
                c.rps,
                ms(c.p50),
                ms(c.p99),
                rss as f64 / 1e6
            );
            if c.errors + w.errors > 0 {
                println!(
                    "|   | | non-2xx answers: hot set {}, all ids {} |",
                    w.errors, c.errors
                );
            }
        }
    }
}

/// The same OTPs through a daemon on the YubiHSM 1 emulator (pty, pyhsm's AEADs) and a
/// daemon on the YubiHSM 2 emulator (connector HTTP, the AEADs `ksm migrate-aeads` made from
/// them), interleaved.
fn hsm2_table(paths: &[String], dir: &Path) {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let store = dir.join("hsm2-bench-store");
    e2e_tests::copy_tree(&fixtures().join("aead-files/store"), &store);
    let migrated = dir.join("hsm2-bench-migrated");
    std::fs::create_dir_all(&migrated).unwrap();
    for (kh, id) in [("0x20", "0x0120"), ("0x21", "0x0121")] {
        let out = Command::new(KSM)
            .args(["migrate-aeads", "-B"])
            .arg(&store)
            .args(["--key-handle", kh, "--to-key-id", id, "--no-check", "-O"])
            .arg(&migrated)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", e2e_tests::output_text(&out));
    }
    let private = |name: &str, text: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let cfg = private(
        "yubihsm2.toml",
        &std::fs::read(fixtures().join("emulator/yubihsm2-migrated.toml")).unwrap(),
    );
    let password = private("hsm2-password", b"ksm test password\n");
    let mut child = Command::new(KSM)
        .args(["emulate", "--hsm2", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let hsm2 = Proc(child);
    let url = line
        .trim()
        .strip_prefix("emulated YubiHSM 2 at ")
        .unwrap()
        .to_string();
    let link = dir.join("hsm2-bench-yhsm");
    let hsm1 = Proc(
        Command::new(KSM)
            .args(["emulate", "--pty"])
            .arg(&link)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while !link.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (d1, addr1, _) = serve(&[
        "-D",
        link.to_str().unwrap(),
        "-B",
        store.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "0x21",
    ]);
    let (d2, addr2, _) = serve(&[
        "-D",
        &url,
        "-B",
        migrated.to_str().unwrap(),
        "--key-handles",
        "otp-aead-key:0x0120",
        "otp-aead-key:0x0121",
        "--hsm2-auth-key",
        "2",
        "--hsm2-password-file",
        password.to_str().unwrap(),
    ]);
    // Both answer every OTP with the same line before anything is measured.
    for p in paths {
        let a = e2e_tests::get(addr1, p);
        let b = e2e_tests::get(addr2, p);
        assert_eq!((a.status, &a.body), (b.status, &b.body), "{p}");
    }
    let targets = [(addr1, paths), (addr2, paths)];
    let conns = [1u32, 16, 64];
    let cells: Vec<Vec<Run>> = conns
        .iter()
        .map(|c| interleaved(&targets, *c, dir))
        .collect();
    drop(d2);
    drop(d1);
    drop(hsm1);
    drop(hsm2);
    println!("\nYubiHSM 1 emulator (pty) against YubiHSM 2 emulator (connector HTTP, 2 sessions), the same OTPs through `ksm serve`; median of the interleaved runs.\n");
    println!("| connections | YubiHSM 1 emulator req/s | p50 | p99 | YubiHSM 2 emulator req/s | p50 | p99 | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (c, cell) in conns.iter().zip(&cells) {
        let (a, b) = (cell[0], cell[1]);
        println!(
            "| {c} | {:.0} | {} | {} | {:.0} | {} | {} | {:.0}% |",
            a.rps,
            ms(a.p50),
            ms(a.p99),
            b.rps,
            ms(b.p50),
            ms(b.p99),
            100.0 * b.rps / a.rps
        );
        if a.errors + b.errors > 0 {
            println!(
                "|   | non-2xx answers: YubiHSM 1 {}, YubiHSM 2 {} |",
                a.errors, b.errors
            );
        }
    }
}
