//! The device itself, without any transport: one request frame in, one answer frame out.
//!
//! It decodes the driver's request types and encodes its response types
//! ([`crate::cmd`]), and runs sessions with [`DeviceSession`]; the layouts and the session
//! cryptography exist once, in the crate. The OTP AEAD and OTP cryptography is the core's
//! (`otp_core::otp_aead`, `otp_core::otp`): a YubiHSM 2 AEAD is a YubiHSM 1 AEAD whose key
//! handle bytes are the nonce id (shared notes §5.2).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use otp_core::{otp, otp_aead, AesKey, YubiKeySecret};
use rand::RngCore;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use self::audit::{AuditLog, Event};
pub use self::audit::{AUDITABLE_COMMANDS, LOG_CAPACITY};
use super::config::{factory_key, AuthKeyConfig, DeviceConfig, OtpAeadKeyConfig};
use crate::cmd::{self, Command, DeviceOption, EmptyResponse, ObjectFilter, ObjectInfo};
use crate::codec::Frame;
use crate::session::{Challenge, DeviceSession, SessionId};
use crate::{
    Algorithm, AuthKey, Capabilities, Capability, CommandCode, Domains, Error, ErrorCode, Label,
    NonceId, ObjectId, ObjectType, Origin, OtpAead, OtpAeadKeyBytes, SecretBytes,
};

/// Sessions a device holds at once (libyubihsm's `YH_MAX_SESSIONS`).
pub const MAX_SESSIONS: usize = 16;

/// Objects the emulated device stores. A real YubiHSM 2 holds 256 objects of any kind;
/// this bound also keeps a List Objects answer well inside one frame.
pub const MAX_OBJECTS: usize = 256;

/// Longest Get Pseudo Random answer. The firmware's limit is undocumented; this one keeps
/// the answer inside the 2048-byte frames python-yubihsm uses with firmware before 2.4.
pub const MAX_RANDOM: u16 = 2000;

/// Firmware version reported: below 2.4.0, so python-yubihsm asks for no Device Info
/// page 1 (which is not modelled) and keeps to 2048-byte frames.
pub const FIRMWARE: [u8; 3] = [2, 3, 1];

/// The last algorithm firmware 2.3.1 has: Device Info lists every algorithm from 1 (RSA
/// PKCS#1 with SHA-1) to this one, as the firmware does whatever the emulator models; AES
/// key wrap with padding (55) came with firmware 2.4's RSA wrapping.
const LAST_ALGORITHM: Algorithm = Algorithm::AesCbc;

/// The size Get Object Info reports for an authentication key: 40, as a device does
/// (its two 16-byte keys and, Yubico does not say, 8 bytes more).
const AUTH_KEY_SIZE: u16 = 40;

/// An object's secret part.
enum KeyMaterial {
    Auth(AuthKey),
    Otp { nonce_id: NonceId, key: AesKey },
    Opaque(Vec<u8>),
    Wrap(SecretBytes),
    Hmac(SecretBytes),
    Symmetric(SecretBytes),
}

/// One stored object: its metadata (the very type Get Object Info answers) and its key.
struct Object {
    info: ObjectInfo,
    key: KeyMaterial,
}

/// What a session may do: its authentication key's rights, taken when it was opened.
#[derive(Debug, Clone, Copy)]
struct Caller {
    /// The session's authentication key.
    key_id: ObjectId,
    capabilities: Capabilities,
    delegated: Capabilities,
    domains: Domains,
}

struct Slot {
    session: DeviceSession,
    caller: Caller,
    last_used: Instant,
}

/// A software YubiHSM 2. Every request gets an answer frame; nothing panics.
pub struct Device {
    serial: u32,
    session_timeout: Duration,
    /// See [`crate::emulator::DeviceConfig::rewrap_renews_nonce`].
    rewrap_renews_nonce: bool,
    objects: BTreeMap<(u16, u8), Object>,
    /// Per id and type, how many objects have had it: the next one's sequence number.
    sequences: BTreeMap<(u16, u8), u8>,
    sessions: [Option<Slot>; MAX_SESSIONS],
    /// The audit log and the options that govern it.
    audit: AuditLog,
    /// The objects the command running now has used, first and second: what its log entry
    /// names. Set by [`Device::visible`], [`Device::new_object_id`] and
    /// [`Device::new_info`], which every handler goes through to find or make an object,
    /// so a new command is logged right without doing anything.
    touched: Cell<[Option<u16>; 2]>,
    /// Set by Reset Device: the reset happens once its answer is sealed.
    reset_pending: bool,
    /// The public half of the device's own P-256 key (Get Device Public Key): made at
    /// start, kept across resets. Its private half is dropped at once: asymmetric
    /// authentication, its one use, is not modelled.
    public_key: [u8; 64],
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("serial", &self.serial)
            .field("objects", &self.objects.len())
            .field("sessions", &self.open_sessions())
            .finish_non_exhaustive()
    }
}

