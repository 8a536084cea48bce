//! A KSM reading its AEADs from a PostgreSQL hot standby: the deployment docs/database.md sketches
//! (one primary that the key tools write to, standbys near the KSMs), which the machine's own
//! server (no replication) cannot show, so the test makes a primary and a standby of its own
//! ([`test_support::db::PgCluster`]).
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::*;
use support::{assert_answer, fill_from_fixtures, settings, Daemon};
use test_support::db::primary_and_standby;

/// Polls `f` until it holds, for at most `within`.
fn soon(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The KSM decodes from a hot standby, which is read-only and takes no LISTEN; a row the key
/// tools delete on the primary stops decoding through the standby within the second that
/// docs/database.md promises for engines without notifications.
#[test]
fn a_ksm_reading_a_hot_standby_decodes_and_sees_a_revocation_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, standby) = primary_and_standby(dir.path());
    fill_from_fixtures(&primary.url());
    soon(Duration::from_secs(20), "rows not replicated", || {
        standby.sql("SELECT count(*) FROM aead_table") == "6\n"
    });

    // Writing on the standby is refused by the server itself: it is a real one.
    let o = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &standby.port.to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "DELETE FROM aead_table",
        ])
        .output()
        .unwrap();
    assert!(
        output_text(&o).contains("read-only transaction"),
        "{}",
        output_text(&o)
    );

    let aeads = tempfile::tempdir().unwrap();
    let mut s = settings(vec![], aeads.path(), Duration::from_millis(1000));
    s.db = Some(ksm::settings::serve::DbSettings {
        url: aead_store::DbUrl::parse(&standby.url()).unwrap(),
        password_file: None,
        password: None,
        pool_size: 4,
        serve_cached_when_down: false,
    });
    let d = Daemon::start(s);
    for counter in 1..4 {
        assert_answer(
            &d.decode(&vector_otp(1, counter, 1)),
            200,
            &format!("OK counter={counter:04x} low=4242 high=17 use=01"),
        );
    }
    let health = get(d.addr, "/health").body;
    assert!(health.contains("\"watching\":false"), "{health}");

    let public_id = &vector_otp(1, 4, 1)[..12];
    primary.sql(&format!(
        "DELETE FROM aead_table WHERE public_id = '{public_id}'"
    ));
    let deleted = Instant::now();
    let mut counter = 4;
    loop {
        let a = d.decode(&vector_otp(1, counter, 1));
        if a.body == "ERR Unknown public_id\n" {
            break;
        }
        assert_answer(
            &a,
            200,
            &format!("OK counter={counter:04x} low=4242 high=17 use=01"),
        );
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "still decoding {:?} after the row was deleted on the primary",
            deleted.elapsed()
        );
        counter += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(deleted.elapsed() < Duration::from_secs(1));
}
