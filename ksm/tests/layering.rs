//! Which parts of `ksm` may name which: the arrows run one way, so a part can be read,
//! changed and tested without the parts above it. The device module (what `-D` names,
//! opening it, the sharing socket's client) is used by the daemon and the tools and uses
//! neither; the owner loop and the device kinds it drives are used by the pool and never
//! name it back.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};

/// The code of `path` (relative to `ksm/src`), comments left out.
fn code(path: &Path) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `.rs` file below `dir` (relative to `ksm/src`).
fn files_below(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut todo = vec![root.join(dir)];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_device_module_names_no_part_of_the_daemon() {
    let files = files_below("device");
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        assert!(
            !code(&f).contains("crate::daemon"),
            "{} names the daemon",
            f.display()
        );
    }
}

#[test]
fn the_owner_loop_and_the_devices_never_name_the_pool() {
    for f in [
        "daemon/owner.rs",
        "daemon/hsm1_owner.rs",
        "daemon/hsm2_owner.rs",
    ] {
        let code = code(Path::new(f));
        assert!(!code.contains("daemon::pool"), "{f} names the pool");
    }
    // The loop is generic over the devices, so it names neither kind.
    let owner = code(Path::new("daemon/owner.rs"));
    for kind in ["hsm1_owner", "hsm2_owner"] {
        assert!(!owner.contains(kind), "the owner loop names {kind}");
    }
    // Neither kind names the other.
    assert!(!code(Path::new("daemon/hsm1_owner.rs")).contains("hsm2_owner"));
    assert!(!code(Path::new("daemon/hsm2_owner.rs")).contains("hsm1_owner"));
}
