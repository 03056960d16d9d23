//! The parser of cmux-execd's `application/jsonlines` stream. Pure and incremental.
//!
//! One JSON object per line: `{"type":"stdout","data":..}`, `{"type":"stderr","data":..}`,
//! `{"type":"error","message":..}`, `{"type":"exit","code":N}`. Malformed lines are skipped and
//! counted (every cmux client does the same); a line longer than the cap is skipped without being
//! held in memory.

use serde::Deserialize;

/// The longest line kept in memory; longer lines are skipped.
pub(crate) const MAX_LINE: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(String),
    Stderr(String),
    Error(String),
    Exit(i32),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    data: Option<String>,
    message: Option<String>,
    code: Option<serde_json::Value>,
}

/// Incremental parser: feed bytes as they arrive, take events out.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Inside an over-long line: drop bytes until the next newline.
    skipping: bool,
    pub malformed: usize,
    pub(crate) oversized: usize,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds a chunk; returns the events of the lines it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if self.skipping {
                        self.skipping = false;
                    } else {
                        self.buf.extend_from_slice(&chunk[..i]);
                        let line = std::mem::take(&mut self.buf);
                        if let Some(e) = self.parse_line(&line) {
                            events.push(e);
                        }
                    }
                    chunk = &chunk[i + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.buf.len() + chunk.len() > MAX_LINE {
                            self.buf.clear();
                            self.skipping = true;
                            self.oversized += 1;
                        } else {
                            self.buf.extend_from_slice(chunk);
                        }
                    }
                    chunk = &[];
                }
            }
        }
        events
    }

    /// The end of the stream: a last line without a newline is still parsed.
    pub fn finish(&mut self) -> Option<Event> {
        let line = std::mem::take(&mut self.buf);
        if self.skipping {
            self.skipping = false;
            return None;
        }
        self.parse_line(&line)
    }

    fn parse_line(&mut self, line: &[u8]) -> Option<Event> {
        let text = String::from_utf8_lossy(line);
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        let raw: Raw = match serde_json::from_str(t) {
            Ok(r) => r,
            Err(_) => {
                self.malformed += 1;
                return None;
            }
        };
        let ev = match raw.kind.as_str() {
            "stdout" => raw.data.map(Event::Stdout),
            "stderr" => raw.data.map(Event::Stderr),
            "error" => Some(Event::Error(raw.message.or(raw.data).unwrap_or_default())),
            "exit" => raw
                .code
                .and_then(|c| c.as_i64())
                .and_then(|c| i32::try_from(c).ok())
                .map(Event::Exit),
            _ => None,
        };
        if ev.is_none() {
            self.malformed += 1;
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> (Vec<Event>, Parser) {
        let mut p = Parser::new();
        let mut ev = Vec::new();
        for c in chunks {
            ev.extend(p.feed(c));
        }
        ev.extend(p.finish());
        (ev, p)
    }

    #[test]
    fn parses_the_real_stream() {
        let s = b"{\"type\":\"stdout\",\"data\":\"ready\"}\n{\"type\":\"stderr\",\"data\":\"warn \\u003cx\\u003e\"}\n{\"type\":\"exit\",\"code\":0}\n";
        let (ev, p) = all(&[s]);
        assert_eq!(
            ev,
            vec![
                Event::Stdout("ready".into()),
                Event::Stderr("warn <x>".into()),
                Event::Exit(0)
            ]
        );
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let s: &[u8] = b"{\"type\":\"stdout\",\"data\":\"a\"}\n{\"type\":\"error\",\"message\":\"timeout after 5ms\"}\n{\"type\":\"exit\",\"code\":124}";
        let whole = all(&[s]).0;
        for i in 0..s.len() {
            let (a, b) = s.split_at(i);
            assert_eq!(all(&[a, b]).0, whole, "split at {i}");
        }
        assert_eq!(whole.last(), Some(&Event::Exit(124)));
    }

    #[test]
    fn garbage_and_html_are_skipped_and_counted() {
        let s = b"<html>cloudflare</html>\n{\"type\":\"stdout\",\"data\":\"x\"}\nnot json\n{\"type\":\"mystery\"}\n{\"type\":\"exit\",\"code\":\"zero\"}\n";
        let (ev, p) = all(&[s]);
        assert_eq!(ev, vec![Event::Stdout("x".into())]);
        assert_eq!(p.malformed, 4);
    }

    #[test]
    fn oversized_line_is_skipped_without_holding_it() {
        let mut p = Parser::new();
        let big = vec![b'x'; 1024 * 1024];
        for _ in 0..3 {
            assert!(p.feed(&big).is_empty());
        }
        assert!(p.buf.len() <= MAX_LINE);
        let ev = p.feed(b"\n{\"type\":\"exit\",\"code\":1}\n");
        assert_eq!(ev, vec![Event::Exit(1)]);
        assert_eq!(p.oversized, 1);
    }
}
