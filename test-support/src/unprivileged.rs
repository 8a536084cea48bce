//! A thread that runs as `nobody` while the rest of the test process stays root: for tests
//! of what an unprivileged user can or cannot do (read a mode-000 file, race a root writer).
//!
//! Linux keeps credentials per thread; glibc's `setuid` changes every thread of the process,
//! the raw system calls only the caller. rustix's `set_thread_*` are the raw ones, so the
//! other tests running in the same process keep root, and the thread's credentials end
//! with it.

use rustix::process::{Gid, Uid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// `nobody`'s uid and gid (`nogroup`) on Debian.
pub const NOBODY: u32 = 65534;

/// Whether the test can run as root. If not, says so loudly, and fails when the `CI`
/// variable is set (as `.ci/run` and CI services set it): there a skip would hide that the
/// test never ran. Elsewhere it returns false and the caller returns.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let why = format!("{test} needs root (it runs part of itself as nobody)");
    if std::env::var_os("CI").is_some() {
        panic!("{why}, and CI is set: a skip is a failure there");
    }
    // Written to the process's stderr directly: the harness captures eprintln!.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    false
}

/// Runs `f` on a new thread whose uids and gids are all `nobody`'s and which has no
/// supplementary groups (so no root group either), and returns what it returns. The
/// caller must be root ([`require_root`]). Files `f` should reach by path must be
/// reachable by `nobody`; a directory handle opened before the call needs no such thing.
pub fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // Groups first: after the uid changes, the thread may no longer change them.
        set_thread_groups(&[]).expect("drop supplementary groups");
        let gid = Gid::from_raw(NOBODY);
        set_thread_res_gid(gid, gid, gid).expect("setresgid nobody");
        let uid = Uid::from_raw(NOBODY);
        set_thread_res_uid(uid, uid, uid).expect("setresuid nobody");
        f()
    })
    .join()
    .expect("the thread running as nobody panicked")
}
