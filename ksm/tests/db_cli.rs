//! AEADs in a database, end to end: `ksm store db-init/db-import/db-export`, `ksm serve
//! --db-url` and `generate-keys --db-url` as separate processes, against the real PostgreSQL
//! and MariaDB on 127.0.0.1 and SQLite files, each test in a schema or database of its own,
//! with emulated YubiHSMs on real ptys and OTPs from Yubico's `ykgenerate`.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{emulator_config, get, otp_vectors, output_text as text, ykgenerate, Device};
use hsm_proto::{Aead, AesKey, KeyHandle, Nonce};
use test_support::db::{new_cluster, MyDatabase, PgCluster, PgSchema, PYHSM_SCHEMA_PG};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

fn ksm(args: &[&str]) -> Output {
    Command::new(KSM).args(args).output().expect("run ksm")
}

struct Serve(Child, std::net::SocketAddr);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    fn decode(&self, otp: &str) -> String {
        get(self.1, &format!("/wsapi/decrypt?otp={otp}")).body
    }
}

fn serve(dev: &Path, url: &str, socket: &str) -> Serve {
    serve_with(dev, url, socket, &[])
}

fn serve_with(dev: &Path, url: &str, socket: &str, more: &[&str]) -> Serve {
    let mut child = Command::new(KSM)
        .args(["serve", "-D", dev.to_str().unwrap(), "--db-url", url])
        .args(more)
        .args([
            "--key-handles",
            "0x20,0x21",
            "--socket",
            socket,
            "--port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ksm serve");
    let addr = e2e_tests::listening_addr(&mut child);
    Serve(child, addr)
}

/// A fresh OTP of vector YubiKey `i`.
fn otp(i: usize, counter: u16) -> String {
    let v = otp_vectors();
    let y = &v["yubikeys"][i];
    ykgenerate(
        y["public_id"].as_str().unwrap(),
        y["aes_key"].as_str().unwrap(),
        y["uid"].as_str().unwrap(),
        counter,
        0x4242,
        0x17,
        1,
    )
}

fn ok_line(counter: u16) -> String {
    format!("OK counter={counter:04x} low=4242 high=17 use=01\n")
}

/// Waits until `d` answers `want` for `otp`; returns how long that took. Fails after `within`.
fn answer_within(d: &Serve, otp: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = d.decode(otp);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not {want:?} within {within:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn store_fixtures() -> String {
    test_support::fixtures()
        .join("aead-files/store")
        .display()
        .to_string()
}

/// pyhsm's importer, by hand: every vector YubiKey's AEAD as `yhsm-db-import` inserts it
/// (public id, key handle as an integer, the raw nonce, the raw AEAD), into pyhsm's schema.
fn fill_as_pyhsm(pg: &PgSchema) {
    pg.sql(PYHSM_SCHEMA_PG);
    let v = otp_vectors();
    for y in v["yubikeys"].as_array().unwrap() {
        pg.sql(&format!(
            "INSERT INTO aead_table (public_id, keyhandle, nonce, aead) VALUES ('{}', {}, '\\x{}'::bytea, '\\x{}'::bytea);",
            y["public_id"].as_str().unwrap(),
            y["key_handle"].as_u64().unwrap(),
            y["public_id_hex"].as_str().unwrap(),
            y["aead"].as_str().unwrap(),
        ));
    }
}

#[test]
fn two_daemons_share_postgresql_each_with_its_own_emulator() {
    let pg = PgSchema::new();
    let url = pg.url();
    // A table in pyhsm's schema, filled as pyhsm fills it; db-init adds our trigger only.
    fill_as_pyhsm(&pg);
    let o = ksm(&["store", "db-init", &url]);
    assert!(o.status.success(), "{}", text(&o));
    let (dev1, dev2) = (
        Device::start(&emulator_config("demo.toml")),
        Device::start(&emulator_config("demo.toml")),
    );
    let tmp = tempfile::tempdir().unwrap();
    let sock1 = tmp.path().join("ksm1.sock");
    let d1 = serve(&dev1.path(), &url, sock1.to_str().unwrap());
    let d2 = serve(&dev2.path(), &url, "none");
    for i in 0..6 {
        assert_eq!(d1.decode(&otp(i, 0x10)), ok_line(0x10), "yubikey {i} on 1");
        assert_eq!(d2.decode(&otp(i, 0x11)), ok_line(0x11), "yubikey {i} on 2");
    }

    // A key generated through the first daemon's HSM decodes on the second.
    let o = ksm(&[
        "generate-keys",
        "--socket",
        sock1.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "--start-public-id",
        "777000",
        "-c",
        "2",
        "--db-url",
        &url,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ids: Vec<String> = (777000..777002)
        .map(|n| format!("'{}'", hsm_proto::PublicId::from_number(n, 12).unwrap()))
        .collect();
    let rows = pg.sql(&format!("SELECT public_id, encode(nonce, 'hex'), encode(aead, 'hex') FROM aead_table WHERE keyhandle = 32 AND public_id IN ({}) ORDER BY 1;", ids.join(", ")));
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let key20 = AesKey::from_hex(otp_vectors()["key_handles"]["0x20"].as_str().unwrap()).unwrap();
    for r in &rows {
        let nonce = Nonce(hex::decode(r[1]).unwrap().try_into().unwrap());
        let aead = Aead::new(&hex::decode(r[2]).unwrap()).unwrap();
        let secret = hsm_proto::aead::open(&key20, KeyHandle(0x20), &nonce, &aead).unwrap();
        let fresh = ykgenerate(
            r[0],
            &hex::encode(&secret[..16]),
            &hex::encode(&secret[16..22]),
            3,
            0x4242,
            0x17,
            1,
        );
        assert_eq!(
            d2.decode(&fresh),
            ok_line(3),
            "generated {} decodes on 2",
            r[0]
        );
    }
    // Resumable: a second run skips what is there.
    let o = ksm(&[
        "generate-keys",
        "--socket",
        sock1.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "--start-public-id",
        "777000",
        "-c",
        "2",
        "--db-url",
        &url,
    ]);
    assert!(
        text(&o).contains("0 generated, 2 already present"),
        "{}",
        text(&o)
    );

    // A deleted row stops decoding on both within a second; so does a damaged one.
    let (gone, damaged) = (otp(0, 0x20), otp(3, 0x20));
    assert_eq!(d1.decode(&gone), ok_line(0x20));
    assert_eq!(d2.decode(&gone), ok_line(0x20));
    assert_eq!(d2.decode(&damaged), ok_line(0x20));
    pg.sql("DELETE FROM aead_table WHERE public_id = 'ccccdeulfbvj';");
    pg.sql("UPDATE aead_table SET aead = '\\x00'::bytea WHERE public_id = 'cccckfeiibdh';");
    let second = Duration::from_secs(1);
    answer_within(&d1, &gone, "ERR Unknown public_id\n", second);
    answer_within(&d2, &gone, "ERR Unknown public_id\n", second);
    answer_within(&d1, &damaged, "ERR Corrupt AEAD\n", second);
    answer_within(&d2, &damaged, "ERR Corrupt AEAD\n", second);
    // Put back, it decodes at once: no absence was cached.
    pg.sql(&format!(
        "INSERT INTO aead_table VALUES ('ccccdeulfbvj', 32, '\\x000023ea41f8'::bytea, '\\x{}'::bytea);",
        otp_vectors()["yubikeys"][0]["aead"].as_str().unwrap()
    ));
    assert_eq!(d1.decode(&otp(0, 0x21)), ok_line(0x21));
    assert_eq!(d2.decode(&otp(0, 0x22)), ok_line(0x22));
    let health = get(d1.1, "/health").body;
    assert!(health.contains("\"watching\":true"), "{health}");
    let metrics = get(d2.1, "/metrics").body;
    assert!(metrics.contains("ksm_store_up 1\n"), "{metrics}");
}

#[test]
fn import_then_export_gives_back_pyhsms_files() {
    let pg = PgSchema::new();
    let url = pg.url();
    assert!(ksm(&["store", "db-init", &url]).status.success());
    let o = ksm(&["store", "db-import", &store_fixtures(), &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("6 copied, 0 already present, 0 bad"),
        "{}",
        text(&o)
    );
    // Resumable: nothing twice.
    let o = ksm(&["store", "db-import", &store_fixtures(), &url]);
    assert!(
        text(&o).contains("0 copied, 6 already present"),
        "{}",
        text(&o)
    );
    let o = ksm(&["store", "stats", "--db-url", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0x20"), "{}", text(&o));
    let o = ksm(&["store", "verify", "--db-url", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 good, 0 bad"), "{}", text(&o));

    let out = tempfile::tempdir().unwrap();
    let o = ksm(&["store", "db-export", &url, out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 copied"), "{}", text(&o));
    // pyhsm's code layout and version-1 format: byte for byte the file made with Python.
    let ours = out.path().join("0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj");
    let theirs =
        test_support::fixtures().join("aead-files/store/0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj");
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    // A damaged row is named and skipped; the export still writes the rest, exit 1.
    pg.sql("UPDATE aead_table SET nonce = '\\x01'::bytea WHERE public_id = 'ccccgkegkhcg';");
    let again = tempfile::tempdir().unwrap();
    let o = ksm(&["store", "db-export", &url, again.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("BAD aead_table row (public_id ccccgkegkhcg, keyhandle 0x21)"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("5 copied"), "{}", text(&o));
    let o = ksm(&["store", "verify", "--db-url", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn a_password_in_the_url_is_refused_and_never_repeated() {
    for args in [
        vec![
            "serve",
            "--db-url",
            "postgresql://ksm:Hunter2pw@db1/ksm",
            "--key-handles",
            "0x20",
        ],
        vec!["store", "db-init", "mysql://root:Hunter2pw@127.0.0.1/test"],
    ] {
        let o = ksm(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("password"), "{t}");
        assert!(!t.contains("Hunter2pw"), "{t}");
    }
    // A password file must be private.
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "Hunter2pw\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ksm(&[
        "store",
        "db-init",
        "postgresql://postgres@127.0.0.1/test",
        "--db-password-file",
        pw.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("Hunter2pw"), "{}", text(&o));
}

/// The main path on MariaDB and on a SQLite file: init, import, serve, decode, a deleted row
/// gone within a second.
#[test]
fn mariadb_and_sqlite_serve_and_forget_deleted_rows_within_a_second() {
    let my = MyDatabase::new();
    let tmp = tempfile::tempdir().unwrap();
    let lite = format!("sqlite:///{}", tmp.path().join("aeads.db").display());
    for url in [my.url(), lite.clone()] {
        assert!(ksm(&["store", "db-init", &url]).status.success(), "{url}");
        let o = ksm(&["store", "db-import", &store_fixtures(), &url]);
        assert!(o.status.success(), "{url}: {}", text(&o));
        let dev = Device::start(&emulator_config("demo.toml"));
        let d = serve(&dev.path(), &url, "none");
        for i in 0..6 {
            assert_eq!(d.decode(&otp(i, 0x30)), ok_line(0x30), "{url}: yubikey {i}");
        }
        let gone = otp(1, 0x31);
        assert_eq!(d.decode(&gone), ok_line(0x31));
        let delete = "DELETE FROM aead_table WHERE public_id = 'ccccgkegkhcg';";
        if url == lite {
            // The sqlite3 shell (Debian sqlite3; .ci/run installs it).
            let o = Command::new("sqlite3")
                .arg(tmp.path().join("aeads.db"))
                .arg(delete)
                .output()
                .expect("sqlite3 (apt-get install sqlite3)");
            assert!(o.status.success(), "{}", text(&o));
        } else {
            my.sql(delete);
        }
        answer_within(&d, &gone, "ERR Unknown public_id\n", Duration::from_secs(1));
    }
}

/// A database user with a password, as most sites run MariaDB: the password reaches the
/// driver from a private `ksm.toml` (`db-password`) or from `--db-password-file`, never from
/// argv, and a wrong one is reported without being shown.
#[test]
fn a_password_from_a_private_ksm_toml_or_file_reaches_mariadb() {
    let my = MyDatabase::new();
    let url = my.url();
    assert!(ksm(&["store", "db-init", &url]).status.success());
    assert!(ksm(&["store", "db-import", &store_fixtures(), &url])
        .status
        .success());
    let db = url.rsplit('/').next().unwrap().to_string();
    let user = format!("{db}_u");
    let password = "Xq7-only-in-files";
    my.sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'; GRANT SELECT ON {db}.* TO '{user}'@'%'; GRANT SELECT ON {db}.* TO '{user}'@'localhost';"
    ));
    let user_url = format!("mysql://{user}@127.0.0.1:3306/{db}");
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::start(&emulator_config("demo.toml"));
    let spawn = |extra: &[&str], stderr: &Path| {
        let mut child = Command::new(KSM)
            .args(["serve", "-D", dev.path().to_str().unwrap()])
            .args([
                "--key-handles",
                "0x20,0x21",
                "--socket",
                "none",
                "--port",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("ksm serve");
        let addr = e2e_tests::listening_addr(&mut child);
        Serve(child, addr)
    };
    let private = |name: &str, text: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };

    let toml = private(
        "ksm.toml",
        format!("db-url = \"{user_url}\"\ndb-password = \"{password}\"\n"),
    );
    let log = tmp.path().join("toml.log");
    let d = spawn(&["--config", toml.to_str().unwrap(), "--debug"], &log);
    assert_eq!(
        d.decode(&otp(0, 0x40)),
        ok_line(0x40),
        "db-password in ksm.toml"
    );
    drop(d);

    let file = private("pw", format!("{password}\n"));
    let log2 = tmp.path().join("file.log");
    let d = spawn(
        &[
            "--db-url",
            &user_url,
            "--db-password-file",
            file.to_str().unwrap(),
            "--debug",
        ],
        &log2,
    );
    assert_eq!(d.decode(&otp(1, 0x40)), ok_line(0x40), "--db-password-file");
    drop(d);

    // The wrong password: the store is unavailable, and nothing shows what was typed.
    let wrong = private("wrong", "not-the-password-9\n".to_string());
    let log3 = tmp.path().join("wrong.log");
    let d = spawn(
        &[
            "--db-url",
            &user_url,
            "--db-password-file",
            wrong.to_str().unwrap(),
            "--debug",
        ],
        &log3,
    );
    assert_eq!(d.decode(&otp(2, 0x40)), "ERR Store unavailable\n");
    drop(d);
    for l in [&log, &log2, &log3] {
        let t = std::fs::read_to_string(l).unwrap();
        assert!(
            !t.contains(password) && !t.contains("not-the-password-9"),
            "{t}"
        );
    }
    my.sql(&format!(
        "DROP USER '{user}'@'%'; DROP USER '{user}'@'localhost';"
    ));
}

/// `--db-pool-size 1` on PostgreSQL: the LISTEN and its heartbeat have connections of their
/// own, so the lookups keep their one.
#[test]
fn postgresql_with_a_pool_of_one_decodes_while_it_listens() {
    let pg = PgSchema::new();
    let url = pg.url();
    assert!(ksm(&["store", "db-init", &url]).status.success());
    let o = ksm(&["store", "db-import", &store_fixtures(), &url]);
    assert!(o.status.success(), "{}", text(&o));
    let dev = Device::start(&emulator_config("demo.toml"));
    let d = serve_with(&dev.path(), &url, "none", &["--db-pool-size", "1"]);
    let start = Instant::now();
    while !get(d.1, "/metrics").body.contains("ksm_store_watching 1") {
        assert!(start.elapsed() < Duration::from_secs(10), "no LISTEN");
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..3u16 {
        for i in 0..6 {
            let c = 0x30 + round;
            assert_eq!(d.decode(&otp(i, c)), ok_line(c), "yubikey {i}");
        }
        // Cached AEADs let go, so the next round reads the database again.
        pg.sql("UPDATE aead_table SET keyhandle = keyhandle;");
    }
    assert!(get(d.1, "/metrics").body.contains("ksm_store_watching 1"));
}

/// A server that asks for a password: the URL carries none (ours refuses one that does), and
/// the driver finds it in the file `PGPASSFILE` names, as pyhsm's users give it to libpq.
/// Without the file the same URL is refused by the server.
#[test]
fn a_password_from_pgpassfile_opens_a_server_that_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "correct horse battery staple\n").unwrap();
    let c = new_cluster(dir.path(), "main", "scram-sha-256", Some(&pwfile));
    std::fs::remove_file(&pwfile).unwrap();
    let no_pass = with_pgpass(&c, None, &["store", "db-init"]);
    assert!(!no_pass.status.success());
    assert!(text(&no_pass).contains("password"), "{}", text(&no_pass));

    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "127.0.0.1:{}:*:postgres:correct horse battery staple\n",
            c.port
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = test_support::fixtures().join("aead-files/store");
    for args in [
        vec!["store", "db-init"],
        vec!["store", "db-import", store.to_str().unwrap()],
    ] {
        let o = with_pgpass(&c, Some(&pgpass), &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("correct horse"));
    }
    assert_eq!(c.sql("SELECT count(*) FROM aead_table"), "6\n");
}

/// `ksm ARGS URL` for the cluster, with `PGPASSFILE` set to `pgpass` if given (and naming
/// no file otherwise, so the caller's own `~/.pgpass` plays no part).
fn with_pgpass(c: &PgCluster, pgpass: Option<&Path>, args: &[&str]) -> Output {
    Command::new(KSM)
        .args(args)
        .arg(c.url())
        .env("PGPASSFILE", pgpass.unwrap_or(Path::new("/nonexistent")))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

/// TLS to PostgreSQL as docs/database.md documents it (`?sslmode=verify-full&sslrootcert=CA`), on a
/// server that refuses connections without TLS: the tools connect with the CA that signed the
/// server's certificate, and are refused with another CA, or without TLS.
#[test]
fn postgresql_over_tls_checks_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN=ksm test {ca}"),
            "-days",
            "2",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(d.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    let c = test_support::db::tls_cluster(d, "tls", &d.join("server.crt"), &d.join("server.key"));
    let url = |query: &str| format!("{}?{query}", c.url());
    let db_init = |url: String| {
        Command::new(KSM)
            .args(["store", "db-init"])
            .arg(url)
            .output()
            .unwrap()
    };

    let good = db_init(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        d.join("ca.crt").display()
    )));
    assert!(good.status.success(), "{}", text(&good));
    assert_eq!(c.sql("SELECT count(*) FROM aead_table"), "0\n");

    let other = db_init(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        d.join("other-ca.crt").display()
    )));
    assert!(!other.status.success());
    assert!(
        text(&other).to_lowercase().contains("certificate"),
        "{}",
        text(&other)
    );

    let plain = db_init(url("sslmode=disable"));
    assert!(!plain.status.success());
    assert!(
        text(&plain).contains("no encryption") || text(&plain).contains("pg_hba"),
        "{}",
        text(&plain)
    );
}
