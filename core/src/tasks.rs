//! The tasks of a running part, all of which end on shutdown.
//!
//! Every task a part spawns goes on its [`Tasks`]: named by a span, tracked, and stopped by
//! the part's shutdown token, so that a stopped part leaves nothing running. [`every`] is
//! the one periodic loop (expiring peers, trimming a cache, checking members);
//! [`Running`] adds the part's HTTP servers, which drain first when it stops.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

use crate::telemetry::{Readiness, ServerConfig};

/// Calls `round` now and then every `period` until `shutdown` is cancelled. A round runs to
/// its end once begun; one that takes longer than `period` delays the next, and missed
/// rounds are not made up in a burst.
pub async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        round().await;
    }
}

/// The tasks of one running part and the shutdown token that ends them.
#[derive(Debug, Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    /// Tasks under a shutdown token of their own, a child of `parent`: the parent's
    /// cancellation stops them, and stopping them leaves the parent alone.
    pub fn new(parent: &CancellationToken) -> Self {
        Tasks {
            tracker: TaskTracker::new(),
            shutdown: parent.child_token(),
        }
    }

    /// The token every task of the part watches.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Spawns `task`, instrumented with `span`. It must watch [`Tasks::shutdown`] (or end
    /// by itself soon after), since [`Tasks::close`] waits for it.
    pub fn spawn<F>(&self, span: Span, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task.instrument(span))
    }

    /// Spawns a task that calls `round` now and every `period` until shutdown ([`every`]).
    pub fn every<F, Fut>(&self, span: Span, period: Duration, round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let shutdown = self.shutdown.clone();
        self.spawn(span, async move { every(period, &shutdown, round).await });
    }

    /// Makes `ready` false the moment shutdown starts, so that balancers stop sending
    /// requests while the part drains.
    pub fn unready_on_shutdown(&self, ready: Readiness) {
        let shutdown = self.shutdown.clone();
        self.spawn(Span::current(), async move {
            shutdown.cancelled().await;
            ready.set(false);
        });
    }

    /// Asks every task to stop.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Asks every task to stop and waits until they all have.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// What every running part owns: its HTTP servers and its [`Tasks`]. Dropping it stops
/// them (the caller's token stays as it was).
#[derive(Debug)]
pub struct Running {
    tasks: Tasks,
    servers: Vec<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Nothing running yet, under a child of `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self::with_tasks(Tasks::new(shutdown))
    }

    /// Servers to come, with `tasks` that may already run.
    pub fn with_tasks(tasks: Tasks) -> Self {
        Running {
            tasks,
            servers: Vec::new(),
        }
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Serves `app` on `listener` ([`crate::telemetry::serve`]), HTTPS with `tls`, until shutdown, then drains
    /// requests in flight for up to `grace`.
    pub fn serve(
        &mut self,
        span: Span,
        listener: TcpListener,
        app: Router,
        grace: Duration,
        limits: ServerConfig,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) {
        let shutdown = self.tasks.shutdown.clone();
        self.servers.push(tokio::spawn(
            crate::telemetry::serve(listener, app, shutdown, grace, limits, tls).instrument(span),
        ));
    }

    /// Asks the part to stop.
    pub fn stop(&self) {
        self.tasks.stop();
    }

    /// Waits until every server has stopped: after shutdown, once requests in flight are
    /// done or the grace period is over. The first server's error, if any.
    pub async fn drained(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for server in std::mem::take(&mut self.servers) {
            let served = server.await.unwrap_or_else(|e| Err(io::Error::other(e)));
            if result.is_ok() {
                result = served;
            }
        }
        result
    }

    /// Stops every task and waits until they have all ended.
    pub async fn close(&self) {
        self.tasks.close().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn every_runs_at_once_then_each_period_until_shutdown() {
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(&shutdown);
        let rounds = Arc::new(AtomicU32::new(0));
        let r = rounds.clone();
        tasks.every(Span::none(), Duration::from_secs(10), move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        tasks.close().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stopping_the_tasks_leaves_the_parent_alone_and_dropping_running_stops_them() {
        let parent = CancellationToken::new();
        let tasks = Tasks::new(&parent);
        let ready = Readiness::default();
        ready.set(true);
        tasks.unready_on_shutdown(ready.clone());
        tasks.close().await;
        assert!(!ready.is_ready());
        assert!(!parent.is_cancelled());

        let running = Running::new(&parent);
        let token = running.tasks().shutdown().clone();
        drop(running);
        assert!(token.is_cancelled() && !parent.is_cancelled());
    }
}
