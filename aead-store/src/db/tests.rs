//! The database store against the real servers on 127.0.0.1 (PostgreSQL, MariaDB) and real
//! SQLite files, each test in a schema or database of its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use otp_core::{Aead, KeyHandle, Nonce, PublicId};
use test_support::db::{blob, pg_bytes, MyDatabase, PgSchema, PYHSM_SCHEMA, PYHSM_SCHEMA_PG};

use super::*;

/// One database of each engine, reached both by SQL typed into its own client (as pyhsm's
/// importer or an operator would fill it) and by the store.
pub(super) enum Db {
    Pg(PgSchema),
    My(MyDatabase),
    Lite(tempfile::TempDir),
}

impl Db {
    pub(super) fn all() -> Vec<Db> {
        vec![Db::pg(), Db::my(), Db::lite()]
    }
    pub(super) fn pg() -> Db {
        Db::Pg(PgSchema::new())
    }
    pub(super) fn my() -> Db {
        Db::My(MyDatabase::new())
    }
    pub(super) fn lite() -> Db {
        Db::Lite(tempfile::tempdir().expect("tempdir"))
    }

    pub(super) fn url(&self) -> String {
        match self {
            Db::Pg(s) => s.url(),
            Db::My(d) => d.url(),
            // SQLAlchemy's four slashes: an absolute path.
            Db::Lite(t) => format!("sqlite:///{}", t.path().join("aeads.db").display()),
        }
    }

    pub(super) fn sql(&self, sql: &str) -> String {
        match self {
            Db::Pg(s) => s.sql(sql),
            Db::My(d) => d.sql(sql),
            Db::Lite(t) => {
                let db = t.path().join("aeads.db");
                let store = DbStore::open(DbConfig::new(DbUrl::Sqlite(db), vec![])).expect("open");
                let inner = store.inner.clone();
                let sql = sql.to_string();
                store
                    .block(async move {
                        let Pool::Lite(p) = &inner.pool.get() else {
                            unreachable!()
                        };
                        sqlx::raw_sql(&sql)
                            .execute(p)
                            .await
                            .map(|_| String::new())
                            .map_err(|e| StoreError::Unavailable(e.to_string()))
                    })
                    .expect("sqlite SQL")
            }
        }
    }

    pub(super) fn bytes(&self, b: &[u8]) -> String {
        match self {
            Db::Pg(_) => pg_bytes(b),
            _ => blob(b),
        }
    }

    /// pyhsm's schema as its users create it.
    pub(super) fn pyhsm_table(&self) {
        self.sql(match self {
            Db::Pg(_) => PYHSM_SCHEMA_PG,
            _ => PYHSM_SCHEMA,
        });
    }

    /// A row as pyhsm's `yhsm-db-import` inserts it: public id, key handle as an integer,
    /// the raw nonce and the raw AEAD.
    pub(super) fn insert(&self, id: &str, kh: i64, nonce: &[u8], aead: &[u8]) {
        self.sql(&format!(
            "INSERT INTO aead_table (public_id, keyhandle, nonce, aead) VALUES ('{id}', {kh}, {}, {});",
            self.bytes(nonce),
            self.bytes(aead)
        ));
    }

    pub(super) fn store(&self, khs: &[u32], cache: bool) -> DbStore {
        let mut cfg = DbConfig::new(
            DbUrl::parse(&self.url()).expect("url"),
            khs.iter().map(|k| KeyHandle(*k)).collect(),
        );
        cfg.cache = cache;
        cfg.timeout = Duration::from_secs(5);
        DbStore::open(cfg).expect("open")
    }
}

pub(super) fn id(s: &str) -> PublicId {
    PublicId::new(s).expect("id")
}

pub(super) fn nonce_of(s: &str) -> [u8; 6] {
    id(s).to_nonce().expect("nonce").0
}

pub(super) fn aead(v: u8) -> Vec<u8> {
    vec![v; 30]
}

