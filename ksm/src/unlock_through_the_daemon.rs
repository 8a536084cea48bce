//! `ksm keystore-unlock` through a running daemon's sharing socket: the tool and the daemon
//! together, so the test sits above both (the daemon names no tool).

use std::time::{Duration, Instant};

use crate::daemon::health::DeviceState;
use crate::daemon::sharing::tests::{frame, hsm2_daemon_in};
use crate::device::sharing::{connect_trusted, list_device_kinds, PENDING};

/// `ksm keystore-unlock --stdin --no-otp` on the daemon's first device at `socket`, fed
/// `stdin`: its result and what it printed.
fn unlock_via(socket: &std::path::Path, stdin: &str) -> (Result<(), crate::Error>, String) {
    use crate::tools::keystore_unlock::{unlock, Options};
    let mut out = Vec::new();
    let r = unlock(
        &crate::device::ToolDevice::Daemon {
            socket: socket.to_path_buf(),
            index: 0,
        },
        &Options {
            stdin: true,
            otp_stdin: false,
            no_otp: true,
        },
        hsm_proto::Timeouts::default(),
        &mut std::io::Cursor::new(stdin.to_string()),
        &mut out,
    );
    (r, String::from_utf8(out).unwrap())
}

/// `ksm keystore-unlock` through the socket: a locked YubiHSM 2 takes its password
/// only if the device does, and YubiHSM 1 frames never reach it.
#[test]
fn keystore_unlock_hands_a_yubihsm2_its_password() {
    use crate::daemon::pool::tests::{emulator, PASSWORD};
    let emu = emulator("");
    let (_dir, path, _pool) = hsm2_daemon_in(&emu, DeviceState::Locked);
    assert_eq!(
        list_device_kinds(&path).unwrap(),
        vec![("yubihsm2".into(), "locked".into(), emu.url())]
    );
    let run = |stdin: &str| {
        let (r, out) = unlock_via(&path, stdin);
        (r.map_err(|e| e.to_string()), out)
    };
    let (r, out) = run("not the password\n");
    assert_eq!(r, Err("1 device(s) still locked".into()), "{out}");
    assert!(out.contains("wrong password"), "{out}");
    assert!(!out.contains("not the password"), "{out}");
    assert_eq!(list_device_kinds(&path).unwrap()[0].1, "locked");
    let (r, out) = run(&format!("{PASSWORD}\n"));
    assert_eq!(r, Ok(()), "{out}");
    assert_eq!(out, format!("{}: unlocked\n", emu.url()));
    assert_eq!(list_device_kinds(&path).unwrap()[0].1, "up");
    // Unlocked: nothing is asked for.
    let (r, out) = run("");
    assert_eq!(r, Ok(()), "{out}");
    assert_eq!(out, format!("{}: already unlocked\n", emu.url()));
    // A YubiHSM 1 frame means nothing to a YubiHSM 2: refused by its owner.
    let mut tool = connect_trusted(&path).unwrap();
    let err = frame(&mut tool).unwrap_err().to_string();
    assert!(err.contains("other kind of YubiHSM"), "{err}");
}

/// `ksm keystore-unlock` while the connector is not up (boot): the password is kept,
/// the tool says so and fails with exit code 6, and the device serves once it answers.
#[test]
fn keystore_unlock_on_a_device_that_is_down_keeps_the_password() {
    use crate::daemon::pool::tests::{emulator, PASSWORD};
    let emu = emulator("");
    emu.set_refuse(true);
    let (_dir, path, pool) = hsm2_daemon_in(&emu, DeviceState::Down);
    let (r, out) = unlock_via(&path, &format!("{PASSWORD}\n"));
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
    assert_eq!(out, format!("{}: {PENDING}\n", emu.url()));
    emu.set_refuse(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.health()[0].state() != DeviceState::Up {
        assert!(Instant::now() < deadline, "never up");
        std::thread::sleep(Duration::from_millis(20));
    }
}
