//! A YubiHSM 2's audit log as the KSM keeps it: one JSON line per entry in an append-only
//! file, and the digest chain checked across reads, drains and restarts.
//!
//! The device keeps at most 62 entries; with `force-audit` on it refuses logged commands
//! once they are all unread, so a host must read them and move the log index on
//! (`hsm2_proto::cmd::SetLogIndex`). Each entry's digest covers the one before
//! (`hsm2_proto::cmd::LogEntry::follows`), so whoever keeps the last entry of one read can
//! tell whether the next read carries on from it: nothing lost, nothing altered. The file
//! is that keeper: the last line written for a device (by serial number) is its anchor,
//! read back when the file is opened again, so a restart checks the chain as a drain does.
//!
//! Each line: `device` (its name in the daemon), `serial`, the entry's fields by name
//! (`number`, `command` (its name), `command_code`, `length`, `session_key`, `target_key`,
//! `second_key`, `result`, `systick`, `digest` in hex), and `chain`: `ok` (follows the
//! anchor), `start` (the first entry seen of this device) or `break` (it does not follow:
//! entries were lost, overwritten without `force-audit`, or altered, or the device was
//! factory reset).
//!
//! One writer per file: [`AuditFile::open`] takes an exclusive `flock` on it (the daemon and
//! `ksm hsm2-log --audit-log` alike), so a second writer is refused instead of interleaving
//! its lines with the first's and breaking both chains. The file must be private (mode 0600
//! or stricter, as key files are): the entries say which keys were used when.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hsm2_proto::cmd::{LogEntries, LogEntry};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::Error;

/// How an entry relates to the one kept before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// It follows the anchor: the next number, its digest chained from the anchor's.
    Ok,
    /// No anchor: the first entry seen of this device.
    Start,
    /// It does not follow the anchor.
    Break,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The device's name in the daemon (its connector URL, `usb`, …).
    pub device: String,
    /// Its serial number: what the anchor is kept by.
    pub serial: u32,
    /// The entry's number.
    pub number: u16,
    /// The command's name (python-yubihsm's, or the byte in hex).
    pub command: String,
    /// The command byte.
    pub command_code: u8,
    /// The command's data length.
    pub length: u16,
    /// The session's authentication key.
    pub session_key: u16,
    /// The first object the command used.
    pub target_key: u16,
    /// The second.
    pub second_key: u16,
    /// The first byte of the answer.
    pub result: u8,
    /// The device's tick.
    pub systick: u32,
    /// The digest, in hex.
    pub digest: String,
    /// How it relates to the entry before it.
    pub chain: Link,
}

impl Line {
    /// The line for `e` of device `device` (serial `serial`).
    pub fn new(device: &str, serial: u32, e: &LogEntry, chain: Link) -> Line {
        Line {
            device: device.to_string(),
            serial,
            number: e.number,
            command: match e.command {
                0x00 => "boot".into(),
                0xff => "reset".into(),
                c => hsm2_proto::CommandCode::from_u8(c).name().into_owned(),
            },
            command_code: e.command,
            length: e.length,
            session_key: e.session_key,
            target_key: e.target_key,
            second_key: e.second_key,
            result: e.result,
            systick: e.systick,
            digest: hex::encode(e.digest),
            chain,
        }
    }

    fn anchor(&self) -> Option<Anchor> {
        let digest = hex::decode(&self.digest).ok()?.try_into().ok()?;
        Some(Anchor {
            number: self.number,
            digest,
        })
    }
}

/// The last entry kept of a device: what the next one must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Its number.
    pub number: u16,
    /// Its digest.
    pub digest: [u8; 16],
}

impl Anchor {
    /// The anchor `e` leaves.
    pub fn of(e: &LogEntry) -> Anchor {
        Anchor {
            number: e.number,
            digest: e.digest,
        }
    }
}

