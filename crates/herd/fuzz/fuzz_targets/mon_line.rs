//! The mon port's command lines on arbitrary bytes, as any client on the network could send
//! them: parsing (`login` too) never panics, never echoes a password, classifies every
//! state change as one (so that it needs a login), and every reply rendered for a parsed
//! command ends with a `220` or `520` line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One line at a time, as the server reads them (it cuts at 4 KiB and at newlines).
    for line in data.split(|b| *b == b'\n') {
        herd::monproto::fuzz_parse(line);
    }
});
