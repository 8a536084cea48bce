//! `ksm provision-hsm2`: puts a YubiHSM 1 key-handle key into a YubiHSM 2 as an otp-aead-key,
//! so that every AEAD the YubiHSM 1 made under that handle opens on the YubiHSM 2 unchanged.
//!
//! Why it works (shared protocol notes §5.2, and the test `a_yubihsm1_aead_opens_on_a_yubihsm2`
//! in `ksm/tests/hsm2_tools.rs`, which proves it against the emulator): both devices seal a
//! YubiKey's key and private id with AES-CCM (8-byte tag, no associated data) under a 13-byte
//! nonce. The YubiHSM 1 builds it as key handle (u32 little-endian) ‖ AEAD nonce ‖ 00 00 00,
//! the YubiHSM 2 as the otp-aead-key's 4 nonce-id bytes ‖ AEAD nonce ‖ 00 00 00. With the same
//! AES key and nonce id = LE32(key handle), the nonces and so the AEADs are the same bytes;
//! the YubiHSM 2 form only carries the 6-byte nonce in front.
//!
//! This is the one step that needs the key-handle key in clear: run it once, on the
//! personalisation host that keeps that key. The key is read from a private file (0600),
//! sent inside the encrypted session, and wiped. Afterwards the tool proves the result on
//! the device: a test AEAD sealed as the YubiHSM 1 would seal it (in memory, with a random
//! throw-away YubiKey secret) must decode an OTP on the YubiHSM 2.

use std::io::Write;
use std::path::PathBuf;

use hsm2_proto::cmd::{NewObject, PutOtpAeadKey};
use hsm2_proto::{
    Algorithm, Capabilities, Domains, Label, NonceId, ObjectId, OtpAead, OtpAeadKeyBytes,
};
use hsm_proto::emulator::EmulatorConfig;
use hsm_proto::{AesKey, KeyHandle, Nonce};
use rand::RngCore;

use super::proof_otp::ProofOtp;
use crate::device::hsm2::{Hsm2Args, Hsm2Device};
use crate::Error;

/// What an otp-aead-key made by this tool may do unless told otherwise: decode OTPs (the
/// daemon), make AEADs (`generate-keys`, `import-keys`), and rewrap them (`rewrap`, and
/// `store verify --hsm`, which rewraps each AEAD to its own key).
pub const DEFAULT_CAPABILITIES: &str =
    "decrypt-otp:create-otp-aead:randomize-otp-aead:rewrap-from-otp-aead-key:rewrap-to-otp-aead-key";

/// `ksm provision-hsm2`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ProvisionHsm2Args {
    /// The YubiHSM 2 and its authentication key (needs put-otp-aead-key and, for the
    /// check, decrypt-otp).
    #[command(flatten)]
    pub hsm2: Hsm2Args,
    /// Private file (mode 0600) holding the YubiHSM 1 key-handle key: its hex on the first
    /// line, or a soft-HSM key file (pyhsm's JSON or the emulator's TOML) that has the
    /// handle.
    #[arg(long)]
    pub key_handle_key_file: PathBuf,
    /// The YubiHSM 1 key handle whose AEADs are to open on the YubiHSM 2.
    #[arg(long)]
    pub key_handle: String,
    /// The otp-aead-key object id to create on the YubiHSM 2.
    #[arg(long, value_parser = crate::device::hsm2::object_id_arg)]
    pub key_id: u16,
    /// Its capabilities (yubihsm-shell's spelling, colon-separated).
    #[arg(long, default_value = DEFAULT_CAPABILITIES)]
    pub capabilities: String,
    /// Its domains (comma-separated, 1 to 16).
    #[arg(long, default_value = "1")]
    pub domains: String,
    /// Its label (default: "ksm key handle 0x…").
    #[arg(long)]
    pub label: Option<String>,
}

