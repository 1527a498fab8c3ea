//! Ctrl-C as a stream of interrupts. Once tokio listens for SIGINT the default action (exit) is
//! gone for good, so every wait that Ctrl-C must be able to end selects on [`Interrupts::next`].

use std::future::Future;

use tokio::sync::mpsc;

use crate::session::Stop;

pub struct Interrupts(mpsc::UnboundedReceiver<()>);

impl Interrupts {
    /// Starts listening: one message per Ctrl-C, none lost while the client is busy.
    pub fn listen() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The next Ctrl-C. Never resolves if listening failed.
    pub async fn next(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `work` unless Ctrl-C comes first.
    pub async fn unless_interrupted<T>(
        &mut self,
        work: impl Future<Output = T>,
    ) -> Result<T, Stop> {
        tokio::select! {
            value = work => Ok(value),
            () = self.next() => Err(Stop::Interrupted),
        }
    }
}
