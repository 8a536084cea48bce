//! `ksm config import-pyhsm` run as an operator runs it: the real binary reads a pyhsm
//! defaults file, and what it prints is then loaded by ksm's own configuration loader,
//! merged as `ksm serve --config` merges it, and must say what pyhsm was told.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use ksm::cli::{Cli, Command as Sub};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// A site's file: Debian's stock one, edited as its comments suggest, and with a mistake
/// (the yhsm-daemon package's device variable) and a master key left in it.
const SITE: &str = r#"# Should the YubiHSM YubiKey KSM server be started?
YHSM_KSM_ENABLE="true"
YHSM_KSM_DEVICE="/dev/ttyACM0"
YHSM_DAEMON_DEVICE="/dev/ttyACM3"
YHSM_KSM_KEYHANDLES="0x20 0x2000"
YHSM_KSM_UNLOCK_PASSPHRASE="2f6af1e667456bb94528e7987344515b"
DAEMON_ARGS="$DAEMON_ARGS --aead-dir /var/cache/yubikey-ksm/aeads"
DAEMON_ARGS="$DAEMON_ARGS --addr 0.0.0.0 --port 8003 --reqtimeout 3"
DAEMON_ARGS="$DAEMON_ARGS -U /wsapi/decrypt?otp= -S /wsapi/stats --proxies 10.0.0.5"
[ "x$YHSM_KSM_DEVICE" != "x" ] && DAEMON_ARGS="$DAEMON_ARGS -D $YHSM_KSM_DEVICE"
[ "x$YHSM_KSM_KEYHANDLES" != "x" ] && DAEMON_ARGS="$DAEMON_ARGS --key-handles $YHSM_KSM_KEYHANDLES"
"#;

fn import(text: &str) -> (std::process::Output, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("yhsm-yubikey-ksm");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(KSM)
        .args(["config", "import-pyhsm"])
        .arg(&file)
        .output()
        .unwrap();
    (out, dir, file)
}

#[test]
fn the_printed_toml_is_what_ksm_serve_reads() {
    let (out, dir, _) = import(SITE);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");

    let toml = dir.path().join("ksm.toml");
    std::fs::write(&toml, &stdout).unwrap();
    let cli = Cli::try_parse_from(["ksm", "serve", "--config", toml.to_str().unwrap()]).unwrap();
    let Sub::Serve(args) = cli.command else {
        panic!("not serve")
    };
    let s = args.settings().unwrap();
    assert_eq!(s.listen, "0.0.0.0:8003".parse().unwrap(), "same port");
    assert_eq!(s.http.serve_path, "/wsapi/decrypt", "same URL");
    assert_eq!(s.http.otp_param, "otp");
    assert_eq!(s.http.stats_path.as_deref(), Some("/wsapi/stats"));
    assert_eq!(s.http.reqtimeout, std::time::Duration::from_secs(3));
    assert_eq!(
        s.http.proxies,
        vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(s.devices, vec![PathBuf::from("/dev/ttyACM0")]);
    assert_eq!(s.aead_dir, PathBuf::from("/var/cache/yubikey-ksm/aeads"));
    assert_eq!(
        s.key_handles,
        vec![
            aead_store::AeadKey::Handle(hsm_proto::KeyHandle(0x20)),
            aead_store::AeadKey::Handle(hsm_proto::KeyHandle(0x2000))
        ]
    );
    assert_eq!(s.pid_file, None);
    assert!(s.db.is_none());

    // Warnings on stderr only; the mistake and the passphrase named, the key never shown.
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(
        stderr.contains("YHSM_DAEMON_DEVICE") && stderr.contains("YHSM_KSM_DEVICE"),
        "{stderr}"
    );
    assert!(stderr.contains("YHSM_KSM_UNLOCK_PASSPHRASE"), "{stderr}");
    let both = format!("{stdout}{stderr}");
    assert!(!both.contains("2f6af1e667456bb94528e7987344515b"), "{both}");
}

#[test]
fn a_file_ksm_cannot_follow_fails_with_exit_2_and_prints_no_toml() {
    let (out, _dir, file) = import("YHSM_KSM_ENABLE=\"true\"\nYHSM_KSM_KEYHANDLES=\"\"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("no key handles"), "{stderr}");

    let missing = Command::new(KSM)
        .args(["config", "import-pyhsm", "/nonexistent/yhsm-yubikey-ksm"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/yhsm-yubikey-ksm"));
}

/// Issue 20, items 28a and 13c: a secret left in the file is never printed, and never quoted
/// in a warning: not a password parameter of the database URL, not a password holding the
/// characters that end a URL's parts, not a word of `DAEMON_ARGS` that is no flag (a
/// passphrase put there). The warnings say where, and the URL keeps everything else.
#[test]
fn no_secret_in_the_file_is_printed_or_quoted() {
    for (db_url, printed) in [
        // sqlx reads no parameter of a SQLite URL, so ksm takes this one as it is.
        (
            "sqlite:////var/lib/ksm/a@b:c.db?password=Xq7pw0",
            "sqlite:////var/lib/ksm/a@b:c.db",
        ),
        (
            "postgresql://ksm@db1/ksm?sslmode=require&password=Xq7pw1&PassWd=Xq7pw2&ssl%70assword=Xq7pw3",
            "postgresql://ksm@db1/ksm?sslmode=require",
        ),
        (
            "mysql://root:Xq7?pw/4#x@127.0.0.1:3306/test",
            "mysql://root@127.0.0.1:3306/test",
        ),
    ] {
        let (out, _dir, _) = import(&format!(
            "export KSM_DB=\"{db_url}\"\n\
             DAEMON_ARGS=\"$DAEMON_ARGS --db-url env:KSM_DB\"\n\
             DAEMON_ARGS=\"$DAEMON_ARGS Xq7word1 --Xq7word2 -Xq7word3 -vXq7word4\"\n\
             DAEMON_ARGS=\"$DAEMON_ARGS --key-handles 0x20\"\n"
        ));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{stderr}");
        let both = format!("{stdout}{stderr}").to_lowercase();
        assert!(!both.contains("xq7"), "{db_url}: {both}");
        let toml: toml::Table = toml::from_str(&stdout).unwrap();
        assert_eq!(toml["db-url"].as_str(), Some(printed), "{stdout}");
        assert!(stderr.contains("--db-url carries a password"), "{stderr}");
        // After the init script's own `--pid-file PATH` and `--db-url env:KSM_DB`.
        for word in 5..9 {
            assert!(
                stderr.contains(&format!("word {word} of DAEMON_ARGS")),
                "word {word}: {stderr}"
            );
        }
    }
}
