//! `ksm` as a process among others: one daemon per socket and PID file, SIGHUP, core
//! dumps, a closed stdout, and who the tools trust on the sharing socket.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{emulator_config, get, listening_addr, output_text as text, Device, NOBODY};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_with(mut cmd: Command, args: &[&str]) -> Serve {
    let mut child = cmd
        .args(["serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ksm serve");
    let addr = listening_addr(&mut child);
    Serve { child, addr }
}

fn serve(args: &[&str]) -> Serve {
    serve_with(Command::new(KSM), args)
}

fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/health").body).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end, or kills it after 10 s (a daemon that should have refused to
/// start but serves instead).
fn output_within(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_second_daemon_leaves_the_first_ones_socket_and_pid_file_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (sock, pid) = (tmp.path().join("ksm.sock"), tmp.path().join("ksm.pid"));
    let args = ["--demo", "--socket", s(&sock), "--pid-file", s(&pid)];
    let mut first = serve(&args);
    let first_pid = format!("{}\n", first.child.id());
    assert_eq!(std::fs::read_to_string(&pid).unwrap(), first_pid);
    let socket_before = std::fs::metadata(&sock).unwrap();

    // Same socket and PID file, another port: refused at once, nothing touched.
    let o = output_within(Command::new(KSM).args(["serve", "--port", "0"]).args(args));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("another ksm serve is running"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&pid).unwrap(), first_pid);
    assert_eq!(std::fs::metadata(&sock).unwrap().ino(), socket_before.ino());
    let info = Command::new(KSM)
        .args(["info", "--socket", s(&sock)])
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "the tools still reach the first daemon: {}",
        text(&info)
    );

    // Only the PID file given: still refused.
    let o = output_within(Command::new(KSM).args([
        "serve",
        "--demo",
        "--port",
        "0",
        "--pid-file",
        s(&pid),
    ]));
    assert!(
        !o.status.success() && text(&o).contains(first_pid.trim()),
        "{}",
        text(&o)
    );

    // SIGTERM: the first daemon removes what is its own.
    signal(&first.child, nix::sys::signal::Signal::SIGTERM);
    first.child.wait().unwrap();
    assert!(!sock.exists() && !pid.exists());

    // A daemon killed outright leaves stale files; the next one takes them over.
    let mut killed = serve(&args);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(sock.exists() && pid.exists());
    let next = serve(&args);
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        format!("{}\n", next.child.id())
    );
}

#[test]
fn sighup_reopens_the_devices_and_the_daemon_keeps_serving() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let aeads = e2e_tests::fixtures().join("aead-files/store");
    let mut d = serve(&[
        "-D",
        s(&dev.path()),
        "-B",
        s(&aeads),
        "--key-handles",
        "0x20",
        "--socket",
        "none",
    ]);
    wait_for("the device to open", || {
        health(d.addr)["devices"][0]["opens"] == 1
    });
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    wait_for("the device to be reopened", || {
        health(d.addr)["devices"][0]["opens"] == 2
    });
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    let otp = e2e_tests::otp_vectors()["otps"][0]["otp"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(d.addr, &format!("/wsapi/decrypt?otp={otp}")).body,
        "OK counter=0001 low=1234 high=56 use=00\n"
    );
}

#[test]
fn sighup_reloads_the_allow_list_and_keeps_it_when_the_file_is_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("ksm.toml");
    std::fs::write(&conf, "allow = [\"192.0.2.0/24\"]\n").unwrap();
    let mut cmd = Command::new(KSM);
    cmd.stderr(Stdio::piped());
    let mut child = cmd
        .args(["serve", "--port", "0", "--demo", "--config", s(&conf)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::follow(child.stderr.take().unwrap());
    let mut d = Serve {
        addr: listening_addr(&mut child),
        child,
    };
    assert_eq!(get(d.addr, "/health").status, 403);
    std::fs::write(&conf, "allow = [\"127.0.0.0/8\"]\n").unwrap();
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    wait_for("the new allow-list", || {
        get(d.addr, "/health").status == 200
    });
    // A file that no longer parses changes nothing, and ends nothing: once the daemon has
    // read it (and said it keeps the old lists), the allowed client is still served.
    std::fs::write(&conf, "allow = [\n").unwrap();
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    wait_for("the daemon to read the broken file", || {
        log.has("the configuration did not load; the old allow-list and proxies stay")
    });
    assert_eq!(get(d.addr, "/health").status, 200);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the SIGHUP ended the daemon"
    );
}

