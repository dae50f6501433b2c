//! Signals -> one shutdown future.
//!
//! The first SIGTERM or SIGINT resolves the future: the daemon then stops watching and
//! deregisters its ingress service under a time limit. An operator who sends a second
//! signal wants out now, so the second one exits the process at once (status 1),
//! whatever the deregistration is doing.

use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// Exit status after a second signal: the shutdown did not complete.
pub const SECOND_SIGNAL_EXIT: i32 = 1;

/// Registers the handlers now (so an early signal is not lost) and returns the future
/// that resolves on the first signal. Must be called inside the runtime.
pub fn install() -> std::io::Result<impl Future<Output = ()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    Ok(async move {
        let Some(first) = next_signal(&mut signals).await else {
            // The stream only ends when its handle is closed, which nothing does: treat
            // it as "never", so the daemon keeps running instead of exiting by surprise.
            return std::future::pending().await;
        };
        tracing::info!(
            signal = name(first),
            "shutting down (a second signal exits at once)"
        );
        tokio::spawn(async move {
            if let Some(second) = next_signal(&mut signals).await {
                tracing::warn!(signal = name(second), "second signal: exiting now");
                std::process::exit(SECOND_SIGNAL_EXIT);
            }
        });
    })
}

async fn next_signal(signals: &mut Signals) -> Option<i32> {
    std::future::poll_fn(|cx| Pin::new(&mut *signals).poll_next(cx)).await
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
