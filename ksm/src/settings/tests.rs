//! The settings as `ksm serve` reads them: flags over `ksm.toml` over the defaults.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use aead_store::{AeadKey, NoncePolicy};
use clap::{Args, FromArgMatches};

use crate::device::sharing::DEFAULT_SOCKET;
use crate::settings::http::{split_serve_url, TlsFiles};
use crate::settings::options::{ServeArgs, ServeOptions};
use crate::settings::parse::aead_keys;

fn flags(args: &[&str]) -> ServeArgs {
    let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
    let m = cmd
        .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
        .unwrap();
    ServeArgs::from_arg_matches(&m).unwrap()
}

#[test]
fn the_example_config_shows_the_defaults() {
    let c: ServeOptions =
        toml::from_str(include_str!("../../dist/ksm.toml")).expect("ksm/dist/ksm.toml");
    assert_eq!(c.port, Some(8002));
    // The package has no key handles until the operator gives them.
    assert_eq!(c.key_handles, None);
    assert_eq!(c.random_nonce_aeads, Some(false));
    // "the values shown are the defaults unless marked example"
    assert_eq!(c, ServeOptions::default());
    // The packaged socket unit listens where the example says the daemon does.
    let socket_unit = include_str!("../../dist/ksm.socket");
    let listen = format!(
        "ListenStream={}",
        SocketAddr::new(c.addr.unwrap(), c.port.unwrap())
    );
    assert!(
        socket_unit.lines().any(|l| l == listen),
        "ksm/dist/ksm.socket lacks {listen}"
    );
}

#[test]
fn the_demo_flag_says_its_aeads_are_compiled_in() {
    let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
    let demo = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("demo"))
        .unwrap();
    let help = demo.get_help().unwrap().to_string();
    assert!(help.contains("compiled into the binary"), "{help}");
    assert!(!help.contains("fixtures/"), "{help}");
}

#[test]
fn every_option_is_a_key_of_its_long_name() {
    let cmd = ServeOptions::augment_args(clap::Command::new("serve"));
    for arg in cmd.get_arguments() {
        let long = arg.get_long().unwrap();
        let err = toml::from_str::<ServeOptions>(&format!("{long} = {{}}")).unwrap_err();
        assert!(!err.to_string().contains("unknown field"), "{long}: {err}");
    }
    assert!(toml::from_str::<ServeOptions>("demo = true").is_err());
}

/// A password typed into the wrong key is still a password: a letters-only one reads
/// like a name to a parser, and the error names its line and column, never the value.
#[test]
fn a_letters_only_secret_in_another_key_is_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ksm.toml");
    for line in [
        "socket-policy = \"Hunterpassword\"",
        "addr = \"Hunterpassword\"",
        "port = \"Hunterpassword\"",
        "key-handles = \"Hunterpassword\"",
        "random-nonce-aeads = \"Hunterpassword\"",
    ] {
        std::fs::write(&file, format!("aead-dir = \"/x\"\n{line}\n")).unwrap();
        let err = ServeOptions::load(&file).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{line}: {err}");
        assert!(!err.to_lowercase().contains("hunter"), "{line}: {err}");
    }
}

#[test]
fn a_db_password_needs_a_private_ksm_toml_and_is_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ksm.toml");
    let text = "db-url = \"mysql://ksm@db1/ksm\"\ndb-password = \"Hunter2pw\"\n";
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = ServeOptions::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("db-password") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("Hunter2pw"), "{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let opts = ServeOptions::load(&file).unwrap();
    assert_eq!(
        opts.db_password.as_ref().map(|p| p.expose()),
        Some("Hunter2pw")
    );
    assert!(!format!("{opts:?}").contains("Hunter2pw"));
    let db = opts.or(ServeOptions::default()).db().unwrap().unwrap();
    assert_eq!(db.password.as_ref().map(|p| p.expose()), Some("Hunter2pw"));

    // A malformed line is located, not shown (toml's own message prints the line).
    std::fs::write(&file, "db-password = Hunter2pw\n").unwrap();
    let err = ServeOptions::load(&file).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("Hunter2pw"), "{err}");
    // Without db-password the mode is not the file's business.
    std::fs::write(&file, "port = 9000\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(ServeOptions::load(&file).unwrap().port, Some(9000));
}