pub(super) fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn a_table_filled_as_pyhsm_fills_it_reads_back_on_every_engine() {
    for db in Db::all() {
        db.pyhsm_table();
        db.insert("ccccdeulfbvj", 0x20, &nonce_of("ccccdeulfbvj"), &aead(1));
        db.insert("ccccdeulfbvj", 0x21, &nonce_of("ccccdeulfbvj"), &aead(2));
        db.insert("cccckfeiibdh", 0x21, &nonce_of("cccckfeiibdh"), &aead(3));
        // Handles above 0x7fffffff can only be a negative INT.
        db.insert("ccccrtejdebu", -1, &nonce_of("ccccrtejdebu"), &aead(4));
        let s = db.store(&[0x21, 0x20, 0xffff_ffff], false);
        let got = s.lookup(&id("ccccdeulfbvj")).unwrap().unwrap();
        assert_eq!(
            got.key_handle().unwrap(),
            KeyHandle(0x21),
            "{}: configured order decides",
            db.url()
        );
        assert_eq!(
            got.hsm1_aead().unwrap().clone(),
            Aead::new(&aead(2)).unwrap()
        );
        assert_eq!(got.nonce(), Nonce(nonce_of("ccccdeulfbvj")));
        assert_eq!(
            got.source.to_string(),
            "aead_table row (public_id ccccdeulfbvj, keyhandle 0x21)"
        );
        let s = db.store(&[0x20], false);
        assert_eq!(
            s.lookup(&id("ccccdeulfbvj"))
                .unwrap()
                .unwrap()
                .key_handle()
                .unwrap(),
            KeyHandle(0x20)
        );
        assert_eq!(
            s.lookup(&id("cccckfeiibdh")).unwrap(),
            None,
            "only configured handles"
        );
        let s = db.store(&[0xffff_ffff], false);
        assert_eq!(
            s.lookup(&id("ccccrtejdebu"))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone(),
            Aead::new(&aead(4)).unwrap()
        );
    }
}

#[test]
fn bad_rows_are_errors_naming_the_row_as_bad_files_are() {
    for db in Db::all() {
        db.pyhsm_table();
        db.insert("cccccccccccb", 0x20, &[1, 2, 3, 4, 5], &aead(1));
        db.insert("cccccccccccd", 0x20, &nonce_of("cccccccccccd"), &[7; 80]);
        db.insert("cccccccccccd", 0x21, &nonce_of("cccccccccccd"), &aead(1));
        // Another YubiKey's row copied under this id: the nonce gives it away.
        db.insert("ccccccccccce", 0x20, &nonce_of("cccccccccccb"), &aead(1));
        let s = db.store(&[0x20, 0x21], false);
        let row =
            |i: &str| PathBuf::from(format!("aead_table row (public_id {i}, keyhandle 0x20)"));
        assert_eq!(
            s.lookup(&id("cccccccccccb")).unwrap_err(),
            StoreError::Malformed {
                path: row("cccccccccccb"),
                reason: "nonce is not 6 bytes"
            }
        );
        // The first handle's row decides, good or bad, as the first directory does.
        assert_eq!(
            s.lookup(&id("cccccccccccd")).unwrap_err(),
            StoreError::Malformed {
                path: row("cccccccccccd"),
                reason: "AEAD is not 8 to 72 bytes"
            }
        );
        assert!(matches!(
            s.lookup(&id("ccccccccccce")).unwrap_err(),
            StoreError::NonceMismatch { .. }
        ));
        let mut cfg = DbConfig::new(DbUrl::parse(&db.url()).unwrap(), vec![KeyHandle(0x20)]);
        cfg.nonce_policy = NoncePolicy::Any;
        let any = DbStore::open(cfg).unwrap();
        assert!(any.lookup(&id("ccccccccccce")).unwrap().is_some());
        // Every row is listed, bad ones with their reason.
        let entries: Vec<WalkEntry> = s.entries().collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries.iter().filter(|e| e.result.is_ok()).count(), 1);
        assert_eq!(entries.iter().filter(|e| e.nonce_differs).count(), 1);
    }
}

