//! The state directory on disk: one JSON file per target, written atomically (a uniquely named
//! temporary file in the same directory, fsync, rename, fsync of the directory) under an advisory
//! lock (`flock`, released by the kernel when the process dies, so a killed run never leaves a
//! stale lock). Readers need no lock: a rename is atomic, so a file is the old or the new one.
//!
//! Layout: `DIR/targets/<domain>/<vmid>.json` (+ `<vmid>.lock`). A file that cannot be used
//! (corrupt, not pvediag's, another record version) is reported once, moved aside to
//! `<vmid>.json.unreadable` and replaced by a fresh record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::{Record, FORMAT, VERSION};

/// A state file larger than this is not read (a record is a few KiB).
pub(crate) const MAX_FILE: u64 = 1024 * 1024;
/// How long a run waits for another run's lock on the same target before it gives up writing.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(3);
/// Transitions kept per target.
pub(crate) const MAX_TRANSITIONS: usize = 50;

/// One target's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) domain: String,
    pub(crate) vmid: u32,
    /// The latest run.
    pub(crate) last: Record,
    /// The run before it.
    pub(crate) previous: Option<Record>,
    /// The latest run in which the target was healthy (last-known-good).
    pub(crate) last_healthy: Option<Record>,
    /// Changes of the target's status, newest last, at most [`MAX_TRANSITIONS`].
    pub transitions: Vec<Transition>,
}

/// The target's status changed between two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub(crate) at: i64,
    /// None: the first run recorded.
    pub(crate) from: Option<String>,
    pub to: String,
    /// One line: the worst verdict and, when known, what changed.
    pub(crate) cause: String,
}

/// What reading a state file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Absent,
    Ok(Box<StateFile>),
    /// The file exists but cannot be used; the reason is one line.
    Unreadable(String),
}

/// Parses a state file's bytes; never panics, never trusts the content.
pub fn parse(bytes: &[u8], domain: &str, vmid: u32) -> Loaded {
    let v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Loaded::Unreadable(format!("not valid JSON ({e})")),
    };
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Loaded::Unreadable(format!(
            "not a pvediag state file (no \"format\": \"{FORMAT}\")"
        ));
    }
    match v.get("version").and_then(|n| n.as_u64()) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => {
            return Loaded::Unreadable(format!(
                "record version {n}, this pvediag reads version {VERSION}"
            ))
        }
        None => return Loaded::Unreadable("no record version".into()),
    }
    match serde_json::from_value::<StateFile>(v) {
        Ok(s) if s.domain == domain && s.vmid == vmid => Loaded::Ok(Box::new(s)),
        Ok(s) => Loaded::Unreadable(format!(
            "it holds the record of {} on {}, not {vmid} on {domain}",
            s.vmid, s.domain
        )),
        Err(e) => Loaded::Unreadable(format!(
            "a version-{VERSION} record with a broken field ({e})"
        )),
    }
}

