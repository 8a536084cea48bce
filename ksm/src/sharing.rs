//! The sharing socket: operator tools use the daemon's HSMs while it runs, the job pyhsm's
//! `yhsm-daemon` did. The daemon stays the only owner of each serial line; a tool's request
//! frames are queued to a device's owner thread like any decode.
//!
//! Protocol on a unix socket (mode 0600, so only the daemon's user and root get in), one
//! message at a time:
//!
//! | request | reply |
//! |---------|-------|
//! | `01` | `00 len:u16be` + device list, one `name state` line each |
//! | `02 device:u8 len:u8 frame[len]` | `00 len:u16be` + the response frame, or `01 len:u16be` + an error text |
//!
//! On the tool's side [`SharedLine`] carries the driver's frames, so every tool runs the same
//! driver code against a shared device as against `/dev/ttyACM0`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_proto::line::Line;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, warn};

use crate::pool::{Pool, PoolError};

/// Where the daemon listens, and the tools look, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ksm/ksm.sock";

const LIST: u8 = 1;
const FRAME: u8 = 2;
const OK: u8 = 0;
const ERR: u8 = 1;

/// Accepts tool connections until the listener fails or the task is dropped.
pub async fn serve(listener: UnixListener, pool: Arc<Pool>, reqtimeout: Duration) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(e) = session(&mut conn, &pool, reqtimeout).await {
                debug!(error = %e, "sharing socket session ended");
            }
        });
    }
}

async fn session(
    conn: &mut tokio::net::UnixStream,
    pool: &Pool,
    reqtimeout: Duration,
) -> io::Result<()> {
    loop {
        let tag = match conn.read_u8().await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (code, payload) = match tag {
            LIST => {
                let list: String = pool
                    .health()
                    .iter()
                    .map(|d| format!("{} {}\n", d.name, d.state().name()))
                    .collect();
                (OK, list.into_bytes())
            }
            FRAME => {
                let device = conn.read_u8().await?;
                let len = conn.read_u8().await?;
                let mut frame = zeroize::Zeroizing::new(vec![0u8; usize::from(len)]);
                conn.read_exact(&mut frame).await?;
                match pool
                    .frame(
                        usize::from(device),
                        frame.to_vec(),
                        Instant::now() + reqtimeout,
                    )
                    .await
                {
                    Ok(resp) => (OK, resp),
                    Err(e) => (ERR, pool_error_text(&e).into_bytes()),
                }
            }
            other => {
                warn!(tag = other, "unknown request on the sharing socket");
                return Ok(());
            }
        };
        let mut msg = vec![code];
        msg.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        msg.extend_from_slice(&payload);
        conn.write_all(&msg).await?;
    }
}

/// Binds a unix socket only its owner can use (mode 0600), replacing a stale socket file.
pub fn bind_private(path: &Path) -> Result<std::os::unix::net::UnixListener, crate::Error> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(crate::Error::Usage(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| crate::Error::io(format!("bind {}", path.display()), e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| crate::Error::io(format!("chmod {}", path.display()), e))?;
    Ok(listener)
}

fn pool_error_text(e: &PoolError) -> String {
    match e {
        PoolError::Hsm(e) => e.to_string(),
        PoolError::Locked => "HSM locked".into(),
        PoolError::Unavailable => "HSM unavailable".into(),
        PoolError::Timeout => "timeout".into(),
        PoolError::Overloaded => "overloaded".into(),
    }
}

fn read_reply(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 3];
    s.read_exact(&mut head)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[1], head[2]]))];
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
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
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

/// A [`Line`] to one of the daemon's devices through the sharing socket.
///
/// It frames what the driver writes: zero bytes between frames (the driver's resync burst)
/// are the daemon's business and are dropped; each complete request frame goes to the
/// daemon, and its response frame is what the driver reads next.
pub struct SharedLine {
    stream: UnixStream,
    device: u8,
    pending: Vec<u8>,
    out: VecDeque<u8>,
    error: Option<io::Error>,
}

impl SharedLine {
    /// Connects to `socket` for device `device`.
    pub fn connect(socket: &Path, device: u8) -> io::Result<SharedLine> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(SharedLine {
            stream,
            device,
            pending: Vec::new(),
            out: VecDeque::new(),
            error: None,
        })
    }

    fn send_frame(&mut self, frame: &[u8]) {
        let mut msg = vec![FRAME, self.device, frame.len() as u8];
        msg.extend_from_slice(frame);
        let result = self
            .stream
            .write_all(&msg)
            .and_then(|_| read_reply(&mut self.stream));
        zeroize::Zeroize::zeroize(&mut msg);
        match result {
            Ok(resp) => self.out.extend(resp),
            Err(e) => self.error = Some(e),
        }
    }
}

impl Write for SharedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.pending.is_empty()
                && (b == 0 || usize::from(b) > hsm_proto::codec::MAX_PAYLOAD + 1)
            {
                continue;
            }
            self.pending.push(b);
            if self.pending.len() == usize::from(self.pending[0]) + 1 {
                let frame = std::mem::take(&mut self.pending);
                self.send_frame(&frame);
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
        if self.out.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(self.out.len());
        for (slot, b) in buf.iter_mut().zip(self.out.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Line for SharedLine {
    fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
        Ok(())
    }
    fn clear_input(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pending.clear();
        Ok(())
    }
}
