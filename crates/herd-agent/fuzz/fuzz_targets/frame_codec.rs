//! The agent's frame codec on arbitrary bytes, as a peer could send them: decoding a stream
//! never panics, never takes more bytes than it has, refuses what is too large before
//! buffering it, and every frame it decodes encodes back to the same bytes. The payloads are
//! also read as each JSON message an agent or client parses, and the bytes as a certificate
//! (the DER reader that names a certificate's holder and role).
#![no_main]

use herd_agent::frame::{decode, FrameError, HEADER, MAX_PAYLOAD};
use herd_agent::proto::{Exit, Failure, Pong, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode(rest) {
            Ok(Some((frame, used))) => {
                assert!(used >= HEADER && used <= rest.len());
                assert!(frame.payload.len() <= MAX_PAYLOAD);
                let mut again = Vec::new();
                frame.encode(&mut again);
                assert_eq!(&again[..], &rest[..used]);
                let _ = frame.parse::<Request>();
                let _ = frame.parse::<Exit>();
                let _ = frame.parse::<Failure>();
                let _ = frame.parse::<Pong>();
                rest = &rest[used..];
            }
            // More bytes needed: a reader would wait for them.
            Ok(None) => break,
            Err(FrameError::TooLarge(n)) => {
                assert!(n > MAX_PAYLOAD);
                break;
            }
            Err(_) => break,
        }
    }
    let _ = herd_agent::x509::parse(data);
    let _ = herd_agent::pki::Identity::from_der(data);
});