/// A directory name for a domain: the domain itself when it is a plain hostname, else hex.
fn domain_dir(domain: &str) -> String {
    let plain = !domain.is_empty()
        && !domain.starts_with('.')
        && domain
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    if plain {
        domain.to_string()
    } else {
        let hex: String = domain.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// A directory only the owner can enter (the state says which sandboxes exist and how they fail).
fn create_private_dir(p: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(p)
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// Creates the directory if needed; a one-line reason when it cannot be used.
    pub fn ensure(&self) -> Result<(), String> {
        if self.dir.exists() && !self.dir.is_dir() {
            return Err(format!("{} is not a directory", self.dir.display()));
        }
        create_private_dir(&self.dir.join("targets"))
            .map_err(|e| io_err("cannot create", &self.dir, e))
    }

    pub fn target_dir(&self, domain: &str) -> PathBuf {
        self.dir.join("targets").join(domain_dir(domain))
    }

    pub(crate) fn path(&self, domain: &str, vmid: u32) -> PathBuf {
        self.target_dir(domain).join(format!("{vmid}.json"))
    }

    /// Makes the renames of [`Store::update`] under `domain` durable: one directory sync for a
    /// whole run instead of one per target.
    pub(crate) fn sync(&self, domain: &str) {
        sync_dir_of(&self.target_dir(domain));
    }

    /// Reads a target's state (no lock needed: files are only ever replaced by rename).
    pub fn load(&self, domain: &str, vmid: u32) -> Loaded {
        read_file(&self.path(domain, vmid), domain, vmid)
    }

    /// Every domain that has a record of `vmid`, with what reading it gave.
    pub(crate) fn find(&self, vmid: u32) -> Vec<(PathBuf, Loaded)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.join("targets")) else {
            return out;
        };
        let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            let p = d.join(format!("{vmid}.json"));
            if !p.exists() {
                continue;
            }
            let dir_name = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let loaded = match read_bytes(&p) {
                Ok(b) => {
                    // The domain is what the file says; it must match the directory it is in.
                    let domain = serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v.get("domain")?.as_str().map(str::to_string))
                        .unwrap_or_else(|| dir_name.clone());
                    match parse(&b, &domain, vmid) {
                        Loaded::Ok(_) if domain_dir(&domain) != dir_name => {
                            Loaded::Unreadable("its domain does not match its directory".into())
                        }
                        other => other,
                    }
                }
                Err(e) => Loaded::Unreadable(e),
            };
            out.push((p, loaded));
        }
        out
    }

    /// Read-modify-write of one target's state under its lock. `f` gets what was there and
    /// returns the new state. Returns the notes to report (unreadable file moved aside, lock not
    /// had, write failed); on a lock or write failure nothing is written.
    pub fn update(
        &self,
        domain: &str,
        vmid: u32,
        f: impl FnOnce(&Loaded) -> StateFile,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let dir = self.target_dir(domain);
        if let Err(e) = create_private_dir(&dir) {
            notes.push(io_err("cannot create", &dir, e));
            let _ = f(&self.load(domain, vmid));
            return notes;
        }
        let path = self.path(domain, vmid);
        let lock = match lock(&dir.join(format!("{vmid}.lock")), LOCK_WAIT) {
            Ok(l) => Some(l),
            Err(e) => {
                notes.push(format!(
                    "{}: {e}; this run's record was not written",
                    path.display()
                ));
                None
            }
        };
        let loaded = read_file(&path, domain, vmid);
        let new = f(&loaded);
        let Some(_lock) = lock else { return notes };
        // Holding the lock, no other writer of this file is alive: its temp files are litter.
        remove_stale_temps(&dir, vmid);
        if let Loaded::Unreadable(why) = &loaded {
            let aside = path.with_extension("json.unreadable");
            let moved = std::fs::rename(&path, &aside).is_ok();
            notes.push(format!(
                "{}: {why}; ignored{}, a new record is started",
                path.display(),
                if moved {
                    format!(" (kept as {})", aside.display())
                } else {
                    String::new()
                }
            ));
        }
        match serde_json::to_vec_pretty(&new) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                if let Err(e) = write_atomically(&path, &bytes, false) {
                    notes.push(format!("{}: cannot write: {e}", path.display()));
                }
            }
            Err(e) => notes.push(format!("{}: cannot encode: {e}", path.display())),
        }
        notes
    }
}

/// A rename is durable only once its directory is synced.
fn sync_dir_of(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn read_bytes(p: &Path) -> Result<Vec<u8>, String> {
    let f = File::open(p).map_err(|e| format!("cannot open: {}", e.kind()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot stat: {}", e.kind()))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {} KiB", MAX_FILE / 1024));
    }
    let mut b = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut b)
        .map_err(|e| format!("cannot read: {}", e.kind()))?;
    Ok(b)
}

fn read_file(p: &Path, domain: &str, vmid: u32) -> Loaded {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Absent,
        _ => {}
    }
    match read_bytes(p) {
        Ok(b) => parse(&b, domain, vmid),
        Err(e) => Loaded::Unreadable(e),
    }
}

/// `.NAME.PID.N.tmp` next to the file: unique per process and write.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn remove_stale_temps(dir: &Path, vmid: u32) {
    let prefix = format!(".{vmid}.json.");
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Writes `bytes` to a unique temporary file in the same directory, syncs it and renames it over
/// `path`: `path` is always the old or the new content, whole. With `sync_dir` the directory is
/// synced too (the rename survives a power loss); [`Store::sync`] does that once for many files.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], sync_dir: bool) -> std::io::Result<()> {
    write_atomically_with(path, true, sync_dir, |w| w.write_all(bytes))
}

/// [`write_atomically`], the content written by `write` through a buffer; `private`: mode 0600
/// (state files), else the process's umask decides (reports other programs read).
pub(crate) fn write_atomically_with(
    path: &Path,
    private: bool,
    sync_dir: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = std::io::BufWriter::new(o.open(&tmp)?);
        write(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if sync_dir {
            if let Some(dir) = path.parent() {
                sync_dir_of(dir);
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An exclusive advisory lock on `path`, held until the returned file is dropped. Waits at most
/// `wait` for another holder: a run never hangs on the state directory.
pub(crate) fn lock(path: &Path, wait: Duration) -> Result<File, String> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o
        .open(path)
        .map_err(|e| io_err("cannot open the lock", path, e))?;
    let start = Instant::now();
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR)
                if start.elapsed() < wait =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(format!(
                    "another pvediag run held the lock for more than {} s",
                    wait.as_secs()
                ))
            }
            Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}
