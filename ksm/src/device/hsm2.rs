//! A YubiHSM 2 as `ksm` reaches it: which device (`-D`), which authentication key and its
//! password, and an open session. Shared by the operator tools and the daemon's YubiHSM 2
//! backend, so both read the same spellings and the same password files.
//!
//! The password never comes from argv (every user sees it in `ps`): from a private file
//! (mode 0600 or stricter; a group- or world-readable one is refused), from `ksm.toml`
//! (the daemon's configuration, itself private), or a no-echo prompt. It is turned into the
//! session keys at once ([`AuthKey::from_password`]) and the text wiped.

use std::path::Path;
use std::time::Duration;

use hsm2_proto::session::HostSession;
use hsm2_proto::transport::{Connector, HttpTimeouts, Transport};
use hsm2_proto::{AuthKey, Client, ObjectId};
use zeroize::Zeroizing;

use crate::Error;

/// A YubiHSM 2 as `-D` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hsm2Spec {
    /// A yubihsm-connector (or `ksm emulate --hsm2`) at this base URL (`http://host:port`).
    Connector(String),
    /// A YubiHSM 2 on USB, talked to directly: the first found, or the one with this serial
    /// number. Needs `ksm` built with the `usb` feature.
    Usb(Option<u32>),
}

impl Hsm2Spec {
    /// Whether `-D`'s value names a YubiHSM 2 rather than a YubiHSM 1 (a serial device path):
    /// an `http://` URL, `usb` or `usb:SERIAL`.
    pub fn is_hsm2(spec: &str) -> bool {
        spec.starts_with("http://")
            || spec.starts_with("https://")
            || spec == "usb"
            || spec.starts_with("usb:")
    }

    /// Parses `http://host:port`, `usb` or `usb:SERIAL` (decimal, as printed on the device).
    /// A URL with a path, query, user or password is refused, and so is `https://` (the
    /// connector speaks plain HTTP on the loopback; a remote one belongs behind a tunnel).
    pub fn parse(spec: &str) -> Result<Hsm2Spec, Error> {
        if spec == "usb" {
            return usb(None);
        }
        if let Some(serial) = spec.strip_prefix("usb:") {
            let n = serial.parse::<u32>().map_err(|_| {
                Error::Usage(format!(
                    "-D {spec}: a YubiHSM 2 serial number is decimal digits (usb:12345678)"
                ))
            })?;
            return usb(Some(n));
        }
        let Some(rest) = spec.strip_prefix("http://") else {
            return Err(Error::Usage(format!(
                "-D {spec}: not a YubiHSM 2 (http://host:port of a yubihsm-connector, usb, or usb:SERIAL)"
            )));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let bad = authority.is_empty()
            || authority.contains(['/', '?', '#', '@'])
            || authority.chars().any(char::is_whitespace);
        if bad {
            return Err(Error::Usage(format!(
                "-D {spec}: a connector URL is http://host:port, with no path, query or user"
            )));
        }
        Ok(Hsm2Spec::Connector(format!("http://{authority}")))
    }

    /// Opens the transport: for a connector, its status page must report a device.
    pub fn transport(&self, timeout: Duration) -> Result<Box<dyn Transport>, Error> {
        match self {
            Hsm2Spec::Connector(url) => {
                let timeouts = HttpTimeouts {
                    connect: timeout.min(HttpTimeouts::default().connect),
                    answer: timeout,
                };
                Ok(Box::new(Connector::open(url, timeouts)?))
            }
            Hsm2Spec::Usb(serial) => open_usb(*serial, timeout),
        }
    }
}

impl std::fmt::Display for Hsm2Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hsm2Spec::Connector(url) => f.write_str(url),
            Hsm2Spec::Usb(None) => f.write_str("usb"),
            Hsm2Spec::Usb(Some(n)) => write!(f, "usb:{n}"),
        }
    }
}

#[cfg(feature = "usb")]
fn usb(serial: Option<u32>) -> Result<Hsm2Spec, Error> {
    Ok(Hsm2Spec::Usb(serial))
}

