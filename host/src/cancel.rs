//! Cancellation helpers shared by the tasks.

use tokio_util::sync::CancellationToken;

/// A token cancelled as soon as either of two is.
pub fn either(a: CancellationToken, b: CancellationToken) -> CancellationToken {
    let both = CancellationToken::new();
    let out = both.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = a.cancelled() => {}
            _ = b.cancelled() => {}
            // Nobody is waiting on it any more.
            _ = both.cancelled() => {}
        }
        both.cancel();
    });
    out
}
