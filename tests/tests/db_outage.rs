//! The AEAD database down, slow, and restarted under load. A test binary of its own: one
//! test restarts the machine's PostgreSQL (`pg_ctlcluster 15 main restart`), and cargo runs
//! test binaries one after another, so no other database test sees it.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aead_store::{DbConfig, DbStore, DbUrl, FsStore};
use e2e_tests::*;
use ksm::daemon::serve::DbSettings;
use support::{assert_answer, settings, Daemon};
use test_support::db::PgSchema;

fn db_settings(url: &str) -> DbSettings {
    DbSettings {
        url: DbUrl::parse(url).unwrap(),
        password_file: None,
        pool_size: 4,
        serve_cached_when_down: false,
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A "database" that takes connections and never says a word: the slowest server there is.
#[test]
fn a_database_that_does_not_answer_gives_store_unavailable_within_the_deadline() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in silent.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(vec![], dir.path(), Duration::from_millis(500));
    s.db = Some(db_settings(&format!(
        "postgresql://postgres@127.0.0.1:{port}/test"
    )));
    let d = Daemon::start(s);
    let otp = vector_otp(0, 1, 1);
    let start = Instant::now();
    assert_answer(&d.decode(&otp), 503, "ERR Store unavailable");
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // Many at once: each within its deadline, and no thread or connection piles up.
    let before = threads();
    let slow = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..32 {
            sc.spawn(|| {
                for _ in 0..3 {
                    let t = Instant::now();
                    assert_answer(&d.decode(&otp), 503, "ERR Store unavailable");
                    if t.elapsed() > Duration::from_millis(1500) {
                        slow.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(slow.load(Ordering::SeqCst), 0, "answers past the deadline");
    assert!(threads() <= before + 4, "threads {before} -> {}", threads());
    // Connections given up on are closed: still open are at most the pool's and a ping's.
    std::thread::sleep(Duration::from_millis(200));
    let open = held
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            // What the client sent (its start-up message) first, then EOF if it closed.
            use std::io::Read as _;
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            loop {
                match (&**c).read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(_) => return true,
                }
            }
        })
        .count();
    assert!(
        open <= 4 + 2,
        "{open} connections still open for a pool of 4"
    );
    let health = get(d.addr, "/health").body;
    assert!(health.contains("AEAD database unavailable"), "{health}");
    assert!(get(d.addr, "/metrics").body.contains("ksm_store_up 0\n"));
}

fn fill_from_fixtures(url: &str) {
    let db = DbStore::open(DbConfig::new(DbUrl::parse(url).unwrap(), vec![])).unwrap();
    db.init().unwrap();
    let files = FsStore::open(test_support::fixtures().join("aead-files/store"), vec![]).unwrap();
    let c = ksm::tools::store_cmd::copy(&files, &db, &mut std::io::sink()).unwrap();
    assert_eq!(c.copied, 6);
}

fn pg_restart() {
    let o = std::process::Command::new("pg_ctlcluster")
        .args(["15", "main", "restart"])
        .output()
        .expect("pg_ctlcluster (postgresql-common)");
    assert!(o.status.success(), "{}", output_text(&o));
}

/// PostgreSQL restarted while 8 clients decode without pause: every answer comes within the
/// deadline, the failures are `ERR Store unavailable` and nothing else, and decoding comes
/// back by itself, with no daemon restart.
#[test]
fn postgresql_restarted_under_load_recovers_by_itself() {
    let pg = PgSchema::new();
    fill_from_fixtures(&pg.url());
    let dir = tempfile::tempdir().unwrap();
    let reqtimeout = Duration::from_secs(2);
    let mut s = settings(vec![], dir.path(), reqtimeout);
    s.db = Some(db_settings(&pg.url()));
    let d = Daemon::start(s);
    let otps: Vec<String> = (0..6).map(|i| vector_otp(i, 7, 7)).collect();
    for o in &otps {
        assert_answer(&d.decode(o), 200, "OK counter=0007 low=4242 high=17 use=07");
    }
    let stop = AtomicBool::new(false);
    let (ok, unavailable, other, late) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        Mutex::new(Vec::new()),
        AtomicUsize::new(0),
    );
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (stop, ok, unavailable, other, late, otps, d) =
                (&stop, &ok, &unavailable, &other, &late, &otps, &d);
            sc.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let a = d.decode(&otps[i % otps.len()]);
                    if start.elapsed() > reqtimeout + Duration::from_millis(500) {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                    match (a.status, a.body.as_str()) {
                        (200, b) if b.starts_with("OK ") => ok.fetch_add(1, Ordering::SeqCst),
                        (503, "ERR Store unavailable\n") => {
                            unavailable.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => {
                            other
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", a.status, a.body));
                            0
                        }
                    };
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        pg_restart();
        // Back within 10 s of the restart: the last 50 answers of one client are all OK.
        let back = Instant::now();
        let mut in_a_row = 0;
        while in_a_row < 50 {
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "no recovery within 10 s"
            );
            let a = d.decode(&otps[0]);
            in_a_row = if a.body.starts_with("OK ") {
                in_a_row + 1
            } else {
                0
            };
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert_eq!(
        *other.lock().unwrap(),
        Vec::<String>::new(),
        "only OK and ERR Store unavailable"
    );
    assert_eq!(late.load(Ordering::SeqCst), 0, "answers past the deadline");
    assert!(ok.load(Ordering::SeqCst) > 0);
    eprintln!(
        "restart under load: {} OK, {} ERR Store unavailable",
        ok.load(Ordering::SeqCst),
        unavailable.load(Ordering::SeqCst)
    );
    // And the cache is kept true again: the LISTEN is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(d.addr, "/health").body.contains("\"watching\":true") {
        assert!(Instant::now() < deadline, "LISTEN not back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = vector_otp(0, 8, 8);
    pg.sql("DELETE FROM aead_table WHERE public_id = 'ccccdeulfbvj';");
    let start = Instant::now();
    while !d.decode(&gone).body.starts_with("ERR Unknown public_id") {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "deleted row still decodes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
