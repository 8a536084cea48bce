//! YubiHSM 2 frames: whatever a device (or connector) answers, and whatever a client sends
//! the software YubiHSM 2, decodes to the command's type or to an error, never a panic.
//!
//! Why: answers arrive over HTTP from a connector and over USB from a device; requests
//! will arrive at the emulator from any local process. Both sides decode with the same
//! types, so each decoder must be total, and lossless: the emulator answers with the very
//! types the driver decodes.
//!
//! Input: one frame (`cmd, len, data`). If `cmd` has the response bit, it is decoded as the
//! answer to the command `cmd & 0x7f` (an error frame `7f …` as the answer to Echo);
//! otherwise as that command's request. Whatever decodes must encode back to the input.
#![no_main]
#![forbid(unsafe_code)]

use hsm2_proto::cmd::{self, Command, Message};
use hsm2_proto::codec::Frame;
use hsm2_proto::{with_command, CommandCode, Error};
use libfuzzer_sys::fuzz_target;

fn check<C: Command>(frame: &Frame, response: bool) {
    if response {
        match cmd::decode_response::<C>(frame) {
            Ok(resp) => {
                let again =
                    cmd::encode_response::<C>(&resp).expect("a decoded answer fits a frame");
                assert_eq!(
                    again,
                    *frame,
                    "{} answer does not re-encode: {resp:?}",
                    C::CODE
                );
            }
            Err(Error::Device { code, .. }) => {
                assert_eq!(frame.as_bytes(), [0x7f, 0, 1, code.to_u8()]);
            }
            Err(_) => {}
        }
    } else if let Ok(req) = cmd::decode_request::<C>(frame) {
        let again = cmd::encode_request(&req).expect("a decoded request fits a frame");
        assert_eq!(
            again,
            *frame,
            "{} request does not re-encode: {req:?}",
            C::CODE
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::parse(data) else {
        return;
    };
    let (code, response) = match frame.cmd() {
        0x7f => (CommandCode::Echo, true),
        c => (CommandCode::from_u8(c & 0x7f), c & 0x80 != 0),
    };
    with_command!(code, check(&frame, response), ());
    let _ = <cmd::EchoResponse as Message>::decode;
});
