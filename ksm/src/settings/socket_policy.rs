//! `--socket-policy`: which commands the daemon's sharing socket forwards to its devices
//! (the check itself is the daemon's, in [`crate::daemon::tool_frame`]).

/// Which commands the sharing socket forwards.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SocketPolicy {
    /// Only what the `ksm` tools send (the list is `TOOL_COMMANDS`); the lock probe's AES
    /// block only on key handle 0.
    #[default]
    Tools,
    /// Every command a YubiHSM 1 answers (raw AES-ECB, HMAC, temp keys, …), for other
    /// tools of the daemon's user. `NULL` and `MONITOR_EXIT` never: they would leave the
    /// line in a state its owner does not expect.
    All,
}
