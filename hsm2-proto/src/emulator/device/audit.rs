//! The device's audit log and the two options that govern it.
//!
//! The log store holds [`LOG_CAPACITY`] entries not yet released by Set Log Index. Which
//! commands are logged is `command-audit`'s per-command setting (all off on a factory
//! firmware 2.3.1); what happens when the store is full is `force-audit`'s: off, the oldest
//! entry is overwritten; on, a command that would be logged is refused with `log-full`
//! until the host reads the log and moves the index on. Entries chain by digest
//! ([`LogEntry::chain`]), across overwrites, releases and reboots; a factory reset starts a
//! new chain.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::cmd::{AuditSetting, LogEntries, LogEntry};
use crate::CommandCode;

/// Entries the log store holds (Yubico's figure; Device Info reports it).
pub const LOG_CAPACITY: usize = 62;

/// The digest of the entry a factory reset writes first. Yubico does not say how the
/// device derives it; this is the value real YubiHSM 2s showed after a reset in published
/// `audit get` transcripts, so that the chain after a reset is byte for byte a device's.
const RESET_DIGEST: [u8; 16] = [
    0x33, 0x01, 0x26, 0x57, 0x53, 0x7e, 0x48, 0x42, 0xf5, 0x7f, 0xa6, 0xed, 0x3b, 0x09, 0xb2, 0x5b,
];

/// The command codes firmware 2.3.1 knows, in the order Yubico's Get Option example lists
/// them for `command-audit` (the 2.4 commands `0x73` to `0x77` left out): what Get Option
/// answers pairs for, and the only codes Set Option accepts.
pub const AUDITABLE_COMMANDS: [u8; 60] = [
    0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x08, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    0x55, 0x56, 0x48, 0x49, 0x57, 0x4a, 0x4b, 0x4c, 0x4d, 0x67, 0x4e, 0x4f, 0x50, 0x51, 0x52, 0x53,
    0x54, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x0a, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72,
];

/// What one command did, for its entry.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The command byte.
    pub command: u8,
    /// Its data length.
    pub length: u16,
    /// The session's authentication key, or `0xffff`.
    pub session_key: u16,
    /// The first object it used, or `0xffff`.
    pub target_key: u16,
    /// The second, or `0xffff`.
    pub second_key: u16,
    /// The answer's first byte.
    pub result: u8,
}

/// The log store, its counters and the audit options.
#[derive(Debug, Clone)]
pub struct AuditLog {
    entries: VecDeque<LogEntry>,
    last_number: u16,
    last_digest: [u8; 16],
    unlogged_boots: u16,
    unlogged_auths: u16,
    force: AuditSetting,
    commands: BTreeMap<u8, AuditSetting>,
    booted: Instant,
}

/// Why Set Option or Set Log Index was refused (the device's `invalid-data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

impl AuditLog {
    /// The log after a factory reset and the boot that follows: the reset entry (number 1,
    /// every field `0xff`), then the boot entry; every option off.
    pub fn factory(now: Instant) -> AuditLog {
        let reset = LogEntry {
            number: 1,
            command: 0xff,
            length: 0xffff,
            session_key: 0xffff,
            target_key: 0xffff,
            second_key: 0xffff,
            result: 0xff,
            systick: 0xffff_ffff,
            digest: RESET_DIGEST,
        };
        let mut log = AuditLog {
            entries: VecDeque::from([reset]),
            last_number: reset.number,
            last_digest: reset.digest,
            unlogged_boots: 0,
            unlogged_auths: 0,
            force: AuditSetting::Off,
            commands: AUDITABLE_COMMANDS
                .iter()
                .map(|&c| (c, AuditSetting::Off))
                .collect(),
            booted: now,
        };
        log.boot(now);
        log
    }

    /// A power-on: the boot entry (command 0, session key `0xffff`, every other field 0),
    /// or one more unlogged boot if a forced log is full.
    pub fn boot(&mut self, now: Instant) {
        self.booted = now;
        let logged = self.append(
            Event {
                command: 0,
                length: 0,
                session_key: 0xffff,
                target_key: 0,
                second_key: 0,
                result: 0,
            },
            Some(0),
        );
        if !logged {
            self.unlogged_boots = self.unlogged_boots.saturating_add(1);
        }
    }

    /// Entries held, not yet released.
    pub fn used(&self) -> usize {
        self.entries.len()
    }

    /// True if `command` is logged.
    pub fn logs(&self, command: u8) -> bool {
        self.commands.get(&command).is_some_and(|s| s.is_on())
    }

