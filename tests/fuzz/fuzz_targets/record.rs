//! The internal probe's record parser and the bash fallback's raw HTTP parser: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvediag::probe::internal::{parse_raw_response, parse_record};

fuzz_target!(|data: &[u8]| {
    let _ = parse_raw_response(data);
    let line = String::from_utf8_lossy(data);
    let _ = parse_record(&line, "n");
    // Also as the tail of a well-formed prefix, so the field parsing is reached often.
    let _ = parse_record(&format!("@pvediag1 n svc {line}"), "n");
    let _ = parse_record(
        &format!("@pvediag1 n svc via=curl rc=0 code=200 {line}"),
        "n",
    );
    let _ = parse_record(
        &format!("@pvediag1 n svc via=bash rc=0 t0=1 t1=2 e= raw={line}"),
        "n",
    );
});
