//! The control signal: one type carries reload and shutdown to every task (vector's `SignalTo`
//! is the model), so the binary's signal handling and the tests drive dnsfence the same way.

use tokio::sync::broadcast;

/// What the process is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Re-read the config and zones; swap the policy whole, or keep the old one if that fails.
    Reload,
    /// Stop accepting, finish in-flight answers, stop the HTTP server last.
    Shutdown,
}

/// Sends control signals to a running dnsfence.
pub type SignalSender = broadcast::Sender<Signal>;

/// A channel for control signals.
pub fn channel() -> (SignalSender, broadcast::Receiver<Signal>) {
    broadcast::channel(16)
}

/// Forwards SIGHUP as [`Signal::Reload`] and SIGTERM/SIGINT as [`Signal::Shutdown`] until the
/// receiver side is gone.
#[cfg(unix)]
pub async fn forward_os_signals(tx: SignalSender) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch signals; stop dnsfence with SIGKILL");
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = hup.recv() => Signal::Reload,
            _ = term.recv() => Signal::Shutdown,
            _ = int.recv() => Signal::Shutdown,
        };
        if tx.send(sig).is_err() || sig == Signal::Shutdown {
            return;
        }
    }
}
