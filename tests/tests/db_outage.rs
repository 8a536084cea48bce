//! The AEAD database down, refusing, slow, and restarted under load. A test binary of its
//! own: one test restarts the machine's PostgreSQL (`pg_ctlcluster VERSION NAME restart`, for
//! the cluster on port 5432, whichever version is installed), and cargo runs
//! test binaries one after another, so no other database test sees it. Within this binary,
//! the tests that need the real server take [`PG`] first.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aead_store::DbUrl;
use e2e_tests::*;
use ksm::settings::serve::DbSettings;
use support::{assert_answer, fill_from_fixtures, settings, Daemon};
use test_support::db::PgSchema;

fn db_settings(url: &str) -> DbSettings {
    DbSettings {
        url: DbUrl::parse(url).unwrap(),
        password_file: None,
        password: None,
        pool_size: 4,
        serve_cached_when_down: false,
    }
}

/// Held by each test here that needs the machine's PostgreSQL, so that the restart does not
/// happen in the middle of another (the tests of one binary run in parallel).
static PG: Mutex<()> = Mutex::new(());

fn pg_to_myself() -> std::sync::MutexGuard<'static, ()> {
    PG.lock().unwrap_or_else(|p| p.into_inner())
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

/// A database whose port nobody listens on refuses at once: the answer comes at once too,
/// not after `--reqtimeout` (30 s here), and `/health` says why.
#[test]
fn a_database_that_refuses_connections_gives_store_unavailable_at_once() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let reqtimeout = Duration::from_secs(30);
    let mut s = settings(vec![], dir.path(), reqtimeout);
    s.db = Some(db_settings(&format!(
        "postgresql://postgres@127.0.0.1:{port}/test"
    )));
    let d = Daemon::start(s);
    for counter in 1..4 {
        let start = Instant::now();
        assert_answer(
            &d.decode(&vector_otp(0, counter, 1)),
            503,
            "ERR Store unavailable",
        );
        // Far below the request timeout, however loaded the machine.
        assert!(start.elapsed() < reqtimeout / 3, "{:?}", start.elapsed());
    }
    let health = get(d.addr, "/health").body;
    assert!(
        health.contains("AEAD database unavailable: connection refused"),
        "{health}"
    );
    assert!(get(d.addr, "/metrics").body.contains("ksm_store_up 0\n"));
}

/// The machine's PostgreSQL cluster on port 5432 (version and name), as `pg_lsclusters`
/// lists it: whichever version Debian installed.
fn pg_cluster() -> (String, String) {
    let o = std::process::Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .expect("pg_lsclusters (postgresql-common)");
    assert!(o.status.success(), "{}", output_text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.get(2) == Some(&"5432"))
        .map(|w| (w[0].to_string(), w[1].to_string()))
        .unwrap_or_else(|| panic!("no PostgreSQL cluster on port 5432 in pg_lsclusters: {text}"))
}

fn pg_restart() {
    let (version, name) = pg_cluster();
    let o = std::process::Command::new("pg_ctlcluster")
        .args([version.as_str(), name.as_str(), "restart"])
        .output()
        .expect("pg_ctlcluster (postgresql-common)");
    assert!(o.status.success(), "{}", output_text(&o));
}

/// PostgreSQL restarted while 8 clients decode without pause: every answer comes within the
/// deadline, the failures are `ERR Store unavailable` and nothing else, and decoding comes
/// back by itself, with no daemon restart.
#[test]
fn postgresql_restarted_under_load_recovers_by_itself() {
    let _pg = pg_to_myself();
    let pg = PgSchema::new();
    fill_from_fixtures(&pg.url());
    let started = pg.sql("SELECT pg_postmaster_start_time();");
    let dir = tempfile::tempdir().unwrap();
    let reqtimeout = Duration::from_secs(2);
    let mut s = settings(vec![], dir.path(), reqtimeout);
    s.db = Some(db_settings(&pg.url()));
    let d = Daemon::start(s);
    let otps: Vec<String> = (0..6).map(|i| vector_otp(i, 7, 7)).collect();
    for o in &otps {
        assert_answer(&d.decode(o), 200, "OK counter=0007 low=4242 high=17 use=07");
    }
    // The LISTEN in place before the restart, so that its loss is the restart's doing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(d.addr, "/health").body.contains("\"watching\":true") {
        assert!(Instant::now() < deadline, "no LISTEN");
        std::thread::sleep(Duration::from_millis(50));
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
        // Watches /health from before the restart until decoding is back: the daemon must
        // notice the restart (its LISTEN lost), not only come through it.
        let watch_health = sc.spawn(|| {
            let mut saw_lost = false;
            while !stop.load(Ordering::SeqCst) {
                saw_lost |= get(d.addr, "/health").body.contains("\"watching\":false");
                std::thread::sleep(Duration::from_millis(10));
            }
            saw_lost
        });
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
        assert!(
            watch_health.join().unwrap(),
            "the restart was never noticed: /health never said \"watching\":false"
        );
    });
    assert_eq!(
        *other.lock().unwrap(),
        Vec::<String>::new(),
        "only OK and ERR Store unavailable"
    );
    assert_eq!(late.load(Ordering::SeqCst), 0, "answers past the deadline");
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_ne!(
        pg.sql("SELECT pg_postmaster_start_time();"),
        started,
        "the server was restarted"
    );
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

/// A TCP proxy in front of the machine's PostgreSQL that can be made to stop answering: once
/// [`Proxy::fall_silent`], nothing more passes either way on the connections it carries, and
/// new ones are taken and never served. The daemon behind it sees a database that does not
/// answer; the server itself goes on serving everyone else.
struct Proxy {
    port: u16,
    silent: Arc<AtomicBool>,
    /// Connections taken so far.
    accepted: Arc<AtomicUsize>,
    /// Connections numbered below this (those taken before the last [`Proxy::fail_over`])
    /// lead nowhere.
    lost_below: Arc<AtomicUsize>,
}