#[test]
fn db_init_makes_pyhsms_table_and_leaves_an_existing_one_alone() {
    for db in Db::all() {
        let s = db.store(&[0x20], false);
        s.init().unwrap();
        s.init().unwrap();
        let src = s
            .write(
                KeyHandle(0x20),
                &id("cccccccccccb"),
                &Nonce(nonce_of("cccccccccccb")),
                &Aead::new(&aead(9)).unwrap(),
                false,
            )
            .unwrap();
        assert_eq!(
            src.to_string(),
            "aead_table row (public_id cccccccccccb, keyhandle 0x20)"
        );
        assert_eq!(
            s.write(
                KeyHandle(0x20),
                &id("cccccccccccb"),
                &Nonce(nonce_of("cccccccccccb")),
                &Aead::new(&aead(8)).unwrap(),
                false
            )
            .unwrap_err(),
            StoreError::AlreadyExists(PathBuf::from(src.to_string()))
        );
        assert_eq!(
            s.lookup(&id("cccccccccccb"))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone(),
            Aead::new(&aead(9)).unwrap()
        );
        s.write(
            KeyHandle(0x20),
            &id("cccccccccccb"),
            &Nonce(nonce_of("cccccccccccb")),
            &Aead::new(&aead(8)).unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(
            s.lookup(&id("cccccccccccb"))
                .unwrap()
                .unwrap()
                .hsm1_aead()
                .unwrap()
                .clone(),
            Aead::new(&aead(8)).unwrap()
        );
    }
    // A table made by hand from pyhsm's schema keeps its columns.
    let db = Db::my();
    db.pyhsm_table();
    let before = db.sql("SHOW CREATE TABLE aead_table;");
    db.store(&[0x20], false).init().unwrap();
    assert_eq!(db.sql("SHOW CREATE TABLE aead_table;"), before);
    let db = Db::pg();
    db.pyhsm_table();
    let cols = "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'aead_table' ORDER BY 1;";
    let before = db.sql(cols);
    db.store(&[0x20], false).init().unwrap();
    assert_eq!(db.sql(cols), before);
}

#[test]
fn a_walk_pages_through_every_row() {
    let db = Db::pg();
    db.pyhsm_table();
    let n = PAGE as u64 * 2 + 7;
    db.sql(&format!(
        "INSERT INTO aead_table SELECT lpad(to_hex(i), 12, '0'), 32, '\\x000000000000'::bytea, '\\x{}'::bytea FROM generate_series(1, {n}) AS i;",
        "00".repeat(30)
    ));
    let s = db.store(&[0x20], false);
    assert_eq!(s.entries().count() as u64, n);
}

/// Keys that cannot be read as pyhsm's types read as the same key again; the walk must end
/// with an error instead of fetching the same page for ever.
#[test]
fn a_walk_over_unreadable_keys_ends_with_an_error() {
    let db = Db::lite();
    db.pyhsm_table();
    // SQLite stores what it is given: blobs in the public_id column.
    db.sql(&format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {}) INSERT INTO aead_table SELECT randomblob(6), 32, zeroblob(6), zeroblob(30) FROM c;",
        PAGE * 2 + 3
    ));
    let s = db.store(&[0x20], false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let entries: Vec<_> = s.entries().take(PAGE as usize * 4).collect();
        let _ = tx.send(entries);
    });
    let entries = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the walk ends");
    assert!(
        entries.len() <= PAGE as usize + 1,
        "{} entries",
        entries.len()
    );
    let last = entries.last().expect("entries");
    assert!(
        matches!(&last.result, Err(e) if e.to_string().contains("the walk cannot go on")),
        "{:?}",
        last.result.as_ref().err()
    );
}

/// The daemon's settings: cached, and kept true.
fn cached_store(db: &Db) -> DbStore {
    db.store(&[0x20], true)
}

#[test]
fn on_postgresql_a_deleted_or_changed_row_stops_at_once_and_a_new_one_starts_at_once() {
    let db = Db::pg();
    // A TTL of an hour: only the trigger's notices can make the cache let go in time.
    let mut cfg = DbConfig::new(DbUrl::parse(&db.url()).unwrap(), vec![KeyHandle(0x20)]);
    cfg.cache = true;
    cfg.ttl = Duration::from_secs(3600);
    let s = DbStore::open(cfg).unwrap();
    s.init().unwrap();
    eventually("LISTEN", Duration::from_secs(10), || s.is_listening());
    let kid = id("cccccccccccb");
    // No absence is cached: a row written after a miss is found at the next lookup.
    assert_eq!(s.lookup(&kid).unwrap(), None);
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    assert!(s.lookup(&kid).unwrap().is_some());
    // Cached now: lookups no longer reach the database.
    cache_it(&s, &kid);
    // Changed (broken) and deleted rows are noticed well within a second.
    db.sql("UPDATE aead_table SET nonce = '\\x0102'::bytea;");
    let t = eventually("changed row", Duration::from_secs(1), || {
        s.lookup(&kid).is_err()
    });
    assert!(t < Duration::from_secs(1));
    db.sql("DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(1), || {
        s.lookup(&kid) == Ok(None)
    });
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    assert!(s.lookup(&kid).unwrap().is_some());
    db.sql("TRUNCATE aead_table;");
    eventually("truncated table", Duration::from_secs(1), || {
        s.lookup(&kid) == Ok(None)
    });
}