/// The entries of `read` not yet kept, and how each links to the one before. Entries up to
/// and including the anchor (a read repeated after a drain whose Set Log Index did not
/// happen) are skipped.
pub fn link(anchor: Option<Anchor>, read: &[LogEntry]) -> Vec<(LogEntry, Link)> {
    let start = anchor
        .and_then(|a| {
            read.iter()
                .position(|e| e.number == a.number && e.digest == a.digest)
        })
        .map_or(0, |p| p + 1);
    let mut prev = anchor;
    read[start..]
        .iter()
        .map(|e| {
            let l = match prev {
                None => Link::Start,
                Some(a) if e.follows(a.number, &a.digest) => Link::Ok,
                Some(_) => Link::Break,
            };
            prev = Some(Anchor::of(e));
            (*e, l)
        })
        .collect()
}

/// What one [`AuditFile::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// Lines written.
    pub written: usize,
    /// Of them, chain breaks.
    pub breaks: usize,
    /// The number of the last entry now kept (what Set Log Index may release up to).
    pub last: Option<u16>,
}

/// The append-only file and each device's anchor.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    file: Flock<File>,
    anchors: HashMap<u32, Anchor>,
}

impl AuditFile {
    /// Opens (or creates, mode 0600) the file for appending and reads each device's anchor
    /// from its last line. A line that does not parse (one a crash cut short) is skipped
    /// and said so: the next entry then shows whether anything is missing. Refused: a file
    /// that group or other users may access (a logrotate `create 0644`, say), and one
    /// another writer holds (its `flock`).
    pub fn open(path: &Path) -> Result<AuditFile, Error> {
        let what = || format!("YubiHSM 2 audit log {}", path.display());
        let options = |create_new: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.append(true).read(true).mode(0o600);
            if create_new {
                o.create_new(true);
            }
            o
        };
        let (file, created) = match options(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
                options(false)
                    .open(path)
                    .map_err(|e| Error::io(what(), e))?,
                false,
            ),
            Err(e) => return Err(Error::io(what(), e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(what(), e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!("{}: not a regular file", what())));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "{} has mode {:04o}, so other users may read which keys were used when; run `chmod 600 {}` (and make log rotation create it 0600)",
                what(),
                mode & 0o7777,
                path.display()
            )));
        }
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::Usage(format!(
                "{} is in use by another writer (a daemon or `ksm hsm2-log --audit-log`): {e}; drain each device from exactly one daemon",
                what()
            ))
        })?;
        if created {
            // The new name is durable only once its directory is.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(what(), e))?;
        }
        let mut anchors = HashMap::new();
        let reader = BufReader::new(file.try_clone().map_err(|e| Error::io(what(), e))?);
        for (n, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| Error::io(what(), e))?;
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line)
                .ok()
                .and_then(|l| Some((l.serial, l.anchor()?)))
            {
                Some((serial, a)) => {
                    anchors.insert(serial, a);
                }
                None => {
                    warn!(file = %path.display(), line = n + 1, "YubiHSM 2 audit log: a line that is not an entry is skipped")
                }
            }
        }
        let mut file = file;
        let len = file.metadata().map_err(|e| Error::io(what(), e))?.len();
        let mut last = [b'\n'];
        if len > 0 {
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut last, len - 1)
                .map_err(|e| Error::io(what(), e))?;
        }
        if last[0] != b'\n' {
            // A line a crash cut short: the next one starts on a line of its own.
            file.write_all(b"\n").map_err(|e| Error::io(what(), e))?;
        }
        Ok(AuditFile {
            path: path.to_path_buf(),
            file,
            anchors,
        })
    }

    /// Opens the path again (SIGHUP, after a log rotation moved the file away): appends go
    /// to whatever file the path names now, and the anchors kept in memory go on, so the
    /// new file's first entries are checked against the old file's last ones. A path that
    /// cannot be opened keeps the file in use.
    pub fn reopen(&mut self) -> Result<(), Error> {
        // The path still names the file in use (a SIGHUP without a rotation, or one device
        // after another of the same daemon): nothing to do, and nothing to read again.
        if let (Ok(now), Ok(open)) = (std::fs::metadata(&self.path), self.file.metadata()) {
            if (now.dev(), now.ino()) == (open.dev(), open.ino()) {
                return Ok(());
            }
        }
        let fresh = AuditFile::open(&self.path)?;
        self.file = fresh.file;
        for (serial, a) in fresh.anchors {
            self.anchors.insert(serial, a);
        }
        Ok(())
    }

    /// The anchor kept for the device with serial `serial`.
    pub fn anchor(&self, serial: u32) -> Option<Anchor> {
        self.anchors.get(&serial).copied()
    }

    /// Appends the entries of `read` not yet kept, checked against the device's anchor,
    /// and makes them durable (`fsync`) before returning: only then may the device release
    /// them. A break is logged as an error.
    pub fn append(
        &mut self,
        device: &str,
        serial: u32,
        read: &LogEntries,
    ) -> Result<Appended, Error> {
        let linked = link(self.anchor(serial), &read.entries);
        let mut text = String::new();
        let mut out = Appended {
            last: read.entries.last().map(|e| e.number),
            ..Appended::default()
        };
        for (e, l) in &linked {
            if *l == Link::Break {
                out.breaks += 1;
                tracing::error!(device, serial, number = e.number, "YubiHSM 2 audit log: the digest chain is broken (entries lost, overwritten or altered, or the device was reset)");
            }
            // A struct of numbers and strings always serialises.
            let line = serde_json::to_string(&Line::new(device, serial, e, *l))
                .map_err(|e| Error::io("YubiHSM 2 audit log line", std::io::Error::other(e)))?;
            text.push_str(&line);
            text.push('\n');
        }
        if read.unlogged_boots > 0 || read.unlogged_auths > 0 {
            warn!(
                device,
                serial,
                boots = read.unlogged_boots,
                authentications = read.unlogged_auths,
                "the YubiHSM 2 could not log some events (its log was full with force-audit on)"
            );
        }
        if linked.is_empty() {
            return Ok(out);
        }
        let what = || format!("YubiHSM 2 audit log {}", self.path.display());
        append_whole(&mut *self.file, text.as_bytes()).map_err(|e| Error::io(what(), e))?;
        if let Some((e, _)) = linked.last() {
            self.anchors.insert(serial, Anchor::of(e));
        }
        out.written = linked.len();
        Ok(out)
    }
}

