//! The counter database on real PostgreSQL, MariaDB and SQLite: `db-init` makes
//! yubikey-val's tables column for column, a row written as yubikey-val writes it is read
//! and advanced by the conditional write, and each refusal is the one yubikey-val gives.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use aead_store::DbUrl;
use test_support::db::{MyDatabase, PgReadOnlyRole, PgSchema};
use ykval::counter::Verdict;
use ykval::db::{NewClient, Recorded};
use ykval::{Counters, ValDb, ValDbConfig};

/// yubikey-val 2.41's columns, in `ykval-db.sql`'s order.
const CLIENT_COLUMNS: &str = "id,active,created,secret,email,notes,otp";
const YUBIKEY_COLUMNS: &str =
    "active,created,modified,yk_publicname,yk_counter,yk_use,yk_low,yk_high,nonce,notes";

fn c(counter: i64, session_use: i64) -> Counters {
    Counters {
        counter,
        session_use,
    }
}

/// Runs the whole exercise on one database; `sql` runs a statement with the engine's
/// own client and returns its output, `columns` lists a table's columns that way.
async fn exercise(url: &str, sql: &dyn Fn(&str) -> String, columns: &dyn Fn(&str) -> String) {
    let db = ValDb::open(&ValDbConfig::new(DbUrl::parse(url).unwrap())).unwrap();
    db.init().await.unwrap();
    // Again: the tables are left as they are.
    db.init().await.unwrap();
    assert_eq!(columns("clients"), CLIENT_COLUMNS);
    assert_eq!(columns("yubikeys"), YUBIKEY_COLUMNS);

    // A row as yubikey-val writes it: counter 40, session use 3.
    sql("INSERT INTO yubikeys (active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes) VALUES (TRUE, 1700000000, 1700000100, 'cccccccccccb', 40, 3, 4660, 86, 'yubikeyvalnonce0001', '');");
    let row = db.yubikey("cccccccccccb").await.unwrap().unwrap();
    assert_eq!(row.counters, c(40, 3));
    assert_eq!((row.low, row.high, row.modified), (4660, 86, 1700000100));

    let refused = |r: Recorded| match r {
        Recorded::Refused(v, _) => v,
        Recorded::Accepted(_) => panic!("accepted"),
    };
    let id = "cccccccccccb";
    assert_eq!(
        refused(
            db.record(id, c(39, 9), 0, 0, "n0n0n0n0n0n0n0n0")
                .await
                .unwrap()
        ),
        Verdict::ReplayedOtp
    );
    assert_eq!(
        refused(
            db.record(id, c(40, 3), 0, 0, "yubikeyvalnonce0001")
                .await
                .unwrap()
        ),
        Verdict::ReplayedRequest
    );
    assert_eq!(
        refused(
            db.record(id, c(40, 3), 0, 0, "n1n1n1n1n1n1n1n1")
                .await
                .unwrap()
        ),
        Verdict::ReplayedOtp
    );
    match db
        .record(id, c(41, 0), 1, 2, "n2n2n2n2n2n2n2n2")
        .await
        .unwrap()
    {
        Recorded::Accepted(a) => assert_eq!(a.previous.counters, c(40, 3)),
        other => panic!("{other:?}"),
    }
    let row = db.yubikey(id).await.unwrap().unwrap();
    assert_eq!(row.counters, c(41, 0));
    assert_eq!((row.low, row.high), (2, 1));
    assert_eq!(row.nonce, "n2n2n2n2n2n2n2n2");
    assert!(row.modified > 1700000100);
    // The same request again, then the same OTP with another nonce.
    assert_eq!(
        refused(
            db.record(id, c(41, 0), 1, 2, "n2n2n2n2n2n2n2n2")
                .await
                .unwrap()
        ),
        Verdict::ReplayedRequest
    );
    assert_eq!(
        refused(
            db.record(id, c(41, 0), 1, 2, "n3n3n3n3n3n3n3n3")
                .await
                .unwrap()
        ),
        Verdict::ReplayedOtp
    );

    // A YubiKey never seen gets yubikey-val's new row, then advances.
    assert!(db.yubikey("ccccccccccccdd").await.unwrap().is_none());
    assert!(matches!(
        db.record("ccccccccccccdd", c(0, 0), 0, 0, "n4n4n4n4n4n4n4n4")
            .await
            .unwrap(),
        Recorded::Accepted(_)
    ));
    let new = db.yubikey("ccccccccccccdd").await.unwrap().unwrap();
    assert!(new.active);
    assert_eq!(new.counters, c(0, 0));

    // Revoked: refused whatever the counters; enabled again: served.
    assert!(db.set_yubikey_active(id, false).await.unwrap());
    assert_eq!(
        refused(
            db.record(id, c(50, 0), 0, 0, "n5n5n5n5n5n5n5n5")
                .await
                .unwrap()
        ),
        Verdict::Inactive
    );
    assert!(db.set_yubikey_active(id, true).await.unwrap());
    assert!(matches!(
        db.record(id, c(50, 0), 0, 0, "n5n5n5n5n5n5n5n5")
            .await
            .unwrap(),
        Recorded::Accepted(_)
    ));
    assert!(!db
        .set_yubikey_active("cccccccccccccccc", false)
        .await
        .unwrap());

    // Clients: yubikey-val's rows read, ours written.
    sql("INSERT INTO clients (id, active, created, secret, email, notes, otp) VALUES (7, TRUE, 1700000000, 'mG5be6ZJU1qBGz24yPh/ESM3UdU=', 'a@example.org', '', '');");
    let seven = db.client(7).await.unwrap().unwrap();
    assert!(seven.active);
    assert_eq!(seven.secret.as_str(), "mG5be6ZJU1qBGz24yPh/ESM3UdU=");
    assert!(!format!("{seven:?}").contains("mG5be6"));
    assert!(db.client(8).await.unwrap().is_none());
    let next = db
        .insert_client(&NewClient::default(), "c2VjcmV0c2VjcmV0c2VjcmV0")
        .await
        .unwrap();
    assert_eq!(next, 8);
    let eight = db.client(8).await.unwrap().unwrap();
    assert!(eight.active);
    sql("UPDATE clients SET active = FALSE WHERE id = 7;");
    assert!(!db.client(7).await.unwrap().unwrap().active);
    db.ping().await.unwrap();

    concurrent(url).await;
}

