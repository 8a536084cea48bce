//! The device's side of a session, for a software YubiHSM 2: answers `CreateSession`,
//! checks `AuthenticateSession`, opens commands and seals responses.
//!
//! It holds the protocol only; which keys exist, the 16 slots, idle timeouts and which
//! error code a failure earns are the emulator's (`crate::emulator`, feature `emulator`).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::envelope::{self, CODE};
use super::{ct_eq, truncate, Challenge, Context, Cryptogram, SessionId, SessionKeys};
use crate::cmd::{self, AuthenticateSession, CreateSession, CreateSessionResponse, SessionMessage};
use crate::codec::Frame;
use crate::{AuthKey, Error, Result};

/// A session, device side.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DeviceSession {
    #[zeroize(skip)]
    id: SessionId,
    keys: SessionKeys,
    #[zeroize(skip)]
    ctx: Context,
    chain: [u8; 16],
    /// The IV of the command opened and not yet answered.
    pending_iv: Option<[u8; 16]>,
    pub(super) counter: u32,
    authenticated: bool,
    /// The counter ran out: the session answered its last command (another would reuse an
    /// IV) and opens nothing more.
    used_up: bool,
}

impl fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSession")
            .field("id", &self.id)
            .field("counter", &self.counter)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

impl DeviceSession {
    /// A new session `id` for a `CreateSession` naming an authentication key whose static
    /// keys are `key`, with the device's fresh `card_challenge`; returns the answer.
    pub fn create(
        id: SessionId,
        key: &AuthKey,
        req: &CreateSession,
        card_challenge: Challenge,
    ) -> (DeviceSession, CreateSessionResponse) {
        let ctx = Context::new(&req.host_challenge, &card_challenge);
        let keys = SessionKeys::derive(key, &ctx);
        let resp = CreateSessionResponse {
            session_id: id,
            card_challenge,
            card_cryptogram: keys.card_cryptogram(&ctx),
        };
        let session = DeviceSession {
            id,
            keys,
            ctx,
            chain: [0; 16],
            pending_iv: None,
            counter: 1,
            authenticated: false,
            used_up: false,
        };
        (session, resp)
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// True once `AuthenticateSession` succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// True once the message counter ran out: the session opens no more commands and its
    /// slot can be freed.
    pub fn is_used_up(&self) -> bool {
        self.used_up
    }

    /// Checks an `AuthenticateSession` frame: its session id, host cryptogram and C-MAC
    /// (in constant time). On success the session is open and its MAC chain started; on
    /// failure ([`Error::Mac`], [`Error::EchoMismatch`]) nothing changes.
    pub fn authenticate(&mut self, frame: &Frame) -> Result<()> {
        let req: AuthenticateSession = cmd::decode_request(frame)?;
        if self.authenticated {
            return Err(Error::SessionUnusable(self.id.0));
        }
        if req.session_id != self.id {
            return Err(Error::EchoMismatch {
                cmd: crate::CommandCode::AuthenticateSession,
                field: "session id",
            });
        }
        let expected: Cryptogram = self.keys.host_cryptogram(&self.ctx);
        let chain = envelope::chained_mac(&self.keys.mac, &[0; 16], frame);
        // Both checks run before either result is looked at.
        let crypto_ok = ct_eq(&expected.0, &req.host_cryptogram.0);
        let mac_ok = ct_eq(&truncate(&chain), &req.mac);
        if !(crypto_ok & mac_ok) {
            return Err(Error::Mac);
        }
        self.chain = chain;
        self.authenticated = true;
        Ok(())
    }

    /// Checks a `SessionMessage` frame (session id, C-MAC) and returns the inner command
    /// frame. A bad MAC changes nothing. The answer must be sealed with
    /// [`DeviceSession::seal`] before the next command is opened.
    pub fn open(&mut self, frame: &Frame) -> Result<Frame> {
        if !self.authenticated || self.used_up || self.pending_iv.is_some() {
            return Err(Error::SessionUnusable(self.id.0));
        }
        let msg: SessionMessage = cmd::decode_request(frame)?;
        if msg.session_id != self.id {
            return Err(Error::EchoMismatch {
                cmd: CODE,
                field: "session id",
            });
        }
        let chain = envelope::chained_mac(&self.keys.mac, &self.chain, frame);
        if !ct_eq(&truncate(&chain), &msg.mac) {
            return Err(Error::Mac);
        }
        self.chain = chain;
        let iv = envelope::iv(&self.keys.enc, self.counter);
        self.pending_iv = Some(iv);
        // The MAC verified, so the command counts even if its plaintext is malformed; the
        // emulator answers that with an (encrypted) error frame.
        envelope::decrypt(&self.keys.enc, &iv, &msg.ciphertext)
    }

    /// Encrypts the inner response frame to the command last opened (same IV), MACs it
    /// with S-RMAC over the chain, and advances the counter. The answer to the command whose
    /// counter is the last one ends the session ([`DeviceSession::is_used_up`]): a counter
    /// that wrapped would reuse IVs.
    pub fn seal(&mut self, inner: &Frame) -> Result<Frame> {
        let Some(iv) = self.pending_iv else {
            return Err(Error::SessionUnusable(self.id.0));
        };
        let ciphertext = envelope::encrypt(&self.keys.enc, &iv, inner)?;
        let (frame, _) = envelope::seal(&self.keys.rmac, &self.chain, true, self.id, ciphertext)?;
        self.pending_iv = None;
        match self.counter.checked_add(1) {
            Some(c) => self.counter = c,
            None => self.used_up = true,
        }
        Ok(frame)
    }
}
