//! The config parser on arbitrary text: `Config::parse`, the parse-and-validate step behind
//! `herd config validate` (through `Config::load`) and the daemon's start and reload. It must
//! never panic, whatever the file says. A config it accepts must also render
//! (`Config::to_toml`, what `herd lb save` writes) to text that parses back to an equal config,
//! as `to_toml` promises: a saved config that reads back differently would change a director
//! on its next start.
#![no_main]

use herd_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file is read with `read_to_string`, which refuses anything but UTF-8.
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse("fuzz.toml", src) else {
        return;
    };
    let text = cfg.to_toml();
    let again = Config::parse("saved.toml", &text)
        .unwrap_or_else(|e| panic!("the rendered config does not parse:\n{e}\n---\n{text}"));
    assert_eq!(again, cfg, "rendered:\n{text}");
});
