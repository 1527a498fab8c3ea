//! Lines of standard input, read on a thread of their own: a blocking read on a runtime thread
//! would keep the runtime from shutting down while it waits (for instance after Ctrl-C).

use std::io::{self, BufRead};

use tokio::sync::mpsc;

/// Every line of standard input, in order; the channel closes at end of input.
pub fn lines() -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}
