//! The Caddy admin API config reader: never panics; its routes can be resolved.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(table) = pvediag::caddy::admin::parse(&text) {
        for host in [
            "xterm-202.example.com",
            "port-39383-cmux-202.example.com",
            "",
        ] {
            if let Some(r) = table.resolve(host) {
                let _ = r.dial();
            }
        }
    }
});
