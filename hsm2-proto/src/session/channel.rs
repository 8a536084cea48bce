//! The host's side of a session: opens it, seals commands and opens responses.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::envelope::{self, CODE};
use super::{ct_eq, truncate, Challenge, Context, SessionId, SessionKeys};
use crate::cmd::{self, AuthenticateSession, CreateSession, CreateSessionResponse, SessionMessage};
use crate::codec::Frame;
use crate::{AuthKey, Error, ObjectId, Result};

/// An authenticated session, host side: its keys, MAC chain and message counter.
///
/// Strictly one command, then its response: [`HostSession::seal`] a command,
/// [`HostSession::open`] the answer. If anything goes wrong between the two (the answer
/// is lost, forged, for another session, or the device refuses the envelope itself) the
/// session's MAC chain can no longer be trusted to match the device's, so the session
/// refuses all further use with [`Error::SessionUnusable`] and the caller opens a new one.
/// A command the device refuses *inside* a good envelope leaves it usable.
///
/// Its keys are wiped when it is dropped. Dropping does not tell the device: send
/// [`crate::cmd::CloseSession`] first to free the device's slot at once (otherwise it
/// times out there).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HostSession {
    #[zeroize(skip)]
    id: SessionId,
    keys: SessionKeys,
    pub(super) chain: [u8; 16],
    /// The C-MAC of the command sealed and not yet answered: the chain value its response
    /// is MACed over, and the next chain once the response verifies.
    pending: Option<[u8; 16]>,
    pub(super) counter: u32,
    usable: bool,
}

impl fmt::Debug for HostSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSession")
            .field("id", &self.id)
            .field("counter", &self.counter)
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

impl HostSession {
    /// The `CreateSession` request that starts a session with authentication key
    /// `auth_key_id`; `host_challenge` must be fresh random bytes
    /// ([`Challenge::random`]) for every session.
    pub fn create_request(auth_key_id: ObjectId, host_challenge: Challenge) -> CreateSession {
        CreateSession {
            auth_key_id,
            host_challenge,
        }
    }

    /// Checks the device's answer to `CreateSession` against the static keys and returns
    /// the session, with the `AuthenticateSession` request to send next. A card cryptogram
    /// that does not match (wrong key or password) fails with [`Error::CardCryptogram`]
    /// before anything more is sent. The session is usable once the device answers the
    /// request with an empty success.
    pub fn authenticate(
        key: &AuthKey,
        host_challenge: Challenge,
        created: &CreateSessionResponse,
    ) -> Result<(HostSession, AuthenticateSession)> {
        let ctx = Context::new(&host_challenge, &created.card_challenge);
        let keys = SessionKeys::derive(key, &ctx);
        if !ct_eq(&keys.card_cryptogram(&ctx).0, &created.card_cryptogram.0) {
            return Err(Error::CardCryptogram);
        }
        let mut req = AuthenticateSession {
            session_id: created.session_id,
            host_cryptogram: keys.host_cryptogram(&ctx),
            mac: [0; 8],
        };
        // The MAC covers the frame with its final length (the 8 MAC bytes included) and
        // an all-zero chain; its full value starts the chain.
        let unmaced = cmd::encode_request(&req)?;
        let chain = envelope::chained_mac(&keys.mac, &[0; 16], &unmaced);
        req.mac = truncate(&chain);
        let session = HostSession {
            id: created.session_id,
            keys,
            chain,
            pending: None,
            counter: 1,
            usable: true,
        };
        Ok((session, req))
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The counter of the next message (1 for the first after authentication).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// False once the session failed, was closed or ran out of counter.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Marks the session unusable (after `CloseSession`, or when its transport failed
    /// mid-exchange).
    pub fn invalidate(&mut self) {
        self.usable = false;
    }

    /// Encrypts and MACs an inner command frame into a `SessionMessage` frame.
    pub fn seal(&mut self, inner: &Frame) -> Result<Frame> {
        if !self.usable {
            return Err(Error::SessionUnusable(self.id.0));
        }
        if self.pending.is_some() {
            // The previous command's answer was never opened: the chains have parted.
            self.usable = false;
            return Err(Error::SessionUnusable(self.id.0));
        }
        let iv = envelope::iv(&self.keys.enc, self.counter);
        let ciphertext = envelope::encrypt(&self.keys.enc, &iv, inner)?;
        let (frame, chain) =
            envelope::seal(&self.keys.mac, &self.chain, false, self.id, ciphertext)?;
        self.pending = Some(chain);
        Ok(frame)
    }

    /// Checks the device's answer to the command last sealed (error frame, command byte,
    /// session id, R-MAC, in python-yubihsm's order), advances the chain and counter, and
    /// returns the decrypted inner response frame, which may itself be an error frame.
    pub fn open(&mut self, answer: &Frame) -> Result<Frame> {
        let Some(next_chain) = self.pending.take() else {
            return Err(Error::SessionUnusable(self.id.0));
        };
        match self.verify(answer, &next_chain) {
            Ok(ciphertext) => {
                let iv = envelope::iv(&self.keys.enc, self.counter);
                self.chain = next_chain;
                match self.counter.checked_add(1) {
                    Some(c) => self.counter = c,
                    None => self.usable = false,
                }
                envelope::decrypt(&self.keys.enc, &iv, &ciphertext)
            }
            Err(e) => {
                self.usable = false;
                Err(e)
            }
        }
    }

    /// Everything checked before the answer is trusted; returns its ciphertext.
    fn verify(&self, answer: &Frame, next_chain: &[u8; 16]) -> Result<Vec<u8>> {
        if let Some(code) = cmd::device_error(answer)? {
            return Err(Error::Device { cmd: CODE, code });
        }
        let resp = cmd::decode_response::<SessionMessage>(answer)?;
        if resp.session_id != self.id {
            return Err(Error::EchoMismatch {
                cmd: CODE,
                field: "session id",
            });
        }
        let rmac = envelope::chained_mac(&self.keys.rmac, next_chain, answer);
        if !ct_eq(&truncate(&rmac), &resp.mac) {
            return Err(Error::Mac);
        }
        Ok(resp.ciphertext)
    }
}