#[test]
fn without_notifications_a_deleted_row_stops_within_the_ttl() {
    for db in [Db::my(), Db::lite()] {
        let s = cached_store(&db);
        s.init().unwrap();
        let kid = id("cccccccccccb");
        db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
        assert!(s.lookup(&kid).unwrap().is_some());
        let q = s.queries();
        assert!(s.lookup(&kid).unwrap().is_some());
        assert_eq!(s.queries(), q, "{}: served from the cache", db.url());
        db.sql("DELETE FROM aead_table;");
        eventually("deleted row", Duration::from_secs(1), || {
            s.lookup(&kid) == Ok(None)
        });
    }
}

#[test]
fn an_unreachable_database_is_unavailable_within_the_deadline_and_in_check() {
    // Nothing listens on port 9 of 127.0.0.1.
    let mut cfg = DbConfig::new(
        DbUrl::parse("postgresql://postgres@127.0.0.1:9/test").unwrap(),
        vec![KeyHandle(0x20)],
    );
    cfg.cache = true;
    cfg.timeout = Duration::from_millis(300);
    let s = DbStore::open(cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let r = rt.block_on(s.lookup_until(
        &id("cccccccccccb"),
        Instant::now() + Duration::from_millis(200),
    ));
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    eventually("check", Duration::from_secs(3), || s.check().is_err());
    assert_eq!(s.watching(), Some(false));
}

#[test]
fn cached_aeads_outlive_an_outage_only_when_asked() {
    for serve_cached in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aeads.db");
        let mut cfg = DbConfig::new(DbUrl::Sqlite(path.clone()), vec![KeyHandle(0x20)]);
        cfg.cache = true;
        cfg.ttl = Duration::from_millis(100);
        cfg.timeout = Duration::from_millis(300);
        cfg.serve_cached_when_down = serve_cached;
        let s = DbStore::open(cfg).unwrap();
        s.init().unwrap();
        let kid = id("cccccccccccb");
        s.write(
            KeyHandle(0x20),
            &kid,
            &Nonce(nonce_of("cccccccccccb")),
            &Aead::new(&aead(1)).unwrap(),
            false,
        )
        .unwrap();
        assert!(s.lookup(&kid).unwrap().is_some());
        // The database goes away: the file is replaced by a directory, so every query fails.
        std::fs::rename(&path, dir.path().join("gone")).unwrap();
        std::fs::create_dir(&path).unwrap();
        let Pool::Lite(p) = &s.inner.pool.get() else {
            unreachable!()
        };
        let p = p.clone();
        s.rt().block_on(async move { p.close().await });
        std::thread::sleep(Duration::from_millis(150));
        let r = s.lookup(&kid);
        if serve_cached {
            assert!(r.unwrap().is_some());
        } else {
            assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        }
    }
}

#[test]
fn postgresql_over_tls_and_read_only_connections_serve() {
    let db = Db::pg();
    db.pyhsm_table();
    db.store(&[0x20], false).init().unwrap();
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    // The hot-standby case without a standby: every transaction read-only, over TLS.
    let url = format!(
        "{}%20-c%20default_transaction_read_only%3Don&sslmode=require",
        db.url()
    );
    let mut cfg = DbConfig::new(DbUrl::parse(&url).unwrap(), vec![KeyHandle(0x20)]);
    cfg.cache = true;
    let s = DbStore::open(cfg).unwrap();
    assert!(s.lookup(&id("cccccccccccb")).unwrap().is_some());
    eventually("LISTEN", Duration::from_secs(10), || s.is_listening());
    let w = s.write(
        KeyHandle(0x20),
        &id("cccccccccccd"),
        &Nonce(nonce_of("cccccccccccd")),
        &Aead::new(&aead(2)).unwrap(),
        false,
    );
    assert!(
        matches!(w, Err(StoreError::Unavailable(ref e)) if e.contains("read-only")),
        "{w:?}"
    );
    db.sql("DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(1), || {
        s.lookup(&id("cccccccccccb")) == Ok(None)
    });
}

