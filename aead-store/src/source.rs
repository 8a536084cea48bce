//! Where a stored AEAD lives, said without saying how it is stored.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where an AEAD was found or written: for messages and logs, shown with `Display`, which
/// escapes what is not printable in the name ([`crate::shown`]).
///
/// For [`crate::FsStore`] it is a file and shows as its path; a database store would name a
/// row. Callers of [`crate::Store`] only show it; the one store that made a source may look
/// inside it ([`crate::FsStore::path_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadSource(Place);

#[derive(Debug, Clone, PartialEq, Eq)]
// Rows are made only by the database store (feature `db`).
#[cfg_attr(not(feature = "db"), allow(dead_code))]
enum Place {
    File(PathBuf),
    /// A row of pyhsm's `aead_table`, by its primary key.
    Row {
        public_id: String,
        key_handle: otp_core::KeyHandle,
    },
    /// A row of our `ksm_otp_aead` (YubiHSM 2 AEADs), by its primary key.
    OtpRow {
        public_id: String,
        key_id: otp_core::ObjectId,
    },
}

impl AeadSource {
    /// The file at `path`.
    pub(crate) fn file(path: PathBuf) -> AeadSource {
        AeadSource(Place::File(path))
    }

    /// The row of `aead_table` with this primary key.
    #[cfg(feature = "db")]
    pub(crate) fn row(public_id: &str, key_handle: otp_core::KeyHandle) -> AeadSource {
        AeadSource(Place::Row {
            public_id: public_id.to_string(),
            key_handle,
        })
    }

    /// The row of `ksm_otp_aead` with this primary key.
    #[cfg(feature = "db")]
    pub(crate) fn otp_row(public_id: &str, key_id: otp_core::ObjectId) -> AeadSource {
        AeadSource(Place::OtpRow {
            public_id: public_id.to_string(),
            key_id,
        })
    }

    /// The path, if this source is a file.
    pub(crate) fn as_path(&self) -> Option<&Path> {
        match &self.0 {
            Place::File(p) => Some(p),
            Place::Row { .. } | Place::OtpRow { .. } => None,
        }
    }
}

impl fmt::Display for AeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Place::File(p) => crate::shown(p).fmt(f),
            Place::Row {
                public_id,
                key_handle,
            } => write!(
                f,
                "aead_table row (public_id {}, keyhandle {key_handle})",
                crate::shown(public_id)
            ),
            Place::OtpRow { public_id, key_id } => write!(
                f,
                "ksm_otp_aead row (public_id {}, key_id 0x{:04x})",
                crate::shown(public_id),
                key_id.0
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_shows_as_its_path() {
        let p = PathBuf::from("/aeads/0x20/cc/cc/cc/cc/cc/cb/cccccccccccb");
        let s = AeadSource::file(p.clone());
        assert_eq!(s.to_string(), p.display().to_string());
        assert_eq!(s.as_path(), Some(p.as_path()));
    }
}