    /// True if `command` must be refused with `log-full`: it would be logged, the store is
    /// full and `force-audit` is on. The commands that let a host empty the log, and those
    /// that open or close a session, are never refused (Yubico: opening a session is
    /// always allowed, so that the log can always be read).
    pub fn blocks(&self, command: u8) -> bool {
        const ALWAYS: [CommandCode; 6] = [
            CommandCode::CreateSession,
            CommandCode::AuthenticateSession,
            CommandCode::CloseSession,
            CommandCode::DeviceInfo,
            CommandCode::GetLogEntries,
            CommandCode::SetLogIndex,
        ];
        self.force.is_on()
            && self.full()
            && self.logs(command)
            && !ALWAYS.iter().any(|c| c.to_u8() == command)
    }

    fn full(&self) -> bool {
        self.entries.len() >= LOG_CAPACITY
    }

    /// Logs `e` if its command is logged, at `now`. A session authentication that a full
    /// forced log cannot take is counted instead.
    pub fn record(&mut self, e: Event, now: Instant) {
        if !self.logs(e.command) {
            return;
        }
        let tick = now.saturating_duration_since(self.booted).as_millis();
        let logged = self.append(e, Some(u32::try_from(tick).unwrap_or(u32::MAX)));
        if !logged && e.command == CommandCode::AuthenticateSession.to_u8() {
            self.unlogged_auths = self.unlogged_auths.saturating_add(1);
        }
    }

    /// Appends an entry; false if a full forced log has no room for it.
    fn append(&mut self, e: Event, systick: Option<u32>) -> bool {
        if self.full() {
            if self.force.is_on() {
                return false;
            }
            self.entries.pop_front();
        }
        let mut entry = LogEntry {
            number: self.last_number.wrapping_add(1),
            command: e.command,
            length: e.length,
            session_key: e.session_key,
            target_key: e.target_key,
            second_key: e.second_key,
            result: e.result,
            systick: systick.unwrap_or(0),
            digest: [0; 16],
        };
        entry.digest = LogEntry::chain(&entry.data(), &self.last_digest);
        self.last_number = entry.number;
        self.last_digest = entry.digest;
        self.entries.push_back(entry);
        true
    }

    /// What Get Log Entries answers: the counters and every entry held, oldest first.
    pub fn entries(&self) -> LogEntries {
        LogEntries {
            unlogged_boots: self.unlogged_boots,
            unlogged_auths: self.unlogged_auths,
            entries: self.entries.iter().copied().collect(),
        }
    }

    /// Set Log Index: releases every entry up to number `index`, and zeroes the unlogged
    /// counters (the host has read them with the entries). An index before the oldest
    /// entry held releases nothing; one past the newest is `invalid-data`.
    pub fn release(&mut self, index: u16) -> Result<(), Invalid> {
        // Numbers wrap: measure backwards from the newest entry.
        let behind = self.last_number.wrapping_sub(index);
        if behind >= 0x8000 {
            return Err(Invalid);
        }
        while self
            .entries
            .front()
            .is_some_and(|e| self.last_number.wrapping_sub(e.number) >= behind)
        {
            self.entries.pop_front();
        }
        self.unlogged_boots = 0;
        self.unlogged_auths = 0;
        Ok(())
    }

    /// `force-audit`'s value.
    pub fn force_audit(&self) -> AuditSetting {
        self.force
    }

    /// Sets `force-audit` (one byte: off, on or fixed). A fixed setting stays.
    pub fn set_force_audit(&mut self, value: &[u8]) -> Result<(), Invalid> {
        let [b] = value else { return Err(Invalid) };
        let new = valid_setting(*b)?;
        if self.force == AuditSetting::Fixed && new != AuditSetting::Fixed {
            return Err(Invalid);
        }
        self.force = new;
        Ok(())
    }

    /// `command-audit`'s value: a command byte and its setting for every command known.
    pub fn command_audit(&self) -> Vec<u8> {
        AUDITABLE_COMMANDS
            .iter()
            .flat_map(|c| {
                [
                    *c,
                    self.commands
                        .get(c)
                        .copied()
                        .unwrap_or(AuditSetting::Off)
                        .to_u8(),
                ]
            })
            .collect()
    }

    /// Sets `command-audit` for the commands listed (pairs of command byte and setting);
    /// all or nothing: an unknown command, a bad setting or lowering a fixed one refuses
    /// the whole value.
    pub fn set_command_audit(&mut self, value: &[u8]) -> Result<(), Invalid> {
        if value.is_empty() || value.len() % 2 != 0 {
            return Err(Invalid);
        }
        let mut new = self.commands.clone();
        for pair in value.chunks(2) {
            let setting = valid_setting(pair[1])?;
            let old = new.get_mut(&pair[0]).ok_or(Invalid)?;
            if *old == AuditSetting::Fixed && setting != AuditSetting::Fixed {
                return Err(Invalid);
            }
            *old = setting;
        }
        self.commands = new;
        Ok(())
    }
}