#[test]
fn on_postgresql_without_the_trigger_the_cache_falls_back_on_the_ttl() {
    // pyhsm's table made by hand, `db-init` never run: nothing would ever notify.
    let db = Db::pg();
    db.pyhsm_table();
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    let s = cached_store(&db);
    let kid = id("cccccccccccb");
    // The store finds the trigger missing, and says so, rather than trusting a LISTEN.
    eventually("the trigger check", Duration::from_secs(10), || {
        s.unwatched().is_some()
    });
    assert!(s.unwatched().unwrap_or_default().contains("aead_table"));
    assert!(!s.is_listening());
    assert!(s.lookup(&kid).unwrap().is_some());
    db.sql("DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(1), || {
        s.lookup(&kid) == Ok(None)
    });
}

/// A PostgreSQL store as the daemon has it, its table made by `db-init`, with a TTL of an
/// hour: only a trusted LISTEN or its loss can make the cache let go in time.
pub(super) fn listening_pg_store(db: &Db, khs: &[u32]) -> DbStore {
    let mut cfg = DbConfig::new(
        DbUrl::parse(&db.url()).unwrap(),
        khs.iter().map(|k| KeyHandle(*k)).collect(),
    );
    cfg.cache = true;
    cfg.ttl = Duration::from_secs(3600);
    let s = DbStore::open(cfg).unwrap();
    s.init().unwrap();
    eventually("LISTEN", Duration::from_secs(10), || s.is_listening());
    s
}

/// Caches `kid`'s AEAD and checks it is served from the cache (the notice of the row's own
/// INSERT may come while it is read, and keep that read out of the cache).
pub(super) fn cache_it(s: &DbStore, kid: &PublicId) {
    eventually("served from the cache", Duration::from_secs(2), || {
        assert!(s.lookup(kid).unwrap().is_some());
        let q = s.queries();
        assert!(s.lookup(kid).unwrap().is_some());
        s.queries() == q
    });
}

/// Resumes a stopped PostgreSQL server process when dropped, whatever the test did.
pub(super) struct Stopped(i32);

impl Stopped {
    pub(super) fn new(pid: i32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: i32) {
    assert!(pid > 0);
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn on_postgresql_a_listen_whose_connection_dies_is_not_trusted() {
    let db = Db::pg();
    let s = listening_pg_store(&db, &[0x20]);
    let kid = id("cccccccccccb");
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    cache_it(&s, &kid);
    let pid = s.inner.listener_pid.load(Ordering::SeqCst);
    assert_eq!(
        db.sql(&format!("SELECT pg_terminate_backend({pid});"))
            .trim(),
        "t"
    );
    db.sql("DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(1), || {
        s.lookup(&kid) == Ok(None)
    });
    // A new LISTEN, on another connection.
    eventually("LISTEN again", Duration::from_secs(10), || {
        s.is_listening() && s.inner.listener_pid.load(Ordering::SeqCst) != pid
    });
}

#[test]
fn on_postgresql_a_listen_whose_connection_goes_silent_is_not_trusted() {
    let db = Db::pg();
    let s = listening_pg_store(&db, &[0x20]);
    let kid = id("cccccccccccb");
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
    cache_it(&s, &kid);
    let pid = s.inner.listener_pid.load(Ordering::SeqCst);
    {
        // The LISTEN's server process stops: its connection stays open, and says nothing.
        let _stopped = Stopped::new(pid);
        db.sql("DELETE FROM aead_table;");
        eventually("deleted row", Duration::from_secs(1), || {
            s.lookup(&kid) == Ok(None)
        });
        assert!(!s.is_listening());
        // Rows read meanwhile are not trusted to a LISTEN that says nothing either.
        db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
        assert!(s.lookup(&kid).unwrap().is_some());
        db.sql("DELETE FROM aead_table;");
        eventually("deleted row again", Duration::from_secs(1), || {
            s.lookup(&kid) == Ok(None)
        });
        // Replaced by a LISTEN that answers.
        eventually("LISTEN again", Duration::from_secs(10), || s.is_listening());
        assert_ne!(s.inner.listener_pid.load(Ordering::SeqCst), pid);
    }
}

#[test]
fn on_postgresql_a_trigger_disabled_or_dropped_under_a_listen_is_not_trusted() {
    let db = Db::pg();
    let s = listening_pg_store(&db, &[0x20]);
    // db-init makes the trigger fire in replica sessions too.
    assert_eq!(
        db.sql("SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'aead_table'::regclass AND tgname = 'ksm_aead_notify';")
            .trim(),
        "A"
    );
    let kid = id("cccccccccccb");
    for breaks in [
        "ALTER TABLE aead_table DISABLE TRIGGER ksm_aead_notify;",
        "ALTER TABLE aead_table ENABLE REPLICA TRIGGER ksm_aead_notify;",
        "DROP TRIGGER ksm_aead_notify ON aead_table;",
    ] {
        db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(1));
        cache_it(&s, &kid);
        db.sql(breaks);
        db.sql("DELETE FROM aead_table;");
        eventually(breaks, Duration::from_secs(1), || {
            s.lookup(&kid) == Ok(None)
        });
        // db-init puts it back, and the LISTEN is trusted again.
        s.init().unwrap();
        eventually("LISTEN again", Duration::from_secs(15), || s.is_listening());
    }
}