type Answer<T> = Result<T, ErrorCode>;

/// A fresh P-256 key pair's public point (X ‖ Y), as a device makes its own key. All zeros
/// (which no client takes for a point) only if the system's random source fails.
fn device_key_pair() -> [u8; 64] {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let mut point = [0u8; 64];
    let made = EcdsaKeyPair::generate_pkcs8(alg, &rng).and_then(|pkcs8| {
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| ring::error::Unspecified)
    });
    match made {
        // An uncompressed point: 04 ‖ X ‖ Y.
        Ok(pair) => point.copy_from_slice(&pair.public_key().as_ref()[1..]),
        Err(_) => warn!("YubiHSM 2 emulator: no device key pair (the random source failed)"),
    }
    point
}

impl Device {
    /// A device holding what `cfg` describes.
    pub fn new(cfg: &DeviceConfig) -> Device {
        let mut audit = AuditLog::factory(Instant::now());
        // DeviceConfig::parse and check() keep these to what the device accepts.
        if audit.set_force_audit(&[cfg.force_audit.to_u8()]).is_err()
            || (!cfg.command_audit.is_empty()
                && audit.set_command_audit(&cfg.command_audit).is_err())
        {
            warn!("YubiHSM 2 emulator: audit options left at their factory values");
        }
        let mut d = Device {
            serial: cfg.serial,
            session_timeout: cfg.session_timeout,
            rewrap_renews_nonce: cfg.rewrap_renews_nonce,
            objects: BTreeMap::new(),
            sequences: BTreeMap::new(),
            sessions: Default::default(),
            audit,
            touched: Cell::new([None; 2]),
            reset_pending: false,
            public_key: device_key_pair(),
        };
        for k in &cfg.auth_keys {
            d.add_auth_key(k, Origin::IMPORTED);
        }
        for k in &cfg.otp_aead_keys {
            // OtpAeadKeyBytes holds only lengths AES takes, so this does not fail; if it
            // did, the key is left out, and said so.
            if d.add_otp_key(k, Origin::IMPORTED).is_err() {
                warn!(id = %k.id, "YubiHSM 2 emulator: otp-aead-key left out: not an AES key");
            }
        }
        d
    }

