//! The tools' side of the daemon's sharing socket: through it an operator tool uses a
//! device the running daemon (`ksm serve`) owns. The daemon's side imports the protocol's
//! codes from here, so both sides read them from one place.
//!
//! The protocol, on a unix socket (mode 0600, so only the daemon's user and root get in):
//!
//! | request | reply |
//! |---------|-------|
//! | `01` | `00 len:u16be` + device list, one `name state` line each |
//! | `02 device:u8 len:u8 frame[len]` | `00 len:u16be` + the response frame, or `01 len:u16be` + an error text |
//! | `03 device:u8` | none: the tool's operation on that device has ended |
//! | `04` | `00 len:u16be` + device list, one `kind state name` line each (`yubihsm1`, `yubihsm2`) |
//! | `05 device:u8 len:u8 password[len]` | `00 len:u16be` + `unlocked` or `already unlocked`, or `01 len:u16be` + an error text |
//!
//! [`SharedLine`] carries the driver's frames, so every tool runs the same driver code
//! against a shared device as against `/dev/ttyACM0`; the driver's
//! [`end_operation`](hsm_proto::line::Line::end_operation) sends `03`. Tools talk only to a
//! socket served by root, by their own user, or (root's tools) by the user root gave the
//! socket's directory to ([`trusted_daemon`]), since they send it master keys and secrets.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hsm_proto::codec::Assembler;
use hsm_proto::line::Line;
use zeroize::Zeroizing;

/// Where the daemon listens, and the tools look, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ksm/ksm.sock";

/// `01`: list the devices, `name state` a line.
pub(crate) const LIST: u8 = 1;
/// `02`: run a request frame on a device.
pub(crate) const FRAME: u8 = 2;
/// `03`: the tool's operation on a device has ended.
pub(crate) const RELEASE: u8 = 3;
/// `04`: list the devices, `kind state name` a line.
pub(crate) const LIST_KINDS: u8 = 4;
/// `05`: hand a YubiHSM 2 its authentication key's password.
pub(crate) const UNLOCK_HSM2: u8 = 5;
/// A reply's first byte: the request was served.
pub(crate) const OK: u8 = 0;
/// A reply's first byte: refused; an error text follows.
pub(crate) const ERR: u8 = 1;

/// The daemon's answer when it kept a password it could not check yet.
pub const PENDING: &str = "not reachable now: password kept, checked when the device answers";

/// How long a tool waits for a reply: longer than a lease can be held idle plus a frame's
/// deadline, so a tool queued behind another gets its turn rather than a timeout.
const TOOL_READ_TIMEOUT: Duration = Duration::from_secs(150);

/// Connects to the daemon's socket, refusing one served by anybody but a user this tool
/// trusts with master keys and YubiKey secrets ([`trusted_daemon`]). A socket we may not
/// open says so ("permission denied"), rather than looking like no daemon at all.
pub(crate) fn connect_trusted(socket: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(socket)?;
    let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if !trusted_daemon(cred.uid(), me, socket) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it is served by uid {}, neither root nor this user (uid {me}){}: refusing to send it secrets",
                cred.uid(),
                if me == 0 {
                    " nor the user its root-made directory was given to"
                } else {
                    ""
                }
            ),
        ));
    }
    stream.set_read_timeout(Some(TOOL_READ_TIMEOUT))?;
    Ok(stream)
}

/// Whether a tool run by `me` may send secrets to the daemon of uid `peer` on `socket`.
///
/// Any tool trusts root and its own user. Root's tools also trust the user that root gave
/// the socket's directory to: its owner, when the directory above it belongs to root and
/// only root may write there, so that nobody but root could have made the directory and
/// handed it over. That is what systemd does for the packaged unit (`RuntimeDirectory=ksm`
/// with `User=ksm` makes `/run/ksm` in root's `/run`, owned by `ksm`), so `sudo ksm
/// keystore-unlock` reaches the daemon of the user the unit names. A user's own daemon
/// cannot pass for it: any directory a user can make is in one that is not root's alone
/// (`/tmp`, a home), and a socket swapped in after the check is served by another uid than
/// the directory's owner, which is refused.
fn trusted_daemon(peer: u32, me: u32, socket: &Path) -> bool {
    peer == 0 || peer == me || (me == 0 && directory_given_by_root(socket) == Some(peer))
}

