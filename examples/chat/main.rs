//! `chat`: talk to a sluice server from the terminal, through the conversations API.
//!
//! ```text
//! cargo run --release --example chat -- [--url URL] [--key KEY] [--chat ID] [MESSAGE...]
//! ```
//!
//! - With a message (the trailing words): one-shot. The message is posted, the answer is written
//!   to standard output as it streams, and the client exits: 0 when the answer is complete, 1
//!   when it ended `incomplete`, `failed` or `cancelled`, 2 when a request failed (the server's
//!   error message goes to standard error), 130 after Ctrl-C.
//! - Without one: interactive. Every line read from standard input is a message, answered in
//!   turn, until end of input (a `> ` prompt on standard error when standard input is a terminal).
//! - Without `--chat ID` a new chat is created, named after the first message; its id is printed
//!   once on standard error, so `--chat ID` continues it later.
//! - `--url` and `--key` fall back to `SLUICE_URL` and `SLUICE_KEY`. The key (secret or
//!   publishable) is sent as `Authorization: Bearer` and never printed.
//!
//! Standard output carries the answer text only, byte for byte as the server stores it (plus a
//! final line break when standard output is a terminal and the answer lacks one); everything else
//! goes to standard error. A dropped connection is resumed with `Last-Event-ID`, so nothing is
//! printed twice or lost. Ctrl-C while an answer streams asks the server to stop it, prints the
//! rest of the partial answer and exits 130 (in interactive mode, returns to the prompt); a second
//! Ctrl-C exits at once.

mod answer;
mod api;
mod input;
mod interrupt;
mod output;
mod reconnect;
mod session;

use std::process::ExitCode;

use clap::Parser;

use api::Api;
use session::{Outcome, Session};

#[derive(Parser)]
#[command(about = "Chat with a sluice server from the terminal")]
struct Args {
    /// The sluice server.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A secret or publishable key, sent as `Authorization: Bearer`.
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Continue this chat instead of starting a new one.
    #[arg(long = "chat", value_name = "ID")]
    chat: Option<String>,
    /// The message. Without one, each line of standard input is a message.
    #[arg(trailing_var_arg = true)]
    message: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match Api::new(&args.url, args.key) {
        Ok(api) => run(Session::new(api, args.chat), &args.message).await,
        Err(e) => Outcome::Failed(e),
    };
    outcome.report()
}

async fn run(session: Session, words: &[String]) -> Outcome {
    if words.is_empty() {
        session.interactive().await
    } else {
        session.one_shot(&words.join(" ")).await
    }
}
