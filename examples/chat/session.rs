//! One conversation with the server: the chat it belongs to, the one-shot and interactive modes,
//! and how a session ends (its exit status).

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::answer::{self, Answer};
use crate::api::Api;
use crate::input;
use crate::interrupt::Interrupts;
use crate::output::Output;

/// Longest chat name made from a first message, in characters.
const NAME_CHARS: usize = 60;

/// Why a session ended before its time.
pub enum Stop {
    /// Ctrl-C: exit 130.
    Interrupted,
    /// A request failed, or the connection could not be resumed: exit 2.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Failed(e)
    }
}

/// How a session ended; decides the exit status.
pub enum Outcome {
    Complete,
    /// An answer ended `incomplete`, `failed` or `cancelled`.
    NotComplete,
    Interrupted,
    Failed(anyhow::Error),
}

impl From<Stop> for Outcome {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Interrupted => Outcome::Interrupted,
            Stop::Failed(e) => Outcome::Failed(e),
        }
    }
}

impl Outcome {
    /// Prints a failure on standard error and returns the exit status.
    pub fn report(self) -> ExitCode {
        match self {
            Outcome::Complete => ExitCode::SUCCESS,
            Outcome::NotComplete => ExitCode::from(1),
            Outcome::Interrupted => ExitCode::from(130),
            Outcome::Failed(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}

pub struct Session {
    api: Api,
    chat: Option<String>,
    interrupts: Interrupts,
    out: Output,
}

impl Session {
    pub fn new(api: Api, chat: Option<String>) -> Self {
        Self {
            api,
            chat,
            interrupts: Interrupts::listen(),
            out: Output::new(),
        }
    }

    /// Asks one question, prints the answer, exits.
    pub async fn one_shot(mut self, message: &str) -> Outcome {
        if message.trim().is_empty() {
            return Outcome::Failed(anyhow::anyhow!("the message is empty"));
        }
        match self.ask(message).await {
            Ok(answer) if answer.interrupted => Outcome::Interrupted,
            Ok(answer) if answer.is_complete() => Outcome::Complete,
            Ok(_) => Outcome::NotComplete,
            Err(stop) => stop.into(),
        }
    }

    /// Answers every line of standard input until its end.
    pub async fn interactive(mut self) -> Outcome {
        let prompt = std::io::stdin().is_terminal();
        let mut lines = input::lines();
        let mut all_complete = true;
        loop {
            if prompt {
                eprint!("> ");
            }
            let line = tokio::select! {
                line = lines.recv() => line,
                () = self.interrupts.next() => return Outcome::Interrupted,
            };
            let message = match line {
                None => break,
                Some(Err(e)) => return Outcome::Failed(anyhow::anyhow!("reading input: {e}")),
                Some(Ok(line)) if line.trim().is_empty() => continue,
                Some(Ok(line)) => line,
            };
            match self.ask(&message).await {
                Ok(answer) => all_complete &= answer.is_complete(),
                Err(stop) => return stop.into(),
            }
        }
        if prompt {
            eprintln!();
        }
        if all_complete {
            Outcome::Complete
        } else {
            Outcome::NotComplete
        }
    }

    /// Posts the message and streams its answer to standard output.
    async fn ask(&mut self, message: &str) -> Result<Answer, Stop> {
        let chat = self.chat_for(message).await?;
        let api = &self.api;
        self.interrupts
            .unless_interrupted(api.post_message(&chat, message))
            .await??;
        let answer = answer::stream(api, &chat, &mut self.interrupts, &mut self.out).await?;
        if !answer.is_complete() {
            self.out.note(&format!("answer {}", answer.status));
        }
        Ok(answer)
    }

    /// The chat to post to: the one given, else a new one named after this first message.
    async fn chat_for(&mut self, message: &str) -> Result<String, Stop> {
        if let Some(chat) = &self.chat {
            return Ok(chat.clone());
        }
        let api = &self.api;
        let chat = self
            .interrupts
            .unless_interrupted(api.create_chat(&chat_name(message)))
            .await??;
        self.out
            .note(&format!("chat {chat} (continue it with --chat {chat})"));
        self.chat = Some(chat.clone());
        Ok(chat)
    }
}

/// The first message on one line, without control characters, cut to [`NAME_CHARS`].
fn chat_name(message: &str) -> String {
    let flat: String = message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if flat.is_empty() {
        return "chat".to_owned();
    }
    if flat.chars().count() <= NAME_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(NAME_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}
