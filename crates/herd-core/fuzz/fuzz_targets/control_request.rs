//! The control socket's requests, as any local client that can open the socket could send
//! them: the daemon reads a line and parses it with `serde_json::from_slice::<Request>`
//! (`serve_client` in `herd/src/daemon/control.rs`), so this target does exactly that with arbitrary
//! bytes. Parsing must never panic, and every request it accepts must serialize (what the CLI
//! sends) and parse back to an equal request: otherwise the CLI and the daemon could disagree
//! about what was asked.
#![no_main]

use herd_core::api::{Request, MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The daemon answers a longer line with "request too large" without parsing it.
    if data.len() > MAX_MESSAGE {
        return;
    }
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let line = serde_json::to_vec(&req).expect("a parsed request serializes");
    // The wire format is one request per line: a serialized request must not contain one.
    assert!(
        !line.contains(&b'\n'),
        "newline in {}",
        String::from_utf8_lossy(&line)
    );
    let again = serde_json::from_slice::<Request>(&line).unwrap_or_else(|e| {
        panic!(
            "{} does not parse back: {e}",
            String::from_utf8_lossy(&line)
        )
    });
    assert_eq!(again, req);
});
