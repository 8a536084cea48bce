//! Test support shared by every crate's tests: the project's fixtures and OTPs from Yubico's
//! `ykgenerate`, as paths, texts and strings.
//!
//! It depends on no crate of the workspace, so `hsm-proto` can use it in its own tests
//! without a cycle; whoever needs typed values (an emulator configuration, an `Otp`) builds
//! them from these in a thin wrapper.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub mod bounded;
pub mod unprivileged;
pub mod val_clients;

pub use bounded::{clean_up, run_bounded};

use serde_json::Value;

/// Waits until `done` holds, asking every 10 ms, and panics naming `what` if it still does
/// not after `within`: a test waits for the event it is about, never for a fixed time.
pub fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The project's `fixtures/`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The text of `fixtures/<name>`. Panics if it cannot be read: a broken checkout.
pub fn fixture_text(name: &str) -> String {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The text of the emulator configuration `fixtures/emulator/<name>`.
pub fn emulator_fixture(name: &str) -> String {
    fixture_text(&format!("emulator/{name}"))
}

/// `fixtures/otp-vectors.json`.
pub fn otp_vectors() -> Value {
    serde_json::from_str(&fixture_text("otp-vectors.json")).expect("otp-vectors.json is JSON")
}

/// An OTP made by Yubico's `ykgenerate` (Debian libyubikey-dev), prefixed with `public_id`:
/// the token part comes from Yubico's code, not ours.
pub fn ykgenerate(
    public_id: &str,
    aes_key: &str,
    uid: &str,
    counter: u16,
    low: u16,
    high: u8,
    use_: u8,
) -> String {
    let mut cmd = Command::new("ykgenerate");
    cmd.args([
        aes_key,
        uid,
        &format!("{counter:04x}"),
        &format!("{low:04x}"),
        &format!("{high:02x}"),
        &format!("{use_:02x}"),
    ]);
    // Not found: apt-get install libyubikey-dev (.ci/run does).
    let (status, out, err) = run_bounded(cmd, "");
    assert!(status.success(), "ykgenerate failed: {err}");
    format!("{public_id}{}", out.trim())
}

/// A fresh OTP for YubiKey `i` of the vectors, with the given counters.
pub fn vector_otp(i: usize, counter: u16, use_: u8) -> String {
    let v = otp_vectors();
    let y = &v["yubikeys"][i];
    ykgenerate(
        y["public_id"].as_str().unwrap_or_default(),
        y["aes_key"].as_str().unwrap_or_default(),
        y["uid"].as_str().unwrap_or_default(),
        counter,
        0x4242,
        0x17,
        use_,
    )
}

/// Databases for tests: a fresh PostgreSQL schema or MariaDB database of its own per test
/// (so tests run in parallel without colliding), on the servers the development and CI
/// machines run on 127.0.0.1 (PostgreSQL: trust auth, user `postgres`, database `test`;
/// MariaDB: `root` without password, database `test`), driven with their own command-line
/// clients. Dropped with the value.
pub mod db {
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// PostgreSQL as the tests reach it (`psql` arguments).
    const PSQL: [&str; 8] = [
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "test",
        "-v",
        "ON_ERROR_STOP=1",
    ];
    /// MariaDB as the tests reach it (`mysql` arguments).
    const MYSQL: [&str; 5] = ["-h", "127.0.0.1", "-P", "3306", "-uroot"];

    fn unique(prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Runs `program args` with `sql` on its standard input, bounded
    /// ([`crate::run_bounded`]); what it printed. Not found: apt-get install
    /// postgresql-client mariadb-client (.ci/run does).
    fn run(program: &str, args: &[&str], sql: &str) -> String {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let (status, out, err) = crate::run_bounded(cmd, sql);
        assert!(status.success(), "{program} failed: {err}\n{sql}");
        out
    }

    /// An SQL byte-string literal PostgreSQL reads as `bytea` (`'\x…'`).
    pub fn pg_bytes(b: &[u8]) -> String {
        format!("'\\x{}'::bytea", hex(b))
    }

    /// An SQL byte-string literal MariaDB and SQLite read as a blob (`X'…'`).
    pub fn blob(b: &[u8]) -> String {
        format!("X'{}'", hex(b))
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A PostgreSQL schema of its own.
    #[derive(Debug)]
    pub struct PgSchema {
        /// Its name.
        pub schema: String,
    }

    impl PgSchema {
        /// Creates it.
        pub fn new() -> PgSchema {
            let schema = unique("ksm_t");
            run("psql", &PSQL, &format!("CREATE SCHEMA {schema};"));
            PgSchema { schema }
        }

        /// The URL pyhsm's users would write for it (its schema first on the search path).
        pub fn url(&self) -> String {
            format!(
                "postgresql://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{}",
                self.schema
            )
        }

        /// `psql` in the schema (first on its search path), for what [`PgSchema::sql`] does
        /// not suit, such as a large `COPY … FROM STDIN` fed through a pipe.
        pub fn psql(&self) -> Command {
            let mut c = Command::new("psql");
            c.args(PSQL)
                .env("PGOPTIONS", format!("-c search_path={}", self.schema));
            c
        }

        /// Runs `sql` in the schema; returns what `psql -At` printed.
        pub fn sql(&self, sql: &str) -> String {
            let mut args = PSQL.to_vec();
            args.extend(["-q", "-At"]);
            run(
                "psql",
                &args,
                &format!("SET search_path TO {};\n{sql}", self.schema),
            )
        }
    }

    impl Default for PgSchema {
        fn default() -> PgSchema {
            PgSchema::new()
        }
    }

    /// A login role on a [`PgSchema`] whose every transaction is read-only
    /// (`default_transaction_read_only`), as every one on a standby is: it reads the
    /// schema's tables (those there when it is made) but cannot write them. Dropped when
    /// dropped.
    #[derive(Debug)]
    pub struct PgReadOnlyRole {
        name: String,
        url: String,
    }

    impl PgReadOnlyRole {
        /// Creates it, with every right on the schema's tables as they are now.
        pub fn new(pg: &PgSchema) -> PgReadOnlyRole {
            let name = format!("{}_ro", pg.schema);
            pg.sql(&format!(
                "CREATE ROLE {name} LOGIN; ALTER ROLE {name} SET default_transaction_read_only = on;
                 GRANT USAGE ON SCHEMA {s} TO {name}; GRANT ALL ON ALL TABLES IN SCHEMA {s} TO {name};",
                s = pg.schema
            ));
            let url = pg.url().replace("postgres@", &format!("{name}@"));
            PgReadOnlyRole { name, url }
        }

        /// The schema's URL, connecting as this role.
        pub fn url(&self) -> &str {
            &self.url
        }
    }

    impl Drop for PgReadOnlyRole {
        fn drop(&mut self) {
            let mut psql = Command::new("psql");
            psql.args(PSQL).args([
                "-c",
                &format!("DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", self.name),
            ]);
            crate::clean_up(psql);
        }
    }

    impl Drop for PgSchema {
        fn drop(&mut self) {
            let mut psql = Command::new("psql");
            psql.args(PSQL).args([
                "-c",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            ]);
            crate::clean_up(psql);
        }
    }

    /// A MariaDB database of its own.
    #[derive(Debug)]
    pub struct MyDatabase {
        /// Its name.
        pub name: String,
    }

    impl MyDatabase {
        /// Creates it.
        pub fn new() -> MyDatabase {
            let name = unique("ksm_t");
            run("mysql", &MYSQL, &format!("CREATE DATABASE {name};"));
            MyDatabase { name }
        }

        /// The URL pyhsm's users would write for it.
        pub fn url(&self) -> String {
            format!("mysql://root@127.0.0.1:3306/{}", self.name)
        }

        /// Runs `sql` in the database; returns what `mysql -N -B` printed.
        pub fn sql(&self, sql: &str) -> String {
            let mut args = MYSQL.to_vec();
            args.extend(["-N", "-B", &self.name]);
            run("mysql", &args, sql)
        }
    }

    impl Default for MyDatabase {
        fn default() -> MyDatabase {
            MyDatabase::new()
        }
    }

    impl Drop for MyDatabase {
        fn drop(&mut self) {
            let mut mysql = Command::new("mysql");
            mysql
                .args(MYSQL)
                .args(["-e", &format!("DROP DATABASE IF EXISTS {}", self.name)]);
            crate::clean_up(mysql);
        }
    }

    /// pyhsm's `doc/db_schema`, as a pyhsm user types it into MariaDB or SQLite.
    pub const PYHSM_SCHEMA: &str = "CREATE TABLE aead_table (
  public_id varchar(16) NOT NULL,
  keyhandle INT NOT NULL,
  nonce BLOB(6) NOT NULL,
  aead BLOB(32) NOT NULL,
  PRIMARY KEY (public_id, keyhandle)
);";

    /// The same on PostgreSQL, which has no `BLOB`: `bytea`, what SQLAlchemy's
    /// `LargeBinary` (the type pyhsm's reflected `BLOB` columns load as) makes there.
    pub const PYHSM_SCHEMA_PG: &str = "CREATE TABLE aead_table (
  public_id varchar(16) NOT NULL,
  keyhandle INT NOT NULL,
  nonce bytea NOT NULL,
  aead bytea NOT NULL,
  PRIMARY KEY (public_id, keyhandle)
);";

    use std::path::{Path, PathBuf};

    fn text(o: &std::process::Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// PostgreSQL's programs, Debian's layout for the machine's major version.
    pub fn pg_bin(program: &str) -> PathBuf {
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
    pub fn as_postgres(program: &Path, args: &[&str]) -> Output {
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
            text(&o)
        );
        o
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port()
    }

    /// A PostgreSQL cluster of a test's own (a server with its data directory), stopped on
    /// drop. The machine's server runs with trust authentication and no replication, which
    /// cannot show a hot standby or a server that asks for a password; a cluster made here can.
    pub struct PgCluster {
        data: PathBuf,
        /// Where its unix socket is (connections there are trusted).
        sockets: PathBuf,
        /// Its port on 127.0.0.1.
        pub port: u16,
    }

    impl PgCluster {
        fn start(data: PathBuf, sockets: &Path) -> PgCluster {
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
                    data.to_str().expect("a UTF-8 temporary path"),
                    "-o",
                    &opts,
                    "-l",
                    log.to_str().expect("a UTF-8 temporary path"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            PgCluster {
                data,
                sockets: sockets.to_path_buf(),
                port,
            }
        }

        /// Its `postgres` database, as the KSM takes it.
        pub fn url(&self) -> String {
            format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
        }

        /// Runs `sql` there, over its unix socket (trusted whatever TCP asks for); what
        /// `psql -At` printed.
        pub fn sql(&self, sql: &str) -> String {
            let mut cmd = Command::new("psql");
            cmd.arg("-h")
                .arg(&self.sockets)
                .args(["-p", &self.port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-q", "-At"])
                .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
            let (status, out, err) = crate::run_bounded(cmd, "");
            assert!(status.success(), "{sql}: {out}{err}");
            out
        }
    }

    impl Drop for PgCluster {
        fn drop(&mut self) {
            let mut stop = Command::new("runuser");
            stop.args(["-u", "postgres", "--"])
                .arg(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"]);
            crate::clean_up(stop);
        }
    }

    /// A new cluster in `dir/name` whose TCP connections authenticate with `host_auth`
    /// (`trust`, or `scram-sha-256` with the password in `pwfile`); its unix sockets trust.
    pub fn new_cluster(
        dir: &Path,
        name: &str,
        host_auth: &str,
        pwfile: Option<&Path>,
    ) -> PgCluster {
        let (data, sockets) = (dir.join(name), dir.join("run"));
        let _ = std::fs::create_dir(&sockets);
        Command::new("chown")
            .args([
                "-R",
                "postgres:postgres",
                dir.to_str().expect("a UTF-8 temporary path"),
            ])
            .status()
            .expect("chown");
        let auth = format!("--auth-host={host_auth}");
        let mut args = vec![
            "-D",
            data.to_str().expect("a UTF-8 temporary path"),
            "-U",
            "postgres",
            "--auth-local=trust",
            &auth,
            "--no-sync",
        ];
        let pw = pwfile.map(|p| format!("--pwfile={}", p.display()));
        args.extend(pw.as_deref());
        as_postgres(&pg_bin("initdb"), &args);
        PgCluster::start(data, &sockets)
    }

    /// A new cluster in `dir/name` that takes TCP connections only over TLS, with the server
    /// certificate and key in the PEM files given (its unix sockets trust, without TLS).
    pub fn tls_cluster(dir: &Path, name: &str, cert: &Path, key: &Path) -> PgCluster {
        let c = new_cluster(dir, name, "trust", None);
        let data = c.data.clone();
        drop(c);
        std::fs::copy(cert, data.join("server.crt")).expect("copy the certificate");
        std::fs::copy(key, data.join("server.key")).expect("copy the key");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .expect("write postgresql.conf");
        for f in ["server.crt", "server.key"] {
            let p = data.join(f);
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
        }
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data)
            .status()
            .expect("chown");
        PgCluster::start(data, &dir.join("run"))
    }

    /// A primary and a standby streaming from it.
    pub fn primary_and_standby(dir: &Path) -> (PgCluster, PgCluster) {
        let p = new_cluster(dir, "primary", "trust", None);
        let (standby, sockets) = (dir.join("standby"), dir.join("run"));
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
                standby.to_str().expect("a UTF-8 temporary path"),
                "-R",
                "--no-sync",
            ],
        );
        let s = PgCluster::start(standby, &sockets);
        assert_eq!(s.sql("SELECT pg_is_in_recovery()"), "t\n");
        (p, s)
    }
}
