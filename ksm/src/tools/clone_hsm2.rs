//! `ksm clone-hsm2`: copies otp-aead-keys from one YubiHSM 2 to another under a wrap key
//! both devices hold (Export Wrapped on the source, Import Wrapped on the target), so that a
//! key the source generated (`ksm rewrap`'s target, say) reaches every auth server's device
//! without ever being in clear outside a YubiHSM 2.
//!
//! # What it checks before copying anything, and why
//!
//! A wrap key is only as narrow as its capabilities: whoever holds a session with
//! `export-wrapped` and a wrap key that allows it can take every object that key may carry
//! out, and whoever also holds the wrap key's bytes (or any device with `unwrap-data` on
//! it) can read them. So the tool refuses a wrap key that could do more than move
//! otp-aead-keys between devices:
//!
//! - on each device, the wrap key (`--wrap-key-id`) must exist, be an AES-CCM wrap key
//!   of the same algorithm on both, and have no capability but `export-wrapped` and
//!   `import-wrapped`: `wrap-data` and `unwrap-data` would let a session encrypt or decrypt
//!   arbitrary bytes under it (Unwrap Data opens an exported object's plaintext, keys
//!   included), and `exportable-under-wrap` would let the wrap key itself be exported;
//! - the source's key must have `export-wrapped`, the target's `import-wrapped`;
//! - on each device, the wrap key's *delegated* capabilities must be among the
//!   otp-aead-key capabilities (`decrypt-otp`, `create-otp-aead`, `randomize-otp-aead`,
//!   `rewrap-from-otp-aead-key`, `rewrap-to-otp-aead-key`) and `exportable-under-wrap`.
//!   The device exports (and imports) an object under a wrap key only if every capability
//!   of the object is among the wrap key's delegated ones, so such a key can carry no
//!   signing, decryption, HMAC, wrap or authentication rights out of the device;
//! - capabilities bound rights, not object types: an object of another type whose
//!   capabilities happen to lie inside that set (an opaque object with just
//!   `exportable-under-wrap`, whose data any session with `get-opaque` reads) would still
//!   be exportable. So on each device whose wrap key has `export-wrapped` (the source
//!   always; the target too if it was given both, as some recipes do) the tool lists what
//!   the session can see and refuses to run if any object that is not an otp-aead-key
//!   could be exported under the wrap key;
//! - that list holds only the objects in the session's own domains, while the wrap key
//!   exports from every domain it is in (to whoever opens a session that may use it). So
//!   on each device the wrap key's domains must be among the session authentication key's
//!   domains: then every object the wrap key could carry out is one the scan saw.
//!
//! What remains unchecked: objects of another session's making after the run (the scan
//! is a snapshot: a key with `exportable-under-wrap` put in later can still leave under
//! the wrap key), and a wrap key whose objects another authentication key may export
//! (the scan proves what *this* wrap key can carry, not who may ask it to).
//!
//! # Proof and re-runs
//!
//! Each copy is proven: the source seals a throw-away YubiKey secret (random, in memory)
//! with Create OTP AEAD, and the target must decode an OTP of that secret with Decrypt
//! OTP under the copied key. That needs `create-otp-aead` on the source (its session's
//! authentication key and the key) and `decrypt-otp` on the target's; a copy that cannot
//! be proven for lack of them is named with the missing capability, and the run exits 1
//! (the copy stays: it is the source's key, only unproven). A key id that already exists
//! on the target is proven the same way: the same key is left alone (so a re-run does
//! nothing new), a key that refuses the source's OTP (`invalid-otp`) is another key, any
//! other error is reported as it is, and nothing is overwritten.

use std::io::Write;

use hsm2_proto::cmd::{self, ListObjects, ObjectFilter, ObjectInfo};
use hsm2_proto::{Capabilities, Capability, ErrorCode, ObjectId, ObjectType, OtpAead, Secret};

use super::proof_otp::ProofOtp;
use crate::device::hsm2::{object_id_arg, Hsm2Auth, Hsm2Device, Hsm2Spec};
use crate::Error;

