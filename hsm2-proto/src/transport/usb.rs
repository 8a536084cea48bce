//! USB: the same frames, written to and read from the YubiHSM 2's bulk endpoints without
//! yubihsm-connector (shared protocol notes §1.2).
//!
//! The facts and the framing rule are here for every build; the transport itself needs
//! libusb and is compiled with the `usb` feature.

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

#[cfg(feature = "usb")]
pub use device::UsbTransport;

#[cfg(feature = "usb")]
mod device {
    use std::time::Duration;

    use super::*;
    use crate::codec::{Frame, HEADER_LEN, MAX_DATA};
    use crate::transport::Transport;
    use crate::{Error, Result};

    /// A YubiHSM 2 on USB, claimed for this process.
    pub struct UsbTransport {
        handle: rusb::DeviceHandle<rusb::GlobalContext>,
        timeout: Duration,
    }

    impl std::fmt::Debug for UsbTransport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UsbTransport")
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    fn usb(e: rusb::Error) -> Error {
        Error::Usb(e.to_string())
    }

    impl UsbTransport {
        /// Opens the first YubiHSM 2 (or the one with this serial number) and claims its
        /// interface. Every transfer waits at most `timeout`.
        pub fn open(serial: Option<u32>, timeout: Duration) -> Result<UsbTransport> {
            for dev in rusb::devices().map_err(usb)?.iter() {
                let desc = dev.device_descriptor().map_err(usb)?;
                if desc.vendor_id() != VENDOR_ID || desc.product_id() != PRODUCT_ID {
                    continue;
                }
                let handle = dev.open().map_err(usb)?;
                if let Some(want) = serial {
                    let got = handle.read_serial_number_string_ascii(&desc).map_err(usb)?;
                    if got.trim().parse::<u32>().ok() != Some(want) {
                        continue;
                    }
                }
                handle.claim_interface(0).map_err(usb)?;
                return Ok(UsbTransport { handle, timeout });
            }
            Err(Error::Usb("no YubiHSM 2 found".into()))
        }
    }

    impl Transport for UsbTransport {
        fn exchange(&mut self, request: &Frame) -> Result<Frame> {
            let bytes = request.as_bytes();
            let timed_out = |e: rusb::Error| match e {
                rusb::Error::Timeout => Error::Timeout {
                    peer: "YubiHSM 2 on USB".into(),
                    after: self.timeout,
                },
                other => usb(other),
            };
            self.handle
                .write_bulk(ENDPOINT_OUT, bytes, self.timeout)
                .map_err(timed_out)?;
            if needs_zero_length_packet(bytes.len()) {
                self.handle
                    .write_bulk(ENDPOINT_OUT, &[], self.timeout)
                    .map_err(timed_out)?;
            }
            let mut buf = zeroize::Zeroizing::new(vec![0u8; HEADER_LEN + MAX_DATA]);
            let n = self
                .handle
                .read_bulk(ENDPOINT_IN, &mut buf, self.timeout)
                .map_err(timed_out)?;
            Frame::parse(&buf[..n])
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
}
