//! Process-wide protections every `ksm` command starts with.

/// No core dumps: the daemon holds YubiKey AEADs and OTPs in memory, `keystore-unlock` a
/// master key, `import-keys` and `decrypt-aead` YubiKey secrets, and a core file would put
/// them on disk. `RLIMIT_CORE` 0 stops the kernel writing one; `PR_SET_DUMPABLE` 0 also
/// keeps other processes of the same user from reading this one's memory
/// (`/proc/PID/mem`, ptrace). Best effort: a failure is logged, not fatal.
pub fn no_core_dumps() {
    use nix::sys::resource::{setrlimit, Resource};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "cannot turn core dumps off (RLIMIT_CORE)");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot turn core dumps off (PR_SET_DUMPABLE)");
    }
}