/// What a daemon wrote on standard error so far, read as it comes.
struct Log(std::sync::Arc<std::sync::Mutex<String>>);

impl Log {
    fn follow(stderr: std::process::ChildStderr) -> Log {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = text.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let mut t = into.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        Log(text)
    }

    fn has(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }
}

#[test]
fn the_daemon_never_dumps_core() {
    // Started with core dumps allowed, as a shell with `ulimit -c unlimited` would.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -c unlimited && exec \"$0\" \"$@\"", KSM]);
    let d = serve_with(cmd, &["--demo"]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}

#[test]
fn info_with_a_closed_stdout_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("soft.toml");
    std::fs::copy(e2e_tests::fixtures().join("emulator/demo.toml"), &key_file).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let o = Command::new(KSM)
        .args(["info", "-D", s(&key_file)])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
}

/// A private directory that `nobody` may use too.
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// True where the test can run processes as another user (as root). Elsewhere it is
/// skipped with a line, except in CI (`CI` set), where a skip would hide that the test never
/// ran: there it fails.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (it runs daemons as nobody); CI runs the tests as root"
    );
    eprintln!("skipped {test}: needs root to run processes as another user");
    false
}

/// Runs `ksm keystore-unlock --socket SOCK` (root's tool) with nothing on standard input.
fn root_unlock(sock: &Path) -> Output {
    let mut unlock = Command::new(KSM)
        .args([
            "keystore-unlock",
            "--stdin",
            "--no-otp",
            "--socket",
            s(sock),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(unlock.stdin.take());
    unlock.wait_with_output().unwrap()
}

#[test]
fn tools_say_permission_denied_and_trust_only_root_or_their_own_user() {
    if !root_or_skip("tools_say_permission_denied_and_trust_only_root_or_their_own_user") {
        return;
    }
    let (_bin_dir, bin) = e2e_tests::runnable_copy(Path::new(KSM));
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(args).uid(NOBODY).gid(NOBODY);
        c
    };

    // Root's daemon: a tool run by another user may not use its socket, and says so.
    let dir = shared_dir();
    let sock: PathBuf = dir.path().join("ksm.sock");
    let _root_daemon = serve(&["--demo", "--socket", s(&sock)]);
    let o = as_nobody(&["info", "--socket", s(&sock)]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("permission denied"), "{}", text(&o));
    assert!(!text(&o).contains("daemon not running"), "{}", text(&o));

    // A socket served by another user: root's tools send it nothing.
    let dir = shared_dir();
    let sock: PathBuf = dir.path().join("ksm.sock");
    let _nobody_daemon = serve_with(as_nobody(&[]), &["--demo", "--socket", s(&sock)]);
    let o = root_unlock(&sock);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refusing to send it secrets"),
        "{}",
        text(&o)
    );
}

/// The packaged daemon runs as `ksm`, its socket in `/run/ksm`, which systemd made in root's
/// `/run` and gave to `ksm`: root's `keystore-unlock` talks to it. The same user's daemon in
/// a directory it could have made itself (under `/tmp`) gets nothing.
#[test]
fn root_trusts_the_daemon_of_the_user_root_gave_the_socket_directory_to() {
    if !root_or_skip("root_trusts_the_daemon_of_the_user_root_gave_the_socket_directory_to") {
        return;
    }
    let (_bin_dir, bin) = e2e_tests::runnable_copy(Path::new(KSM));
    let nobody_serve = |sock: &Path| {
        let mut c = Command::new(&bin);
        c.uid(NOBODY).gid(NOBODY);
        serve_with(c, &["--demo", "--socket", s(sock)])
    };
    let chown_nobody = |p: &Path| {
        nix::unistd::chown(p, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    };

    // As systemd lays it out: a root-only directory (like /run), in it one given to nobody.
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let given = run.path().join("ksm");
    std::fs::create_dir(&given).unwrap();
    std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o750)).unwrap();
    chown_nobody(&given);
    let sock = given.join("ksm.sock");
    let d = nobody_serve(&sock);
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}")).unwrap().uid(),
        NOBODY,
        "the daemon runs as nobody"
    );
    let o = root_unlock(&sock);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already unlocked"), "{}", text(&o));
    drop(d);

    // nobody's own directory in /tmp (writable by all): nobody could have made it.
    let own = tempfile::tempdir().unwrap();
    chown_nobody(own.path());
    let sock = own.path().join("ksm.sock");
    let _d = nobody_serve(&sock);
    let o = root_unlock(&sock);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refusing to send it secrets"),
        "{}",
        text(&o)
    );
}