/// `ksm provision-hsm2`.
pub fn run(args: ProvisionHsm2Args) -> Result<(), Error> {
    let kh = KeyHandle::parse(&args.key_handle)?;
    let key = read_key_handle_key(&args.key_handle_key_file, kh)?;
    let plan = Plan {
        key_handle: kh,
        key_id: ObjectId(args.key_id),
        capabilities: Capabilities::parse(&args.capabilities)
            .map_err(|name| Error::Usage(format!("--capabilities: unknown capability {name:?}")))?,
        domains: parse_domains(&args.domains)?,
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("ksm key handle {kh}")),
    };
    let mut dev = args.hsm2.open()?;
    let r = provision(&mut dev, &key, &plan, &mut std::io::stdout());
    dev.close();
    r
}

/// What to put on the device.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The YubiHSM 1 key handle (becomes the nonce id, little-endian).
    pub key_handle: KeyHandle,
    /// The otp-aead-key's id.
    pub key_id: ObjectId,
    /// Its capabilities.
    pub capabilities: Capabilities,
    /// Its domains.
    pub domains: Domains,
    /// Its label.
    pub label: String,
}

/// Reads the key of `kh` from a private file: hex on the first line, or a soft-HSM key
/// file that has `kh`. Errors name the file, never its text.
pub fn read_key_handle_key(path: &std::path::Path, kh: KeyHandle) -> Result<AesKey, Error> {
    let text = hsm_proto::keyfile::read_private(path)?;
    let first = text.lines().next().unwrap_or_default().trim();
    let is_hex = !first.is_empty() && first.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && text.lines().skip(1).all(|l| l.trim().is_empty()) {
        return AesKey::from_hex(first)
            .map_err(|e| Error::Input(format!("{}: not a key-handle key ({e})", path.display())));
    }
    let cfg = EmulatorConfig::parse(&text)
        .and_then(|c| c.resolve())
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    cfg.keys.get(&kh).map(|(k, _, _)| k.clone()).ok_or_else(|| {
        Error::Input(format!(
            "{}: has no key for key handle {kh}",
            path.display()
        ))
    })
}

fn parse_domains(text: &str) -> Result<Domains, Error> {
    let mut d = 0u16;
    for part in text.split(',').map(str::trim) {
        let one = part
            .parse::<u8>()
            .ok()
            .and_then(Domains::domain)
            .ok_or_else(|| Error::Usage(format!("--domains: {part:?} is not a domain 1 to 16")))?;
        d |= one.0;
    }
    Ok(Domains(d))
}

/// Puts the key on the device and proves it opens the YubiHSM 1's AEADs.
pub fn provision(
    dev: &mut Hsm2Device,
    key: &AesKey,
    plan: &Plan,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let algorithm = Algorithm::for_otp_key_len(key.expose().len())
        .ok_or_else(|| Error::Input("a key-handle key is 16, 24 or 32 bytes".into()))?;
    let label =
        Label::new(&plan.label).map_err(|_| Error::Usage("--label: at most 40 bytes".into()))?;
    let nonce_id = NonceId::from_key_handle(plan.key_handle.0);
    let req = PutOtpAeadKey {
        object: NewObject {
            id: plan.key_id,
            label,
            domains: plan.domains,
            capabilities: plan.capabilities,
            algorithm,
        },
        nonce_id,
        key: OtpAeadKeyBytes::new(key.expose())?,
    };
    let put = dev.call(|c, session| c.send(session, &req));
    match put {
        Ok(_) => {}
        Err(Error::Hsm2(hsm2_proto::Error::Device {
            code: hsm2_proto::ErrorCode::ObjectExists,
            ..
        })) => {
            // Taken: by this very key, if an earlier run (or `call`'s one resend after a lost
            // answer) made it, which the proof tells; by another key if the device finds the
            // proof's OTP invalid. Any other answer (a missing capability, a lost connection)
            // tells neither, and is said as it is: never read as "another key".
            if !plan
                .capabilities
                .contains(hsm2_proto::Capability::DecryptOtp)
            {
                return Err(taken(plan));
            }
            match check(dev, key, plan) {
                Ok(Check::Opens) => {
                    let _ = writeln!(
                        out,
                        "otp-aead-key {:#06x} is there already and holds key handle {}'s key (nonce id {})",
                        plan.key_id.0,
                        plan.key_handle,
                        hex::encode(nonce_id.0)
                    );
                    let _ = writeln!(
                        out,
                        "checked: a YubiHSM 1 AEAD of key handle {} decodes an OTP on the YubiHSM 2",
                        plan.key_handle
                    );
                    return Ok(());
                }
                Ok(Check::OtherKey) => return Err(taken(plan)),
                Ok(Check::OtherCounters) => return Err(other_counters()),
                Err(e) => {
                    return Err(Error::DeviceAnswer(format!(
                        "the YubiHSM 2 already has an otp-aead-key {:#06x}, and it could not be compared with key handle {}'s key ({e}); nothing was changed",
                        plan.key_id.0, plan.key_handle
                    )))
                }
            }
        }
        Err(e) => return Err(e),
    }
    let _ = writeln!(
        out,
        "otp-aead-key {:#06x} ({algorithm:?}) created with nonce id {} (key handle {} little-endian)",
        plan.key_id.0,
        hex::encode(nonce_id.0),
        plan.key_handle
    );
    if !plan
        .capabilities
        .contains(hsm2_proto::Capability::DecryptOtp)
    {
        let _ = writeln!(out, "not checked: the key may not decrypt OTPs");
        return Ok(());
    }
    prove(dev, key, plan)?;
    let _ = writeln!(
        out,
        "checked: a YubiHSM 1 AEAD of key handle {} decodes an OTP on the YubiHSM 2",
        plan.key_handle
    );
    Ok(())
}

