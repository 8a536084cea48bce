//! `ksm serve` under systemd: the listening socket systemd holds, and the notices a
//! `Type=notify` unit waits for.
//!
//! **Socket activation.** With `ksm.socket` systemd binds the decode port itself and hands
//! the bound socket to each daemon it starts (`LISTEN_FDS`, `LISTEN_PID`, the socket as
//! descriptor 3). The port is then never free while the daemon restarts, so no other local
//! user can bind it in the gap and answer `OK` to every OTP; and a daemon that starts
//! cannot fail with "address in use". An inherited socket is used as it is: the address it
//! is bound to is the unit's `ListenStream=`, and `addr`/`port` of the configuration are not
//! used (the daemon warns when they name another address). Without `LISTEN_FDS` the daemon
//! binds `addr`/`port` itself, as it always did.
//!
//! **Readiness.** `READY=1` goes out once the daemon serves (the port listens, the HSMs'
//! owners run, the sharing socket is bound), `RELOADING=1` and `READY=1` around the work of
//! a SIGHUP, `STOPPING=1` when SIGTERM begins the drain. Without `NOTIFY_SOCKET` (not under
//! systemd, or not `Type=notify`) nothing is sent.

use std::net::TcpListener;

use sd_notify::NotifyState;
use tracing::debug;

use crate::Error;

/// The environment of socket activation, removed once read: nothing the daemon may start
/// later must take the daemon's socket for its own.
const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The listening socket systemd passed this process, if any. Only sockets meant for this
/// process count (`LISTEN_PID` is its pid: a variable inherited from an activated parent is
/// not ours), and exactly one, a TCP socket; anything else is a configuration error the
/// daemon must not start with. Call before any thread starts: it clears the variables.
pub fn inherited_listener() -> Result<Option<TcpListener>, Error> {
    let for_pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let ours = for_pid.as_deref() == Some(std::process::id().to_string().as_str());
    // Taken only when they are ours (listenfd would also take sockets without LISTEN_PID).
    let listener = match (ours, fds.as_deref()) {
        (false, _) | (true, None) => None,
        (true, Some("1")) => {
            let l = listenfd::ListenFd::from_env()
                .take_tcp_listener(0)
                .map_err(|e| {
                    Error::Usage(format!(
                        "the socket systemd passed (LISTEN_FDS) is not a listening TCP socket: {e}; give ksm.socket one ListenStream= with an address and port"
                    ))
                })?
                .ok_or_else(|| Error::Usage("systemd passed no socket (LISTEN_FDS)".into()))?;
            Some(l)
        }
        (true, Some(n)) => {
            return Err(Error::Usage(format!(
                "systemd passed {n} sockets (LISTEN_FDS); ksm serve takes exactly one: give ksm.socket a single ListenStream="
            )))
        }
    };
    for var in LISTEN_VARS {
        std::env::remove_var(var);
    }
    Ok(listener)
}

/// Tells systemd the daemon serves (`READY=1`), with a status line `systemctl status` shows.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload (SIGHUP) began; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the daemon is draining to stop.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A notice lost (systemd gone, a full socket) changes nothing the daemon does: logged at
/// debug only.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "sd_notify failed");
    }
}