/// `ksm clone-hsm2`'s arguments. Each device has its own authentication key and password
/// file (never a password on the command line).
#[derive(Debug, clap::Args)]
pub struct CloneHsm2Args {
    /// The YubiHSM 2 the keys come from: http://host:port of its connector, usb or
    /// usb:SERIAL.
    #[arg(long)]
    pub from: String,
    /// The YubiHSM 2 the keys go to.
    #[arg(long)]
    pub to: String,
    /// The wrap key both devices hold, under the same id and with the same key bytes.
    #[arg(long, value_parser = object_id_arg)]
    pub wrap_key_id: u16,
    /// The otp-aead-keys to copy (comma-separated ids, decimal or 0x hex); default: every
    /// otp-aead-key the source session can see.
    #[arg(long, value_delimiter = ',', value_parser = object_id_arg)]
    pub key_ids: Vec<u16>,
    /// The source's authentication key (needs export-wrapped, and create-otp-aead for the
    /// proof).
    #[arg(long, default_value = "1", value_parser = object_id_arg)]
    pub from_auth_key_id: u16,
    /// Private file (mode 0600) whose first line is the source authentication key's
    /// password; without it the password is asked for on the terminal.
    #[arg(long)]
    pub from_password_file: Option<std::path::PathBuf>,
    /// The target's authentication key (needs import-wrapped, and decrypt-otp for the
    /// proof).
    #[arg(long, default_value = "1", value_parser = object_id_arg)]
    pub to_auth_key_id: u16,
    /// Private file (mode 0600) whose first line is the target authentication key's
    /// password; without it the password is asked for on the terminal.
    #[arg(long)]
    pub to_password_file: Option<std::path::PathBuf>,
    /// Seconds to wait for each answer of either device.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// The capabilities an otp-aead-key can use, and the flag that lets it leave under wrap:
/// the most the wrap key may delegate.
pub fn otp_export_bound() -> Capabilities {
    [
        Capability::DecryptOtp,
        Capability::CreateOtpAead,
        Capability::RandomizeOtpAead,
        Capability::RewrapFromOtpAeadKey,
        Capability::RewrapToOtpAeadKey,
        Capability::ExportableUnderWrap,
    ]
    .into_iter()
    .collect()
}

/// The most the wrap key itself may do: move objects in and out.
fn wrap_key_bound() -> Capabilities {
    [Capability::ExportWrapped, Capability::ImportWrapped]
        .into_iter()
        .collect()
}

/// Counts of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cloned {
    /// Keys copied to the target (proven unless counted in `unchecked`).
    pub copied: usize,
    /// Keys the target held already, proven the same.
    pub present: usize,
    /// Copied keys the tool could not prove (a capability for the proof missing): named on
    /// standard output, and the run fails.
    pub unchecked: usize,
    /// Keys not copied: named on standard output.
    pub failed: usize,
}

/// `ksm clone-hsm2`: fails (exit 1) if any key failed or a copy could not be proven.
pub fn run(args: CloneHsm2Args) -> Result<(), Error> {
    let timeout = std::time::Duration::from_secs(args.timeout.clamp(1, 600));
    let from_spec = Hsm2Spec::parse(&args.from)?;
    let to_spec = Hsm2Spec::parse(&args.to)?;
    let auth = |id: u16, file: &Option<std::path::PathBuf>| match file {
        Some(p) => Hsm2Auth::from_file(ObjectId(id), p),
        None => Hsm2Auth::prompt(ObjectId(id)),
    };
    let from_auth = auth(args.from_auth_key_id, &args.from_password_file)?;
    let to_auth = auth(args.to_auth_key_id, &args.to_password_file)?;
    let mut from = Hsm2Device::open(&from_spec, &from_auth, timeout)
        .map_err(|e| Error::DeviceAnswer(format!("source {}: {e}", args.from)))?;
    let mut to = match Hsm2Device::open(&to_spec, &to_auth, timeout) {
        Ok(d) => d,
        Err(e) => {
            from.close();
            return Err(Error::DeviceAnswer(format!("target {}: {e}", args.to)));
        }
    };
    let ids: Vec<ObjectId> = args.key_ids.iter().copied().map(ObjectId).collect();
    let r = clone(
        &mut from,
        &mut to,
        ObjectId(args.wrap_key_id),
        &ids,
        &mut std::io::stdout(),
    );
    from.close();
    to.close();
    let r = r?;
    if r.failed > 0 || r.unchecked > 0 {
        return Err(Error::CloneFailed {
            failed: r.failed,
            unproven: r.unchecked,
        });
    }
    Ok(())
}

