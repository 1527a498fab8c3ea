//! A scriptable mock OpenAI-compatible upstream, for benchmarks and manual fault testing.
//!
//! ```text
//! cargo run --release --example mock_upstream -- [--listen 127.0.0.1:9000] [--text "..."] \
//!     [--chunks N] [--tokens N] [--first-delay-ms N] [--chunk-delay-ms N]
//! ```
//!
//! Faults can be scripted at run time: `curl -X POST http://ADDR/__mock/script -d '{"cut_after":2}'`
//! queues a script for the next request (see `mock.rs` for every field).

mod mock;

use std::net::SocketAddr;

use clap::Parser;
use mock::{MockUpstream, Script};

#[derive(Parser, Debug)]
#[command(about = "Scriptable mock of an OpenAI-compatible streaming upstream")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Text of the answer (split into one chunk per word unless --chunks is given).
    #[arg(long)]
    text: Option<String>,
    /// Split the answer text into this many chunks of about equal length.
    #[arg(long)]
    chunks: Option<usize>,
    /// Answer with this many word tokens (cycling through the words of the text).
    #[arg(long)]
    tokens: Option<usize>,
    /// Delay before the first chunk (time to first token), in milliseconds.
    #[arg(long, default_value_t = 0)]
    first_delay_ms: u64,
    /// Delay between chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// A full default Script as JSON (fields not given keep their defaults); the other
    /// options override it.
    #[arg(long)]
    script: Option<String>,
}

/// Words with their leading whitespace: "a b  c" -> ["a", " b", "  c"].
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            out.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits `text` into `n` pieces of about equal character count.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    (0..n)
        .map(|i| {
            let start = i * chars.len() / n;
            let end = (i + 1) * chars.len() / n;
            chars[start..end].iter().collect()
        })
        .collect()
}

fn build_script(args: &Args) -> Result<Script, Box<dyn std::error::Error>> {
    let mut script = match &args.script {
        Some(json) => serde_json::from_str::<Script>(json)?,
        None => Script::default(),
    };
    let mut pieces = match &args.text {
        Some(text) => words(text),
        None => script.chunks.clone(),
    };
    if let Some(tokens) = args.tokens {
        let base = if pieces.is_empty() {
            words("lorem ipsum dolor sit amet")
        } else {
            pieces
        };
        pieces = (0..tokens)
            .map(|i| {
                let word = &base[i % base.len()];
                if i == 0 {
                    word.trim_start().to_owned()
                } else if word.starts_with(char::is_whitespace) {
                    word.clone()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
    }
    if let Some(n) = args.chunks {
        pieces = split_even(&pieces.concat(), n);
    }
    script.chunks = pieces;
    if args.first_delay_ms > 0 {
        script.first_delay_ms = args.first_delay_ms;
    }
    if args.chunk_delay_ms > 0 {
        script.chunk_delay_ms = args.chunk_delay_ms;
    }
    Ok(script)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let script = build_script(&args)?;
    let upstream = MockUpstream::start_on(args.listen, script).await?;
    eprintln!("mock upstream listening on {}", upstream.base_url());
    tokio::signal::ctrl_c().await?;
    eprintln!(
        "mock upstream: {} requests, {} aborted",
        upstream.request_count(),
        upstream.aborted_count()
    );
    Ok(())
}