#[cfg(not(feature = "usb"))]
fn usb(_: Option<u32>) -> Result<Hsm2Spec, Error> {
    Err(Error::Usage(
        "-D usb: this ksm was built without USB support (feature `usb`); run yubihsm-connector and give -D http://127.0.0.1:12345".into(),
    ))
}

#[cfg(feature = "usb")]
fn open_usb(serial: Option<u32>, timeout: Duration) -> Result<Box<dyn Transport>, Error> {
    Ok(Box::new(hsm2_proto::transport::usb::UsbTransport::open(
        serial, timeout,
    )?))
}

#[cfg(not(feature = "usb"))]
fn open_usb(_: Option<u32>, _: Duration) -> Result<Box<dyn Transport>, Error> {
    usb(None).map(|_| unreachable!("refused above"))
}

/// An authentication key id and the keys its password stands for. `Debug` shows the id
/// only.
#[derive(Clone)]
pub struct Hsm2Auth {
    /// The authentication key object's id.
    pub key_id: ObjectId,
    key: AuthKey,
}

impl std::fmt::Debug for Hsm2Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm2Auth")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Hsm2Auth {
    /// The keys of `password` (derived as Yubico's tools do) for authentication key
    /// `key_id`.
    pub fn from_password(key_id: ObjectId, password: &[u8]) -> Hsm2Auth {
        Hsm2Auth {
            key_id,
            key: AuthKey::from_password(password),
        }
    }

    /// The session keys the password stands for (the daemon keeps them, not the text).
    pub fn auth_key(&self) -> &AuthKey {
        &self.key
    }

    /// Reads the password from the first line of a private file (0600 or stricter: a file
    /// others may read is refused before it is read). The line ending is not part of it;
    /// an empty password is refused.
    pub fn from_file(key_id: ObjectId, path: &Path) -> Result<Hsm2Auth, Error> {
        let text = hsm_proto::keyfile::read_private(path)?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(Error::Input(format!(
                "{}: the first line (the YubiHSM 2 password) is empty",
                path.display()
            )));
        }
        Ok(Hsm2Auth::from_password(key_id, line.as_bytes()))
    }

    /// Asks for the password on the terminal, without echo.
    pub fn prompt(key_id: ObjectId) -> Result<Hsm2Auth, Error> {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!(
                "Password of YubiHSM 2 authentication key {}: ",
                key_id.0
            ))
            .map_err(|e| Error::io("read from the terminal", e))?,
        );
        let line = typed.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Err(Error::Input("empty YubiHSM 2 password".into()));
        }
        Ok(Hsm2Auth::from_password(key_id, line.as_bytes()))
    }
}

/// A client on a YubiHSM 2 with one open session: what a tool works with.
pub struct Hsm2Device {
    /// The client (its transport).
    pub client: Client<Box<dyn Transport>>,
    /// The session, authenticated with [`Hsm2Auth`].
    pub session: HostSession,
    spec: Hsm2Spec,
    auth: Hsm2Auth,
}