/// The owner of the directory holding `socket`, if root made it for that owner (see
/// [`trusted_daemon`]).
fn directory_given_by_root(socket: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).ok()?;
    let above = std::fs::metadata(dir.parent()?).ok()?;
    let root_only = above.uid() == 0 && above.mode() & 0o022 == 0;
    root_only.then(|| std::fs::metadata(&dir).ok().map(|m| m.uid()))?
}

pub(crate) fn read_reply(s: &mut UnixStream) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut head = [0u8; 3];
    s.read_exact(&mut head)?;
    let mut body = Zeroizing::new(vec![
        0u8;
        usize::from(u16::from_be_bytes([head[1], head[2]]))
    ]);
    s.read_exact(&mut body)?;
    if head[0] == OK {
        Ok(body)
    } else {
        Err(io::Error::other(format!(
            "daemon: {}",
            String::from_utf8_lossy(&body)
        )))
    }
}

/// The daemon's devices as `(name, state)`.
pub fn list_devices(socket: &Path) -> io::Result<Vec<(String, String)>> {
    let mut s = connect_trusted(socket)?;
    s.write_all(&[LIST])?;
    let body = read_reply(&mut s)?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(n, st)| (n.to_string(), st.to_string()))
        })
        .collect())
}

/// The daemon's devices as `(kind, state, name)`, kind `yubihsm1` or `yubihsm2`.
pub fn list_device_kinds(socket: &Path) -> io::Result<Vec<(String, String, String)>> {
    let mut s = connect_trusted(socket)?;
    s.write_all(&[LIST_KINDS])?;
    let body = read_reply(&mut s)?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect())
}

/// Hands `password` to the daemon's YubiHSM 2 number `device`; `Ok` with the daemon's
/// answer (`unlocked`, `already unlocked`), or the daemon's refusal as an error.
pub fn unlock_hsm2(socket: &Path, device: u8, password: &str) -> io::Result<String> {
    let len = u8::try_from(password.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the password is longer than 255 bytes",
        )
    })?;
    let mut s = connect_trusted(socket)?;
    let mut msg = Zeroizing::new(vec![UNLOCK_HSM2, device, len]);
    msg.extend_from_slice(password.as_bytes());
    s.write_all(&msg)?;
    let body = read_reply(&mut s)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A [`Line`] to one of the daemon's devices through the sharing socket.
///
/// It frames what the driver writes: zero bytes between frames (the driver's resync burst)
/// are the daemon's business and are dropped; each complete request frame goes to the
/// daemon, and its response frame is what the driver reads next.
pub struct SharedLine {
    stream: UnixStream,
    device: u8,
    pending: Assembler,
    /// The last response, read from `read_at` on; wiped once read.
    out: Zeroizing<Vec<u8>>,
    read_at: usize,
    error: Option<io::Error>,
    /// A frame went out since the last `end_operation`: the daemon holds our lease.
    in_operation: bool,
}

impl SharedLine {
    /// Connects to `socket` for device `device`.
    pub fn connect(socket: &Path, device: u8) -> io::Result<SharedLine> {
        Ok(SharedLine {
            stream: connect_trusted(socket)?,
            device,
            pending: Assembler::new(),
            out: Zeroizing::new(Vec::new()),
            read_at: 0,
            error: None,
            in_operation: false,
        })
    }

    fn send_frame(&mut self, frame: &[u8]) {
        let mut msg = Zeroizing::new(vec![FRAME, self.device, frame.len() as u8]);
        msg.extend_from_slice(frame);
        self.in_operation = true;
        let result = self
            .stream
            .write_all(&msg)
            .and_then(|_| read_reply(&mut self.stream));
        match result {
            Ok(resp) => self.out.extend_from_slice(&resp),
            Err(e) => self.error = Some(e),
        }
    }
}

impl Write for SharedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if let Some(frame) = self.pending.push(b) {
                self.send_frame(frame.as_bytes());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for SharedLine {
    /// Replies arrive whole with the request, so an empty queue means "nothing more".
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let left = &self.out[self.read_at..];
        if left.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(left.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.read_at += n;
        if self.read_at == self.out.len() {
            zeroize::Zeroize::zeroize(&mut *self.out);
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl Line for SharedLine {
    fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
        Ok(())
    }
    fn clear_input(&mut self) -> io::Result<()> {
        zeroize::Zeroize::zeroize(&mut *self.out);
        self.read_at = 0;
        self.pending.clear();
        Ok(())
    }
    /// Lets other tools use the device again (`03`).
    fn end_operation(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.in_operation) {
            self.stream.write_all(&[RELEASE, self.device])?;
        }
        Ok(())
    }
}
