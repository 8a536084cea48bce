//! The audit log: Get Log Entries (`0x4d`) and Set Log Index (`0x67`), and the 32-byte
//! entry both the device and a host that checks the log read.
//!
//! Each entry carries a digest that chains it to the entry before: the first 16 bytes of
//! SHA-256 over the entry's first 16 bytes followed by the previous entry's digest (what
//! python-yubihsm's `LogEntry.validate` checks, and what entries a real device printed
//! satisfy). A host that keeps the last digest it saw can therefore tell whether entries
//! went missing or were altered between two reads.

use sha2::{Digest, Sha256};

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Error, Result};

/// Get Log Entries request: no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetLogEntries;

/// One audit log entry (32 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// Sequence number (u16, wrapping): each entry's is its predecessor's plus one.
    pub number: u16,
    /// The command byte logged (`0x00` for a boot, `0xff` for a factory reset).
    pub command: u8,
    /// The command's data length.
    pub length: u16,
    /// The id of the session's authentication key (`0xffff` outside a session).
    pub session_key: u16,
    /// The object the command used first (`0xffff` if none).
    pub target_key: u16,
    /// The second object it used (`0xffff` if none).
    pub second_key: u16,
    /// The first byte of the answer: the command's response byte, or `0x7f` for a refusal.
    pub result: u8,
    /// The device's system tick when it ran the command.
    pub systick: u32,
    /// Truncated SHA-256 of [`LogEntry::data`] and the previous entry's digest.
    pub digest: [u8; LogEntry::DIGEST_LEN],
}

impl LogEntry {
    /// Size on the wire.
    pub const LEN: usize = 32;
    /// Size of the digest.
    pub const DIGEST_LEN: usize = 16;

    /// The entry's 16 bytes before its digest: what the digest covers.
    pub fn data(&self) -> [u8; 16] {
        let mut w = Writer::new();
        self.encode_data(&mut w);
        let mut out = [0u8; 16];
        out.copy_from_slice(&w.into_inner());
        out
    }

    fn encode_data(&self, w: &mut Writer) {
        w.u16(self.number)
            .u8(self.command)
            .u16(self.length)
            .u16(self.session_key)
            .u16(self.target_key)
            .u16(self.second_key)
            .u8(self.result)
            .u32(self.systick);
    }

    /// The digest an entry with `data` gets when it follows an entry whose digest is
    /// `previous`.
    pub fn chain(data: &[u8; 16], previous: &[u8; LogEntry::DIGEST_LEN]) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(data);
        h.update(previous);
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// True if this entry comes right after an entry numbered `previous_number` whose
    /// digest is `previous_digest`: the next number, and a digest chained from it. (Digests
    /// are public: no constant-time compare is needed.)
    pub fn follows(&self, previous_number: u16, previous_digest: &[u8; 16]) -> bool {
        self.number == previous_number.wrapping_add(1)
            && self.digest == LogEntry::chain(&self.data(), previous_digest)
    }

    /// The command logged, by name where the table has one.
    pub fn command_code(&self) -> CommandCode {
        CommandCode::from_u8(self.command)
    }
}

impl Message for LogEntry {
    fn encode(&self, w: &mut Writer) {
        self.encode_data(w);
        w.bytes(&self.digest);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(LogEntry {
            number: r.u16()?,
            command: r.u8()?,
            length: r.u16()?,
            session_key: r.u16()?,
            target_key: r.u16()?,
            second_key: r.u16()?,
            result: r.u8()?,
            systick: r.u32()?,
            digest: r.array()?,
        })
    }
}

/// Get Log Entries response: unlogged boots (u16), unlogged authentications (u16), the
/// number of entries (u8), then the entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogEntries {
    /// Boots the device could not log (force-audit on and the log full).
    pub unlogged_boots: u16,
    /// Session authentications it could not log.
    pub unlogged_auths: u16,
    /// The entries not yet released by Set Log Index, oldest first.
    pub entries: Vec<LogEntry>,
}

impl Message for GetLogEntries {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetLogEntries)
    }
}

impl Message for LogEntries {
    fn encode(&self, w: &mut Writer) {
        // A device holds at most 62 entries; more cannot be counted in the byte.
        let n = self.entries.len().min(usize::from(u8::MAX));
        w.u16(self.unlogged_boots)
            .u16(self.unlogged_auths)
            .u8(n as u8);
        for e in &self.entries[..n] {
            e.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let unlogged_boots = r.u16()?;
        let unlogged_auths = r.u16()?;
        let n = usize::from(r.u8()?);
        if r.remaining() != n * LogEntry::LEN {
            return Err(Error::InvalidField {
                cmd: CommandCode::GetLogEntries,
                field: "entry count",
            });
        }
        let entries = (0..n)
            .map(|_| LogEntry::decode(r))
            .collect::<Result<Vec<_>>>()?;
        Ok(LogEntries {
            unlogged_boots,
            unlogged_auths,
            entries,
        })
    }
}

impl Command for GetLogEntries {
    const CODE: CommandCode = CommandCode::GetLogEntries;
    type Response = LogEntries;
}

/// Set Log Index request: the number of the last entry the host has kept (u16). The
/// device then frees every entry up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetLogIndex {
    /// The last entry read.
    pub index: u16,
}

impl Message for SetLogIndex {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.index);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SetLogIndex { index: r.u16()? })
    }
}

impl Command for SetLogIndex {
    const CODE: CommandCode = CommandCode::SetLogIndex;
    type Response = EmptyResponse;
}
