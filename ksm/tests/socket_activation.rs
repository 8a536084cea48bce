//! `ksm serve` started as systemd starts it from `ksm.socket`: the listening socket bound by
//! someone else and passed as descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`), and readiness told
//! on the datagram socket of `NOTIFY_SOCKET`. systemd's own `systemd-socket-activate` binds
//! the port and execs the real daemon; the test is the service manager's notify socket.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{get, otp_vectors};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");
const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// The daemon under `systemd-socket-activate`, killed when dropped.
struct Activated {
    child: Child,
    /// The port systemd-socket-activate bound (never the daemon).
    addr: SocketAddr,
    /// What the daemon writes on standard output (its listening line first).
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free a moment ago. `systemd-socket-activate` takes no port 0, so it is handed one
/// that was free; another process may take it in between, hence [`activate`]'s retries.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Binds a port with `systemd-socket-activate` and execs `ksm serve ARGS` on it at the first
/// connection, with `NOTIFY_SOCKET` set to `notify`.
fn activate(notify: &Path, args: &[&str]) -> Activated {
    assert!(
        Path::new(SOCKET_ACTIVATE).exists(),
        "{SOCKET_ACTIVATE} is missing: install the systemd package"
    );
    for _ in 0..5 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(SOCKET_ACTIVATE)
            .arg(format!("--listen={addr}"))
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.display()))
            .arg(KSM)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        if first.starts_with("Listening on") {
            // The daemon's log goes on here: drained, so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            let stdout = BufReader::new(child.stdout.take().unwrap());
            return Activated {
                child,
                addr,
                stdout,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("systemd-socket-activate bound no port in 5 tries");
}

/// The service manager's side of `NOTIFY_SOCKET`.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    // The daemon may run as another user in other tests; here it is ours, but keep it open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (sock, path)
}

/// Reads notices until one holds `want` (a `KEY=VALUE` line), at most 20 s; returns every
/// line seen up to it.
fn wait_notice(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want} within 20 s; saw {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let lines: Vec<String> = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string)
                    .collect();
                let found = lines.iter().any(|l| l == want);
                seen.extend(lines);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no {want} within 20 s ({e}); saw {seen:?}"),
        }
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn first_otp() -> String {
    otp_vectors()["otps"][0]["otp"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_daemon_serves_on_the_socket_systemd_passes_and_says_when_it_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (notify, path) = notify_socket(dir.path());
    // `--port 0` as a daemon run by hand would have it: the inherited socket still wins.
    let mut d = activate(&path, &["--demo", "--port", "0"]);

    // The first connection starts the daemon; it is answered on the port systemd holds.
    let answer = get(d.addr, &format!("/wsapi/decrypt?otp={}", first_otp()));
    assert_eq!(answer.body, "OK counter=0001 low=1234 high=56 use=00\n");
    let mut line = String::new();
    d.stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("ksm listening on http://{}/", d.addr)),
        "{line}"
    );
    let seen = wait_notice(&notify, "READY=1");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=serving on http://")),
        "{seen:?}"
    );

    // A reload is told as one: RELOADING=1 (with the time systemd wants), then READY=1.
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    let seen = wait_notice(&notify, "RELOADING=1");
    assert!(
        seen.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    let seen = wait_notice(&notify, "READY=1");
    assert!(
        seen.iter()
            .any(|l| l == &format!("STATUS=serving on http://{}", d.addr)),
        "{seen:?}"
    );
    assert_eq!(
        get(d.addr, "/health").status,
        200,
        "the daemon serves after the reload"
    );

    signal(&d.child, nix::sys::signal::Signal::SIGTERM);
    wait_notice(&notify, "STOPPING=1");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn tls_is_served_on_the_socket_systemd_passes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_file = dir.path().join("server.crt");
    let key_file = dir.path().join("server.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (notify, path) = notify_socket(dir.path());
    let d = activate(
        &path,
        &[
            "--demo",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    // curl, as validators call their KSM, trusting only the test's certificate.
    let mut curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cert_file)
        .arg(format!(
            "https://{}/wsapi/decrypt?otp={}",
            d.addr,
            first_otp()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    curl.stdout
        .take()
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    let out = curl.wait_with_output().unwrap();
    assert_eq!(
        body,
        "OK counter=0001 low=1234 high=56 use=00\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = wait_notice(&notify, "READY=1");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("STATUS=serving on https://")),
        "{seen:?}"
    );
}

/// A socket unit with another kind of socket (a unix path) is a configuration error the
/// daemon names and exits on, rather than serving nothing.
#[test]
fn a_passed_socket_that_is_not_tcp_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ksm-api.sock");
    let mut child = Command::new(SOCKET_ACTIVATE)
        .arg(format!("--listen={}", path.display()))
        .arg(KSM)
        .args(["serve", "--demo"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("Listening on"), "{first}");
    // The first connection execs the daemon on the socket.
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(2), "{rest}");
    assert!(rest.contains("not a listening TCP socket"), "{rest}");
}