#[test]
fn a_cached_aeads_age_counts_from_before_its_query() {
    // A query that takes half a second once, after its snapshot is taken: what it read is
    // that old when it returns, and the TTL must count from before it.
    let db = Db::pg();
    db.sql(&PYHSM_SCHEMA_PG.replace("aead_table", "real_table"));
    db.sql(
        "CREATE SEQUENCE slow_once;
         CREATE VIEW aead_table AS SELECT r.* FROM real_table r,
           (SELECT pg_sleep(CASE WHEN nextval('slow_once') = 1 THEN 0.5 ELSE 0 END)) AS s;",
    );
    db.sql(&format!(
        "INSERT INTO real_table VALUES ('cccccccccccb', 32, {}, {});",
        pg_bytes(&nonce_of("cccccccccccb")),
        pg_bytes(&aead(1))
    ));
    let s = cached_store(&db);
    let kid = id("cccccccccccb");
    let asked = Instant::now();
    assert!(s.lookup(&kid).unwrap().is_some());
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "the slow query"
    );
    let at = lock(&s.inner.cache).map.get(kid.as_str()).unwrap().1;
    assert!(
        at.duration_since(asked) < Duration::from_millis(200),
        "aged from {:?} after the query was sent",
        at.duration_since(asked)
    );
}

#[test]
fn on_postgresql_a_new_row_of_an_earlier_key_handle_wins_at_once() {
    let db = Db::pg();
    // An older db-init's trigger, UPDATE and DELETE only: not trusted to announce all.
    db.pyhsm_table();
    db.sql(
        "CREATE FUNCTION ksm_aead_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('ksm_aead', OLD.public_id); RETURN NULL; END $$;
         CREATE TRIGGER ksm_aead_notify AFTER UPDATE OR DELETE ON aead_table
           FOR EACH ROW EXECUTE FUNCTION ksm_aead_notify();",
    );
    let mut cfg = DbConfig::new(
        DbUrl::parse(&db.url()).unwrap(),
        vec![KeyHandle(0x20), KeyHandle(0x21)],
    );
    cfg.cache = true;
    cfg.ttl = Duration::from_millis(300);
    let old = DbStore::open(cfg).unwrap();
    eventually("the trigger check", Duration::from_secs(10), || {
        old.unwatched().is_some()
    });
    assert!(!old.is_listening(), "an older trigger is not trusted");
    drop(old);
    // db-init replaces it; with an hour's TTL only its notices keep the cache true.
    let s = listening_pg_store(&db, &[0x20, 0x21]);
    let kid = id("cccccccccccb");
    db.insert("cccccccccccb", 0x21, &nonce_of("cccccccccccb"), &aead(1));
    cache_it(&s, &kid);
    assert_eq!(
        s.lookup(&kid).unwrap().unwrap().key_handle().unwrap(),
        KeyHandle(0x21)
    );
    // The YubiKey's secret under the first handle arrives.
    db.insert("cccccccccccb", 0x20, &nonce_of("cccccccccccb"), &aead(2));
    eventually("the first handle's new row", Duration::from_secs(1), || {
        s.lookup(&kid).unwrap().unwrap().key_handle().unwrap() == KeyHandle(0x20)
    });
    assert_eq!(
        s.lookup(&kid)
            .unwrap()
            .unwrap()
            .hsm1_aead()
            .unwrap()
            .clone(),
        Aead::new(&aead(2)).unwrap()
    );
}