impl std::fmt::Debug for Hsm2Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm2Device")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Hsm2Device {
    /// Opens the transport and a session with `auth`. Every wait is bounded by `timeout`.
    pub fn open(spec: &Hsm2Spec, auth: &Hsm2Auth, timeout: Duration) -> Result<Hsm2Device, Error> {
        let mut client = Client::new(spec.transport(timeout)?);
        let session = client.open_session(auth.key_id, &auth.key)?;
        Ok(Hsm2Device {
            client,
            session,
            spec: spec.clone(),
            auth: auth.clone(),
        })
    }

    /// Runs one command in the session. A session the device no longer knows (it idles
    /// out after 30 s, e.g. while a tool waited on a slow disk) or one a failed exchange
    /// left unusable is opened again, once, and the command sent again: the commands the
    /// tools send change nothing on the device, so sending one twice is harmless.
    pub fn call<R>(
        &mut self,
        mut f: impl FnMut(&mut Client<Box<dyn Transport>>, &mut HostSession) -> hsm2_proto::Result<R>,
    ) -> Result<R, Error> {
        if self.session.is_usable() {
            match f(&mut self.client, &mut self.session) {
                Ok(r) => return Ok(r),
                Err(hsm2_proto::Error::Device {
                    code: hsm2_proto::ErrorCode::InvalidSession,
                    ..
                }) => {}
                // A refusal of this command: the session is fine, the answer stands.
                Err(e) if self.session.is_usable() => return Err(e.into()),
                Err(_) => {}
            }
        }
        self.session = self.client.open_session(self.auth.key_id, &self.auth.key)?;
        Ok(f(&mut self.client, &mut self.session)?)
    }

    /// The authentication key the session is opened with.
    pub fn auth_key_id(&self) -> ObjectId {
        self.auth.key_id
    }

    /// Which device this is.
    pub fn spec(&self) -> &Hsm2Spec {
        &self.spec
    }

    /// Closes the session on the device (best effort: the device expires it anyway).
    pub fn close(self) {
        let mut client = self.client;
        let _ = client.close_session(self.session);
    }
}

/// Parses a YubiHSM 2 object id as operators write it: decimal or `0x` hex, 1 to 0xfffe.
pub fn object_id_arg(text: &str) -> Result<u16, String> {
    let t = text.trim();
    let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => t.parse::<u16>(),
    }
    .map_err(|_| format!("{t:?} is not an object id (decimal or 0x hex)"))?;
    if n == 0 || n == 0xffff {
        return Err("an object id is 1 to 0xfffe".into());
    }
    Ok(n)
}

/// How a tool authenticates to its YubiHSM 2: `--auth-key-id`, `--password-file`.
#[derive(Debug, Clone, clap::Args)]
pub struct Hsm2AuthArgs {
    /// YubiHSM 2: the authentication key to open the session with (its object id).
    #[arg(long, default_value = "1", value_parser = object_id_arg)]
    pub auth_key_id: u16,
    /// YubiHSM 2: a private file (mode 0600) whose first line is the authentication key's
    /// password; without it the password is asked for on the terminal, without echo.
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
}

impl Hsm2AuthArgs {
    /// The password's keys, from the file or the terminal.
    pub fn auth(&self) -> Result<Hsm2Auth, Error> {
        let id = ObjectId(self.auth_key_id);
        match &self.password_file {
            Some(p) => Hsm2Auth::from_file(id, p),
            None => Hsm2Auth::prompt(id),
        }
    }

    /// Opens the YubiHSM 2 `device` names and a session; every wait at most `timeout`.
    pub fn open(&self, device: &str, timeout: Duration) -> Result<Hsm2Device, Error> {
        let spec = Hsm2Spec::parse(device)?;
        let auth = self.auth()?;
        Hsm2Device::open(&spec, &auth, timeout)
    }
}