fn valid_setting(b: u8) -> Result<AuditSetting, Invalid> {
    match AuditSetting::from_u8(b) {
        AuditSetting::Unknown(_) => Err(Invalid),
        s => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(command: u8) -> Event {
        Event {
            command,
            length: 3,
            session_key: 1,
            target_key: 0xffff,
            second_key: 0xffff,
            result: command | 0x80,
        }
    }

    fn chain_holds(entries: &[LogEntry]) -> bool {
        entries
            .windows(2)
            .all(|w| w[1].follows(w[0].number, &w[0].digest))
    }

    #[test]
    fn a_factory_log_is_the_reset_and_boot_entries_a_device_shows() {
        let log = AuditLog::factory(Instant::now());
        let e = log.entries().entries;
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].data()[..2], [0, 1]);
        assert!(e[0].data()[2..].iter().all(|b| *b == 0xff));
        // The boot entry a real device wrote after its reset entry, digest included
        // (published `audit get` output).
        assert_eq!(e[1].number, 2);
        assert_eq!(
            e[1].digest,
            [
                0xfc, 0x15, 0x30, 0x91, 0x56, 0x0e, 0x18, 0xbc, 0xa8, 0x26, 0x21, 0x52, 0x2c, 0x85,
                0xbd, 0xba
            ]
        );
        assert!(chain_holds(&e));
    }

    #[test]
    fn only_audited_commands_are_logged_and_the_chain_survives_overwrites() {
        let mut log = AuditLog::factory(Instant::now());
        log.record(event(0x60), Instant::now());
        assert_eq!(log.used(), 2, "command-audit is off by default");
        log.set_command_audit(&[0x60, 1]).unwrap();
        for _ in 0..100 {
            log.record(event(0x60), Instant::now());
        }
        let e = log.entries().entries;
        assert_eq!(e.len(), LOG_CAPACITY, "circular without force-audit");
        assert_eq!(e.last().unwrap().number, 102);
        assert!(chain_holds(&e));
    }

    #[test]
    fn a_full_forced_log_blocks_until_released() {
        let mut log = AuditLog::factory(Instant::now());
        log.set_command_audit(&[0x60, 1, 0x04, 1, 0x67, 1]).unwrap();
        log.set_force_audit(&[1]).unwrap();
        while !log.blocks(0x60) {
            log.record(event(0x60), Instant::now());
        }
        assert_eq!(log.used(), LOG_CAPACITY);
        assert!(!log.blocks(0x67), "Set Log Index is always allowed");
        log.record(event(0x04), Instant::now());
        log.boot(Instant::now());
        let read = log.entries();
        assert_eq!((read.unlogged_boots, read.unlogged_auths), (1, 1));
        let last = read.entries.last().unwrap().number;
        assert_eq!(log.release(last.wrapping_add(1)), Err(Invalid));
        log.release(last).unwrap();
        assert_eq!(log.used(), 0);
        assert!(!log.blocks(0x60));
        log.record(event(0x60), Instant::now());
        let next = log.entries().entries[0];
        assert!(next.follows(last, &read.entries.last().unwrap().digest));
        assert_eq!(log.entries().unlogged_boots, 0);
    }

    #[test]
    fn options_refuse_what_the_device_does_not_know_and_keep_fixed_settings() {
        let mut log = AuditLog::factory(Instant::now());
        assert_eq!(log.set_command_audit(&[0x7f, 1]), Err(Invalid));
        assert_eq!(log.set_command_audit(&[0x60, 3]), Err(Invalid));
        assert_eq!(log.set_command_audit(&[0x60]), Err(Invalid));
        log.set_command_audit(&[0x60, 2]).unwrap();
        assert_eq!(log.set_command_audit(&[0x60, 0]), Err(Invalid));
        assert_eq!(log.set_command_audit(&[0x61, 1, 0x60, 0]), Err(Invalid));
        assert!(!log.logs(0x61), "all or nothing");
        let v = log.command_audit();
        assert_eq!(v.len(), 2 * AUDITABLE_COMMANDS.len());
        assert!(v.chunks(2).any(|p| p == [0x60, 2]));
        log.set_force_audit(&[2]).unwrap();
        assert_eq!(log.set_force_audit(&[0]), Err(Invalid));
        assert_eq!(log.set_force_audit(&[]), Err(Invalid));
        assert_eq!(log.force_audit(), AuditSetting::Fixed);
    }
}
