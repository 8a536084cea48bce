//! `ksm val add-client`, `revoke`, `import-ykval` and `export` as processes, against the
//! real PostgreSQL and MariaDB on 127.0.0.1 and SQLite files (each test in a schema or
//! database of its own), with yubikey-val's CSV files written by hand as its PHP writes
//! them (`fixtures/ykval/`).
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use test_support::db::{MyDatabase, PgSchema};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

fn ksm(args: &[&str]) -> Output {
    Command::new(KSM).args(args).output().expect("run ksm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = ksm(args);
    assert!(o.status.success(), "ksm {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// One database of each engine, with the tables made by `ksm val db-init`.
enum Db {
    Pg(PgSchema),
    My(MyDatabase),
    Lite(tempfile::TempDir),
}

impl Db {
    fn all() -> Vec<Db> {
        let dbs = vec![
            Db::Pg(PgSchema::new()),
            Db::My(MyDatabase::new()),
            Db::Lite(tempfile::tempdir().unwrap()),
        ];
        for db in &dbs {
            if let Db::Lite(dir) = db {
                std::fs::File::create(dir.path().join("val.db")).unwrap();
            }
            ok(&["val", "db-init", &db.url()]);
        }
        dbs
    }

    fn url(&self) -> String {
        match self {
            Db::Pg(s) => s.url(),
            Db::My(m) => m.url(),
            Db::Lite(d) => format!("sqlite:///{}", d.path().join("val.db").display()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Pg(_) => "PostgreSQL",
            Db::My(_) => "MariaDB",
            Db::Lite(_) => "SQLite",
        }
    }

    /// Runs `sql`; the rows as `a|b|c` lines.
    fn sql(&self, sql: &str) -> String {
        match self {
            Db::Pg(s) => s.sql(sql),
            Db::My(m) => m.sql(sql).replace('\t', "|"),
            Db::Lite(d) => {
                let o = Command::new("sqlite3")
                    .arg(d.path().join("val.db"))
                    .arg(sql)
                    .output()
                    .expect("sqlite3 (apt-get install sqlite3; .ci/run does)");
                assert!(o.status.success(), "{sql}: {}", text(&o));
                String::from_utf8(o.stdout).unwrap()
            }
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    test_support::fixtures().join("ykval").join(name)
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// `active` as 0/1 on every engine (PostgreSQL's BOOLEAN prints `t`).
const ACTIVE: &str = "CASE WHEN active THEN 1 ELSE 0 END";

#[test]
fn add_client_prints_id_and_key_as_ykval_gen_clients_does_and_stores_them() {
    for db in Db::all() {
        let url = db.url();
        let first = ok(&["val", "add-client", &url, "--email", "ops@example.org"]);
        let (id, key) = first.strip_suffix('\n').unwrap().split_once(',').unwrap();
        assert_eq!(id, "1", "{}: the first client of an empty table", db.name());
        assert_eq!(key.len(), 28, "{}: {first}", db.name());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(raw.len(), 20, "{}", db.name());
        assert_eq!(
            db.sql(&format!(
                "SELECT id, {ACTIVE}, secret, email, notes, otp FROM clients"
            )),
            format!("1|1|{key}|ops@example.org||\n"),
            "{}",
            db.name()
        );
        let created: i64 = db
            .sql("SELECT created FROM clients WHERE id = 1")
            .trim()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - created).abs() < 600,
            "{}: created {created}",
            db.name()
        );

        let second = ok(&["val", "add-client", &url]);
        assert!(second.starts_with("2,"), "{}: {second}", db.name());
        assert_ne!(second.trim_end()[2..], *key, "a new key for each client");
        assert!(ok(&["val", "add-client", &url, "--id", "7"]).starts_with("7,"));
        let again = ksm(&["val", "add-client", &url, "--id", "7"]);
        assert_eq!(again.status.code(), Some(2), "{}", text(&again));
        assert!(text(&again).contains("client 7 exists"), "{}", text(&again));
        assert!(ok(&["val", "add-client", &url]).starts_with("8,"));
        // An id past the INT column is refused before the database is asked (MariaDB in
        // non-strict mode would clamp it and the tool print another id than the row's).
        for bad in ["2147483648", "0"] {
            let out = ksm(&["val", "add-client", &url, "--id", bad]);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            assert!(text(&out).contains("--id"), "{}", text(&out));
        }
        // No --email: '' as ykval-gen-clients writes it, not NULL.
        assert_eq!(
            db.sql("SELECT COUNT(*) FROM clients WHERE email IS NULL"),
            "0\n",
            "{}",
            db.name()
        );
        assert_eq!(
            db.sql("SELECT COUNT(*) FROM clients"),
            "4\n",
            "{}",
            db.name()
        );
    }
}

#[test]
fn revoke_and_enable_flip_active_and_a_key_not_seen_yet_is_revoked_too() {
    for db in Db::all() {
        let url = db.url();
        // A row as yubikey-val writes it after accepting counter 40.
        db.sql(
            "INSERT INTO yubikeys (active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes) VALUES (TRUE, 1700000000, 1700000360, 'ccccdeulfbvj', 40, 3, 4660, 86, 'jrFwbaYFhn0HoxZIsd9LQ6w2ceU', '')",
        );
        let active = |name: &str| {
            db.sql(&format!(
                "SELECT {ACTIVE}, yk_counter FROM yubikeys WHERE yk_publicname = '{name}'"
            ))
        };
        assert_eq!(
            ok(&["val", "revoke", &url, "ccccdeulfbvj"]),
            "ccccdeulfbvj revoked\n"
        );
        assert_eq!(active("ccccdeulfbvj"), "0|40\n", "{}", db.name());
        assert_eq!(
            ok(&["val", "revoke", "--enable", &url, "ccccdeulfbvj"]),
            "ccccdeulfbvj enabled\n"
        );
        assert_eq!(active("ccccdeulfbvj"), "1|40\n", "{}", db.name());

        // Not seen yet: a row made now, inactive, with yubikey-val's new-key counters.
        assert!(ok(&["val", "revoke", &url, "ccccgkegkhcg"]).starts_with("ccccgkegkhcg revoked"));
        assert_eq!(active("ccccgkegkhcg"), "0|-1\n", "{}", db.name());
        assert!(ok(&["val", "revoke", "--enable", &url, "ccccbgvjkjfd"]).contains("no row yet"));
        assert_eq!(active("ccccbgvjkjfd"), "", "{}", db.name());

        let bad = ksm(&["val", "revoke", &url, "not-modhex"]);
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    }
}

#[test]
fn files_written_as_yubikey_vals_php_writes_them_import_and_export_back_byte_for_byte() {
    let keys = std::fs::read_to_string(fixture("ykval-export.csv")).unwrap();
    let clients = std::fs::read_to_string(fixture("ykval-export-clients.csv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dbs = Db::all();
    // The first database takes the PHP's files; each next one takes what the one before
    // exported (PostgreSQL → MariaDB → SQLite), as a site moving between engines would.
    let (mut keys_file, mut clients_file) = (
        fixture("ykval-export.csv").to_str().unwrap().to_string(),
        fixture("ykval-export-clients.csv")
            .to_str()
            .unwrap()
            .to_string(),
    );
    for (i, db) in dbs.iter().enumerate() {
        let url = db.url();
        assert_eq!(
            ok(&["val", "import-ykval", &keys_file, &url]),
            "yubikeys: 3 added, 0 advanced to the file's counters, 0 kept (the table's counters as high or higher)\n",
            "{}",
            db.name()
        );
        assert_eq!(
            ok(&["val", "import-ykval", "--clients", &clients_file, &url]),
            "clients: 3 added, 0 already there with the same key\n"
        );
        let exported = ok(&["val", "export", &url]);
        assert_eq!(exported, keys, "{}", db.name());
        let exported_clients = ok(&["val", "export", "--clients", &url]);
        assert_eq!(exported_clients, clients, "{}", db.name());
        keys_file = write(dir.path(), &format!("keys{i}.csv"), &exported);
        clients_file = write(dir.path(), &format!("clients{i}.csv"), &exported_clients);

        // The same files again change nothing.
        assert!(ok(&["val", "import-ykval", &keys_file, &url]).contains("0 added, 0 advanced"));
        assert!(
            ok(&["val", "import-ykval", "--clients", &clients_file, &url])
                .contains("3 already there")
        );
    }
}

#[test]
fn an_import_moves_counters_only_up() {
    let dir = tempfile::tempdir().unwrap();
    for db in Db::all() {
        let url = db.url();
        db.sql(
            "INSERT INTO yubikeys (active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes) VALUES (TRUE, 1700000000, 1700000360, 'ccccdeulfbvj', 40, 3, 4660, 86, 'jrFwbaYFhn0HoxZIsd9LQ6w2ceU', '')",
        );
        let counters = || {
            db.sql("SELECT yk_counter, yk_use, nonce FROM yubikeys WHERE yk_publicname = 'ccccdeulfbvj'")
        };
        let behind = write(
            dir.path(),
            "behind.csv",
            "1,1,2,ccccdeulfbvj,39,9,1,1,olderolderolderolder,\n1,1,2,ccccdeulfbvj,40,3,1,1,sameSAMEsameSAME,\n",
        );
        assert!(ok(&["val", "import-ykval", &behind, &url])
            .contains("0 added, 0 advanced to the file's counters, 2 kept"));
        assert_eq!(
            counters(),
            "40|3|jrFwbaYFhn0HoxZIsd9LQ6w2ceU\n",
            "{}",
            db.name()
        );
        let ahead = write(
            dir.path(),
            "ahead.csv",
            "1,1,2,ccccdeulfbvj,40,4,1,1,newernewernewernewer,\n",
        );
        assert!(ok(&["val", "import-ykval", &ahead, &url]).contains("1 advanced"));
        assert_eq!(counters(), "40|4|newernewernewernewer\n", "{}", db.name());
    }
}

#[test]
fn a_bad_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for db in Db::all() {
        let url = db.url();
        // Line 3 (after a comment line) has a counter no YubiKey has.
        let keys = write(
            dir.path(),
            "bad.csv",
            "# exported\n1,1,2,ccccdeulfbvj,1,0,1,1,abcdefabcdefabcdef,\n1,1,2,ccccgkegkhcg,70000,0,1,1,abcdefabcdefabcdef,\n",
        );
        let o = ksm(&["val", "import-ykval", &keys, &url]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("line 3: yk_counter is 70000"),
            "{}",
            text(&o)
        );
        assert!(text(&o).contains("nothing was imported"), "{}", text(&o));
        assert_eq!(
            db.sql("SELECT COUNT(*) FROM yubikeys"),
            "0\n",
            "{}",
            db.name()
        );

        // A row only the database can refuse: client 1 is there with another key. The
        // client on line 1 must not be left behind.
        ok(&["val", "add-client", &url, "--id", "1"]);
        let clients = write(
            dir.path(),
            "clients.csv",
            "9,1,1700000000,AAECAwQFBgcICQoLDA0ODxAREhM=,,,\n1,1,1700000000,mG5be6ZJU1qBGz24yPh/ESM3UdU=,,,\n",
        );
        let o = ksm(&["val", "import-ykval", "--clients", &clients, &url]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("line 2: "), "{}", text(&o));
        assert!(
            text(&o).contains("client 1 is in the database with another key"),
            "{}",
            text(&o)
        );
        assert!(
            !text(&o).contains("mG5be6ZJU1qBGz24yPh"),
            "no key in errors: {}",
            text(&o)
        );
        assert_eq!(db.sql("SELECT id FROM clients"), "1\n", "{}", db.name());

        // A clients file given without --clients is recognised.
        let o = ksm(&["val", "import-ykval", &clients, &url]);
        assert!(
            text(&o).contains("looks like a clients line"),
            "{}",
            text(&o)
        );
    }
}

/// Exit 4 for a database that cannot be reached (as for the AEAD store), 2 for a URL that
/// carries a password, which is not repeated.
#[test]
fn an_unreachable_database_exits_4_and_a_password_in_the_url_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = ksm(&[
        "val",
        "export",
        &format!("postgresql://postgres@127.0.0.1:{port}/test"),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(o.stdout.is_empty());
    let o = ksm(&[
        "val",
        "add-client",
        "postgresql://postgres:hunter2secret@127.0.0.1/test",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains("hunter2secret"), "{}", text(&o));
}

/// `-` reads the file from standard input, as yubikey-val's import tools read it.
#[test]
fn a_dash_imports_standard_input() {
    use std::io::Write as _;
    let db = Db::Lite(tempfile::tempdir().unwrap());
    if let Db::Lite(dir) = &db {
        std::fs::File::create(dir.path().join("val.db")).unwrap();
    }
    ok(&["val", "db-init", &db.url()]);
    let mut child = Command::new(KSM)
        .args(["val", "import-ykval", "-", &db.url()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text_in = std::fs::read(fixture("ykval-export.csv")).unwrap();
    child.stdin.take().unwrap().write_all(&text_in).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("yubikeys: 3 added"));
    assert_eq!(
        ok(&["val", "export", &db.url()]).as_bytes(),
        text_in.as_slice()
    );
}
