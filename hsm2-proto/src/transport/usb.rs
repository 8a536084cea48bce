//! USB: the same frames, written to and read from the YubiHSM 2's bulk endpoints without
//! yubihsm-connector (shared protocol notes §1.2).
//!
//! The facts and the framing rule are here for every build; the transport itself needs
//! libusb and is compiled with the `usb` feature.

#[cfg(any(test, feature = "usb"))]
use crate::{Error, Result};

/// Yubico's USB vendor id.
pub const VENDOR_ID: u16 = 0x1050;
/// The YubiHSM 2's product id.
pub const PRODUCT_ID: u16 = 0x0030;
/// Bulk OUT endpoint (host to device).
pub const ENDPOINT_OUT: u8 = 0x01;
/// Bulk IN endpoint (device to host).
pub const ENDPOINT_IN: u8 = 0x81;
/// Bulk packet size: a write whose length is a multiple of it is ended by a zero-length
/// packet, so the device knows the frame is complete.
pub const PACKET_SIZE: usize = 64;

/// True if a write of `len` bytes must be followed by a zero-length packet (libyubihsm's
/// rule: non-empty and a whole number of packets).
pub fn needs_zero_length_packet(len: usize) -> bool {
    len > 0 && len % PACKET_SIZE == 0
}

/// Whether a link to the device is still in step: after any failed exchange (a timeout may
/// leave the late answer queued on the IN endpoint, to be read as the answer to the next
/// request) it is poisoned, and every later exchange fails with
/// [`Error::TransportPoisoned`] without touching the device.
#[cfg(any(test, feature = "usb"))]
#[derive(Debug, Default)]
struct Link {
    poisoned: bool,
}

#[cfg(any(test, feature = "usb"))]
impl Link {
    /// Runs one exchange, unless an earlier one failed; a failure poisons the link.
    fn exchange<T>(&mut self, run: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.poisoned {
            return Err(Error::TransportPoisoned);
        }
        let answer = run();
        if answer.is_err() {
            self.poisoned = true;
        }
        answer
    }
}

#[cfg(feature = "usb")]
pub use device::UsbTransport;

#[cfg(feature = "usb")]
mod device {
    use std::time::Duration;

    use super::*;
    use crate::codec::{Frame, HEADER_LEN, MAX_DATA};
    use crate::transport::Transport;

    /// A YubiHSM 2 on USB, claimed for this process. After a failed exchange it refuses
    /// every later one ([`Error::TransportPoisoned`]): open it again.
    pub struct UsbTransport {
        handle: rusb::DeviceHandle<rusb::GlobalContext>,
        timeout: Duration,
        link: Link,
        /// Set by [`Transport::set_deadline`]: transfers end by then.
        deadline: Option<std::time::Instant>,
    }

    impl std::fmt::Debug for UsbTransport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UsbTransport")
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    /// libusb's error, typed: a device that went away is [`Error::DeviceGone`].
    pub(super) fn usb(e: rusb::Error) -> Error {
        match e {
            rusb::Error::NoDevice => Error::DeviceGone,
            other => Error::Usb(other.to_string()),
        }
    }

    impl UsbTransport {
        /// Opens the first YubiHSM 2 (or the one with this serial number) and claims its
        /// interface. Every transfer waits at most `timeout`.
        ///
        /// Looking for a serial number, a device that cannot be opened or read (another
        /// process holds it, no permission) is skipped: it may be some other YubiHSM 2.
        pub fn open(serial: Option<u32>, timeout: Duration) -> Result<UsbTransport> {
            for dev in rusb::devices().map_err(usb)?.iter() {
                let Ok(desc) = dev.device_descriptor() else {
                    continue;
                };
                if desc.vendor_id() != VENDOR_ID || desc.product_id() != PRODUCT_ID {
                    continue;
                }
                let handle = match (dev.open(), serial) {
                    (Ok(handle), _) => handle,
                    (Err(_), Some(_)) => continue,
                    (Err(e), None) => return Err(usb(e)),
                };
                if let Some(want) = serial {
                    let Ok(got) = handle.read_serial_number_string_ascii(&desc) else {
                        continue;
                    };
                    if got.trim().parse::<u32>().ok() != Some(want) {
                        continue;
                    }
                }
                handle.claim_interface(0).map_err(usb)?;
                return Ok(UsbTransport {
                    handle,
                    timeout,
                    link: Link::default(),
                    deadline: None,
                });
            }
            Err(Error::Usb("no YubiHSM 2 found".into()))
        }
    }

