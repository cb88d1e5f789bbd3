//! Fuzz the config file parser: any text gives a config, warnings or an error naming a field, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = tanova_sync::config::check_text(text) {
        // Every error names what is wrong.
        assert!(!e.field.is_empty());
    }
    let _ = tanova_sync::config::parse_url(text, false);
});
