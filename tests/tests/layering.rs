//! The arrows between the crates run one way (issue 21): the shared facts live in
//! `otp-core`, the store builds on it and on neither driver, and the YubiHSM 2 driver does
//! not build on the YubiHSM 1 driver. Asked of cargo itself (`cargo tree`, on the committed
//! lock file, offline), so a dependency that creeps back in through any path fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crates `package` compiles into a normal (not dev, not build) build, with `features`.
fn normal_deps(package: &str, features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "tree",
        "-p",
        package,
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "--locked",
        "--offline",
    ]);
    for f in features {
        cmd.args(["--features", f]);
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What the store must not compile: either driver, and their transports, session crypto
/// and configuration parsers.
const NOT_IN_THE_STORE: [&str; 9] = [
    "hsm-proto",
    "hsm2-proto",
    "serialport",
    "ureq",
    "cbc",
    "cmac",
    "pbkdf2",
    "toml",
    "serde_json",
];

#[test]
fn the_store_names_keys_and_aeads_through_the_core_alone() {
    let deps = normal_deps("aead-store", &[]);
    assert!(deps.contains("otp-core"), "{deps:?}");
    for name in NOT_IN_THE_STORE {
        assert!(!deps.contains(name), "aead-store compiles {name}");
    }
    // The database store brings sqlx (and sqlx its own JSON support), but still no driver.
    let deps = normal_deps("aead-store", &["db"]);
    for name in ["hsm-proto", "hsm2-proto", "serialport", "ureq"] {
        assert!(!deps.contains(name), "aead-store with db compiles {name}");
    }
}

#[test]
fn the_yubihsm2_driver_does_not_build_on_the_yubihsm1_driver() {
    for features in [&[][..], &["emulator"][..]] {
        let deps = normal_deps("hsm2-proto", features);
        assert!(deps.contains("otp-core"), "{features:?}: {deps:?}");
        assert!(
            !deps.contains("hsm-proto"),
            "hsm2-proto ({features:?}) compiles hsm-proto"
        );
    }
}

/// The validation protocol's crate knows OTPs through the core and the database through the
/// store's set-up, and nothing of either driver or of the daemon (issue 22).
#[test]
fn the_validation_crate_builds_on_neither_driver_nor_the_daemon() {
    let deps = normal_deps("ykval", &[]);
    assert!(
        deps.contains("otp-core") && deps.contains("aead-store"),
        "{deps:?}"
    );
    for name in [
        "ksm",
        "hsm-proto",
        "hsm2-proto",
        "serialport",
        "ureq",
        "axum",
        "hyper",
    ] {
        assert!(!deps.contains(name), "ykval compiles {name}");
    }
}