/// How many validators race with the same OTP in [`concurrent`].
const RACERS: usize = 8;

/// `RACERS` calls of `record` with the same counters, started together on a pool with a
/// connection for each: exactly one is accepted, the others refused as a replay. Once on a
/// row that exists (the conditional update decides) and once on a YubiKey never seen (every
/// caller also races to make the row: the insert that finds it made must change nothing and
/// fail nothing). A sequential test cannot tell a conditional write from an unconditional one.
async fn concurrent(url: &str) {
    let mut cfg = ValDbConfig::new(DbUrl::parse(url).unwrap());
    cfg.pool_size = u32::try_from(RACERS).unwrap() + 2;
    cfg.timeout = std::time::Duration::from_secs(30);
    let db = ValDb::open(&cfg).unwrap();
    // An existing row (made by the first record), then a new one.
    assert!(matches!(
        db.record("ccccccccccce", c(1, 0), 0, 0, "r0r0r0r0r0r0r0r0")
            .await
            .unwrap(),
        Recorded::Accepted(_)
    ));
    for id in ["ccccccccccce", "cccccccccccf"] {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let (db, barrier) = (db.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    db.record(id, c(5, 0), 0, 0, &format!("race{i:012}")).await
                })
            })
            .collect();
        let mut accepted = 0;
        for racer in racers {
            match racer.await.unwrap().unwrap() {
                Recorded::Accepted(_) => accepted += 1,
                Recorded::Refused(v, _) => assert_eq!(v, Verdict::ReplayedOtp, "{id}"),
            }
        }
        assert_eq!(accepted, 1, "{id}: {accepted} of {RACERS} accepted");
        assert_eq!(db.yubikey(id).await.unwrap().unwrap().counters, c(5, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql() {
    let pg = PgSchema::new();
    let cols = |t: &str| {
        pg.sql(&format!("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{t}';"))
            .trim()
            .to_string()
    };
    exercise(&pg.url(), &|s| pg.sql(s), &cols).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb() {
    let my = MyDatabase::new();
    let cols = |t: &str| {
        my.sql(&format!("SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = '{t}';"))
            .trim()
            .to_string()
    };
    exercise(&my.url(), &|s| my.sql(s), &cols).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("val.db");
    let run = |s: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&path)
            .arg(s)
            .output()
            .expect("sqlite3 (apt-get install sqlite3; .ci/run does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cols = |t: &str| {
        run(&format!(
            "SELECT group_concat(name, ',') FROM pragma_table_info('{t}');"
        ))
        .trim()
        .to_string()
    };
    exercise(&format!("sqlite:///{}", path.display()), &run, &cols).await;

    // SQLite's INT holds any 64-bit integer, as a hand-made table's BIGINT would: a row
    // past what its fields can hold is a bad row, not counters to compute with (the clock
    // check's `(high << 16) + low` and `now - modified` would overflow).
    let db = ValDb::open(&ValDbConfig::new(
        DbUrl::parse(&format!("sqlite:///{}", path.display())).unwrap(),
    ))
    .unwrap();
    for (name, columns) in [
        ("ccccccccccch", "-9223372036854775807, 1, 1, 1, 1"),
        ("cccccccccccj", "1700000000, 1, 1, 1, 4611686018427387904"),
        ("ccccccccccck", "1700000000, 4294967296, 1, 1, 1"),
    ] {
        run(&format!("INSERT INTO yubikeys (active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes) VALUES (1, 1700000000, {}, '{name}', {}, '', '');",
            columns.split_once(", ").unwrap().0,
            columns.split_once(", ").unwrap().1));
        let e = db.yubikey(name).await.unwrap_err();
        assert!(matches!(e, ykval::DbError::BadRow(_)), "{name}: {e:?}");
        let e = db
            .record(name, c(2, 2), 0, 0, "n6n6n6n6n6n6n6n6")
            .await
            .unwrap_err();
        assert!(matches!(e, ykval::DbError::BadRow(_)), "{name}: {e:?}");
    }
}

/// A database that refuses connections fails within the bound, as `Unavailable`.
#[tokio::test]
async fn a_database_that_refuses_is_unavailable_within_the_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = ValDbConfig::new(
        DbUrl::parse(&format!("postgresql://postgres@127.0.0.1:{port}/test")).unwrap(),
    );
    cfg.timeout = std::time::Duration::from_millis(500);
    let db = ValDb::open(&cfg).unwrap();
    let e = db
        .record("cccccccccccb", c(1, 0), 0, 0, "n0n0n0n0n0n0n0n0")
        .await
        .unwrap_err();
    assert!(matches!(e, ykval::DbError::Unavailable(_)), "{e:?}");
    assert!(db.client(1).await.is_err());
}

/// A database that answers but takes no writes (a role whose transactions are read-only, as
/// on a standby): the ping, which `/health` asks, says so rather than "fine", and a counter
/// write fails the same way, naming the cause.
#[tokio::test]
async fn a_database_that_takes_no_writes_fails_the_ping_as_read_only() {
    let pg = PgSchema::new();
    let open = |url: &str| ValDb::open(&ValDbConfig::new(DbUrl::parse(url).unwrap())).unwrap();
    open(&pg.url()).init().await.unwrap();
    let role = PgReadOnlyRole::new(&pg);
    let db = open(role.url());
    assert!(
        db.yubikey("cccccccccccb").await.unwrap().is_none(),
        "it reads"
    );
    let e = db.ping().await.unwrap_err();
    assert!(matches!(e, ykval::DbError::ReadOnly(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("takes no writes: a standby? validators write to the primary"),
        "{e}"
    );
    let e = db
        .record("cccccccccccb", c(1, 0), 0, 0, "n0n0n0n0n0n0n0n0")
        .await
        .unwrap_err();
    assert!(matches!(e, ykval::DbError::ReadOnly(_)), "{e:?}");
    open(&pg.url()).ping().await.unwrap();
}
