//! Device options: Set Option (`0x4f`) and Get Option (`0x50`), and the two a KSM reads
//! and a hardened site sets: `force-audit` (a full log refuses commands) and
//! `command-audit` (which commands are logged).
//!
//! An option travels as tag (u8), length (u16), value; Get Option answers the value alone.
//! The value's layout is the option's: one [`AuditSetting`] byte for `force-audit`, pairs
//! of command byte and [`AuditSetting`] for `command-audit`.

use otp_core::wire_enum;

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Error, Result};

wire_enum! {
    /// An option's tag. Values and names as Yubico's Set Option page and python-yubihsm's
    /// `OPTION` table.
    DeviceOption {
        /// A full log refuses the commands it would have to log.
        ForceAudit = 0x01 => "force-audit",
        /// Which commands are logged.
        CommandAudit = 0x03 => "command-audit",
        /// Which algorithms are enabled (firmware 2.2 and later).
        AlgorithmToggle = 0x04 => "algorithm-toggle",
        /// FIPS mode (FIPS devices only).
        FipsMode = 0x05 => "fips-mode",
    }
}

wire_enum! {
    /// The value of an audit setting: `force-audit`'s byte and each `command-audit` pair's.
    AuditSetting {
        /// Off.
        Off = 0x00 => "off",
        /// On.
        On = 0x01 => "on",
        /// On, and only a factory reset turns it off.
        Fixed = 0x02 => "fixed",
    }
}

impl AuditSetting {
    /// True for `on` and `fixed`.
    pub fn is_on(self) -> bool {
        matches!(self, AuditSetting::On | AuditSetting::Fixed)
    }
}

/// Set Option request: tag, value length (u16), value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOption {
    /// Which option.
    pub option: DeviceOption,
    /// Its new value (for `command-audit`, only the commands that change).
    pub value: Vec<u8>,
}

impl SetOption {
    /// `force-audit` set to `setting`.
    pub fn force_audit(setting: AuditSetting) -> SetOption {
        SetOption {
            option: DeviceOption::ForceAudit,
            value: vec![setting.to_u8()],
        }
    }

    /// `command-audit` set to `setting` for each command of `commands`.
    pub fn command_audit(commands: &[(u8, AuditSetting)]) -> SetOption {
        SetOption {
            option: DeviceOption::CommandAudit,
            value: commands.iter().flat_map(|(c, s)| [*c, s.to_u8()]).collect(),
        }
    }
}

impl Message for SetOption {
    fn encode(&self, w: &mut Writer) {
        // A frame holds far less than 64 KiB; a longer value cannot be sent anyway.
        let len = u16::try_from(self.value.len()).unwrap_or(u16::MAX);
        w.u8(self.option.to_u8()).u16(len).bytes(&self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let option = DeviceOption::from_u8(r.u8()?);
        let len = usize::from(r.u16()?);
        if r.remaining() != len {
            return Err(Error::InvalidField {
                cmd: CommandCode::SetOption,
                field: "option length",
            });
        }
        Ok(SetOption {
            option,
            value: r.rest().to_vec(),
        })
    }
}

impl Command for SetOption {
    const CODE: CommandCode = CommandCode::SetOption;
    type Response = EmptyResponse;
}

/// Get Option request: the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetOption {
    /// Which option.
    pub option: DeviceOption,
}

/// Get Option response: the option's value, whatever its length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionValue {
    /// The value.
    pub value: Vec<u8>,
}

impl OptionValue {
    /// The value as one [`AuditSetting`] (`force-audit`); `None` unless it is one byte.
    pub fn audit_setting(&self) -> Option<AuditSetting> {
        match self.value.as_slice() {
            [b] => Some(AuditSetting::from_u8(*b)),
            _ => None,
        }
    }

    /// The value as command and setting pairs (`command-audit`); `None` for an odd length.
    pub fn command_settings(&self) -> Option<Vec<(u8, AuditSetting)>> {
        if self.value.len() % 2 != 0 {
            return None;
        }
        Some(
            self.value
                .chunks(2)
                .map(|p| (p[0], AuditSetting::from_u8(p[1])))
                .collect(),
        )
    }
}

impl Message for GetOption {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.option.to_u8());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetOption {
            option: DeviceOption::from_u8(r.u8()?),
        })
    }
}

impl Message for OptionValue {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(OptionValue {
            value: r.rest().to_vec(),
        })
    }
}

impl Command for GetOption {
    const CODE: CommandCode = CommandCode::GetOption;
    type Response = OptionValue;
}
