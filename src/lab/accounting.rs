//! Process accounting for the lab's containers: how many processes an exec call starts.
//!
//! Off by default (it slows every command down). When a test or the benchmark turns it on
//! ([`super::Lab::set_process_accounting`]), execd runs each command under
//! `strace -ff -e trace=process`, which writes one trace file per task (process or thread) the
//! command starts, bash itself included. Once the command and everything it left behind have exited
//! (strace waits for all of them), the files are counted:
//!
//! - **processes**: every task that is not a thread (bash, each fork: subshells, pipeline members,
//!   command substitutions, background jobs, each external program's own process);
//! - **programs**: every successful `execve` (a process that replaces itself with a program counts
//!   once as a process and once per program it runs: the lab's `curl` wrapper is `sh` that execs
//!   the real curl, one process and two programs).
//!
//! The accounting needs `strace`; where it is missing, [`available`] is false and nothing is counted.
//! While accounting is on, execd's timeout kills strace, not the command (only measure commands that
//! finish on their own).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A container's counters (per container, since the lab started).
#[derive(Debug, Default)]
pub(crate) struct ExecAccounting {
    /// Run the next commands under strace and count.
    pub(crate) on: AtomicBool,
    /// Exec calls that were counted.
    pub(crate) calls: AtomicU64,
    pub(crate) processes: AtomicU64,
    pub(crate) programs: AtomicU64,
    /// A unique name for each call's trace directory.
    seq: AtomicU64,
}

/// Totals read from [`ExecAccounting`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCount {
    /// Exec calls counted.
    pub calls: u64,
    /// Processes started (bash included).
    pub processes: u64,
    /// Programs executed (`execve` that succeeded).
    pub programs: u64,
}

impl std::ops::Add for ProcessCount {
    type Output = ProcessCount;
    fn add(self, o: ProcessCount) -> ProcessCount {
        ProcessCount {
            calls: self.calls + o.calls,
            processes: self.processes + o.processes,
            programs: self.programs + o.programs,
        }
    }
}

impl std::ops::Sub for ProcessCount {
    type Output = ProcessCount;
    fn sub(self, o: ProcessCount) -> ProcessCount {
        ProcessCount {
            calls: self.calls - o.calls,
            processes: self.processes - o.processes,
            programs: self.programs - o.programs,
        }
    }
}

impl ExecAccounting {
    pub(crate) fn count(&self) -> ProcessCount {
        ProcessCount {
            calls: self.calls.load(Ordering::Relaxed),
            processes: self.processes.load(Ordering::Relaxed),
            programs: self.programs.load(Ordering::Relaxed),
        }
    }

    /// When accounting is on: the trace directory for the next call (created) and the argv prefix
    /// that runs a command under strace. `None`: run the command as it is.
    pub(crate) fn prepare(&self, container_dir: &Path) -> Option<(PathBuf, Vec<String>)> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let strace = strace()?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = container_dir.join(format!(".acct-{n}"));
        std::fs::create_dir_all(&dir).ok()?;
        let argv = vec![
            strace.display().to_string(),
            "-ff".into(),
            "-qq".into(),
            "-e".into(),
            "trace=process".into(),
            "-e".into(),
            "signal=none".into(),
            "-o".into(),
            dir.join("t").display().to_string(),
        ];
        Some((dir, argv))
    }

    /// Counts one call's traces and removes them.
    pub(crate) fn record(&self, dir: &Path) {
        let (processes, programs) = count_traces(dir);
        let _ = std::fs::remove_dir_all(dir);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.processes.fetch_add(processes, Ordering::Relaxed);
        self.programs.fetch_add(programs, Ordering::Relaxed);
    }
}

/// Whether process accounting can run here (strace is installed).
pub(crate) fn available() -> bool {
    strace().is_some()
}

fn strace() -> Option<PathBuf> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let paths = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            std::env::split_paths(&paths)
                .map(|d| d.join("strace"))
                .find(|p| p.is_file())
        })
        .clone()
}

/// (processes, programs) from the `t.TID` files of `strace -ff -o DIR/t`.
pub(crate) fn count_traces(dir: &Path) -> (u64, u64) {
    let mut tids = Vec::new();
    let mut threads = std::collections::BTreeSet::new();
    let mut programs = 0u64;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tid) = name.strip_prefix("t.").and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        tids.push(tid);
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let (p, t) = parse_trace(&text);
        programs += p;
        threads.extend(t);
    }
    let processes = tids.iter().filter(|t| !threads.contains(t)).count() as u64;
    (processes, programs)
}

/// One task's trace: (successful execve calls, TIDs of the threads it created).
fn parse_trace(text: &str) -> (u64, Vec<u64>) {
    let mut programs = 0;
    let mut threads = Vec::new();
    for line in text.lines() {
        if line.starts_with("execve(") && line.trim_end().ends_with("= 0") {
            programs += 1;
        }
        if (line.starts_with("clone(") || line.starts_with("clone3("))
            && line.contains("CLONE_THREAD")
        {
            if let Some(tid) = line
                .rsplit_once("= ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|r| r.parse().ok())
            {
                threads.push(tid);
            }
        }
    }
    (programs, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_count_processes_and_programs_not_threads() {
        let (p, t) = parse_trace(
            "execve(\"/bin/sh\", [\"curl\"], 0x1 /* 3 vars */) = 0\n\
             execve(\"/usr/bin/curl\", [\"curl\"], 0x1 /* 3 vars */) = 0\n\
             execve(\"/nope\", [\"x\"], 0x1 /* 3 vars */) = -1 ENOENT (No such file or directory)\n\
             clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, exit_signal=0}, 88) = 4242\n\
             clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 4243\n\
             exit_group(0)                     = ?\n",
        );
        assert_eq!(p, 2);
        assert_eq!(t, vec![4242]);
    }

    #[test]
    fn a_real_command_is_counted() {
        if !available() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let acct = ExecAccounting::default();
        acct.on.store(true, Ordering::Relaxed);
        let (dir, argv) = acct.prepare(tmp.path()).unwrap();
        // bash, the pipeline's two members, the subshell: 4 processes; bash and cat: 2 programs
        // (`true` and `echo` are builtins: forked, never executed).
        let st = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .args([
                "/bin/bash",
                "-c",
                "true | cat; (x=1; echo $x) >/dev/null; :",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        acct.record(&dir);
        let c = acct.count();
        assert_eq!((c.calls, c.processes, c.programs), (1, 4, 2), "{c:?}");
        assert!(!dir.exists());
    }
}
