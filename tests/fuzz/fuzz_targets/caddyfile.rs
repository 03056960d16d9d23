//! The Caddyfile reader: never panics, never errors; its routes can be resolved.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let table = pvediag::caddy::caddyfile::parse("Caddyfile", &text);
    for host in [
        "xterm-202.example.com",
        "port-39383-cmux-202.example.com",
        "a",
        "",
    ] {
        if let Some(r) = table.resolve(host) {
            let _ = r.dial();
        }
    }
});