/// What [`append_whole`] needs of the file (a test gives it one that fails part-way).
trait LogFile: Write {
    fn size(&self) -> std::io::Result<u64>;
    fn sync(&self) -> std::io::Result<()>;
    fn cut(&self, len: u64) -> std::io::Result<()>;
}

impl LogFile for File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn sync(&self) -> std::io::Result<()> {
        self.sync_data()
    }
    fn cut(&self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.sync_data()
    }
}

/// Appends `text` and makes it durable, or cuts the file back to where it was: a write
/// cut short (a full disk) must not leave a fragment that the next append's first line
/// would be glued to.
fn append_whole(f: &mut impl LogFile, text: &[u8]) -> std::io::Result<()> {
    let before = f.size()?;
    let r = f.write_all(text).and_then(|()| f.sync());
    if r.is_err() {
        if let Err(e) = f.cut(before) {
            warn!(error = %e, "YubiHSM 2 audit log: a failed append could not be cut back; the next open starts a new line after it");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(first: u16, n: usize, prev: [u8; 16]) -> Vec<LogEntry> {
        let mut prev = prev;
        (0..n)
            .map(|i| {
                let mut e = LogEntry {
                    number: first.wrapping_add(i as u16),
                    command: 0x60,
                    length: 54,
                    session_key: 2,
                    target_key: 0x10,
                    second_key: 0xffff,
                    result: 0xe0,
                    systick: i as u32,
                    digest: [0; 16],
                };
                e.digest = LogEntry::chain(&e.data(), &prev);
                prev = e.digest;
                e
            })
            .collect()
    }

    fn read(entries: Vec<LogEntry>) -> LogEntries {
        LogEntries {
            unlogged_boots: 0,
            unlogged_auths: 0,
            entries,
        }
    }

    #[test]
    fn a_file_keeps_the_chain_across_drains_repeats_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let all = chain(0xfffe, 10, [7; 16]);
        let mut f = AuditFile::open(&path).unwrap();
        let a = f.append("dev", 42, &read(all[..4].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks, a.last), (4, 0, Some(1)));
        // The same read again (Set Log Index did not happen), plus one more.
        let a = f.append("dev", 42, &read(all[..5].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (1, 0));
        drop(f);
        let mut f = AuditFile::open(&path).unwrap();
        assert_eq!(f.anchor(42), Some(Anchor::of(&all[4])));
        let a = f.append("dev", 42, &read(all[5..].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (5, 0));
        let lines: Vec<Line> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0].chain, Link::Start);
        assert!(lines[1..].iter().all(|l| l.chain == Link::Ok));
        assert_eq!(lines[2].number, 0);
        assert_eq!(lines[0].command, "decrypt-otp");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn a_reopen_after_rotation_writes_the_new_file_and_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let all = chain(1, 4, [0; 16]);
        let mut f = AuditFile::open(&path).unwrap();
        f.append("dev", 1, &read(all[..2].to_vec())).unwrap();
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        f.reopen().unwrap();
        let a = f.append("dev", 1, &read(all[2..].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (2, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Line> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].number, lines[0].chain), (3, Link::Ok));
    }

    #[test]
    fn a_gap_or_an_altered_entry_is_a_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let all = chain(1, 10, [0; 16]);
        let mut f = AuditFile::open(&path).unwrap();
        f.append("dev", 1, &read(all[..3].to_vec())).unwrap();
        let a = f.append("dev", 1, &read(all[4..6].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (2, 1), "entry 4 is missing");
        let mut altered = all[6..8].to_vec();
        altered[0].result = 0x7f;
        let a = f.append("dev", 1, &read(altered)).unwrap();
        assert_eq!(
            (a.written, a.breaks),
            (2, 1),
            "the altered entry: its digest no longer covers it"
        );
        // Another device has its own chain.
        let a = f.append("other", 2, &read(all[..2].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (2, 0));
        // A cut-short last line is skipped when the file is opened again.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"device\":\"dev\",\"ser")
            .unwrap();
        drop(f);
        let mut f = AuditFile::open(&path).unwrap();
        assert_eq!(f.anchor(2), Some(Anchor::of(&all[1])));
        // The next line starts on a line of its own, and follows.
        let a = f.append("other", 2, &read(all[2..3].to_vec())).unwrap();
        assert_eq!((a.written, a.breaks), (1, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Line = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!((line.serial, line.number, line.chain), (2, 3, Link::Ok));
    }

    #[test]
    fn a_second_writer_and_a_shared_file_are_refused_and_a_reopen_of_the_same_file_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut f = AuditFile::open(&path).unwrap();
        let e = AuditFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("in use by another writer"), "{e}");
        // SIGHUP without a rotation: the file in use stays (it holds the lock).
        f.reopen().unwrap();
        f.append("dev", 1, &read(chain(1, 2, [0; 16]))).unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuditFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }

    /// Takes `room` bytes, then fails like a full disk.
    struct Full {
        data: std::cell::RefCell<Vec<u8>>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut d = self.data.borrow_mut();
            let n = buf.len().min(self.room.saturating_sub(d.len()));
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            d.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogFile for Full {
        fn size(&self) -> std::io::Result<u64> {
            Ok(self.data.borrow().len() as u64)
        }
        fn sync(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn cut(&self, len: u64) -> std::io::Result<()> {
            self.data.borrow_mut().truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn an_append_cut_short_leaves_no_fragment() {
        let mut f = Full {
            data: std::cell::RefCell::new(b"{\"a\":1}\n".to_vec()),
            room: 12,
        };
        assert!(append_whole(&mut f, b"{\"b\":2}\n").is_err());
        assert_eq!(f.data.borrow().as_slice(), b"{\"a\":1}\n");
        f.room = 100;
        append_whole(&mut f, b"{\"b\":2}\n").unwrap();
        assert_eq!(f.data.borrow().as_slice(), b"{\"a\":1}\n{\"b\":2}\n");
    }
}