    /// Sessions open now (authenticated or half-open), as of the last request.
    pub fn open_sessions(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    /// Drops every session, as a power cycle does, and logs the boot; objects, options
    /// and the log stay.
    pub fn reset(&mut self) {
        self.sessions = Default::default();
        self.audit.boot(Instant::now());
    }

    /// Entries the audit log holds now, not yet released by Set Log Index.
    pub fn log_used(&self) -> usize {
        self.audit.used()
    }

    /// Reset Device's effect: the factory state (the default authentication key alone,
    /// every option off, the log a reset and a boot entry) and no session; the serial
    /// number and the emulator's own settings stay.
    fn factory_reset(&mut self, now: Instant) {
        self.objects.clear();
        self.sequences.clear();
        self.sessions = Default::default();
        self.audit = AuditLog::factory(now);
        self.add_auth_key(&factory_key(), Origin::IMPORTED);
    }

    /// Notes that the running command used object `id` (see [`Device::touched`]).
    fn touch(&self, id: ObjectId) {
        let t = self.touched.get();
        let next = match t {
            [None, _] => [Some(id.0), None],
            [Some(a), None] if a != id.0 => [Some(a), Some(id.0)],
            _ => t,
        };
        self.touched.set(next);
    }

    /// Runs one command under the audit log: refused with `log-full` if a full forced log
    /// cannot take it, else run, then logged (if `command-audit` says so) with the objects
    /// it used and the first byte of its answer.
    fn audited(
        &mut self,
        request: &Frame,
        session_key: u16,
        now: Instant,
        run: impl FnOnce(&mut Device) -> Frame,
    ) -> Frame {
        let command = request.cmd();
        if self.audit.blocks(command) {
            return cmd::error_frame(ErrorCode::LogFull);
        }
        self.touched.set([None; 2]);
        let answer = run(self);
        let [target, second] = self.touched.take();
        self.audit.record(
            Event {
                command,
                length: u16::try_from(request.data().len()).unwrap_or(u16::MAX),
                session_key,
                target_key: target.unwrap_or(0xffff),
                second_key: second.unwrap_or(0xffff),
                result: answer.cmd(),
            },
            now,
        );
        answer
    }

    fn add_auth_key(&mut self, k: &AuthKeyConfig, origin: Origin) {
        let info = self.new_info(
            k.id,
            ObjectType::AuthenticationKey,
            Algorithm::Aes128YubicoAuthentication,
            AUTH_KEY_SIZE,
            (k.label, k.domains, k.capabilities, k.delegated),
            origin,
        );
        self.objects.insert(
            (k.id.0, ObjectType::AuthenticationKey.to_u8()),
            Object {
                info,
                key: KeyMaterial::Auth(k.key.clone()),
            },
        );
    }

    /// Stores an otp-aead-key; `invalid-data` (and nothing stored) if its bytes are not an
    /// AES key.
    fn add_otp_key(&mut self, k: &OtpAeadKeyConfig, origin: Origin) -> Answer<()> {
        let key = AesKey::new(k.key.expose()).map_err(|_| ErrorCode::InvalidData)?;
        let info = self.new_info(
            k.id,
            ObjectType::OtpAeadKey,
            k.algorithm(),
            k.key.expose().len() as u16,
            (k.label, k.domains, k.capabilities, Capabilities::NONE),
            origin,
        );
        self.objects.insert(
            (k.id.0, ObjectType::OtpAeadKey.to_u8()),
            Object {
                info,
                key: KeyMaterial::Otp {
                    nonce_id: k.nonce_id,
                    key,
                },
            },
        );
        Ok(())
    }

    fn new_info(
        &mut self,
        id: ObjectId,
        object_type: ObjectType,
        algorithm: Algorithm,
        size: u16,
        (label, domains, capabilities, delegated): (Label, Domains, Capabilities, Capabilities),
        origin: Origin,
    ) -> ObjectInfo {
        // Every object made goes through here (put, generate, import): the running
        // command's log entry names it.
        self.touch(id);
        let seq = self
            .sequences
            .entry((id.0, object_type.to_u8()))
            .or_insert(0);
        let sequence = *seq;
        *seq = seq.wrapping_add(1);
        ObjectInfo {
            capabilities,
            id,
            size,
            domains,
            object_type,
            algorithm,
            sequence,
            origin,
            label,
            delegated,
        }
    }

    /// Answers one request (the bytes of one HTTP body or USB transfer) at time `now`.
    pub fn handle(&mut self, request: &[u8], now: Instant) -> Frame {
        self.expire(now);
        let frame = match Frame::parse(request) {
            Ok(f) => f,
            Err(_) => return cmd::error_frame(ErrorCode::WrongLength),
        };
        let code = CommandCode::from_u8(frame.cmd());
        debug!(cmd = %code, len = request.len(), "YubiHSM 2 emulator request");
        if code == CommandCode::SessionMessage {
            // Logged as the command inside, by session_message.
            return self.session_message(&frame, now);
        }
        self.audited(&frame, 0xffff, now, |d| match code {
            CommandCode::Echo => {
                answer::<cmd::Echo>(&frame, |req| Ok(cmd::EchoResponse { data: req.data }))
            }
            CommandCode::DeviceInfo => answer::<cmd::DeviceInfo>(&frame, |_| Ok(d.info())),
            CommandCode::GetDevicePublicKey => answer::<cmd::GetDevicePublicKey>(&frame, |_| {
                Ok(cmd::DevicePublicKey {
                    algorithm: Algorithm::EcP256YubicoAuthentication,
                    point: d.public_key,
                })
            }),
            CommandCode::CreateSession => d.create_session(&frame, now),
            CommandCode::AuthenticateSession => d.authenticate_session(&frame),
            // Session commands sent in clear, and codes the device does not know.
            _ => cmd::error_frame(ErrorCode::InvalidCommand),
        })
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.session_timeout;
        for slot in &mut self.sessions {
            if slot
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.last_used) >= timeout)
            {
                debug!("YubiHSM 2 emulator session expired");
                *slot = None;
            }
        }
    }

    fn info(&self) -> cmd::DeviceInfoResponse {
        cmd::DeviceInfoResponse {
            version: FIRMWARE,
            serial: self.serial,
            log_capacity: LOG_CAPACITY as u8,
            log_used: u8::try_from(self.audit.used()).unwrap_or(u8::MAX),
            algorithms: (1..=LAST_ALGORITHM.to_u8())
                .map(Algorithm::from_u8)
                .collect(),
        }
    }

    fn create_session(&mut self, frame: &Frame, now: Instant) -> Frame {
        let req: cmd::CreateSession = match cmd::decode_request(frame) {
            Ok(r) => r,
            Err(e) => return cmd::error_frame(decode_error(&e)),
        };
        self.touch(req.auth_key_id);
        let Some(obj) = self
            .objects
            .get(&(req.auth_key_id.0, ObjectType::AuthenticationKey.to_u8()))
        else {
            return cmd::error_frame(ErrorCode::ObjectNotFound);
        };
        let KeyMaterial::Auth(key) = &obj.key else {
            return cmd::error_frame(ErrorCode::ObjectNotFound);
        };
        let Some(free) = self.sessions.iter().position(Option::is_none) else {
            return cmd::error_frame(ErrorCode::SessionsFull);
        };
        let caller = Caller {
            key_id: req.auth_key_id,
            capabilities: obj.info.capabilities,
            delegated: obj.info.delegated,
            domains: obj.info.domains,
        };
        let (session, resp) =
            DeviceSession::create(SessionId(free as u8), key, &req, Challenge::random());
        self.sessions[free] = Some(Slot {
            session,
            caller,
            last_used: now,
        });
        encode::<cmd::CreateSession>(&resp)
    }

    fn authenticate_session(&mut self, frame: &Frame) -> Frame {
        let req: cmd::AuthenticateSession = match cmd::decode_request(frame) {
            Ok(r) => r,
            Err(e) => return cmd::error_frame(decode_error(&e)),
        };
        let Some(slot) = self.slot(req.session_id) else {
            return cmd::error_frame(ErrorCode::InvalidSession);
        };
        if slot.session.is_authenticated() {
            return cmd::error_frame(ErrorCode::InvalidSession);
        }
        let key_id = slot.caller.key_id;
        self.touch(key_id);
        let Some(slot) = self.slot(req.session_id) else {
            return cmd::error_frame(ErrorCode::InvalidSession);
        };
        match slot.session.authenticate(frame) {
            Ok(()) => encode::<cmd::AuthenticateSession>(&EmptyResponse),
            Err(_) => {
                // A failed proof ends the half-open session: its slot is free again.
                self.sessions[usize::from(req.session_id.0)] = None;
                cmd::error_frame(ErrorCode::AuthenticationFailed)
            }
        }
    }

    fn slot(&mut self, sid: SessionId) -> Option<&mut Slot> {
        self.sessions.get_mut(usize::from(sid.0))?.as_mut()
    }

    fn session_message(&mut self, frame: &Frame, now: Instant) -> Frame {
        let msg: cmd::SessionMessage = match cmd::decode_request(frame) {
            Ok(m) => m,
            Err(e) => return cmd::error_frame(decode_error(&e)),
        };
        let sid = msg.session_id;
        let Some(slot) = self.slot(sid) else {
            return cmd::error_frame(ErrorCode::InvalidSession);
        };
        if !slot.session.is_authenticated() {
            return cmd::error_frame(ErrorCode::InvalidSession);
        }
        let inner = match slot.session.open(frame) {
            Ok(inner) => inner,
            Err(e) => {
                // After a good MAC (a plaintext that is not a frame) the answer goes back
                // sealed; before it, in clear: the session cannot vouch for it.
                if let Ok(sealed) = slot.session.seal(&cmd::error_frame(ErrorCode::InvalidData)) {
                    slot.last_used = now;
                    return sealed;
                }
                return cmd::error_frame(match e {
                    Error::Mac => ErrorCode::AuthenticationFailed,
                    _ => ErrorCode::InvalidSession,
                });
            }
        };
        slot.last_used = now;
        let caller = slot.caller;
        let code = CommandCode::from_u8(inner.cmd());
        debug!(session = %sid, cmd = %code, "YubiHSM 2 emulator session command");
        let answer = self.audited(&inner, caller.key_id.0, now, |d| {
            d.session_command(caller, &inner)
        });
        let Some(slot) = self.slot(sid) else {
            return cmd::error_frame(ErrorCode::InvalidSession);
        };
        let sealed = match slot.session.seal(&answer) {
            Ok(s) => s,
            // An answer that does not fit a frame (none of the bounded answers here does).
            Err(_) => match slot.session.seal(&cmd::error_frame(ErrorCode::InvalidData)) {
                Ok(s) => s,
                Err(_) => cmd::error_frame(ErrorCode::InvalidSession),
            },
        };
        let closed = code == CommandCode::CloseSession && cmd::device_error(&answer) == Ok(None);
        if closed || slot.session.is_used_up() {
            self.sessions[usize::from(sid.0)] = None;
        }
        if std::mem::take(&mut self.reset_pending) {
            // The answer was sealed with the session's keys first: the device answers,
            // then reboots.
            self.factory_reset(now);
        }
        sealed
    }

    fn session_command(&mut self, caller: Caller, inner: &Frame) -> Frame {
        use CommandCode as C;
        match CommandCode::from_u8(inner.cmd()) {
            C::Echo => answer::<cmd::Echo>(inner, |req| Ok(cmd::EchoResponse { data: req.data })),
            C::DeviceInfo => answer::<cmd::DeviceInfo>(inner, |_| Ok(self.info())),
            C::CloseSession => answer::<cmd::CloseSession>(inner, |_| Ok(EmptyResponse)),
            C::GetPseudoRandom => answer::<cmd::GetPseudoRandom>(inner, |req| {
                need(caller.capabilities, Capability::GetPseudoRandom)?;
                if req.length > MAX_RANDOM {
                    return Err(ErrorCode::InvalidData);
                }
                let mut bytes = Zeroizing::new(vec![0u8; usize::from(req.length)]);
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                Ok(cmd::PseudoRandomResponse {
                    bytes: SecretBytes::new(bytes.as_slice()),
                })
            }),
            C::ListObjects => answer::<cmd::ListObjects>(inner, |req| Ok(self.list(caller, &req))),
            C::GetObjectInfo => answer::<cmd::GetObjectInfo>(inner, |req| {
                Ok(self.visible(caller, req.id, req.object_type)?.info)
            }),
            C::DeleteObject => answer::<cmd::DeleteObject>(inner, |req| {
                self.visible(caller, req.id, req.object_type)?;
                need(
                    caller.capabilities,
                    delete_capability(req.object_type).ok_or(ErrorCode::InvalidData)?,
                )?;
                self.objects.remove(&(req.id.0, req.object_type.to_u8()));
                Ok(EmptyResponse)
            }),
            C::PutAuthenticationKey => answer::<cmd::PutAuthenticationKey>(inner, |req| {
                need(caller.capabilities, Capability::PutAuthenticationKey)?;
                if req.object.algorithm != Algorithm::Aes128YubicoAuthentication {
                    return Err(ErrorCode::InvalidData);
                }
                let id = self.new_object_id(
                    caller,
                    &req.object,
                    ObjectType::AuthenticationKey,
                    req.delegated,
                )?;
                let o = &req.object;
                self.add_auth_key(
                    &AuthKeyConfig {
                        id,
                        label: o.label,
                        key: req.key.clone(),
                        capabilities: o.capabilities,
                        delegated: req.delegated,
                        domains: o.domains,
                    },
                    Origin::IMPORTED,
                );
                Ok(cmd::ObjectIdResponse { id })
            }),
            C::PutOtpAeadKey => answer::<cmd::PutOtpAeadKey>(inner, |req| {
                need(caller.capabilities, Capability::PutOtpAeadKey)?;
                if req.object.algorithm.otp_key_len() != Some(req.key.expose().len()) {
                    return Err(ErrorCode::InvalidData);
                }
                self.put_otp_key(
                    caller,
                    &req.object,
                    req.nonce_id,
                    req.key.clone(),
                    Origin::IMPORTED,
                )
            }),
            C::GenerateOtpAeadKey => answer::<cmd::GenerateOtpAeadKey>(inner, |req| {
                need(caller.capabilities, Capability::GenerateOtpAeadKey)?;
                let len = req
                    .object
                    .algorithm
                    .otp_key_len()
                    .ok_or(ErrorCode::InvalidData)?;
                let mut bytes = Zeroizing::new(vec![0u8; len]);
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let key = OtpAeadKeyBytes::new(&bytes).map_err(|_| ErrorCode::InvalidData)?;
                self.put_otp_key(caller, &req.object, req.nonce_id, key, Origin::GENERATED)
            }),
            C::CreateOtpAead => answer::<cmd::CreateOtpAead>(inner, |req| {
                let (nonce_id, key) =
                    self.otp_key(caller, req.key_id, Capability::CreateOtpAead)?;
                let secret = YubiKeySecret {
                    key: *req.aes_key.expose(),
                    uid: *req.private_id.expose(),
                };
                Ok(cmd::OtpAeadResponse {
                    aead: seal(key, nonce_id, fresh_nonce(), &secret)?,
                })
            }),
            C::RandomizeOtpAead => answer::<cmd::RandomizeOtpAead>(inner, |req| {
                let (nonce_id, key) =
                    self.otp_key(caller, req.key_id, Capability::RandomizeOtpAead)?;
                let mut secret = YubiKeySecret {
                    key: [0; 16],
                    uid: [0; 6],
                };
                rand::rngs::OsRng.fill_bytes(&mut secret.key);
                rand::rngs::OsRng.fill_bytes(&mut secret.uid);
                Ok(cmd::OtpAeadResponse {
                    aead: seal(key, nonce_id, fresh_nonce(), &secret)?,
                })
            }),
            C::RewrapOtpAead => answer::<cmd::RewrapOtpAead>(inner, |req| {
                let (from_nonce, from_key) =
                    self.otp_key(caller, req.from, Capability::RewrapFromOtpAeadKey)?;
                let secret = open(from_key, from_nonce, &req.aead).ok_or(ErrorCode::InvalidData)?;
                let (to_nonce, to_key) =
                    self.otp_key(caller, req.to, Capability::RewrapToOtpAeadKey)?;
                // The AEAD keeps its 6-byte nonce (a store that files AEADs by the nonce,
                // as pyhsm's by public id, stays valid), unless told to model a device that
                // draws a new one.
                let nonce = if self.rewrap_renews_nonce {
                    fresh_nonce()
                } else {
                    req.aead.nonce()
                };
                Ok(cmd::OtpAeadResponse {
                    aead: seal(to_key, to_nonce, nonce, &secret)?,
                })
            }),
            C::DecryptOtp => answer::<cmd::DecryptOtp>(inner, |req| {
                let (nonce_id, key) = self.otp_key(caller, req.key_id, Capability::DecryptOtp)?;
                let secret = open(key, nonce_id, &req.aead).ok_or(ErrorCode::InvalidOtp)?;
                let counters =
                    otp::decrypt(&secret, req.otp.expose()).map_err(|_| ErrorCode::InvalidOtp)?;
                Ok(cmd::DecryptOtpResponse { counters })
            }),
            C::ResetDevice => answer::<cmd::ResetDevice>(inner, |_| {
                need(caller.capabilities, Capability::ResetDevice)?;
                self.reset_pending = true;
                Ok(EmptyResponse)
            }),
            C::GetLogEntries => answer::<cmd::GetLogEntries>(inner, |_| {
                need(caller.capabilities, Capability::GetLogEntries)?;
                Ok(self.audit.entries())
            }),
            C::SetLogIndex => answer::<cmd::SetLogIndex>(inner, |req| {
                need(caller.capabilities, Capability::GetLogEntries)?;
                self.audit
                    .release(req.index)
                    .map_err(|_| ErrorCode::InvalidData)
                    .map(|()| EmptyResponse)
            }),
            C::SetOption => answer::<cmd::SetOption>(inner, |req| {
                need(caller.capabilities, Capability::SetOption)?;
                match req.option {
                    DeviceOption::ForceAudit => self.audit.set_force_audit(&req.value),
                    DeviceOption::CommandAudit => self.audit.set_command_audit(&req.value),
                    // Algorithm toggling and the FIPS mode are not modelled.
                    _ => Err(audit::Invalid),
                }
                .map_err(|_| ErrorCode::InvalidData)
                .map(|()| EmptyResponse)
            }),
            C::GetOption => answer::<cmd::GetOption>(inner, |req| {
                need(caller.capabilities, Capability::GetOption)?;
                let value = match req.option {
                    DeviceOption::ForceAudit => vec![self.audit.force_audit().to_u8()],
                    DeviceOption::CommandAudit => self.audit.command_audit(),
                    // What a device that is not a FIPS one answers for fips-mode, and
                    // python-yubihsm's cue to take every algorithm as enabled.
                    _ => return Err(ErrorCode::InvalidData),
                };
                Ok(cmd::OptionValue { value })
            }),
            C::ChangeAuthenticationKey => answer::<cmd::ChangeAuthenticationKey>(inner, |req| {
                // Only the session's own key may be changed: another one is `invalid-id`
                // (what python-yubihsm's device test expects), before any capability.
                if req.id != caller.key_id {
                    return Err(ErrorCode::InvalidId);
                }
                need(caller.capabilities, Capability::ChangeAuthenticationKey)?;
                if req.algorithm != Algorithm::Aes128YubicoAuthentication {
                    return Err(ErrorCode::InvalidData);
                }
                self.visible(caller, req.id, ObjectType::AuthenticationKey)?;
                let obj = self
                    .objects
                    .get_mut(&(req.id.0, ObjectType::AuthenticationKey.to_u8()))
                    .ok_or(ErrorCode::ObjectNotFound)?;
                obj.key = KeyMaterial::Auth(req.key.clone());
                Ok(cmd::ObjectIdResponse { id: req.id })
            }),
            // Opaque objects, wrap, HMAC and symmetric keys: one file each (`device/`).
            _ => self
                .opaque_command(caller, inner)
                .or_else(|| self.wrap_command(caller, inner))
                .or_else(|| self.hmac_command(caller, inner))
                .or_else(|| self.symmetric_command(caller, inner))
                .unwrap_or_else(|| cmd::error_frame(ErrorCode::InvalidCommand)),
        }
    }

    /// The object `id` of `object_type` if it shares a domain with the session: objects in
    /// other domains do not exist for it. Notes it as used by the running command.
    fn visible(&self, caller: Caller, id: ObjectId, object_type: ObjectType) -> Answer<&Object> {
        self.touch(id);
        self.objects
            .get(&(id.0, object_type.to_u8()))
            .filter(|o| o.info.domains.intersects(caller.domains))
            .ok_or(ErrorCode::ObjectNotFound)
    }

    /// The otp-aead-key `id`, if it is visible and both it and the session hold `cap`.
    fn otp_key(&self, caller: Caller, id: ObjectId, cap: Capability) -> Answer<(NonceId, &AesKey)> {
        let obj = self.visible(caller, id, ObjectType::OtpAeadKey)?;
        need(caller.capabilities, cap)?;
        need(obj.info.capabilities, cap)?;
        match &obj.key {
            KeyMaterial::Otp { nonce_id, key } => Ok((*nonce_id, key)),
            _ => Err(ErrorCode::ObjectNotFound),
        }
    }

    fn list(&self, caller: Caller, req: &cmd::ListObjects) -> cmd::ListObjectsResponse {
        let matches = |info: &ObjectInfo| {
            info.domains.intersects(caller.domains)
                && req.filters.iter().all(|f| match f {
                    ObjectFilter::Id(id) => info.id == *id,
                    ObjectFilter::Type(t) => info.object_type == *t,
                    ObjectFilter::Domains(d) => info.domains.intersects(*d),
                    ObjectFilter::Capabilities(c) => info.capabilities.0 & c.0 != 0,
                    ObjectFilter::Algorithm(a) => info.algorithm == *a,
                    ObjectFilter::Label(l) => info.label == *l,
                })
        };
        cmd::ListObjectsResponse {
            objects: self
                .objects
                .values()
                .map(|o| &o.info)
                .filter(|i| matches(i))
                .map(|i| cmd::ListedObject {
                    id: i.id,
                    object_type: i.object_type,
                    sequence: i.sequence,
                })
                .collect(),
        }
    }

    /// Checks a new object's head against the session's rights and the store, and picks
    /// its id (the lowest free one when the request says 0).
    fn new_object_id(
        &self,
        caller: Caller,
        o: &cmd::NewObject,
        object_type: ObjectType,
        delegated: Capabilities,
    ) -> Answer<ObjectId> {
        if o.domains.0 == 0 || o.id.0 == 0xffff {
            return Err(ErrorCode::InvalidData);
        }
        if !caller.domains.contains_all(o.domains)
            || !caller.delegated.contains_all(o.capabilities)
            || !caller.delegated.contains_all(delegated)
        {
            return Err(ErrorCode::InsufficientPermissions);
        }
        if self.objects.len() >= MAX_OBJECTS {
            return Err(ErrorCode::StorageFailed);
        }
        let taken = |id: u16| self.objects.contains_key(&(id, object_type.to_u8()));
        let id = if o.id.0 != 0 {
            if taken(o.id.0) {
                return Err(ErrorCode::ObjectExists);
            }
            o.id
        } else {
            (1..0xffff)
                .find(|&id| !taken(id))
                .map(ObjectId)
                .ok_or(ErrorCode::StorageFailed)?
        };
        self.touch(id);
        Ok(id)
    }

    fn put_otp_key(
        &mut self,
        caller: Caller,
        o: &cmd::NewObject,
        nonce_id: NonceId,
        key: OtpAeadKeyBytes,
        origin: Origin,
    ) -> Answer<cmd::ObjectIdResponse> {
        let id = self.new_object_id(caller, o, ObjectType::OtpAeadKey, Capabilities::NONE)?;
        self.add_otp_key(
            &OtpAeadKeyConfig {
                id,
                label: o.label,
                key,
                nonce_id,
                capabilities: o.capabilities,
                domains: o.domains,
            },
            origin,
        )?;
        Ok(cmd::ObjectIdResponse { id })
    }
}

