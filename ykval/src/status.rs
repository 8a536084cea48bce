//! The answer statuses, written once.

/// A YK-VAL status, the value of an answer's `status=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The OTP is valid, and now spent.
    Ok,
    /// Not an OTP, not one the KSMs can decode, or of a revoked YubiKey.
    BadOtp,
    /// An OTP used before.
    ReplayedOtp,
    /// The same OTP with the same nonce again.
    ReplayedRequest,
    /// The request's `h` is not its signature under the client's key.
    BadSignature,
    /// A parameter is missing or malformed.
    MissingParameter,
    /// No client with that id.
    NoSuchClient,
    /// The client is disabled (`active` false).
    OperationNotAllowed,
    /// The counter database or the KSMs could not be asked.
    BackendError,
    /// Not enough servers agreed (never from us: one database, no sync pool).
    NotEnoughAnswers,
}

macro_rules! statuses {
    ($($v:ident = $s:literal),* $(,)?) => {
        impl Status {
            /// Every status, for metrics that list each one.
            pub const ALL: &'static [Status] = &[$(Status::$v),*];

            /// The status as the answer spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Status::$v => $s),*
                }
            }
        }
    };
}

statuses! {
    Ok = "OK",
    BadOtp = "BAD_OTP",
    ReplayedOtp = "REPLAYED_OTP",
    ReplayedRequest = "REPLAYED_REQUEST",
    BadSignature = "BAD_SIGNATURE",
    MissingParameter = "MISSING_PARAMETER",
    NoSuchClient = "NO_SUCH_CLIENT",
    OperationNotAllowed = "OPERATION_NOT_ALLOWED",
    BackendError = "BACKEND_ERROR",
    NotEnoughAnswers = "NOT_ENOUGH_ANSWERS",
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