/// What the device made of the proof OTP ([`check`]).
enum Check {
    /// Decoded to the OTP's counters: the otp-aead-key holds the key-handle key.
    Opens,
    /// Refused as an invalid OTP: the otp-aead-key holds another key (or nonce id).
    OtherKey,
    /// Decoded to other counters: a device not to trust.
    OtherCounters,
}

/// Seals a throw-away YubiKey secret ([`ProofOtp`]) as the YubiHSM 1 would (in memory, with
/// the key-handle key) and has the YubiHSM 2 decode an OTP of it under otp-aead-key
/// `plan.key_id`. Any device error but `invalid-otp` comes back as it came.
fn check(dev: &mut Hsm2Device, key: &AesKey, plan: &Plan) -> Result<Check, Error> {
    let proof = ProofOtp::new()?;
    let mut nonce = Nonce([0; 6]);
    rand::rngs::OsRng.fill_bytes(&mut nonce.0);
    let aead = hsm_proto::aead::seal(key, plan.key_handle, &nonce, &*proof.secret().to_bytes())?;
    let aead: [u8; 30] = aead
        .as_bytes()
        .try_into()
        .map_err(|_| Error::DeviceAnswer("a YubiKey AEAD is 30 bytes".into()))?;
    let aead = OtpAead::from_yubihsm1(nonce.0, aead);
    match proof.decodes_on(dev, plan.key_id, aead) {
        Ok(true) => Ok(Check::Opens),
        Ok(false) => Ok(Check::OtherCounters),
        Err(Error::Hsm2(e)) if e.code() == Some(hsm2_proto::ErrorCode::InvalidOtp) => {
            Ok(Check::OtherKey)
        }
        Err(e) => Err(e),
    }
}

/// Proves the otp-aead-key just made: it must open what the YubiHSM 1 seals.
fn prove(dev: &mut Hsm2Device, key: &AesKey, plan: &Plan) -> Result<(), Error> {
    match check(dev, key, plan) {
        Ok(Check::Opens) => Ok(()),
        Ok(Check::OtherCounters) => Err(other_counters()),
        Ok(Check::OtherKey) => Err(Error::DeviceAnswer(format!(
            "the new otp-aead-key does not open the YubiHSM 1's AEADs (invalid OTP): is the key file the key of handle {}?",
            plan.key_handle
        ))),
        Err(e) => Err(Error::DeviceAnswer(format!(
            "the new otp-aead-key could not be checked ({e})"
        ))),
    }
}

/// The object id is another otp-aead-key's.
fn taken(plan: &Plan) -> Error {
    Error::DeviceAnswer(format!(
        "the YubiHSM 2 already has an object {:#06x}: choose another --key-id, or delete it first (yubihsm-shell)",
        plan.key_id.0
    ))
}

fn other_counters() -> Error {
    Error::DeviceAnswer("the YubiHSM 2 decoded the check OTP to other counters".into())
}