/// Checks the wrap key on both devices (see the module doc), then copies and proves each
/// of `ids` (every otp-aead-key the source session sees if empty).
pub fn clone(
    from: &mut Hsm2Device,
    to: &mut Hsm2Device,
    wrap: ObjectId,
    ids: &[ObjectId],
    out: &mut dyn Write,
) -> Result<Cloned, Error> {
    let src_wrap = wrap_key(from, wrap, "source", Capability::ExportWrapped)?;
    let dst_wrap = wrap_key(to, wrap, "target", Capability::ImportWrapped)?;
    if src_wrap.algorithm != dst_wrap.algorithm {
        return Err(Error::DeviceAnswer(format!(
            "wrap key {:#06x} is {} on the source but {} on the target: not the same key",
            wrap.0, src_wrap.algorithm, dst_wrap.algorithm
        )));
    }
    for (dev, side, info) in [
        (&mut *from, "source", &src_wrap),
        (&mut *to, "target", &dst_wrap),
    ] {
        within_session_domains(dev, wrap, side, info)?;
        if info.capabilities.contains(Capability::ExportWrapped) {
            nothing_else_exportable(dev, wrap, side, info)?;
        }
    }
    let ids: Vec<ObjectId> = if ids.is_empty() {
        list(from, &[ObjectFilter::Type(ObjectType::OtpAeadKey)])?
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    } else {
        ids.to_vec()
    };
    let mut r = Cloned::default();
    for id in ids {
        match clone_one(from, to, wrap, id, out) {
            Ok(Outcome::Copied { proven: true }) => r.copied += 1,
            Ok(Outcome::Copied { proven: false }) => {
                r.copied += 1;
                r.unchecked += 1;
            }
            Ok(Outcome::Present) => r.present += 1,
            Err(Error::Hsm2(e)) if e.is_transport_error() => return Err(Error::Hsm2(e)),
            Err(e) => {
                r.failed += 1;
                let _ = writeln!(out, "FAILED otp-aead-key {:#06x}: {e}", id.0);
            }
        }
    }
    let _ = writeln!(
        out,
        "{} copied ({} not checked), {} already on the target, {} failed",
        r.copied, r.unchecked, r.present, r.failed
    );
    Ok(r)
}

enum Outcome {
    Copied { proven: bool },
    Present,
}

