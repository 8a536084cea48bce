//! Database URLs as pyhsm's users write them (SQLAlchemy's spelling), read into sqlx's
//! connection options.
//!
//! SQLAlchemy names a driver after a `+` (`postgresql+psycopg2://`, `mysql+pymysql://`) and
//! writes SQLite files with three slashes for a relative path and four for an absolute one
//! (`sqlite:///aeads.db`, `sqlite:////var/lib/ksm/aeads.db`). sqlx has one driver per engine
//! and its own SQLite spelling, so the scheme decides the engine, the driver name is dropped,
//! and a SQLite path is taken as SQLAlchemy means it.
//!
//! A password never comes from the URL: URLs end up in argv, `ps`, shell history and logs.
//! One in the user part (`user:secret@host`) or as a `password=` parameter is refused, and
//! the refusal does not repeat the URL. The password comes from a file (`--db-password-file`,
//! which must be private), or from the driver's own mechanisms (`PGPASSFILE`, `~/.pgpass`,
//! a unix socket with peer authentication).

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

use crate::StoreError;

/// The database engines the store speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL: notifications from a trigger keep every KSM's cache true.
    Postgres,
    /// MySQL or MariaDB: a cache bounded in time.
    MySql,
    /// A SQLite file: a cache bounded in time.
    Sqlite,
}

/// A parsed database URL: which engine, and sqlx's options for it (without a password from
/// the URL; the drivers may still add one from the environment, such as `PGPASSWORD`, which
/// is why `Debug` shows no options).
#[derive(Clone)]
pub enum DbUrl {
    /// `postgresql://`, `postgres://` (any `+driver`).
    Postgres(PgConnectOptions),
    /// `mysql://`, `mariadb://` (any `+driver`).
    MySql(MySqlConnectOptions),
    /// `sqlite:///relative` or `sqlite:////absolute`.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // sqlx's options print every field, a password included.
        match self {
            DbUrl::Postgres(_) => f.write_str("DbUrl::Postgres(options redacted)"),
            DbUrl::MySql(_) => f.write_str("DbUrl::MySql(options redacted)"),
            DbUrl::Sqlite(p) => write!(f, "DbUrl::Sqlite({p:?})"),
        }
    }
}

fn bad(reason: impl Into<String>) -> StoreError {
    StoreError::DbConfig(reason.into())
}

const NO_PASSWORD: &str = "the database URL carries a password; URLs show up in process lists, shell history and logs, so give the password in a private file (--db-password-file, or db-password-file or db-password in a private ksm.toml), or use PGPASSFILE/~/.pgpass or unix-socket peer authentication";

