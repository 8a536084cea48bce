//! A KSM reading its AEADs from a PostgreSQL hot standby: the deployment the README sketches
//! (one primary that the key tools write to, standbys near the KSMs).
//!
//! The machine's PostgreSQL cannot be made a primary of a test's standby without changing its
//! configuration, so the test makes a pair of its own: a primary cluster in a temporary
//! directory (`initdb`, trust authentication for replication too), a standby copied from it
//! with `pg_basebackup -R`, both on free ports of 127.0.0.1, run as the `postgres` user, and
//! stopped when the test ends.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e_tests::*;
use support::{assert_answer, fill_from_fixtures, settings, Daemon};

/// PostgreSQL's programs, Debian's layout for the machine's major version.
fn pg_bin(program: &str) -> PathBuf {
    let dir = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL's server programs (apt-get install postgresql; .ci/run's machine has them)",
        )
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("bin/initdb").exists())
        .max()
        .expect("a PostgreSQL with initdb under /usr/lib/postgresql");
    dir.join("bin").join(program)
}

/// Runs `program args` as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path, args: &[&str]) -> Output {
    let o = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        o.status.success(),
        "{} {args:?}: {}",
        program.display(),
        output_text(&o)
    );
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One PostgreSQL cluster of the test's own, stopped on drop.
struct Cluster {
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(data: PathBuf, sockets: &Path) -> Cluster {
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            sockets.display()
        );
        let log = data.join("log");
        as_postgres(
            &pg_bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Cluster { data, port }
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn sql(&self, sql: &str) -> String {
        let o = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-q", "-At"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        assert!(o.status.success(), "{sql}: {}", output_text(&o));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A primary and a standby streaming from it.
fn primary_and_standby(dir: &Path) -> (Cluster, Cluster) {
    let (primary, standby, sockets) = (dir.join("primary"), dir.join("standby"), dir.join("run"));
    std::fs::create_dir(&sockets).unwrap();
    Command::new("chown")
        .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
        .status()
        .unwrap();
    as_postgres(
        &pg_bin("initdb"),
        &[
            "-D",
            primary.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ],
    );
    let p = Cluster::start(primary, &sockets);
    as_postgres(
        &pg_bin("pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-U",
            "postgres",
            "-D",
            standby.to_str().unwrap(),
            "-R",
            "--no-sync",
        ],
    );
    let s = Cluster::start(standby, &sockets);
    assert_eq!(s.sql("SELECT pg_is_in_recovery()"), "t\n");
    (p, s)
}

/// Polls `f` until it holds, for at most `within`.
fn soon(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The KSM decodes from a hot standby, which is read-only and takes no LISTEN; a row the key
/// tools delete on the primary stops decoding through the standby within the second the
/// README promises for engines without notifications.
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
    s.db = Some(ksm::daemon::serve::DbSettings {
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