impl Proxy {
    fn to_postgresql() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let lost_below = Arc::new(AtomicUsize::new(0));
        let (s, lost, count) = (silent.clone(), lost_below.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if s.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                let (c, sv) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                for (from, to) in [(client, server), (sv, c)] {
                    let (s, lost) = (s.clone(), lost.clone());
                    std::thread::spawn(move || pipe(from, to, &s, n, &lost));
                }
            }
        });
        Proxy {
            port,
            silent,
            accepted,
            lost_below,
        }
    }

    /// `url` (the machine's PostgreSQL) through this proxy.
    fn url(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432/", &format!("127.0.0.1:{}/", self.port))
    }

    fn fall_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// The server the connections so far went to is gone without a word (powered off, or
    /// its address moved to a standby): nothing passes on them any more, in either direction,
    /// and nothing tells either end. New connections reach the server.
    fn fail_over(&self) {
        let taken = self.accepted.load(Ordering::SeqCst);
        self.lost_below.store(taken, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either end closes; once `silent`, or once connection `n` is
/// lost, swallows what it reads.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    silent: &AtomicBool,
    n: usize,
    lost_below: &AtomicUsize,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if silent.load(Ordering::SeqCst) || n < lost_below.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // Both directions end together (the other thread is reading the other socket).
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `--db-serve-cached-when-down` (off by default): the database stops answering after
/// YubiKey 0 decoded once. Off, YubiKey 0 then answers `ERR Store unavailable` like any
/// other; on, it keeps decoding (the revocation trade-off: its row could have been deleted
/// meanwhile), and a YubiKey never seen still answers `ERR Store unavailable`.
#[test]
fn cached_aeads_decode_through_an_outage_only_with_db_serve_cached_when_down() {
    let _pg = pg_to_myself();
    let pg = PgSchema::new();
    fill_from_fixtures(&pg.url());
    for serve_cached in [false, true] {
        let proxy = Proxy::to_postgresql();
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(vec![], dir.path(), Duration::from_millis(500));
        let mut db = db_settings(&proxy.url(&pg.url()));
        db.serve_cached_when_down = serve_cached;
        s.db = Some(db);
        let d = Daemon::start(s);
        // The LISTEN in place first (it empties the cache as it starts): from then on a
        // cached AEAD is kept until its row changes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !get(d.addr, "/health").body.contains("\"watching\":true") {
            assert!(Instant::now() < deadline, "no LISTEN");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_answer(
            &d.decode(&vector_otp(0, 1, 1)),
            200,
            "OK counter=0001 low=4242 high=17 use=01",
        );
        proxy.fall_silent();
        // The daemon notices (it checks the server every 0.5 s), and more than the 0.5 s a
        // cached AEAD is trusted without a LISTEN pass.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !get(d.addr, "/health")
            .body
            .contains("AEAD database unavailable")
        {
            assert!(Instant::now() < deadline, "outage not noticed");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(700));
        for counter in 2..5 {
            let a = d.decode(&vector_otp(0, counter, 1));
            if serve_cached {
                let ok = format!("OK counter={counter:04x} low=4242 high=17 use=01");
                assert_answer(&a, 200, &ok);
            } else {
                assert_answer(&a, 503, "ERR Store unavailable");
            }
            assert_answer(
                &d.decode(&vector_otp(1, counter, 1)),
                503,
                "ERR Store unavailable",
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(get(d.addr, "/metrics").body.contains("ksm_store_up 0\n"));
    }
}

/// The database server vanishes without a word (powered off, or its address moved to a
/// standby) while every connection of the pool is in the middle of a query, and the standby
/// answers new connections. The queries given up at their deadlines left their connections
/// waiting for answers that will never come; those must not keep the pool's places until the
/// kernel gives up on the sockets (a quarter of an hour), so decoding comes back by itself,
/// with no daemon restart.
#[test]
fn decoding_comes_back_when_the_database_vanished_mid_query_and_a_standby_answers() {
    let _pg = pg_to_myself();
    let pg = PgSchema::new();
    fill_from_fixtures(&pg.url());
    let proxy = Proxy::to_postgresql();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(vec![], dir.path(), Duration::from_millis(500));
    s.db = Some(db_settings(&proxy.url(&pg.url())));
    let d = Daemon::start(s);
    assert_answer(
        &d.decode(&vector_otp(0, 1, 1)),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );
    // A transaction holds the table, so the lookups that follow all wait inside the
    // database: every connection of the pool (4) is in the middle of a query when the server
    // vanishes, and the answers to those queries are lost.
    let mut lock = pg
        .psql()
        .args(["-q"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lock_sql = lock.stdin.take().unwrap();
    writeln!(
        lock_sql,
        "BEGIN; LOCK TABLE aead_table IN ACCESS EXCLUSIVE MODE;"
    )
    .unwrap();
    lock_sql.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'aead_table'::regclass;") != "1\n" {
        assert!(Instant::now() < deadline, "table lock not taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = &d;
    std::thread::scope(|s| {
        for i in 1..6 {
            s.spawn(move || {
                assert_answer(
                    &d.decode(&vector_otp(i, 2, 1)),
                    503,
                    "ERR Store unavailable",
                );
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        proxy.fail_over();
    });
    writeln!(lock_sql, "COMMIT;").unwrap();
    drop(lock_sql);
    assert!(lock.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 1..6 {
        loop {
            let a = d.decode(&vector_otp(i, 3, 1));
            if a.status == 200 {
                assert!(a.body.starts_with("OK counter=0003 "), "{a:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "YubiKey {i} still not decoding 30 s after the fail-over: {a:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