impl DbUrl {
    /// Reads `url` (SQLAlchemy's spelling, as pyhsm's `--db-url` takes it).
    pub fn parse(url: &str) -> Result<DbUrl, StoreError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                "a database URL starts with postgresql://, mysql:// or sqlite:///",
            ));
        };
        let engine = scheme.split('+').next().unwrap_or_default();
        match engine.to_ascii_lowercase().as_str() {
            "postgresql" | "postgres" => {
                refuse_password(rest, &["password"])?;
                let rest = translate_query(rest, Engine::Postgres)?;
                PgConnectOptions::from_str(&format!("postgres://{rest}"))
                    .map(DbUrl::Postgres)
                    .map_err(|e| bad(format!("PostgreSQL URL: {}", scrub(&e.to_string()))))
            }
            "mysql" | "mariadb" => {
                refuse_password(rest, &["password", "passwd"])?;
                let rest = translate_query(rest, Engine::MySql)?;
                MySqlConnectOptions::from_str(&format!("mysql://{rest}"))
                    .map(DbUrl::MySql)
                    .map_err(|e| bad(format!("MySQL URL: {}", scrub(&e.to_string()))))
            }
            "sqlite" => {
                // SQLAlchemy: `sqlite:///` then the path; a fourth slash makes it absolute.
                let Some(path) = rest.strip_prefix('/').filter(|p| !p.is_empty()) else {
                    return Err(bad("sqlite:///PATH names a file (an in-memory database would be empty for every connection)"));
                };
                let path = path.split('?').next().unwrap_or(path);
                Ok(DbUrl::Sqlite(PathBuf::from(path)))
            }
            _ => Err(bad(format!(
                "unknown database scheme {engine:?}: use postgresql://, mysql:// or sqlite:///"
            ))),
        }
    }

    /// `url` without any password it carries, and whether it carried one: the password of
    /// the user part (read as [`DbUrl::parse`] reads it, up to the last `@`) and every
    /// parameter whose name holds `pass` (`password`, `passwd`, `sslpassword`), in any case
    /// and percent-encoding. For printing a URL someone else wrote (`ksm config
    /// import-pyhsm`): nothing of the password is kept.
    pub fn without_password(url: &str) -> (String, bool) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return (url.to_string(), false);
        };
        let mut had = false;
        // A SQLite URL is a path: it has no user part, and a path may hold `@` and `:`.
        let sqlite = scheme.to_ascii_lowercase().starts_with("sqlite");
        let rest = match rest.rsplit_once('@').filter(|_| !sqlite) {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => {
                    had = true;
                    format!("{name}@{host}")
                }
                None => rest.to_string(),
            },
            None => rest.to_string(),
        };
        let rest = match rest.split_once('?') {
            Some((before, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let key = percent_decoded(kv.split('=').next().unwrap_or_default())
                            .to_ascii_lowercase();
                        let secret = key.windows(4).any(|w| w == b"pass");
                        had |= secret;
                        !secret
                    })
                    .collect();
                match kept.is_empty() {
                    true => before.to_string(),
                    false => format!("{before}?{}", kept.join("&")),
                }
            }
            None => rest,
        };
        (format!("{scheme}://{rest}"), had)
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        match self {
            DbUrl::Postgres(_) => Engine::Postgres,
            DbUrl::MySql(_) => Engine::MySql,
            DbUrl::Sqlite(_) => Engine::Sqlite,
        }
    }
}

/// The user part of `rest` (what follows `scheme://`), before anything else is read: all
/// that comes before its last `@`. A host has no `@`, while a password typed into a URL may
/// hold any character (`?`, `#`, `/` and `@` included), so reading the query or the path
/// first would cut a password in two and take its second half for a parameter (which an
/// error then quotes). An `@` in the path or the parameters only makes the user part longer:
/// a password is never missed, and at worst a URL without one is refused.
fn user_info(rest: &str) -> Option<&str> {
    rest.rsplit_once('@').map(|(user, _)| user)
}

