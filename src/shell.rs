//! Quoting for the commands pvediag sends to a shell (the internal command in the container, the
//! host script, `pct exec`): nothing from the catalog or the command line reaches bash unquoted.

/// Quotes a string for bash: `'...'` with every `'` written as `'\''`.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A host a script may dial: a DNS name or an IPv4 address, nothing a shell or URL could misread.
pub(crate) fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && !h.starts_with('-')
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn hosts_a_script_may_dial() {
        for ok in ["cmux-202.lan", "10.10.0.202", "pvelxc-1a2b3c4d"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["$(id)", "a b", "-oProxyCommand=x", "", "a;b", "a/b", "a:80"] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert!(!valid_host(&"a".repeat(254)));
    }
}
