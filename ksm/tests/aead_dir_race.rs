//! The AEAD tree's writes against a user who owns a directory inside it and swaps a
//! subdirectory with a symlink in a loop (`renameat2` with `RENAME_EXCHANGE`), while root
//! runs `ksm import-keys -O DIR --force`: nothing may be created where the symlink points.
//! The swapper is a thread running as `nobody` (`test_support::unprivileged`), the writer
//! the real binary as root.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{emulator_config, output_text as text, Device};
use rustix::fs::{Mode, OFlags, RenameFlags};
use test_support::unprivileged::{as_nobody, require_root, NOBODY};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// Every entry below `dir`, as paths relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            out.extend(
                tree(&e.path())
                    .into_iter()
                    .map(|n| format!("{}/{n}", e.file_name().to_string_lossy())),
            );
        }
    }
    out
}

#[test]
fn a_directory_swapped_for_a_symlink_during_import_keys_gets_nothing_written_through_it() {
    if !require_root("the AEAD tree race test") {
        return;
    }
    let dev = Device::start(&emulator_config("demo.toml"));
    let link = dev.path().display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    // What the symlink points at: stands for /etc/sudoers.d.
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let base = tmp.path().join("aeads");
    // nobody owns 0x20/cc; root made 0x20/cc/cc, every id below goes through it, and
    // 0x20/cc/x is the symlink nobody swaps it with.
    let owned = base.join("0x20/cc");
    std::fs::create_dir_all(owned.join("cc")).unwrap();
    std::os::unix::fs::chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&target, owned.join("x")).unwrap();

    let mut input = String::from("# ykksm 1\n");
    for n in 0..200u32 {
        // ccccc… ids: 0x20/cc/cc/… for all of them.
        let id = format!("cccc{}", modhex(&n.to_be_bytes()));
        input.push_str(&format!(
            "{n},{id},0102030405{:02x},{:032x},000000000000,,,,,,\n",
            n % 256,
            n
        ));
    }
    let keys = tmp.path().join("keys.csv");
    std::fs::write(&keys, input).unwrap();

    // The swapper: a handle on its own directory opened now, then nobody from here on.
    let dir = rustix::fs::open(&owned, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            as_nobody(move || {
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(&dir, "cc", &dir, "x", RenameFlags::EXCHANGE)
                        .expect("nobody swaps in its own directory");
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    };

    // Root imports again and again (bounded), until something appears in the target.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut runs = 0;
    while runs < 30 && Instant::now() < deadline && tree(&target).is_empty() {
        let mut child = Command::new(KSM)
            .args([
                "import-keys",
                "-D",
                &link,
                "--key-handles",
                "0x20",
                "--force",
            ])
            .arg("-O")
            .arg(&base)
            .arg("--input")
            .arg(&keys)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "import-keys hung");
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        // Lines refused for the symlink are rejected (exit 1); nothing else may go wrong.
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper never ran");
    assert_eq!(
        tree(&target),
        Vec::<String>::new(),
        "root wrote through the swapped symlink ({runs} import runs)"
    );
    let _ = std::io::stderr().flush();
}

/// Modhex of `bytes`.
fn modhex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 16] = b"cbdefghijklnrtuv";
    bytes
        .iter()
        .flat_map(|b| [ALPHABET[usize::from(b >> 4)], ALPHABET[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}
