//! The driver: one [`Client`] per transport, one generic send for plain commands and one for
//! commands inside a session, and a few lines per operation a KSM performs.

use tracing::debug;

use crate::cmd::{self, Command};
use crate::session::{Challenge, HostSession};
use crate::transport::Transport;
use crate::{
    AuthKey, Capabilities, ObjectId, ObjectType, OtpAead, OtpCounters, Result, Secret, SecretBytes,
};

/// A connection to one YubiHSM 2 through a [`Transport`].
///
/// Owns the transport: frames are strictly request then answer. Sessions are values of
/// their own ([`HostSession`]) passed to [`Client::send`], so a caller may keep one open
/// across many commands, open several, and replace one that expired, without the client
/// deciding when.
pub struct Client<T: Transport> {
    transport: T,
}

impl<T: Transport> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl<T: Transport> Client<T> {
    /// A client on `transport`; nothing is sent yet.
    pub fn new(transport: T) -> Client<T> {
        Client { transport }
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends a command outside any session (`Echo`, `DeviceInfo`, and the two that open a
    /// session) and checks its answer.
    pub fn send_plain<C: Command>(&mut self, req: &C) -> Result<C::Response> {
        let answer = self.transport.exchange(&cmd::encode_request(req)?)?;
        let resp = cmd::decode_response::<C>(&answer)?;
        req.check_response(&resp)?;
        Ok(resp)
    }

    /// Firmware version, serial number and algorithms (plain, page 0).
    pub fn device_info(&mut self) -> Result<cmd::DeviceInfoResponse> {
        self.send_plain(&cmd::DeviceInfo)
    }

    /// Opens a session with authentication key `auth_key_id` whose static keys are `key`
    /// ([`AuthKey::from_password`] for a password): `CreateSession` with a fresh random
    /// challenge, the card cryptogram checked, then `AuthenticateSession`.
    pub fn open_session(&mut self, auth_key_id: ObjectId, key: &AuthKey) -> Result<HostSession> {
        let challenge = Challenge::random();
        let created = self.send_plain(&HostSession::create_request(auth_key_id, challenge))?;
        let (session, authenticate) = HostSession::authenticate(key, challenge, &created)?;
        self.send_plain(&authenticate)?;
        debug!(session = %session.id(), key = %auth_key_id, "YubiHSM 2 session open");
        Ok(session)
    }

    /// Sends a command inside `session` and checks its answer. A transport failure or a
    /// forged, lost or misdirected answer leaves the session unusable (see
    /// [`HostSession`]); a refusal by the device ([`crate::Error::Device`]) does not.
    pub fn send<C: Command>(&mut self, session: &mut HostSession, req: &C) -> Result<C::Response> {
        let outer = session.seal(&cmd::encode_request(req)?)?;
        let answer = self
            .transport
            .exchange(&outer)
            .inspect_err(|_| session.invalidate())?;
        let inner = session.open(&answer)?;
        let resp = cmd::decode_response::<C>(&inner)?;
        req.check_response(&resp)?;
        Ok(resp)
    }

    /// Ends `session` on the device (`CloseSession`) and wipes its keys.
    pub fn close_session(&mut self, mut session: HostSession) -> Result<()> {
        let result = self.send(&mut session, &cmd::CloseSession);
        session.invalidate();
        result.map(drop)
    }

    /// The counters of `otp` (its raw 16 bytes) if the device opens `aead` with
    /// otp-aead-key `key_id` and the OTP checks out.
    pub fn decrypt_otp(
        &mut self,
        session: &mut HostSession,
        key_id: ObjectId,
        aead: OtpAead,
        otp: [u8; 16],
    ) -> Result<OtpCounters> {
        let req = cmd::DecryptOtp {
            key_id,
            aead,
            otp: Secret(otp),
        };
        Ok(self.send(session, &req)?.counters)
    }

    /// Seals a YubiKey's AES key and private id under otp-aead-key `key_id`.
    pub fn create_otp_aead(
        &mut self,
        session: &mut HostSession,
        key_id: ObjectId,
        aes_key: Secret<16>,
        private_id: Secret<6>,
    ) -> Result<OtpAead> {
        let req = cmd::CreateOtpAead {
            key_id,
            aes_key,
            private_id,
        };
        Ok(self.send(session, &req)?.aead)
    }

    /// An AEAD of a YubiKey key and private id the device draws itself.
    pub fn randomize_otp_aead(
        &mut self,
        session: &mut HostSession,
        key_id: ObjectId,
    ) -> Result<OtpAead> {
        Ok(self.send(session, &cmd::RandomizeOtpAead { key_id })?.aead)
    }

    /// `aead` moved from otp-aead-key `from` to `to` inside the device.
    pub fn rewrap_otp_aead(
        &mut self,
        session: &mut HostSession,
        from: ObjectId,
        to: ObjectId,
        aead: OtpAead,
    ) -> Result<OtpAead> {
        Ok(self
            .send(session, &cmd::RewrapOtpAead { from, to, aead })?
            .aead)
    }

    /// Metadata of object `id` of `object_type`.
    pub fn object_info(
        &mut self,
        session: &mut HostSession,
        id: ObjectId,
        object_type: ObjectType,
    ) -> Result<cmd::ObjectInfo> {
        self.send(session, &cmd::GetObjectInfo { id, object_type })
    }

    /// Imports the AES-CCM wrap key `key` (16, 24 or 32 bytes, `object.algorithm` to
    /// match) with `delegated` capabilities: the most an object exported or imported
    /// under it may have. Returns the id it got.
    pub fn put_wrap_key(
        &mut self,
        session: &mut HostSession,
        object: cmd::NewObject,
        delegated: Capabilities,
        key: SecretBytes,
    ) -> Result<ObjectId> {
        let req = cmd::PutWrapKey {
            object,
            delegated,
            key,
        };
        Ok(self.send(session, &req)?.id)
    }

    /// Object `id` of `object_type` encrypted under wrap key `wrap_key_id`: bytes that
    /// only a device holding the same wrap key can import.
    pub fn export_wrapped(
        &mut self,
        session: &mut HostSession,
        wrap_key_id: ObjectId,
        object_type: ObjectType,
        id: ObjectId,
    ) -> Result<Vec<u8>> {
        let req = cmd::ExportWrapped {
            wrap_key_id,
            object_type,
            id,
        };
        Ok(self.send(session, &req)?.wrapped)
    }

    /// Imports what [`Client::export_wrapped`] gave, under wrap key `wrap_key_id`; returns
    /// the new object's type and id (those it was exported with).
    pub fn import_wrapped(
        &mut self,
        session: &mut HostSession,
        wrap_key_id: ObjectId,
        wrapped: Vec<u8>,
    ) -> Result<cmd::ImportedObject> {
        self.send(
            session,
            &cmd::ImportWrapped {
                wrap_key_id,
                wrapped,
            },
        )
    }

    /// The audit log: its unlogged-event counters and the entries not yet released, oldest
    /// first. The digests are not checked here: a caller that keeps the last entry it saw
    /// checks the chain with [`cmd::LogEntry::follows`].
    pub fn get_log_entries(&mut self, session: &mut HostSession) -> Result<cmd::LogEntries> {
        self.send(session, &cmd::GetLogEntries)
    }

    /// Releases the audit log's entries up to number `index` (the last one kept), so that a
    /// device with `force-audit` on has room again.
    pub fn set_log_index(&mut self, session: &mut HostSession, index: u16) -> Result<()> {
        self.send(session, &cmd::SetLogIndex { index }).map(drop)
    }

    /// A device option's raw value.
    pub fn get_option(
        &mut self,
        session: &mut HostSession,
        option: cmd::DeviceOption,
    ) -> Result<cmd::OptionValue> {
        self.send(session, &cmd::GetOption { option })
    }

    /// Sets a device option.
    pub fn set_option(&mut self, session: &mut HostSession, req: &cmd::SetOption) -> Result<()> {
        self.send(session, req).map(drop)
    }

    /// The `force-audit` option.
    pub fn force_audit(&mut self, session: &mut HostSession) -> Result<cmd::AuditSetting> {
        let v = self.get_option(session, cmd::DeviceOption::ForceAudit)?;
        v.audit_setting().ok_or(crate::Error::InvalidField {
            cmd: crate::CommandCode::GetOption,
            field: "force-audit value",
        })
    }
}
