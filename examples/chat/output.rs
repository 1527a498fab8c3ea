//! Standard output carries the answer text and nothing else; notes go to standard error.

use std::io::{self, IsTerminal, Write};

use anyhow::Context;

pub struct Output {
    /// Standard output is a terminal: answers end with a line break there, nowhere else.
    terminal: bool,
    /// The text written so far does not end with a line break.
    open_line: bool,
}

impl Output {
    pub fn new() -> Self {
        Self {
            terminal: io::stdout().is_terminal(),
            open_line: false,
        }
    }

    /// Writes a delta as it arrived, flushed at once.
    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the answer to standard output")?;
        self.open_line = !text.ends_with('\n');
        Ok(())
    }

    /// Ends the current line, on a terminal only (elsewhere stdout is exactly the answer).
    pub fn end_line(&mut self) -> anyhow::Result<()> {
        if self.terminal && self.open_line {
            self.write("\n")?;
        }
        Ok(())
    }

    /// A note on standard error, on a line of its own when both share a terminal.
    pub fn note(&mut self, text: &str) {
        // A failed line break on stdout surfaces at the next write; the note still matters.
        let _ = self.end_line();
        eprintln!("{text}");
    }
}
