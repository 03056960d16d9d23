//! The execd JSON-lines parser fed in random chunks: never panics, and the events do not depend
//! on where the stream is cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvediag::probe::jsonlines::Parser;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (sizes, stream) = data.split_at(data.len().min(8));
    let mut whole = Parser::new();
    let mut expected = whole.feed(stream);
    expected.extend(whole.finish());

    let mut p = Parser::new();
    let mut got = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (sizes[i % sizes.len()] as usize % 17 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        got.extend(p.feed(a));
        rest = b;
        i += 1;
    }
    got.extend(p.finish());
    assert_eq!(got, expected);
    assert_eq!(p.malformed, whole.malformed);
});
