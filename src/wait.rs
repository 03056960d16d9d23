//! `--wait DURATION`: re-diagnose with backoff until everything is healthy or the time is spent (CI
//! right after a deploy), then report the last result.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::cli::UsageError;
use crate::exit;
use crate::report::Report;

/// The first pause between attempts; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pause after attempt `n` (1-based): 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s, ...
pub(crate) fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

/// Runs `attempt` until its report is healthy or `wait` is spent, and returns the last report with
/// the attempts and the total time in it. The last pause is shortened so one more attempt runs at
/// the end of the window: the whole duration is waited. Progress goes to stderr, and only when
/// stderr is a terminal and not `quiet`.
pub(crate) async fn until_healthy<F, Fut>(
    wait: Duration,
    quiet: bool,
    attempt: F,
) -> Result<Report, UsageError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Report, UsageError>>,
{
    let progress = !quiet && std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let mut report = attempt().await?;
        report.waited = Some(crate::report::Waited {
            attempts: n,
            total_ms: start.elapsed().as_millis() as u64,
        });
        let code = report.exit_code();
        let left = wait.saturating_sub(start.elapsed());
        let pause = backoff(n).min(left);
        // Waiting does not open a gate of the edge (a challenge, Access): no need to wait it out.
        let all_gated = !report.targets.is_empty()
            && report.targets.iter().all(|t| t.verdict.edge_gate.is_some());
        if code == exit::OK || all_gated || left.is_zero() {
            if progress && n > 1 {
                eprintln!(
                    "pvediag: attempt {n}: {} after {:.1} s",
                    report.worst().as_str(),
                    start.elapsed().as_secs_f64()
                );
            }
            return Ok(report);
        }
        if progress {
            eprintln!(
                "pvediag: attempt {n}: {}; again in {:.1} s ({:.0} s left)",
                report.worst().as_str(),
                pause.as_secs_f64(),
                wait.saturating_sub(start.elapsed()).as_secs_f64()
            );
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds() {
        let b: Vec<u128> = (1..=7).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(b, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
