//! Stopping on a signal: Ctrl-C (SIGINT) or SIGTERM, as a supervisor sends it.

/// The stop signals, listened to from [`Stop::listen`] on: a signal that arrives before
/// [`Stop::wait`] is polled still counts (it no longer kills the process).
pub(crate) struct Stop {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Stop {
    /// Installs the handlers now. Needs a running tokio runtime.
    pub(crate) fn listen() -> Stop {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Stop { signals }
        }
        #[cfg(not(unix))]
        Stop {}
    }

    /// Completes on the first Ctrl-C or SIGTERM.
    pub(crate) async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
