//! Secrets (the exec token, the PVE API token): never printed, never serialised.

use std::fmt;
use std::path::Path;

/// A secret string. `Debug` and `Display` print `[redacted]`; it implements no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `Authorization: Bearer <token>`, marked sensitive so it is never logged by the HTTP stack.
    pub(crate) fn bearer_header(&self) -> reqwest::header::HeaderValue {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer invalid"));
        v.set_sensitive(true);
        v
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("{source_name}: cannot read the token file: {reason}")]
    Read { source_name: String, reason: String },
    #[error("{source_name}: the token is empty")]
    Empty { source_name: String },
    #[error("{source_name}: the token must be one line of printable ASCII (it holds {what})")]
    Invalid {
        source_name: String,
        what: &'static str,
    },
}

/// Validates a token value: trims surrounding whitespace (a trailing newline is normal in files).
/// The error never contains the value.
pub(crate) fn parse_token(source_name: &str, raw: &str) -> Result<Secret, SecretError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(SecretError::Empty {
            source_name: source_name.into(),
        });
    }
    if t.contains('\n') || t.contains('\r') {
        return Err(SecretError::Invalid {
            source_name: source_name.into(),
            what: "several lines",
        });
    }
    if !t.bytes().all(|c| (0x21..0x7f).contains(&c)) {
        return Err(SecretError::Invalid {
            source_name: source_name.into(),
            what: "spaces, control or non-ASCII characters",
        });
    }
    Ok(Secret::new(t))
}

/// Reads a token file. Returns the token and a warning when the file is readable by others.
pub(crate) fn read_token_file(path: &Path) -> Result<(Secret, Option<String>), SecretError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| SecretError::Read {
        source_name: name.clone(),
        reason: e.kind().to_string(),
    })?;
    if !meta.is_file() {
        return Err(SecretError::Read {
            source_name: name,
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > 64 * 1024 {
        return Err(SecretError::Invalid {
            source_name: name,
            what: "more than 64 KiB",
        });
    }
    let bytes = std::fs::read(path).map_err(|e| SecretError::Read {
        source_name: name.clone(),
        reason: e.kind().to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SecretError::Invalid {
        source_name: name.clone(),
        what: "bytes that are not UTF-8",
    })?;
    let secret = parse_token(&name, &text)?;
    let mut warning = None;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            warning = Some(format!(
                "warning: {name} is readable by other users (mode {:o}); chmod 600 it",
                mode & 0o777
            ));
        }
    }
    Ok((secret, warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("s3cr3t-token");
        assert!(!format!("{s:?} {s}").contains("s3cr3t"));
        assert!(s.bearer_header().is_sensitive());
    }

    #[test]
    fn token_parsing() {
        assert_eq!(parse_token("env", "abc\n").unwrap().expose(), "abc");
        assert!(matches!(
            parse_token("env", "  \n"),
            Err(SecretError::Empty { .. })
        ));
        let e = parse_token("env", "ab c").unwrap_err().to_string();
        assert!(!e.contains("ab c"), "{e}");
        assert!(parse_token("env", "a\nb").is_err());
    }

    #[test]
    fn token_file_with_newline_and_mode_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "deadbeef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (s, w) = read_token_file(&p).unwrap();
        assert_eq!(s.expose(), "deadbeef");
        assert!(w.is_none());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, w) = read_token_file(&p).unwrap();
        assert!(w.unwrap().contains("readable by other users"));
        assert!(read_token_file(&dir.path().join("missing")).is_err());
        assert!(read_token_file(dir.path()).is_err());
    }
}