    impl Transport for UsbTransport {
        fn exchange(&mut self, request: &Frame) -> Result<Frame> {
            let (handle, mut timeout) = (&self.handle, self.timeout);
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout {
                        peer: "YubiHSM 2 on USB".into(),
                        after: Duration::ZERO,
                    });
                }
                timeout = timeout.min(left);
            }
            self.link.exchange(|| {
                let bytes = request.as_bytes();
                let timed_out = |e: rusb::Error| match e {
                    rusb::Error::Timeout => Error::Timeout {
                        peer: "YubiHSM 2 on USB".into(),
                        after: timeout,
                    },
                    other => usb(other),
                };
                handle
                    .write_bulk(ENDPOINT_OUT, bytes, timeout)
                    .map_err(timed_out)?;
                if needs_zero_length_packet(bytes.len()) {
                    handle
                        .write_bulk(ENDPOINT_OUT, &[], timeout)
                        .map_err(timed_out)?;
                }
                let mut buf = zeroize::Zeroizing::new(vec![0u8; HEADER_LEN + MAX_DATA]);
                let n = handle
                    .read_bulk(ENDPOINT_IN, &mut buf, timeout)
                    .map_err(timed_out)?;
                Frame::parse(&buf[..n])
            })
        }

        fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
            self.deadline = deadline;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_packets_are_ended_by_a_zero_length_packet() {
        assert!(!needs_zero_length_packet(0));
        assert!(!needs_zero_length_packet(3));
        assert!(!needs_zero_length_packet(63));
        assert!(needs_zero_length_packet(64));
        assert!(!needs_zero_length_packet(65));
        assert!(needs_zero_length_packet(128));
        // A plain Echo of 61 bytes is a 64-byte frame: one whole packet.
        assert!(needs_zero_length_packet(3 + 61));
    }

    #[test]
    fn a_failed_exchange_poisons_the_link() {
        let mut link = Link::default();
        assert_eq!(link.exchange(|| Ok(1)), Ok(1));
        assert_eq!(link.exchange(|| Ok(2)), Ok(2));
        let timeout = Error::Timeout {
            peer: "YubiHSM 2 on USB".into(),
            after: std::time::Duration::from_millis(1),
        };
        assert_eq!(
            link.exchange(|| Err::<u8, _>(timeout.clone())),
            Err(timeout)
        );
        // The late answer would be read next: nothing more goes to the device.
        let mut ran = false;
        let next = link.exchange(|| {
            ran = true;
            Ok(3)
        });
        assert_eq!(next, Err(Error::TransportPoisoned));
        assert!(!ran);
        assert!(Error::TransportPoisoned.is_transport_error());
        assert_eq!(link.exchange(|| Ok(4)), Err(Error::TransportPoisoned));
    }

    #[test]
    fn any_failure_poisons_the_link() {
        let mut link = Link::default();
        assert_eq!(
            link.exchange(|| Err::<u8, _>(Error::Frame("too short"))),
            Err(Error::Frame("too short"))
        );
        assert_eq!(link.exchange(|| Ok(1)), Err(Error::TransportPoisoned));
    }

    #[cfg(feature = "usb")]
    #[test]
    fn a_vanished_device_is_a_typed_error() {
        assert_eq!(device::usb(rusb::Error::NoDevice), Error::DeviceGone);
        assert!(Error::DeviceGone.is_transport_error());
        assert!(matches!(device::usb(rusb::Error::Access), Error::Usb(_)));
    }
}