#[test]
fn the_yubihsm2_password_is_never_in_argv_and_only_in_private_files() {
    let dir = tempfile::tempdir().unwrap();
    // No flag takes the password itself.
    let cmd = ServeOptions::augment_args(clap::Command::new("serve"));
    assert!(cmd
        .get_arguments()
        .all(|a| a.get_long() != Some("hsm2-password")));
    // In ksm.toml only if that file is private, and never quoted.
    let file = dir.path().join("ksm.toml");
    std::fs::write(
        &file,
        "key-handles = [\"0x20\"]\nhsm2-auth-key = 2\nhsm2-password = \"Hunter2pw\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = ServeOptions::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("hsm2-password") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("Hunter2pw"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = ServeOptions::load(&file)
        .unwrap()
        .or(ServeOptions::default())
        .settings(false)
        .unwrap();
    assert_eq!(s.hsm2.auth_key, Some(hsm2_proto::ObjectId(2)));
    assert_eq!(s.hsm2.sessions, 2);
    assert!(!format!("{s:?}").contains("Hunter2pw"));
    let from_toml = s.hsm2.auth().unwrap().unwrap();
    assert_eq!(from_toml.key_id, hsm2_proto::ObjectId(2));
    // A password file: refused unless private; its first line is the password.
    let pw = dir.path().join("hsm2-password");
    std::fs::write(&pw, "Hunter2pw\nignored\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_file = crate::settings::serve::Hsm2Settings {
        auth_key: Some(hsm2_proto::ObjectId(2)),
        password_file: Some(pw.clone()),
        ..Default::default()
    };
    let err = with_file.auth().unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("Hunter2pw"), "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = with_file.auth().unwrap().unwrap();
    assert_eq!(from_file.auth_key().enc(), from_toml.auth_key().enc());
    assert_eq!(from_file.auth_key().mac(), from_toml.auth_key().mac());
    // A password without the key it is for is a configuration error.
    let no_id = crate::settings::serve::Hsm2Settings {
        auth_key: None,
        ..with_file
    };
    assert!(no_id.auth().is_err());
    // Out-of-range settings are refused.
    let bad = |text: &str| {
        std::fs::write(&file, text).unwrap();
        ServeOptions::load(&file)
            .unwrap()
            .or(ServeOptions::default())
            .settings(false)
            .is_err()
    };
    assert!(!bad("key-handles = [\"0x20\"]\nhsm2-sessions = 4\n"));
    assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 5\n"));
    assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 16\n"));
    assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 0\n"));
    assert!(bad("key-handles = [\"0x20\"]\nhsm2-auth-key = 0\n"));
}

#[test]
fn flags_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ksm.toml");
    std::fs::write(
        &file,
        "port = 9000\nqueue-depth = 7\nrandom-nonce-aeads = true\nkey-handles = [\"0x20\"]\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let s = flags(&["--config", config, "--port", "9001"])
        .settings()
        .unwrap();
    assert_eq!(s.listen, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(s.queue_depth, 7);
    assert_eq!(
        s.nonce_policy,
        NoncePolicy::Any,
        "no flag: the file's true stands"
    );
    assert_eq!(s.http.reqtimeout, Duration::from_secs(5));
    assert_eq!(s.socket.as_deref(), Some(Path::new(DEFAULT_SOCKET)));
    assert_eq!(
        flags(&["--hsm2-auth-key", "0x0a"]).options.hsm2_auth_key,
        Some(10)
    );
    let no_file = flags(&["--random-nonce-aeads", "--key-handles", "1"]);
    assert_eq!(no_file.options.random_nonce_aeads, Some(true));
    assert_eq!(flags(&[]).options.random_nonce_aeads, None);
    assert!(flags(&["--reqtimeout", "61", "--key-handles", "1"])
        .settings()
        .is_err());
}

#[test]
fn tls_files_come_from_flags_or_ksm_toml_and_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ksm.toml");
    std::fs::write(
        &file,
        "tls-cert = \"/etc/ksm/cert.pem\"\ntls-key = \"/etc/ksm/key.pem\"\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let s = flags(&[
        "--demo",
        "--config",
        config,
        "--tls-client-ca",
        "/etc/ksm/val-ca.pem",
    ])
    .settings()
    .unwrap();
    assert_eq!(
        s.http.tls,
        Some(TlsFiles {
            cert: "/etc/ksm/cert.pem".into(),
            key: "/etc/ksm/key.pem".into(),
            client_ca: Some("/etc/ksm/val-ca.pem".into()),
        })
    );
    assert_eq!(flags(&["--demo"]).settings().unwrap().http.tls, None);
    for (args, needs) in [
        (&["--tls-cert", "c.pem"][..], "--tls-cert needs --tls-key"),
        (&["--tls-key", "k.pem"][..], "--tls-key needs --tls-cert"),
        (&["--tls-client-ca", "ca.pem"][..], "--tls-client-ca needs"),
    ] {
        let all = [&["--demo"][..], args].concat();
        let err = flags(&all).settings().unwrap_err();
        assert!(err.to_string().contains(needs), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn the_demo_has_its_own_defaults() {
    let s = flags(&["--demo"]).settings().unwrap();
    assert_eq!(s.socket, None);
    assert_eq!(
        s.key_handles,
        vec![
            AeadKey::from(hsm_proto::KeyHandle(0x20)),
            AeadKey::from(hsm_proto::KeyHandle(0x21))
        ]
    );
    // Both kinds, in the order given, any pyhsm spelling for a key handle.
    assert_eq!(
        aead_keys(&["otp-aead-key:0x0120,32".into(), "otp-aead-key:289".into()]).unwrap(),
        vec![
            AeadKey::OtpKey(hsm2_proto::ObjectId(0x120)),
            AeadKey::from(hsm_proto::KeyHandle(0x20)),
            AeadKey::OtpKey(hsm2_proto::ObjectId(0x121)),
        ]
    );
    let err = aead_keys(&["otp-aead-key:x".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("otp-aead-key:N"), "{err}");
    let demo = s.demo_aeads.as_ref().expect("the demo's AEADs");
    assert_eq!(s.aead_dir, demo.path());
    assert!(s.aead_dir.join("0x20").is_dir());
    let s = flags(&["--demo", "--socket", "/tmp/x.sock"])
        .settings()
        .unwrap();
    assert_eq!(s.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
}

#[test]
fn serve_url_is_split_like_pyhsm() {
    assert_eq!(
        split_serve_url("/wsapi/decrypt?otp=").unwrap(),
        ("/wsapi/decrypt".into(), "otp".into())
    );
    assert_eq!(
        split_serve_url("/yhsm/validate?").unwrap(),
        ("/yhsm/validate".into(), String::new())
    );
    assert!(split_serve_url("wsapi").is_err());
}

/// `--val-db-url` turns the verify API on, from a flag or `ksm.toml`; `--val-ksm-url` needs
/// it, and is a plain-HTTP decrypt URL.
#[test]
fn the_validation_server_is_on_with_a_counter_database() {
    let s = flags(&["--demo"]).settings().unwrap();
    assert!(s.val.is_none());
    let s = flags(&["--demo", "--val-db-url", "sqlite:///val.db"])
        .settings()
        .unwrap();
    let v = s.val.unwrap();
    assert_eq!(v.pool_size, 16);
    assert!(v.ksm_urls.is_empty());
    let o: ServeOptions = toml::from_str(
        "val-db-url = \"postgresql://val@db1/ykval\"\nval-ksm-url = [\"http://k1:8002/wsapi/decrypt?otp=\", \"http://k2:8002/wsapi/decrypt?otp=\"]\n",
    )
    .unwrap();
    let v = o.or(ServeOptions::default()).val().unwrap().unwrap();
    assert_eq!(v.ksm_urls.len(), 2);
    for (args, says) in [
        (
            &["--demo", "--val-ksm-url", "http://k1/wsapi/decrypt?otp="][..],
            "--val-db-url",
        ),
        (
            &[
                "--demo",
                "--val-db-url",
                "sqlite:///v.db",
                "--val-ksm-url",
                "https://k1/x?otp=",
            ][..],
            "https",
        ),
        (
            &["--demo", "--val-db-url", "postgresql://val:pw@db1/ykval"][..],
            "password",
        ),
        (
            &[
                "--demo",
                "--val-db-url",
                "sqlite:///v.db",
                "--val-db-pool-size",
                "0",
            ][..],
            "at least 1",
        ),
    ] {
        let e = flags(args).settings().unwrap_err().to_string();
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(!e.contains(":pw@"), "{e}");
    }
}