/// How a YubiHSM 2-only tool finds and opens its device: `-D URL` and [`Hsm2AuthArgs`].
#[derive(Debug, Clone, clap::Args)]
pub struct Hsm2Args {
    /// The YubiHSM 2: http://host:port of a yubihsm-connector (or `ksm emulate --hsm2`),
    /// usb, or usb:SERIAL (USB needs the `usb` build feature).
    #[arg(short = 'D', long = "device")]
    pub device: String,
    /// The authentication key and its password.
    #[command(flatten)]
    pub auth: Hsm2AuthArgs,
    /// Seconds to wait for each answer of the device.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

impl Hsm2Args {
    /// Opens the device and a session.
    pub fn open(&self) -> Result<Hsm2Device, Error> {
        self.auth.open(
            &self.device,
            Duration::from_secs(self.timeout.clamp(1, 600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn object_ids_are_decimal_or_hex_from_1_to_0xfffe() {
        assert_eq!(object_id_arg("48"), Ok(48));
        assert_eq!(object_id_arg("0x30"), Ok(48));
        assert_eq!(object_id_arg("0xfffe"), Ok(0xfffe));
        for bad in ["0", "0x0", "0xffff", "65536", "x", "", "-1"] {
            assert!(object_id_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_specs_parse_or_say_why_not() {
        assert_eq!(
            Hsm2Spec::parse("http://127.0.0.1:12345").unwrap(),
            Hsm2Spec::Connector("http://127.0.0.1:12345".into())
        );
        assert_eq!(
            Hsm2Spec::parse("http://localhost:12345/").unwrap(),
            Hsm2Spec::Connector("http://localhost:12345".into())
        );
        for bad in [
            "http://",
            "http://u:pw@host:1",
            "http://host:1/connector/api",
            "http://host:1?x",
            "https://host:1",
            "/dev/ttyACM0",
            "usb:abc",
        ] {
            assert!(
                matches!(Hsm2Spec::parse(bad), Err(Error::Usage(_))),
                "{bad}"
            );
        }
        assert!(Hsm2Spec::is_hsm2("http://127.0.0.1:1"));
        assert!(Hsm2Spec::is_hsm2("usb:7"));
        assert!(!Hsm2Spec::is_hsm2("/dev/ttyACM0"));
    }

    #[cfg(not(feature = "usb"))]
    #[test]
    fn usb_without_the_feature_is_a_clear_error() {
        for spec in ["usb", "usb:12345"] {
            let e = Hsm2Spec::parse(spec).unwrap_err().to_string();
            assert!(e.contains("without USB support"), "{e}");
        }
    }

    #[cfg(feature = "usb")]
    #[test]
    fn usb_specs_parse_with_the_feature() {
        assert_eq!(Hsm2Spec::parse("usb").unwrap(), Hsm2Spec::Usb(None));
        assert_eq!(
            Hsm2Spec::parse("usb:12345").unwrap(),
            Hsm2Spec::Usb(Some(12345))
        );
    }

    #[test]
    fn password_files_must_be_private_and_are_never_quoted() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "Hunter2pw\n").unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Hsm2Auth::from_file(ObjectId(1), &f)
                .unwrap_err()
                .to_string();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
            assert!(!e.contains("Hunter2pw"), "{e}");
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let auth = Hsm2Auth::from_file(ObjectId(3), &f).unwrap();
        assert_eq!(auth.key_id, ObjectId(3));
        assert!(auth.key == AuthKey::from_password(b"Hunter2pw"));
        assert!(!format!("{auth:?}").contains("Hunter2pw"));
        std::fs::write(&f, "\nrest\n").unwrap();
        assert!(matches!(
            Hsm2Auth::from_file(ObjectId(1), &f),
            Err(Error::Input(_))
        ));
    }

    #[test]
    fn a_session_opens_over_real_http_with_the_right_password_only() {
        use hsm2_proto::emulator::{ConnectorEmulator, DeviceConfig};
        let emu =
            ConnectorEmulator::start("127.0.0.1:0".parse().unwrap(), &DeviceConfig::factory())
                .unwrap();
        let spec = Hsm2Spec::parse(&emu.url()).unwrap();
        let timeout = Duration::from_secs(5);
        let good = Hsm2Auth::from_password(ObjectId(1), b"password");
        let mut dev = Hsm2Device::open(&spec, &good, timeout).unwrap();
        let echo = dev.client.send(
            &mut dev.session,
            &hsm2_proto::cmd::Echo {
                data: b"ping".to_vec(),
            },
        );
        assert!(echo.is_ok(), "{echo:?}");
        dev.close();
        let bad = Hsm2Auth::from_password(ObjectId(1), b"not it");
        assert!(matches!(
            Hsm2Device::open(&spec, &bad, timeout),
            Err(Error::Hsm2(_))
        ));
        // Nothing listening: an error, within the timeout.
        drop(emu);
        assert!(Hsm2Device::open(&spec, &good, timeout).is_err());
    }
}