/// Refuses a password in the user part or in a query parameter named in `params`.
fn refuse_password(rest: &str, params: &[&str]) -> Result<(), StoreError> {
    if user_info(rest).is_some_and(|u| u.contains(':')) {
        return Err(bad(NO_PASSWORD));
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    // Keys as the driver reads them: percent-decoded (`pass%77ord` is `password`).
    let named = query.split('&').any(|kv| {
        let key = percent_decoded(kv.split('=').next().unwrap_or_default());
        params
            .iter()
            .any(|p| key.as_slice().eq_ignore_ascii_case(p.as_bytes()))
    });
    if named {
        return Err(bad(NO_PASSWORD));
    }
    Ok(())
}

/// Query parameters sqlx reads, by engine, and the spellings pyhsm's users write for them
/// (SQLAlchemy hands MySQL parameters to MySQLdb or PyMySQL, which spell them with `_`).
/// A parameter the driver does not know is refused rather than passed on: sqlx ignores it
/// silently (MySQL), which would turn `ssl_ca=…` into an unverified connection, or logs it
/// with its value (PostgreSQL), which may be a secret.
const PARAMETERS: &[(Engine, &str, &str)] = &[
    (Engine::Postgres, "sslmode", "sslmode"),
    (Engine::Postgres, "sslrootcert", "sslrootcert"),
    (Engine::Postgres, "sslcert", "sslcert"),
    (Engine::Postgres, "sslkey", "sslkey"),
    (Engine::Postgres, "host", "host"),
    (Engine::Postgres, "hostaddr", "hostaddr"),
    (Engine::Postgres, "port", "port"),
    (Engine::Postgres, "dbname", "dbname"),
    (Engine::Postgres, "user", "user"),
    (Engine::Postgres, "application_name", "application_name"),
    (Engine::Postgres, "options", "options"),
    (Engine::MySql, "ssl-mode", "ssl-mode"),
    (Engine::MySql, "sslmode", "ssl-mode"),
    (Engine::MySql, "ssl_mode", "ssl-mode"),
    (Engine::MySql, "ssl-ca", "ssl-ca"),
    (Engine::MySql, "ssl_ca", "ssl-ca"),
    (Engine::MySql, "ssl-cert", "ssl-cert"),
    (Engine::MySql, "ssl_cert", "ssl-cert"),
    (Engine::MySql, "ssl-key", "ssl-key"),
    (Engine::MySql, "ssl_key", "ssl-key"),
    (Engine::MySql, "socket", "socket"),
    (Engine::MySql, "unix_socket", "socket"),
    (Engine::MySql, "charset", "charset"),
];

/// `rest` (what follows `scheme://`) with its query parameters in the driver's spelling.
/// On MySQL a CA given without a mode asks for the server's certificate to be checked
/// against it (`ssl-mode=VERIFY_CA`), as the CA's only use is that check; sqlx's default
/// mode would take the CA and check nothing.
fn translate_query(rest: &str, engine: Engine) -> Result<String, StoreError> {
    let Some((before, query)) = rest.split_once('?') else {
        return Ok(rest.to_string());
    };
    let mut out = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let key = String::from_utf8_lossy(&percent_decoded(key)).to_ascii_lowercase();
        let Some((_, _, ours)) = PARAMETERS
            .iter()
            .find(|(e, theirs, _)| *e == engine && *theirs == key)
        else {
            let known: Vec<&str> = PARAMETERS
                .iter()
                .filter(|(e, _, _)| *e == engine)
                .map(|(_, theirs, _)| *theirs)
                .collect();
            return Err(bad(format!(
                "URL parameter {key:?} is not one this driver reads (known: {})",
                known.join(", ")
            )));
        };
        out.push((*ours, value));
    }
    if engine == Engine::MySql
        && out.iter().any(|(k, _)| *k == "ssl-ca")
        && !out.iter().any(|(k, _)| *k == "ssl-mode")
    {
        out.push(("ssl-mode", "VERIFY_CA"));
    }
    let query: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!("{before}?{}", query.join("&")))
}