fn clone_one(
    from: &mut Hsm2Device,
    to: &mut Hsm2Device,
    wrap: ObjectId,
    id: ObjectId,
    out: &mut dyn Write,
) -> Result<Outcome, Error> {
    let info = match from.call(|c, s| c.object_info(s, id, ObjectType::OtpAeadKey)) {
        Ok(i) => i,
        Err(e) if device_code(&e) == Some(ErrorCode::ObjectNotFound) => {
            return Err(Error::DeviceAnswer(
                "the source has no such otp-aead-key (or the session cannot see it)".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let present = match to.call(|c, s| c.object_info(s, id, ObjectType::OtpAeadKey)) {
        Ok(_) => true,
        Err(e) if device_code(&e) == Some(ErrorCode::ObjectNotFound) => false,
        Err(e) => return Err(e),
    };
    if present {
        return match prove(from, to, id) {
            Ok(Proof::Proven) => {
                let _ = writeln!(
                    out,
                    "otp-aead-key {:#06x} is on the target already: the same key (an AEAD made on the source decodes an OTP on the target)",
                    id.0
                );
                Ok(Outcome::Present)
            }
            Ok(Proof::Missing(what)) => Err(Error::DeviceAnswer(format!(
                "the target has an otp-aead-key with this id, and its key cannot be compared ({what}): left alone"
            ))),
            // Only the device's refusal of the OTP says the key is another one; a lost
            // connection or a refused session says nothing about the key.
            Err(e) if device_code(&e) == Some(ErrorCode::InvalidOtp) => Err(Error::DeviceAnswer(
                "the target has another otp-aead-key with this id (it does not open the source's AEADs): left alone; delete it there first if it is not needed".into(),
            )),
            Err(e) => Err(e),
        };
    }
    if !info.capabilities.contains(Capability::ExportableUnderWrap) {
        return Err(Error::DeviceAnswer(
            "it lacks exportable-under-wrap (given when a key is made, and never after): it cannot leave the source".into(),
        ));
    }
    let wrapped = from.call(|c, s| c.export_wrapped(s, wrap, ObjectType::OtpAeadKey, id))?;
    let imported = match to.call(|c, s| c.import_wrapped(s, wrap, wrapped.clone())) {
        Ok(i) => i,
        // Sent again by `call` after an answer lost on the way back, the import finds its
        // own first copy there: the proof below tells.
        Err(e) if device_code(&e) == Some(ErrorCode::ObjectExists) => cmd::ImportedObject {
            object_type: ObjectType::OtpAeadKey,
            id,
        },
        Err(e) if device_code(&e) == Some(ErrorCode::InvalidData) => {
            return Err(Error::DeviceAnswer(format!(
                "the target could not open what the source exported: the two wrap keys {:#06x} do not hold the same key bytes",
                wrap.0
            )))
        }
        Err(e) => return Err(e),
    };
    if imported.id != id || imported.object_type != ObjectType::OtpAeadKey {
        return Err(Error::DeviceAnswer(format!(
            "the target imported {} {:#06x}, not the otp-aead-key",
            imported.object_type, imported.id.0
        )));
    }
    let _ = writeln!(
        out,
        "copied otp-aead-key {:#06x} ({})",
        id.0, info.algorithm
    );
    match prove(from, to, id) {
        Ok(Proof::Proven) => {
            let _ = writeln!(
                out,
                "checked: an AEAD made on the source decodes an OTP on the target"
            );
            Ok(Outcome::Copied { proven: true })
        }
        Ok(Proof::Missing(what)) => {
            let _ = writeln!(out, "NOT PROVEN otp-aead-key {:#06x}: {what}", id.0);
            Ok(Outcome::Copied { proven: false })
        }
        Err(e) => Err(Error::DeviceAnswer(format!(
            "copied, but the copy does not decode the source's AEADs: {e}"
        ))),
    }
}

/// The wrap key `id` on `dev`, if it is one this tool may use (see the module doc), and
/// holds `needed`.
fn wrap_key(
    dev: &mut Hsm2Device,
    id: ObjectId,
    side: &str,
    needed: Capability,
) -> Result<ObjectInfo, Error> {
    let info = match dev.call(|c, s| c.object_info(s, id, ObjectType::WrapKey)) {
        Ok(i) => i,
        Err(e) if device_code(&e) == Some(ErrorCode::ObjectNotFound) => {
            return Err(Error::DeviceAnswer(format!(
                "the {side} has no wrap key {:#06x} (or the session cannot see it): put the same wrap key on both devices first (docs/yubihsm2.md)",
                id.0
            )))
        }
        Err(e) => return Err(e),
    };
    if info.algorithm.wrap_key_len().is_none() {
        return Err(Error::Usage(format!(
            "the {side}'s wrap key {:#06x} is {}, not an AES-CCM wrap key",
            id.0, info.algorithm
        )));
    }
    if !info.capabilities.contains(needed) {
        return Err(Error::Usage(format!(
            "the {side}'s wrap key {:#06x} lacks {}",
            id.0,
            needed.name()
        )));
    }
    let extra = Capabilities(info.capabilities.0 & !wrap_key_bound().0);
    if extra.0 != 0 {
        return Err(Error::Usage(format!(
            "the {side}'s wrap key {:#06x} may do more than export and import ({}): refusing to use it",
            id.0,
            names(extra)
        )));
    }
    let extra = Capabilities(info.delegated.0 & !otp_export_bound().0);
    if extra.0 != 0 {
        return Err(Error::Usage(format!(
            "the {side}'s wrap key {:#06x} delegates capabilities beyond the otp-aead-keys' ({}): it could export or import more than otp-aead-keys; refusing to use it",
            id.0,
            names(extra)
        )));
    }
    Ok(info)
}

fn names(c: Capabilities) -> String {
    c.iter().map(|c| c.name()).collect::<Vec<_>>().join(":")
}

/// Refuses a wrap key in a domain the session's own authentication key is not in: the
/// scan below sees only the session's domains, the wrap key exports from all of its own.
fn within_session_domains(
    dev: &mut Hsm2Device,
    wrap: ObjectId,
    side: &str,
    info: &ObjectInfo,
) -> Result<(), Error> {
    let auth = dev.auth_key_id();
    let session = dev.call(|c, s| c.object_info(s, auth, ObjectType::AuthenticationKey))?;
    let outside = info.domains.0 & !session.domains.0;
    if outside != 0 {
        return Err(Error::Usage(format!(
            "the {side}'s wrap key {:#06x} is in domains ({}) that authentication key {:#06x} is not in: objects there could be exported under it unseen; use an authentication key in all of the wrap key's domains",
            wrap.0,
            hsm2_proto::Domains(outside)
                .numbers()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            auth.0
        )));
    }
    Ok(())
}

/// Refuses to run while `dev`'s session sees an object other than otp-aead-keys (and the
/// wrap key itself) that the wrap key `info` could export: see the module doc.
fn nothing_else_exportable(
    dev: &mut Hsm2Device,
    wrap: ObjectId,
    side: &str,
    info: &ObjectInfo,
) -> Result<(), Error> {
    for (id, t) in list(dev, &[])? {
        if t == ObjectType::OtpAeadKey || t == ObjectType::WrapKey && id == wrap {
            continue;
        }
        let object = dev.call(|c, s| c.object_info(s, id, t))?;
        let exportable = object
            .capabilities
            .contains(Capability::ExportableUnderWrap)
            && info.delegated.contains_all(object.capabilities);
        if exportable {
            return Err(Error::Usage(format!(
                "wrap key {:#06x} could also export {t} {:#06x} from the {side} (its capabilities are all among the wrap key's delegated ones): refusing to use it; give that object fewer capabilities, or use a wrap key whose delegated capabilities leave it out",
                wrap.0, id.0
            )));
        }
    }
    Ok(())
}

fn list(
    dev: &mut Hsm2Device,
    filters: &[ObjectFilter],
) -> Result<Vec<(ObjectId, ObjectType)>, Error> {
    let req = ListObjects {
        filters: filters.to_vec(),
    };
    let listed = dev.call(|c, s| c.send(s, &req))?;
    Ok(listed
        .objects
        .into_iter()
        .map(|o| (o.id, o.object_type))
        .collect())
}

fn device_code(e: &Error) -> Option<ErrorCode> {
    match e {
        Error::Hsm2(e) => e.code(),
        _ => None,
    }
}

/// What [`prove`] found, short of the target refusing the OTP.
enum Proof {
    /// The target decoded an OTP of a secret sealed on the source.
    Proven,
    /// The proof could not be made: which capability is missing where.
    Missing(&'static str),
}

/// Seals a throw-away YubiKey secret ([`ProofOtp`]) on the source (Create OTP AEAD under
/// `id`) and has the target decode an OTP of it under its `id`. `Err`: the target does not
/// decode it (`invalid-otp`: another key), or a device error.
fn prove(from: &mut Hsm2Device, to: &mut Hsm2Device, id: ObjectId) -> Result<Proof, Error> {
    let proof = ProofOtp::new()?;
    let secret = proof.secret();
    let aead: OtpAead = match from
        .call(|c, s| c.create_otp_aead(s, id, Secret(secret.key), Secret(secret.uid)))
    {
        Ok(a) => a,
        Err(e) if device_code(&e) == Some(ErrorCode::InsufficientPermissions) => {
            return Ok(Proof::Missing(
                "create-otp-aead missing on the source (its authentication key or the otp-aead-key)",
            ))
        }
        Err(e) => return Err(e),
    };
    match proof.decodes_on(to, id, aead) {
        Ok(true) => Ok(Proof::Proven),
        Ok(false) => Err(Error::DeviceAnswer(
            "the target decoded the check OTP to other counters".into(),
        )),
        Err(e) if device_code(&e) == Some(ErrorCode::InsufficientPermissions) => {
            Ok(Proof::Missing(
                "decrypt-otp missing on the target (its authentication key or the otp-aead-key)",
            ))
        }
        Err(e) => Err(e),
    }
}
