//! The bound on callers waiting for their jobs on a stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{ErrorKind, ServiceError};

/// How many callers wait on a stream for their job, bounded by `limits.max_waiting_streams`:
/// each costs a task, a channel and a watch for as long as its job runs, so an unbounded number
/// is unbounded memory under overload.
#[derive(Debug)]
pub struct WaitingStreams {
    count: AtomicUsize,
    max: usize,
}

/// One caller's place among the waiting streams; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<WaitingStreams>);

impl WaitingStreams {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(WaitingStreams {
            count: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for `n` more streams (a release may follow one job per environment), or a
    /// refusal that tells the caller when to come back.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Result<Vec<StreamSlot>, ServiceError> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c + n <= self.max).then_some(c + n)
            });
        match taken {
            Ok(_) => Ok((0..n).map(|_| StreamSlot(self.clone())).collect()),
            Err(_) => Err(ServiceError::new(
                ErrorKind::Busy {
                    retry_after_secs: 1,
                },
                format!(
                    "the server is following {} waiting streams, its limit (limits.max_waiting_streams); nothing was stored: retry after 1 s, or send wait=false to be answered as soon as the job is stored",
                    self.max
                ),
            )),
        }
    }

    /// Streams waiting now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}