/// `text` with its `%XX` escapes decoded (a bad escape kept as it is).
fn percent_decoded(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A driver's parse error may quote the URL: keep only its first clause, and never
/// anything after an `@` or a `?`.
fn scrub(msg: &str) -> String {
    msg.split(['@', '?']).next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyhsm_spellings_pick_the_engine() {
        for (url, engine) in [
            ("postgresql://ksm@db1:5432/ksm", Engine::Postgres),
            ("postgresql+psycopg2://ksm@db1/ksm", Engine::Postgres),
            (
                "postgres://127.0.0.1/test?sslmode=require",
                Engine::Postgres,
            ),
            ("mysql://root@127.0.0.1:3306/test", Engine::MySql),
            ("mysql+pymysql://ksm@db1/ksm", Engine::MySql),
            ("mariadb://ksm@db1/ksm", Engine::MySql),
            ("sqlite:///aeads.db", Engine::Sqlite),
        ] {
            assert_eq!(DbUrl::parse(url).unwrap().engine(), engine, "{url}");
        }
    }

    #[test]
    fn sqlite_paths_are_read_as_sqlalchemy_means_them() {
        let DbUrl::Sqlite(p) = DbUrl::parse("sqlite:///aeads.db").unwrap() else {
            panic!("not sqlite")
        };
        assert_eq!(p, PathBuf::from("aeads.db"));
        let DbUrl::Sqlite(p) = DbUrl::parse("sqlite:////var/lib/ksm/aeads.db").unwrap() else {
            panic!("not sqlite")
        };
        assert_eq!(p, PathBuf::from("/var/lib/ksm/aeads.db"));
        assert!(DbUrl::parse("sqlite://").is_err());
        assert!(DbUrl::parse("sqlite:///").is_err());
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        for url in [
            "postgresql://ksm:s3cr3tpw@db1/ksm",
            "postgresql://db1/ksm?user=ksm&password=s3cr3tpw",
            "mysql://root:s3cr3tpw@127.0.0.1/test",
            "mysql://root@127.0.0.1/test?PASSWORD=s3cr3tpw",
            // Keys are read percent-decoded, as the drivers read them.
            "postgresql://db1/ksm?pass%77ord=s3cr3tpw",
            "postgresql://db1/ksm?%70%61%73%73%77%6F%72%64=s3cr3tpw",
            "mysql://root@127.0.0.1/test?pass%57d=s3cr3tpw",
        ] {
            let e = DbUrl::parse(url).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("password"), "{text}");
            assert!(!text.contains("s3cr3tpw"), "{text}");
            assert!(
                !text.contains("db1") && !text.contains("127.0.0.1"),
                "{text}"
            );
        }
        assert_eq!(percent_decoded("a%2"), b"a%2");
        assert_eq!(percent_decoded("%zz%41"), b"%zzA");
        // An @ in the path or parameters is not a user part.
        assert!(DbUrl::parse("postgresql://ksm@db1/ksm?application_name=a:b").is_ok());
    }

    /// Issue 20, item 11: a password holding the characters that end the other parts of a
    /// URL is refused as a password, and no piece of it is quoted.
    #[test]
    fn a_password_with_url_delimiters_is_refused_without_quoting_any_of_it() {
        for password in [
            "Qz?Jq",
            "Qz#Jq",
            "Qz/Jq",
            "Qz@Jq",
            "Qz?Jq#Xv/Wk@Zy",
            "?Jq=Xv&Wk",
        ] {
            for url in [
                format!("postgresql://ksm:{password}@db1/ksm"),
                format!("postgresql://ksm:{password}@db1/ksm?sslmode=require"),
                format!("mysql://root:{password}@127.0.0.1:3306/test"),
            ] {
                let text = DbUrl::parse(&url).unwrap_err().to_string();
                assert_eq!(text, bad(NO_PASSWORD).to_string(), "{url}");
                let lower = text.to_lowercase();
                for piece in ["qz", "jq", "xv", "wk", "zy"] {
                    assert!(!lower.contains(piece), "{url}: {text}");
                }
            }
        }
    }

    #[test]
    fn unknown_schemes_and_non_urls_are_refused() {
        assert!(DbUrl::parse("oracle://db1/ksm").is_err());
        assert!(DbUrl::parse("/var/lib/ksm.db").is_err());
    }

    #[test]
    fn debug_shows_no_driver_options() {
        let with_password = DbUrl::Postgres(PgConnectOptions::new().password("Hunter2pw"));
        assert!(!format!("{with_password:?}").contains("Hunter2pw"));
        let my = DbUrl::MySql(MySqlConnectOptions::new().password("Hunter2pw"));
        assert!(!format!("{my:?}").contains("Hunter2pw"));
    }

    #[test]
    fn sqlalchemy_parameter_spellings_are_translated_and_unknown_ones_refused() {
        let DbUrl::MySql(o) =
            DbUrl::parse("mysql://ksm@db1/ksm?ssl_ca=/etc/ksm/ca.pem&charset=utf8mb4").unwrap()
        else {
            panic!("not mysql")
        };
        let shown = format!("{o:?}");
        assert!(
            shown.contains("VerifyCa"),
            "a CA alone means verify: {shown}"
        );
        assert!(shown.contains("ca.pem"), "{shown}");
        let DbUrl::MySql(o) =
            DbUrl::parse("mysql://ksm@db1/ksm?ssl_mode=VERIFY_IDENTITY&ssl_ca=/ca.pem").unwrap()
        else {
            panic!("not mysql")
        };
        assert!(format!("{o:?}").contains("VerifyIdentity"));
        assert!(
            DbUrl::parse("postgresql://ksm@db1/ksm?sslmode=verify-full&sslrootcert=/ca.pem")
                .is_ok()
        );
        for url in [
            "mysql://ksm@db1/ksm?ssl=true",
            "postgresql://ksm@db1/ksm?sslpassword=Hunter2pw",
        ] {
            let err = DbUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains("not one this driver reads"), "{url}: {err}");
            assert!(!err.contains("Hunter2pw"), "{err}");
        }
    }
}
