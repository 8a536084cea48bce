//! What the store takes from the database only once it has checked it: heartbeats on the
//! shared change channel, the triggers that announce changes, and the size of what it reads.
//! Against the real servers on 127.0.0.1, as `tests.rs`. The change channel is the whole
//! database's, shared by every test running at once: the tests that watch a cached AEAD
//! stay use public ids no other test writes, so no other test's notice drops it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::tests::{
    aead, cache_it, eventually, id, listening_pg_store, nonce_of, otp_aead, Db, Stopped,
};
use super::*;

/// The first heartbeat of `s` that another connection hears on the channel, as any role
/// that may connect to the database can.
fn overhear_heartbeat(db: &Db, s: &DbStore) -> String {
    let ours = format!("{HEARTBEAT_TAG}{:016x} ", s.inner.token);
    let DbUrl::Postgres(opts) = DbUrl::parse(&db.url()).unwrap() else {
        unreachable!()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut l = sqlx::postgres::PgListener::connect_with(
            &sqlx::postgres::PgPoolOptions::new().connect_lazy_with(opts),
        )
        .await
        .unwrap();
        l.listen(sql::CHANNEL).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let n = l.recv().await.unwrap();
                if n.payload().starts_with(&ours) {
                    return n.payload().to_string();
                }
            }
        })
        .await
        .expect("a heartbeat within 5 s")
    })
}

fn notify(db: &Db, payload: &str) {
    db.sql(&format!("SELECT pg_notify('ksm_aead', '{payload}');"));
}

/// Issue 20, item 1: a role that may only connect can LISTEN, read a heartbeat, and NOTIFY
/// one of its own with a time far in the future, or a copy of a real one. Neither may keep a
/// LISTEN that has gone silent trusted: a deleted row must stop decoding as it would without
/// them.
#[test]
fn on_postgresql_forged_or_copied_heartbeats_do_not_keep_a_silent_listen_trusted() {
    let db = Db::pg();
    let s = listening_pg_store(&db, &[0x20]);
    let kid = id("cccctkrnhjub");
    db.insert("cccctkrnhjub", 0x20, &nonce_of("cccctkrnhjub"), &aead(1));
    cache_it(&s, &kid);
    let real = overhear_heartbeat(&db, &s);
    let token = format!("{:016x}", s.inner.token);
    let forged = [
        // The notice of the review: this store's token, and the latest time there is.
        format!("{HEARTBEAT_TAG}{token} 18446744073709551615"),
        // The same with a value made up.
        format!("{HEARTBEAT_TAG}{token} 18446744073709551615 {:032x}", 7u128),
        // A real one, again.
        real.clone(),
        // Neither a heartbeat nor a public id.
        "not a public id".to_string(),
    ];
    for f in &forged {
        notify(&db, f);
    }
    // Its own heartbeats still come back: one sent after the forgeries.
    let after = s.inner.now_ms();
    eventually("a heartbeat back", Duration::from_secs(2), || {
        s.inner.heartbeat.load(Ordering::SeqCst) > after
    });
    assert!(s.is_listening());
    // The LISTEN's server process stops: its connection stays open and says nothing.
    let pid = s.inner.listener_pid.load(Ordering::SeqCst);
    let _stopped = Stopped::new(pid);
    db.sql("DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(2), || {
        s.lookup(&kid) == Ok(None)
    });
    assert!(!s.is_listening());
    // Each was heard, ignored and counted (the stopped LISTEN heard them before it stopped:
    // notices reach it in order, and its own heartbeats after them still came back).
    assert_eq!(Store::ignored_notices(&s), Some(4));
}

/// A store that reads both tables (a YubiHSM 1 key handle and a YubiHSM 2 otp-aead-key),
/// cached as the daemon's, with a TTL of an hour: only a trusted LISTEN or its loss can make
/// the cache let go in time.
fn listening_store_of_both_tables(db: &Db) -> DbStore {
    let mut cfg = DbConfig::with_keys(
        DbUrl::parse(&db.url()).unwrap(),
        vec![
            AeadKey::Handle(KeyHandle(0x20)),
            AeadKey::OtpKey(ObjectId(5)),
        ],
    );
    cfg.cache = true;
    cfg.ttl = Duration::from_secs(3600);
    let s = DbStore::open(cfg).unwrap();
    s.init().unwrap();
    eventually("LISTEN", Duration::from_secs(10), || s.is_listening());
    s
}

