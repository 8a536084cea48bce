//! `ksm serve` as a process: `ksm.toml` with flags overriding it, the allow-list, the PID
//! file, the log line per decode (and what it must never contain), X-Forwarded-For from a
//! trusted proxy, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use e2e_tests::{emulator_config, fixtures, get, listening_addr, otp_vectors, Device};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

#[test]
fn config_file_flags_allow_list_pid_file_logs_and_sigterm() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("ksm.pid");
    let sock = tmp.path().join("ksm.sock");
    let conf = tmp.path().join("ksm.toml");
    std::fs::write(
        &conf,
        format!(
            "device = [{:?}]\naead-dir = {:?}\nkey-handles = [\"0x20\", \"33\"]\nport = 0\nallow = [\"10.9.8.0/24\"]\npid-file = {:?}\nsocket = {:?}\nstats-url = \"/stats\"\n",
            dev.path(),
            fixtures().join("aead-files/store"),
            pid_file,
            sock
        ),
    )
    .unwrap();

    // The file alone: 127.0.0.1 is not on its allow-list.
    let mut child = Command::new(KSM)
        .args(["serve", "--config"])
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    let otp = otp_vectors()["otps"][0]["otp"]
        .as_str()
        .unwrap()
        .to_string();
    let a = get(addr, &format!("/wsapi/decrypt?otp={otp}"));
    assert_eq!((a.status, a.body.as_str()), (403, "ERR Forbidden\n"));
    child.kill().unwrap();
    child.wait().unwrap();

    // Flags win over the file.
    let mut child = Command::new(KSM)
        .args(["-v", "serve", "--config"])
        .arg(&conf)
        .args(["--allow", "127.0.0.0/8", "--proxies", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, child.id());
    assert_eq!(
        get(addr, &format!("/wsapi/decrypt?otp={otp}")).body,
        "OK counter=0001 low=1234 high=56 use=00\n"
    );
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /wsapi/decrypt?otp={otp} HTTP/1.1\r\nHost: ksm\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.ends_with("OK counter=0001 low=1234 high=56 use=00\n"));
    assert_eq!(
        get(addr, "/stats").body,
        "no_aead 0\nok 2\nerr 0\ninvalid 0\n"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        !pid_file.exists() && !sock.exists(),
        "PID file and socket removed on exit"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let decodes: Vec<&str> = log.lines().filter(|l| l.contains("decode")).collect();
    assert_eq!(decodes.len(), 2, "{log}");
    assert!(
        decodes.iter().all(|l| l.contains("public_id=ccccdeulfbvj")
            && l.contains("result=ok")
            && l.contains("latency_us=")),
        "{log}"
    );
    assert!(decodes[1].contains("client=203.0.113.9"), "{log}");
    assert!(
        !log.contains(&otp[12..]),
        "the OTP's token part must never be logged"
    );
}

/// `ksm serve --demo --port 0 ARGS`, which must refuse to start: its exit code and standard
/// error. A daemon that started instead is killed after 20 s, and the test fails.
fn refused_to_start(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(KSM)
        .args(["serve", "--demo", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("ksm serve {args:?} is still running after 20 s");
        }
    }
}

/// A decode or stats path the router cannot take (another page's, or not a plain path) is
/// a usage error before anything listens: exit 2 and a line that says which flag, never a
/// panic after the listening line.
#[test]
fn paths_that_clash_or_are_not_paths_are_refused_at_start() {
    for (args, flag) in [
        (&["-S", "/health"][..], "--stats-url"),
        (&["-S", "/metrics"], "--stats-url"),
        (&["-S", "nostartslash"], "--stats-url"),
        (&["-S", "/wsapi/decrypt"], "--stats-url"),
        (&["-S", "/wsapi/decrypt/"], "--stats-url"),
        (&["-S", "/{x}"], "--stats-url"),
        (&["-U", "/metrics?otp="], "--serve-url"),
        (&["-U", "/health/?otp="], "--serve-url"),
        (&["-U", "/a:b?otp="], "--serve-url"),
        (&["-U", "/stats?otp=", "-S", "/stats"], "--stats-url"),
    ] {
        let (code, err) = refused_to_start(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// pyhsm took any prefix as the decode URL, the root too: `-U /?otp=` serves decodes at `/`
/// beside `/health`.
#[test]
fn a_decode_url_at_the_root_is_served() {
    let mut child = Command::new(KSM)
        .args([
            "serve", "--demo", "--port", "0", "-U", "/?otp=", "-S", "/stats",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child);
    let otp = otp_vectors()["otps"][0]["otp"]
        .as_str()
        .unwrap()
        .to_string();
    let a = get(addr, &format!("/?otp={otp}"));
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "OK counter=0001 low=1234 high=56 use=00\n")
    );
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/stats").status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `ksm serve --help` shows each default, from the one place they are written.
#[test]
fn help_shows_the_defaults() {
    let help = <ksm::cli::Cli as clap::CommandFactory>::command()
        .find_subcommand_mut("serve")
        .unwrap()
        .render_long_help()
        .to_string();
    for shown in [
        "[default: 8002]",
        "[default: 5]",
        "[default: 256]",
        "[default: 2048]",
        "[default: /wsapi/decrypt?otp=]",
        "[default: /run/ksm/ksm.sock]",
        "[default: /dev/ttyACM0]",
        "[default: 127.0.0.1]",
        "[default: tools]",
    ] {
        assert!(help.contains(shown), "{shown} in {help}");
    }
    assert!(!help.contains("[default: false]"), "{help}");
    assert_eq!(
        ksm::settings::http::HttpConfig::default().max_connections,
        2048
    );
}
