//! The engine's own thread for evaluating events, so evaluation never takes
//! a thread of the blocking pool that request bodies are parsed on.
//!
//! It runs at normal priority on purpose: a lower one (nice 10) did not
//! measurably help acknowledgement latency, and plugin calls have a
//! wall-clock backstop, so a starved thread would turn load into timeouts
//! that the circuit breaker counts and `replay` cannot reproduce.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs the engine's evaluation jobs, one at a time.
pub struct EvalThread {
    jobs: mpsc::Sender<Job>,
}

/// The evaluation thread is gone, or a job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the evaluation thread failed: {0}")]
pub struct EvalFailed(String);

impl EvalThread {
    /// Starts the thread; it ends when the handle is dropped.
    pub fn start() -> Result<EvalThread, EvalFailed> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("engine-eval".into())
            .spawn(move || {
                for job in queue {
                    // A panicking job drops its answer; the caller sees the failure.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })
            .map_err(|e| EvalFailed(format!("cannot start it: {e}")))?;
        Ok(EvalThread { jobs })
    }

    /// Runs `job` on the thread and waits for its answer.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, EvalFailed> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = answer.send(job());
            }))
            .map_err(|_| EvalFailed("it has stopped".into()))?;
        answered.await.map_err(|_| EvalFailed("a job panicked".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_panic_fails_only_its_job() {
        let thread = EvalThread::start().unwrap();
        assert_eq!(thread.run(|| 1 + 1).await.unwrap(), 2);
        assert!(thread.run(|| panic!("boom")).await.is_err());
        let name = thread.run(|| std::thread::current().name().map(String::from)).await.unwrap();
        assert_eq!(name.as_deref(), Some("engine-eval"));
    }
}
