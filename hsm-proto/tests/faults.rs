//! The driver's fault handling against real faults on a real pty: a stalled device, garbage
//! on the line, an unplugged device, a device at its configuration console.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use hsm_proto::{Error, Hsm, Opcode, Timeouts};

fn quick() -> Timeouts {
    Timeouts {
        response: Duration::from_millis(300),
        drain_quiet: Duration::from_millis(50),
        drain_max: Duration::from_secs(1),
    }
}

#[test]
fn stall_times_out_within_the_configured_time_then_recovers() {
    let dev = Device::start(&config("demo.toml"));
    let mut hsm = dev.open_with(quick()).unwrap();
    dev.emu.set_stall(true);
    let start = Instant::now();
    let err = hsm.echo(b"anyone?").unwrap_err();
    let took = start.elapsed();
    assert_eq!(
        err,
        Error::Timeout {
            cmd: Opcode::Echo,
            after: Duration::from_millis(300)
        }
    );
    // The deadline, plus the resync's drain, and no more.
    assert!(
        took < Duration::from_millis(300) + quick().drain_max + Duration::from_millis(200),
        "took {took:?}"
    );
    dev.emu.set_stall(false);
    assert_eq!(hsm.echo(b"back").unwrap(), b"back");
}

#[test]
fn garbage_is_detected_and_the_link_resyncs() {
    let dev = Device::start(&config("demo.toml"));
    let mut hsm = dev.open_with(quick()).unwrap();
    dev.emu.inject_garbage(40);
    assert!(matches!(
        hsm.echo(b"hello"),
        Err(Error::Garbage(_)) | Err(Error::WrongCommand { .. })
    ));
    // The error path resynced: the next commands are answered correctly.
    for i in 0..5u8 {
        assert_eq!(hsm.echo(&[i; 10]).unwrap(), vec![i; 10]);
    }
}

#[test]
fn unplugged_device_gives_closed_then_reopen_works() {
    let dev = Device::start(&config("demo.toml"));
    let mut hsm = dev.open_with(quick()).unwrap();
    dev.emu.unplug(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(3);
    let err = loop {
        match hsm.echo(b"ping") {
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => panic!("device never went away"),
            Err(e) => break e,
        }
    };
    assert!(err.is_link_error(), "{err:?}");
    // While it is gone, opening fails with a clear error naming the path.
    let gone = Hsm::open_path(dev.emu.link(), quick());
    assert!(
        matches!(gone, Err(Error::Open { .. }) | Err(Error::Closed)),
        "{:?}",
        gone.err()
    );
    // Plugged back in: a reopen of the same path works.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match Hsm::open_path(dev.emu.link(), quick()) {
            Ok(h) => break h,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("device did not come back: {e}"),
        }
    };
    assert_eq!(again.echo(b"hi").unwrap(), b"hi");
}

#[test]
fn configuration_mode_is_a_clear_error() {
    let dev = Device::start(&config("demo.toml"));
    let mut hsm = dev.open_with(quick()).unwrap();
    dev.emu.enter_config_mode();
    match hsm.echo(b"hello") {
        Err(Error::ConfigMode { prompt }) => assert!(prompt.starts_with("HSM"), "{prompt}"),
        other => panic!("expected ConfigMode, got {other:?}"),
    }
    // Opening a device that sits at its console fails the same way.
    drop(hsm);
    let err = Hsm::open_path(dev.emu.link(), quick())
        .err()
        .expect("open must fail");
    assert!(matches!(err, Error::ConfigMode { .. }), "{err:?}");
    assert!(err.to_string().contains("configuration mode"));
}

#[test]
fn config_mode_from_the_config_file() {
    let mut cfg = config("demo.toml");
    cfg.faults.config_mode = true;
    let dev = Device::start(&cfg);
    assert!(matches!(
        dev.open_with(quick()),
        Err(Error::ConfigMode { .. })
    ));
}

#[test]
fn missing_device_is_an_open_error() {
    let err = Hsm::open_path(std::path::Path::new("/nonexistent/ttyACM9"), quick())
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/ttyACM9"));
}