impl Domains {
    fn contains_all(self, other: Domains) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The capability Delete Object needs for an object of `t`; `None` for a type the device
/// does not know.
fn delete_capability(t: ObjectType) -> Option<Capability> {
    Some(match t {
        ObjectType::Opaque => Capability::DeleteOpaque,
        ObjectType::AuthenticationKey => Capability::DeleteAuthenticationKey,
        ObjectType::AsymmetricKey => Capability::DeleteAsymmetricKey,
        ObjectType::WrapKey => Capability::DeleteWrapKey,
        ObjectType::HmacKey => Capability::DeleteHmacKey,
        ObjectType::Template => Capability::DeleteTemplate,
        ObjectType::OtpAeadKey => Capability::DeleteOtpAeadKey,
        ObjectType::SymmetricKey => Capability::DeleteSymmetricKey,
        ObjectType::PublicWrapKey => Capability::PublicWrapKeyDelete,
        ObjectType::Unknown(_) => return None,
    })
}

fn need(have: Capabilities, cap: Capability) -> Answer<()> {
    if have.contains(cap) {
        Ok(())
    } else {
        Err(ErrorCode::InsufficientPermissions)
    }
}

/// What a request that does not decode earns: its length is wrong, or a field is.
fn decode_error(e: &Error) -> ErrorCode {
    match e {
        Error::Truncated(_) | Error::TrailingBytes(_) => ErrorCode::WrongLength,
        _ => ErrorCode::InvalidData,
    }
}

/// Decodes a `C` from `frame`, runs `f`, and encodes its answer or refusal.
fn answer<C: Command>(frame: &Frame, f: impl FnOnce(C) -> Answer<C::Response>) -> Frame {
    match cmd::decode_request::<C>(frame) {
        Err(e) => cmd::error_frame(decode_error(&e)),
        Ok(req) => match f(req) {
            Ok(resp) => encode::<C>(&resp),
            Err(code) => cmd::error_frame(code),
        },
    }
}

fn encode<C: Command>(resp: &C::Response) -> Frame {
    cmd::encode_response::<C>(resp).unwrap_or_else(|_| cmd::error_frame(ErrorCode::InvalidData))
}

fn fresh_nonce() -> [u8; 6] {
    let mut n = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Seals a YubiKey's key and private id under an otp-aead-key; a failure is the device's
/// `invalid-data`.
fn seal(
    key: &AesKey,
    nonce_id: NonceId,
    nonce: [u8; 6],
    secret: &YubiKeySecret,
) -> Answer<OtpAead> {
    otp_aead::seal(key, nonce_id, nonce, secret).map_err(|_| ErrorCode::InvalidData)
}

/// Opens an OTP AEAD; `None` if it does not authenticate under this key and nonce id.
fn open(key: &AesKey, nonce_id: NonceId, aead: &OtpAead) -> Option<YubiKeySecret> {
    otp_aead::open(key, nonce_id, aead).ok()
}

mod audit;
// Opaque objects, wrap, HMAC and symmetric keys: one file per kind.
mod hmac;
mod objects;
mod opaque;
mod symmetric;
mod wrap;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod log_tests;