#[test]
fn on_postgresql_the_listen_takes_no_connection_of_the_lookups() {
    let db = Db::pg();
    db.pyhsm_table();
    db.store(&[0x20], false).init().unwrap();
    let mut cfg = DbConfig::new(DbUrl::parse(&db.url()).unwrap(), vec![KeyHandle(0x20)]);
    cfg.cache = true;
    cfg.pool_size = 1;
    cfg.timeout = Duration::from_secs(1);
    let s = DbStore::open(cfg).unwrap();
    eventually("LISTEN", Duration::from_secs(10), || s.is_listening());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Ids never cached (no rows): each lookup needs the pool's one connection.
    for i in 0..20 {
        let kid = id(&format!("cccccccccc{}", ["cb", "cd", "ce", "cf"][i % 4]));
        let r = rt.block_on(s.lookup_until(&kid, Instant::now() + Duration::from_millis(500)));
        assert_eq!(r, Ok(None), "lookup {i}");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(s.is_listening());
    assert_eq!(s.check(), Ok(()));
}

/// A YubiHSM 2 AEAD whose nonce is `id`'s.
pub(super) fn otp_aead(id_: &str, fill: u8) -> OtpAead {
    OtpAead::from_yubihsm1(nonce_of(id_), [fill; 30])
}

pub(super) fn keyed_store(db: &Db, keys: &[AeadKey]) -> DbStore {
    let mut cfg = DbConfig::with_keys(DbUrl::parse(&db.url()).expect("url"), keys.to_vec());
    cfg.timeout = Duration::from_secs(5);
    DbStore::open(cfg).expect("open")
}

#[test]
fn yubihsm2_rows_live_in_a_table_of_their_own_looked_up_in_configured_order() {
    let k5 = AeadKey::OtpKey(ObjectId(5));
    let k6 = AeadKey::OtpKey(ObjectId(6));
    let kh = AeadKey::Handle(KeyHandle(0x20));
    for db in Db::all() {
        keyed_store(&db, &[]).init().unwrap();
        let i = id("ccccdeulfbvj");
        let s = keyed_store(&db, &[k6, kh, k5]);
        s.write(
            KeyHandle(0x20),
            &i,
            &Nonce(nonce_of("ccccdeulfbvj")),
            &Aead::new(&aead(1)).unwrap(),
            false,
        )
        .unwrap();
        let five = Sealed::Hsm2 {
            key_id: ObjectId(5),
            aead: otp_aead("ccccdeulfbvj", 2),
        };
        let source = s.put(&i, &five, false).unwrap();
        assert_eq!(
            source.to_string(),
            "ksm_otp_aead row (public_id ccccdeulfbvj, key_id 0x0005)"
        );
        assert!(matches!(
            s.put(&i, &five, false),
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(s.exists_under(k5, &i).unwrap());
        assert!(!s.exists_under(k6, &i).unwrap());
        // pyhsm's table holds only the YubiHSM 1 row.
        assert_eq!(
            db.sql("SELECT COUNT(*) FROM aead_table;").trim(),
            match db {
                Db::Lite(_) => "",
                _ => "1",
            }
        );
        assert_eq!(
            s.lookup(&i).unwrap().unwrap().key(),
            kh,
            "0x20 before key 5"
        );
        assert_eq!(
            keyed_store(&db, &[k5, kh]).lookup(&i).unwrap().unwrap(),
            StoredAead {
                sealed: five.clone(),
                source
            }
        );
        // The walk lists both tables' rows.
        let keys: Vec<AeadKey> = s.entries().map(|e| e.result.unwrap().key()).collect();
        assert_eq!(keys, [kh, k5]);
        // A row of another length, or whose nonce is not the public id, is refused.
        db.sql(&format!(
            "INSERT INTO ksm_otp_aead (public_id, key_id, aead) VALUES ('cccccccccccb', 6, {});",
            db.bytes(&[1; 35])
        ));
        assert!(matches!(
            s.lookup(&id("cccccccccccb")),
            Err(StoreError::Malformed {
                reason: "AEAD is not 36 bytes",
                ..
            })
        ));
        s.put(
            &id("cccccccccccd"),
            &Sealed::Hsm2 {
                key_id: ObjectId(6),
                aead: otp_aead("cccccccccccb", 3),
            },
            false,
        )
        .unwrap();
        assert!(matches!(
            s.lookup(&id("cccccccccccd")),
            Err(StoreError::NonceMismatch { .. })
        ));
    }
}

#[test]
fn a_store_of_key_handles_only_never_reads_the_yubihsm2_table() {
    // A database set up by an older db-init (pyhsm's table only) keeps working.
    for db in Db::all() {
        db.pyhsm_table();
        db.insert("ccccdeulfbvj", 0x20, &nonce_of("ccccdeulfbvj"), &aead(1));
        let s = db.store(&[0x20], false);
        assert!(s.lookup(&id("ccccdeulfbvj")).unwrap().is_some());
        // The walk (verify, stats, export) takes the missing table for an empty one.
        let walked: Vec<_> = s.entries().map(|e| e.result.map(|a| a.key())).collect();
        assert_eq!(walked, [Ok(AeadKey::Handle(KeyHandle(0x20)))]);
        // Asked for a YubiHSM 2 key, it says the table is missing.
        let k = keyed_store(&db, &[AeadKey::OtpKey(ObjectId(5))]);
        assert!(matches!(
            k.lookup(&id("ccccdeulfbvj")),
            Err(StoreError::Unavailable(_))
        ));
    }
}

/// A YubiHSM 2 key configured on a database whose `db-init` predates them (pyhsm's table
/// only): the lookup fails as for any missing table, and says what to run.
#[test]
fn a_missing_yubihsm2_table_says_to_run_db_init() {
    for db in Db::all() {
        db.pyhsm_table();
        let s = keyed_store(&db, &[AeadKey::OtpKey(ObjectId(5))]);
        match s.lookup(&id("ccccdeulfbvj")) {
            Err(StoreError::Unavailable(why)) => {
                assert!(why.contains("run `ksm store db-init`"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The rows give the same fallbacks as files do: each later configured key's good row, in
/// configured order, a bad one (here another id's AEAD, against the nonce rule) left out;
/// through the cache or not, and within a deadline for the daemon.
#[test]
fn fallbacks_are_the_later_keys_good_rows_in_order() {
    let k5 = AeadKey::OtpKey(ObjectId(5));
    let k6 = AeadKey::OtpKey(ObjectId(6));
    let kh20 = AeadKey::Handle(KeyHandle(0x20));
    let kh21 = AeadKey::Handle(KeyHandle(0x21));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for db in Db::all() {
        keyed_store(&db, &[]).init().unwrap();
        let i = id("ccccdeulfbvj");
        let s = keyed_store(&db, &[k5, kh20, k6, kh21]);
        let n = Nonce(nonce_of("ccccdeulfbvj"));
        for (kh, v) in [(0x20, 1), (0x21, 2)] {
            s.write(KeyHandle(kh), &i, &n, &Aead::new(&aead(v)).unwrap(), false)
                .unwrap();
        }
        for (key_id, nonce_id, fill) in [(5, "ccccdeulfbvj", 3), (6, "cccccccccccb", 4)] {
            s.put(
                &i,
                &Sealed::Hsm2 {
                    key_id: ObjectId(key_id),
                    aead: otp_aead(nonce_id, fill),
                },
                false,
            )
            .unwrap();
        }
        assert_eq!(s.lookup(&i).unwrap().unwrap().key(), k5);
        let keys = |v: Vec<StoredAead>| v.iter().map(StoredAead::key).collect::<Vec<_>>();
        assert_eq!(keys(s.fallbacks(&i, k5).unwrap()), [kh20, kh21]);
        assert_eq!(
            s.fallbacks(&i, k5).unwrap()[0].hsm1_aead(),
            Some(&Aead::new(&aead(1)).unwrap())
        );
        assert_eq!(keys(s.fallbacks(&i, kh20).unwrap()), [kh21]);
        assert_eq!(keys(s.fallbacks(&i, kh21).unwrap()), []);
        assert_eq!(keys(s.fallbacks(&id("cccccccccccd"), k5).unwrap()), []);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            keys(rt.block_on(s.fallbacks_until(&i, k5, deadline)).unwrap()),
            [kh20, kh21]
        );
        // Through the cache: the same.
        let mut cfg = DbConfig::with_keys(
            DbUrl::parse(&db.url()).expect("url"),
            vec![k5, kh20, k6, kh21],
        );
        cfg.cache = true;
        let cached = DbStore::open(cfg).expect("open");
        assert_eq!(cached.lookup(&i).unwrap().unwrap().key(), k5);
        assert_eq!(keys(cached.fallbacks(&i, k5).unwrap()), [kh20, kh21]);
    }
}
