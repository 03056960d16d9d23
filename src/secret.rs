//! Secrets (the exec token, the PVE API token, the Access service token): never printed, never
//! serialised.

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
    let (name, text, warning) = read_secret_file(path)?;
    Ok((parse_token(&name, &text)?, warning))
}

/// Reads a small secret file: its name, its text, and a warning when others can read it.
fn read_secret_file(path: &Path) -> Result<(String, String, Option<String>), SecretError> {
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
    Ok((name, text, warning))
}

/// A Cloudflare Access service token: sent as `CF-Access-Client-Id` and `CF-Access-Client-Secret`.
/// `Debug` shows neither value; the secret is marked sensitive for the HTTP stack.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken {
    client_id: Secret,
    client_secret: Secret,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

impl AccessToken {
    pub(crate) fn new(client_id: Secret, client_secret: Secret) -> AccessToken {
        AccessToken {
            client_id,
            client_secret,
        }
    }

    /// The two request headers, both marked sensitive.
    pub(crate) fn headers(&self) -> [(&'static str, reqwest::header::HeaderValue); 2] {
        let value = |s: &Secret| {
            let mut v = reqwest::header::HeaderValue::from_str(s.expose())
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid"));
            v.set_sensitive(true);
            v
        };
        [
            ("cf-access-client-id", value(&self.client_id)),
            ("cf-access-client-secret", value(&self.client_secret)),
        ]
    }

    /// The secret, for redacting it from text a server sent back.
    pub(crate) fn expose_secret(&self) -> &str {
        self.client_secret.expose()
    }
}

/// The Access service token from `--access-token-file FILE` (two lines: the client id, then the
/// secret), else from `CF_ACCESS_CLIENT_ID` and `CF_ACCESS_CLIENT_SECRET` (both or neither).
/// Returns the token and a warning when the file is readable by others. Errors never hold a value.
pub(crate) fn access_token(
    file: Option<&Path>,
    env_id: Option<&str>,
    env_secret: Option<&str>,
) -> Result<Option<(AccessToken, Option<String>)>, SecretError> {
    if let Some(path) = file {
        let (name, text, warning) = read_secret_file(path)?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() != 2 {
            return Err(SecretError::Invalid {
                source_name: name,
                what: "not two lines (the client id, then the client secret)",
            });
        }
        let id = parse_token(&format!("{name} (line 1, the client id)"), lines[0])?;
        let secret = parse_token(&format!("{name} (line 2, the client secret)"), lines[1])?;
        return Ok(Some((AccessToken::new(id, secret), warning)));
    }
    let env_id = env_id.filter(|v| !v.is_empty());
    let env_secret = env_secret.filter(|v| !v.is_empty());
    match (env_id, env_secret) {
        (None, None) => Ok(None),
        (Some(id), Some(secret)) => Ok(Some((
            AccessToken::new(
                parse_token("CF_ACCESS_CLIENT_ID", id)?,
                parse_token("CF_ACCESS_CLIENT_SECRET", secret)?,
            ),
            None,
        ))),
        (Some(_), None) => Err(SecretError::Empty {
            source_name: "CF_ACCESS_CLIENT_SECRET (CF_ACCESS_CLIENT_ID is set)".into(),
        }),
        (None, Some(_)) => Err(SecretError::Empty {
            source_name: "CF_ACCESS_CLIENT_ID (CF_ACCESS_CLIENT_SECRET is set)".into(),
        }),
    }
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
    fn access_token_from_env_and_file() {
        assert!(access_token(None, None, None).unwrap().is_none());
        let (t, _) = access_token(None, Some("abc.access"), Some("planted-s3cret"))
            .unwrap()
            .unwrap();
        assert!(!format!("{t:?}").contains("planted"));
        let [(id_name, id), (secret_name, secret)] = t.headers();
        assert_eq!(
            (id_name, id.to_str().unwrap()),
            ("cf-access-client-id", "abc.access")
        );
        assert_eq!(secret_name, "cf-access-client-secret");
        assert!(secret.is_sensitive());
        let e = access_token(None, Some("abc.access"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CF_ACCESS_CLIENT_SECRET"), "{e}");
        let e = access_token(None, None, Some("planted-s3cret"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CF_ACCESS_CLIENT_ID") && !e.contains("planted"),
            "{e}"
        );

        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access");
        std::fs::write(&p, "abc.access\nplanted-s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (t, w) = access_token(Some(&p), None, None).unwrap().unwrap();
        assert!(w.is_none());
        assert_eq!(t.expose_secret(), "planted-s3cret");
        std::fs::write(&p, "planted-s3cret\n").unwrap();
        let e = access_token(Some(&p), None, None).unwrap_err().to_string();
        assert!(e.contains("two lines") && !e.contains("planted"), "{e}");
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
