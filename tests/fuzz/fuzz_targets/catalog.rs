//! The catalog loader: never panics; whatever it accepts holds only validated values, and the
//! internal probe's command quotes each of them (no value can end the single-quoted word).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvediag::catalog::{valid_header_value, valid_path, valid_service_name, valid_token, Catalog};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Several files separated by a form feed, so duplicate names and ports are reached.
    let files: Vec<(String, String)> = text
        .split('\u{c}')
        .take(4)
        .enumerate()
        .map(|(i, t)| (format!("f{i}.json"), t.to_string()))
        .collect();
    if let Ok(c) = Catalog::from_sources("fuzz", &files) {
        for s in &c.services {
            assert!(valid_service_name(&s.name));
            assert!(valid_token(&s.probe.method));
            assert!(valid_path(&s.probe.path));
            for (k, v) in &s.probe.headers {
                assert!(valid_token(k) && valid_header_value(v));
            }
        }
        let all: Vec<_> = c.services.iter().collect();
        let cmd =
            pvediag::probe::internal::build_command(&all, "n", std::time::Duration::from_secs(1));
        assert!(!cmd.contains('\0'));
    }
});
