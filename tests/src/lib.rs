//! Support for end-to-end tests: the project's fixtures, OTPs from Yubico's `ykgenerate`, a
//! raw HTTP/1.1 client (answers are compared byte for byte), and emulators on real ptys.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hsm_proto::emulator::{EmulatorConfig, PtyEmulator, ResolvedConfig};

pub use test_support::{fixtures, otp_vectors, vector_otp, ykgenerate};

/// An emulator configuration from `fixtures/emulator/`.
pub fn emulator_config(name: &str) -> ResolvedConfig {
    EmulatorConfig::parse(&test_support::emulator_fixture(name))
        .expect("parse")
        .resolve()
        .expect("resolve")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// Sends raw request bytes and reads the whole answer (the request should close the
/// connection).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer { status, body }
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Answer {
    raw(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: ksm\r\nUser-Agent: YK-VAL\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// An emulator on a pty whose link lives in its own temp dir.
pub struct Device {
    /// The emulator.
    pub emu: PtyEmulator,
    /// Holds the link's directory.
    pub dir: tempfile::TempDir,
}

impl Device {
    /// Starts `cfg` on a new pty.
    pub fn start(cfg: &ResolvedConfig) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = PtyEmulator::start(cfg, &dir.path().join("ttyYHSM")).expect("emulator");
        Device { emu, dir }
    }

    /// The link path (what `-D` takes).
    pub fn path(&self) -> PathBuf {
        self.emu.link().to_path_buf()
    }
}

/// A `ksm emulate` process (spawned by a test that has the binary), killed on drop.
pub struct EmulateProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its pty link (what `-D` takes).
    pub link: PathBuf,
    /// Its control socket.
    pub control: PathBuf,
}

impl EmulateProcess {
    /// Runs `ksm emulate ARGS --pty DIR/ttyYHSM --control DIR/ctl` and waits for both.
    pub fn start(ksm: &Path, args: &[&str], dir: &Path) -> EmulateProcess {
        let link = dir.join("ttyYHSM");
        let control = dir.join("ctl");
        let child = std::process::Command::new(ksm)
            .arg("emulate")
            .args(args)
            .arg("--pty")
            .arg(&link)
            .arg("--control")
            .arg(&control)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ksm emulate");
        let emu = EmulateProcess {
            child,
            link,
            control,
        };
        wait_for_path(&emu.control);
        wait_for_path(&emu.link);
        emu
    }

    /// Sends one control command; returns the answer line.
    pub fn control(&self, line: &str) -> String {
        control(&self.control, line)
    }
}

impl Drop for EmulateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ksm emulate --hsm2` process (spawned by a test that has the binary), killed on drop.
pub struct Hsm2EmulateProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its connector URL (`http://127.0.0.1:PORT`), from the line it prints first.
    pub url: String,
    /// Its control socket.
    pub control: PathBuf,
}

impl Hsm2EmulateProcess {
    /// Runs `ksm emulate --hsm2 --listen 127.0.0.1:0 [--config CONFIG] --control CONTROL`
    /// and waits (at most 20 s) for its URL and its control socket.
    pub fn start(ksm: &Path, config: Option<&Path>, control: PathBuf) -> Hsm2EmulateProcess {
        use std::io::BufRead as _;
        let mut cmd = std::process::Command::new(ksm);
        cmd.args(["emulate", "--hsm2", "--listen", "127.0.0.1:0", "--control"])
            .arg(&control)
            .stdout(std::process::Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("ksm emulate --hsm2");
        let out = child.stdout.take().expect("its stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(out).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the emulator never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ksm emulate --hsm2 printed nothing within 20 s")
            .expect("its first line")
            .expect("a line of text");
        let url = line
            .strip_prefix("emulated YubiHSM 2 at ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let emu = Hsm2EmulateProcess {
            child,
            url,
            control,
        };
        wait_for_path(&emu.control);
        emu
    }

    /// Sends one line to its control socket; the answer.
    pub fn control(&self, line: &str) -> String {
        control(&self.control, line)
    }
}

impl Drop for Hsm2EmulateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 10 s) until `path` exists, a link or not.
pub fn wait_for_path(path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::symlink_metadata(path).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one command to a `ksm emulate --control` socket; returns the answer line.
pub fn control(sock: &Path, line: &str) -> String {
    use std::io::BufRead;
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("control socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    writeln!(s, "{line}").expect("send control command");
    let mut reply = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut reply)
        .expect("control answer");
    reply.trim().to_string()
}

/// Waits for a spawned `ksm serve` (stdout piped) to print its `ksm listening on http://…`
/// line and returns the address it is serving on.
pub fn listening_addr(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let mut line = String::new();
    let out = child
        .stdout
        .take()
        .expect("ksm serve's stdout must be piped");
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read ksm serve's stdout");
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listening line from ksm serve: {line:?}"))
}

/// A private copy of the fixture AEADs, so tests can damage them.
pub fn aead_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("aead-files/store"), d.path());
    d
}

/// Copies a directory tree (directories and regular files).
pub fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// One sample from the daemon's `/metrics`: the value on the first line that starts with
/// `name` (e.g. `ksm_hsm_state{` or `ksm_http_connections `) and contains `label` (`""` for
/// any). `None` if there is no such line. HELP and TYPE lines start with `#`, so they never
/// match.
pub fn metric(addr: SocketAddr, name: &str, label: &str) -> Option<u64> {
    get(addr, "/metrics")
        .body
        .lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Open file descriptors of process `pid` (0 if it cannot be read).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid` in bytes (`VmRSS`; 0 if it cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A finished command's standard output and error, as one text for assertions and
/// failure messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The user tests run a process as when they run as root, so that file permissions apply
/// to it as they do to the daemon's own user in production.
pub const NOBODY: u32 = 65534;

/// Makes `path` and everything below it readable (directories searchable) by every user.
pub fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read dir").flatten() {
            open_up(&e.path());
        }
    }
}

/// A copy of the binary `bin` that every user can run, for tests that run it as
/// [`NOBODY`] (the checkout it was built in may be out of their reach). The copy lives as
/// long as the returned directory.
pub fn runnable_copy(bin: &Path) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join(bin.file_name().expect("a file"));
    std::fs::copy(bin, &copy).expect("copy binary");
    open_up(dir.path());
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, copy)
}
