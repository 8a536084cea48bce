//! `ksm hsm2-log -D URL [--audit-log FILE [--advance]] [--json]`: prints a YubiHSM 2's
//! audit log for an operator and checks its digest chain.
//!
//! What it is for: a device with `force-audit` on refuses logged commands once its 62
//! entries are unread, and a daemon without `--hsm2-audit-log` does not read them. This
//! prints them (text, or the audit file's JSON lines), checks that each follows the one
//! before (and, with `--audit-log`, that the first follows the last one the file kept for
//! this device, then appends them there as the daemon would), and with `--advance` moves
//! the log index on so the device has room again. `--advance` needs `--audit-log`: the
//! device forgets what it frees, so the entries must be in a synced file first (standard
//! output may go nowhere). A broken chain is the exit status 1,
//! after everything is printed (and stored, and the index moved if asked).
//!
//! The key needs `get-log-entries` (`--advance` too); the password comes from
//! `--password-file` or the terminal, never the command line.

use std::path::PathBuf;

use crate::device::hsm2::Hsm2Args;
use crate::device::hsm2_log::{self, AuditFile, Line, Link};
use crate::Error;

/// `ksm hsm2-log`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Hsm2LogArgs {
    /// The YubiHSM 2 and its authentication key (needs get-log-entries).
    #[command(flatten)]
    pub hsm2: Hsm2Args,
    /// Then move the device's log index on to the last entry read, freeing its log (what
    /// a device with force-audit on needs once the log is full). Needs --audit-log: the
    /// entries it frees must be kept somewhere durable first, not only printed.
    #[arg(long, requires = "audit_log")]
    pub advance: bool,
    /// Append the entries to this file (the daemon's --hsm2-audit-log format), checking
    /// the chain from the last entry it kept for this device.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Print JSON lines (the audit file's format) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ksm hsm2-log`.
pub fn run(args: Hsm2LogArgs) -> Result<(), Error> {
    let mut file = args.audit_log.as_deref().map(AuditFile::open).transpose()?;
    let mut dev = args.hsm2.open()?;
    let info = dev.client.device_info()?;
    let read = dev.call(|c, s| c.get_log_entries(s))?;
    let name = dev.spec().to_string();
    let anchor = file.as_ref().and_then(|f| f.anchor(info.serial));
    let linked = hsm2_log::link(anchor, &read.entries);
    let skipped = read.entries.len() - linked.len();
    for (e, l) in &linked {
        let line = Line::new(&name, info.serial, e, *l);
        if args.json {
            let text = serde_json::to_string(&line)
                .map_err(|e| Error::io("a log line", std::io::Error::other(e)))?;
            println!("{text}");
        } else {
            println!(
                "item {:5}  cmd 0x{:02x} {:<26} length {:5}  session key 0x{:04x}  target key 0x{:04x}  second key 0x{:04x}  result 0x{:02x}  tick {:10}  digest {}  {}",
                line.number, line.command_code, line.command, line.length, line.session_key,
                line.target_key, line.second_key, line.result, line.systick, line.digest,
                match l { Link::Ok => "ok", Link::Start => "start", Link::Break => "BREAK" },
            );
        }
    }
    let breaks: Vec<u16> = linked
        .iter()
        .filter(|(_, l)| *l == Link::Break)
        .map(|(e, _)| e.number)
        .collect();
    eprintln!(
        "{name} (serial {}): {} of {} log entries used; {} printed{}; unlogged boots {}, unlogged authentications {}; chain {}",
        info.serial,
        info.log_used,
        info.log_capacity,
        linked.len(),
        if skipped > 0 { format!(" ({skipped} already in the audit file)") } else { String::new() },
        read.unlogged_boots,
        read.unlogged_auths,
        if breaks.is_empty() { "intact".to_string() } else { format!("BROKEN at entry {breaks:?}") },
    );
    if let Some(f) = file.as_mut() {
        f.append(&name, info.serial, &read)?;
    }
    if args.advance {
        if let Some(last) = read.entries.last() {
            dev.call(|c, s| c.set_log_index(s, last.number))?;
            eprintln!("log index moved on to entry {}", last.number);
        }
    }
    dev.close();
    if breaks.is_empty() {
        Ok(())
    } else {
        Err(Error::AuditChainBroken(breaks[0]))
    }
}