/// Issue 20, item 2: a LISTEN is trusted only while every table read has its triggers for
/// INSERT, UPDATE, DELETE and TRUNCATE enabled ALWAYS. Each way one of them can fall short
/// ends the trust (and says so), and a change made meanwhile is noticed; `db-init` puts the
/// triggers back.
#[test]
fn on_postgresql_a_listen_is_trusted_only_while_every_table_read_announces_every_change() {
    let db = Db::pg();
    let s = listening_store_of_both_tables(&db);
    assert_eq!(s.unwatched(), None);
    let yubihsm1 = id("cccctkrnhjud");
    let yubihsm2 = id("cccctkrnhjue");
    // Each way to fall short, and a change it would not announce.
    for (table, breaks, change) in [
        // Enabled the default way, on origin only: a replica session's change is missed.
        (
            "aead_table",
            "ALTER TABLE aead_table ENABLE TRIGGER ksm_aead_notify;",
            "SET session_replication_role = replica; DELETE FROM aead_table;",
        ),
        (
            "aead_table",
            "ALTER TABLE aead_table DISABLE TRIGGER ksm_aead_truncate;",
            "TRUNCATE aead_table;",
        ),
        (
            "ksm_otp_aead",
            "ALTER TABLE ksm_otp_aead DISABLE TRIGGER ksm_otp_aead_notify;",
            "DELETE FROM ksm_otp_aead;",
        ),
        (
            "ksm_otp_aead",
            "ALTER TABLE ksm_otp_aead ENABLE TRIGGER ksm_otp_aead_truncate;",
            "SET session_replication_role = replica; TRUNCATE ksm_otp_aead;",
        ),
    ] {
        db.insert("cccctkrnhjud", 0x20, &nonce_of("cccctkrnhjud"), &aead(1));
        s.put(
            &yubihsm2,
            &Sealed::Hsm2 {
                key_id: ObjectId(5),
                aead: otp_aead("cccctkrnhjue", 2),
            },
            false,
        )
        .unwrap();
        cache_it(&s, &yubihsm1);
        cache_it(&s, &yubihsm2);
        db.sql(breaks);
        db.sql(change);
        let gone = if table == "aead_table" {
            &yubihsm1
        } else {
            &yubihsm2
        };
        eventually(breaks, Duration::from_secs(2), || {
            s.lookup(gone) == Ok(None)
        });
        assert!(!s.is_listening(), "{breaks}");
        let why = s.unwatched().unwrap_or_default();
        assert!(
            why.contains(table) && why.contains("ALWAYS"),
            "{breaks}: {why}"
        );
        assert_eq!(Store::unwatched(&s), Some(why));
        db.sql("DELETE FROM aead_table; DELETE FROM ksm_otp_aead;");
        // db-init puts them back, and the LISTEN is trusted again.
        s.init().unwrap();
        eventually("LISTEN again", Duration::from_secs(15), || s.is_listening());
        assert_eq!(s.unwatched(), None);
    }
}

/// With `db-init`'s triggers (enabled ALWAYS), a row deleted in a replica session is
/// announced like any other: the LISTEN stays trusted and the cached AEAD goes at once.
#[test]
fn on_postgresql_a_delete_in_a_replica_session_stops_decoding_at_once() {
    let db = Db::pg();
    let s = listening_store_of_both_tables(&db);
    let kid = id("cccctkrnhjuf");
    db.insert("cccctkrnhjuf", 0x20, &nonce_of("cccctkrnhjuf"), &aead(1));
    cache_it(&s, &kid);
    db.sql("SET session_replication_role = replica; DELETE FROM aead_table;");
    eventually("deleted row", Duration::from_secs(1), || {
        s.lookup(&kid) == Ok(None)
    });
    assert!(s.is_listening());
}

