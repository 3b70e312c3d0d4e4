//! [`InstanceTasks`]: the task group of one attached instance.

use std::future::Future;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// The tasks of one instance (its connections and their upstream connections): all stop when
/// the instance is detached or the proxy dropped.
#[derive(Debug, Clone)]
pub(crate) struct InstanceTasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl InstanceTasks {
    /// An empty group that stops when `cancel` is cancelled.
    pub(crate) fn new(cancel: CancellationToken) -> InstanceTasks {
        InstanceTasks {
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    /// Runs `task` until it finishes or the instance is detached.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Resolves once the group is stopped.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Stops every task and takes no new ones.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Waits until every task has ended (after [`stop`](Self::stop)).
    pub(crate) async fn wait(&self) {
        self.tracker.wait().await;
    }
}
