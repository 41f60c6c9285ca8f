//! The sync receiver's manifest parser on arbitrary bytes, as a sending peer (or a relay)
//! could send them: parsing never panics, and a manifest it accepts is written back as JSON
//! lines that parse to the same manifest (the bytes a grant's hash covers are stable).
#![no_main]

use herd_agent::sync::{manifest_lines, parse_manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_manifest(data) {
        let lines = manifest_lines(&m);
        let again = parse_manifest(&lines).expect("a written manifest parses");
        assert_eq!(again, m);
        assert_eq!(manifest_lines(&again), lines);
    }
});