/// A TCP proxy to `port` on 127.0.0.1 that counts the bytes the server sends back.
struct CountingProxy {
    port: u16,
    from_server: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn to(server: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let from_server = Arc::new(AtomicUsize::new(0));
        let counted = from_server.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", server)) else {
                    continue;
                };
                let (c, sv) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server, None));
                let counted = counted.clone();
                std::thread::spawn(move || pipe(sv, c, Some(&counted)));
            }
        });
        CountingProxy { port, from_server }
    }

    fn bytes_from_server(&self) -> usize {
        self.from_server.load(Ordering::SeqCst)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicUsize>) {
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if let Some(c) = count {
            c.fetch_add(n, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Issue 20, item 9: a row whose value is 64 MiB (8 MiB on MariaDB, whose server will not
/// build a longer one under its default `max_allowed_packet`) is a malformed row, and is
/// never sent to the store: a lookup and a walk over it bring back a few kilobytes.
#[test]
fn a_huge_value_is_a_malformed_row_and_is_never_read() {
    const MIB: usize = 1024 * 1024;
    let row = |t: &str, k: &str| PathBuf::from(format!("{t} row (public_id cccccccccccb, {k})"));
    for (db, server_port) in [
        (Db::pg(), Some(5432)),
        (Db::my(), Some(3306)),
        (Db::lite(), None),
    ] {
        let (huge, mysql) = match db {
            Db::Pg(_) => ("convert_to(repeat('a', 64 * 1048576), 'UTF8')", false),
            Db::My(_) => ("REPEAT('a', 8 * 1048576)", true),
            Db::Lite(_) => ("zeroblob(64 * 1048576)", false),
        };
        // pyhsm's BLOB(32) is a TINYBLOB on MySQL: a table of larger blobs, as someone
        // may have made it.
        let blob = if mysql { "LONGBLOB" } else { "BLOB" };
        let table = match db {
            Db::Pg(_) => "CREATE TABLE aead_table (public_id varchar(16), keyhandle INT, nonce bytea, aead bytea);
                 CREATE TABLE ksm_otp_aead (public_id varchar(16), key_id INT, aead bytea);".to_string(),
            _ => format!("CREATE TABLE aead_table (public_id varchar(16), keyhandle INT, nonce {blob}, aead {blob});
                 CREATE TABLE ksm_otp_aead (public_id varchar(16), key_id INT, aead {blob});"),
        };
        db.sql(&table);
        db.sql(&format!(
            "INSERT INTO aead_table VALUES ('cccccccccccb', 32, {}, {huge});
             INSERT INTO aead_table VALUES ('cccccccccccb', 33, {huge}, {});
             INSERT INTO ksm_otp_aead VALUES ('cccccccccccb', 5, {huge});",
            db.bytes(&nonce_of("cccccccccccb")),
            db.bytes(&aead(1)),
        ));
        let proxy = server_port.map(CountingProxy::to);
        let url = match &proxy {
            Some(p) => db.url().replace(
                &format!("127.0.0.1:{}/", server_port.unwrap_or_default()),
                &format!("127.0.0.1:{}/", p.port),
            ),
            None => db.url(),
        };
        let store = |key: AeadKey| {
            let mut cfg = DbConfig::with_keys(DbUrl::parse(&url).unwrap(), vec![key]);
            cfg.timeout = Duration::from_secs(30);
            DbStore::open(cfg).unwrap()
        };
        let malformed = |path, reason| Err(StoreError::Malformed { path, reason });
        let kid = id("cccccccccccb");
        assert_eq!(
            store(AeadKey::Handle(KeyHandle(0x20))).lookup(&kid),
            malformed(
                row("aead_table", "keyhandle 0x20"),
                "AEAD is not 8 to 72 bytes"
            ),
            "{}",
            db.url()
        );
        assert_eq!(
            store(AeadKey::Handle(KeyHandle(0x21))).lookup(&kid),
            malformed(row("aead_table", "keyhandle 0x21"), "nonce is not 6 bytes"),
        );
        let s = store(AeadKey::OtpKey(ObjectId(5)));
        assert_eq!(
            s.lookup(&kid),
            malformed(row("ksm_otp_aead", "key_id 0x0005"), "AEAD is not 36 bytes"),
        );
        let walked: Vec<bool> = s.entries().map(|e| e.result.is_err()).collect();
        assert_eq!(walked, [true, true, true], "{}", db.url());
        if let Some(p) = proxy {
            assert!(
                p.bytes_from_server() < MIB,
                "{}: {} bytes came from the server",
                db.url(),
                p.bytes_from_server()
            );
        }
    }
}

/// At most a few rows are read for one public id: a table without pyhsm's primary key
/// holding a hundred rows for one id gives an error naming the table, not a choice among
/// rows it did not all read.
#[test]
fn too_many_rows_for_one_public_id_are_refused_unread() {
    let db = Db::lite();
    db.sql(
        "CREATE TABLE aead_table (public_id varchar(16), keyhandle INT, nonce BLOB, aead BLOB);",
    );
    db.sql(&format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) INSERT INTO aead_table SELECT 'cccccccccccb', 32, {}, {} FROM c;",
        db.bytes(&nonce_of("cccccccccccb")),
        db.bytes(&aead(1)),
    ));
    let s = db.store(&[0x20], false);
    assert_eq!(
        s.lookup(&id("cccccccccccb")),
        Err(StoreError::Malformed {
            path: PathBuf::from("aead_table rows (public_id cccccccccccb)"),
            reason: "more rows for one public id than a lookup reads",
        })
    );
}
