//! The invariants, checked at the end against the database and what every reader saw.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::client::{Counts, Reading, full_text};

/// How long the answers still running at the end may take to end.
const SETTLE: Duration = Duration::from_secs(90);

pub struct Report {
    pub violations: Vec<String>,
    lines: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(40) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > 40 {
            writeln!(f, "  … and {} more", self.violations.len() - 40)?;
        }
        Ok(())
    }
}

pub async fn everything(
    database_url: &str,
    readings: &[Reading],
    counts: &Counts,
    logs: Vec<PathBuf>,
    server_errors: Vec<String>,
) -> Result<Report> {
    use entity::message;
    let db = sea_orm::Database::connect(database_url).await?;
    let mut violations = Vec::new();

    // Every answer ends: none is still `streaming` once the chaos is over.
    let deadline = Instant::now() + SETTLE;
    let rows = loop {
        let rows = message::Entity::find().all(&db).await?;
        let running = rows.iter().filter(|m| m.status == "streaming").count();
        if running == 0 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let full = full_text();
    let answers: HashMap<Uuid, &message::Model> = rows
        .iter()
        .filter(|m| m.role == "assistant")
        .map(|m| (m.id, m))
        .collect();
    let answered: HashSet<Uuid> = answers.values().filter_map(|m| m.reply_to).collect();
    let questions: Vec<&message::Model> = rows.iter().filter(|m| m.role == "user").collect();

    for question in &questions {
        if !answered.contains(&question.id) {
            violations.push(format!(
                "lost: question {} (chat {}) has no answer row",
                question.id, question.chat_id
            ));
        }
    }
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for answer in answers.values() {
        *by_status.entry(answer.status.as_str()).or_default() += 1;
        if answer.status == "streaming" {
            violations.push(format!(
                "unended: answer {} is still streaming {} s after the chaos",
                answer.id,
                SETTLE.as_secs()
            ));
        }
        if !full.starts_with(&answer.content) {
            violations.push(format!(
                "garbled: answer {} is not a prefix of the upstream's text: {:?}",
                answer.id, answer.content
            ));
        }
        if answer.status == "complete" && answer.content != full {
            violations.push(format!(
                "cut: answer {} is `complete` with {} of {} bytes",
                answer.id,
                answer.content.len(),
                full.len()
            ));
        }
    }

    // What each reader saw against what was stored.
    let mut checked_readers = 0;
    for reading in readings {
        for wire in &reading.wire {
            violations.push(format!("{} reader: {wire}", reading.dialect));
        }
        let Some(id) = reading.answer else {
            continue;
        };
        if reading.done.is_some() || !reading.text.is_empty() {
            checked_readers += 1;
        }
        let Some(stored) = answers.get(&id) else {
            // Regenerating replaces the row of the answer before.
            if !reading.replaced {
                violations.push(format!("lost: answer {id} that a reader saw has no row"));
            }
            continue;
        };
        if !stored.content.starts_with(&reading.text) {
            violations.push(format!(
                "diverged: a {} reader of {id} holds text that is not a prefix of the stored \
                 answer ({} vs {} bytes, `{}`, done {:?}, {} connections: {})",
                reading.dialect,
                reading.text.len(),
                stored.content.len(),
                stored.status,
                reading.done,
                reading.connections,
                reading.trail.join(" ")
            ));
        }
        if let Some(done) = &reading.done {
            if done != &stored.status {
                violations.push(format!(
                    "status: `done` told a {} reader `{done}`, the row says `{}` ({id})",
                    reading.dialect, stored.status
                ));
            }
            if done == "complete" && (reading.text != full || stored.content != full) {
                violations.push(format!(
                    "cut: `done` said complete for {id} with {} bytes read and {} stored of {}",
                    reading.text.len(),
                    stored.content.len(),
                    full.len()
                ));
            }
        }
    }
    for error in server_errors {
        violations.push(format!("5xx or a /v1 text not the upstream's: {error}"));
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked")) {
            violations.push(format!("panic in {}: {line}", log.display()));
        }
    }

    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut statuses: Vec<String> = by_status
        .iter()
        .map(|(status, count)| format!("{status} {count}"))
        .collect();
    statuses.sort();
    let lines = vec![
        format!(
            "exchanges: {} (conversations {}, workspace {}, agent {}, /v1 {})",
            n(&counts.exchanges),
            n(&counts.by_dialect[0]),
            n(&counts.by_dialect[1]),
            n(&counts.by_dialect[2]),
            n(&counts.by_dialect[3]),
        ),
        format!(
            "questions: {}; answers stored: {} ({})",
            questions.len(),
            answers.len(),
            statuses.join(", ")
        ),
        format!(
            "readers: {} checked against the rows, {} read to `done`",
            checked_readers,
            n(&counts.answers_read)
        ),
        format!(
            "resumes: {} (walk-aways {}, connections lost to kills {})",
            n(&counts.resumes),
            n(&counts.walkaways),
            n(&counts.connection_errors)
        ),
        format!(
            "stops: {}; regenerates: {}; kills: {}; upstream faults injected: {} ({} relayed \
             by /v1 as 502/504)",
            n(&counts.stops),
            n(&counts.regenerates),
            n(&counts.kills),
            n(&counts.faults),
            n(&counts.upstream_failures_relayed)
        ),
        format!(
            "readers told the saved answer is shorter than what they were streamed (a kill \
             before its checkpoint): {}",
            n(&counts.told_shorter)
        ),
    ];
    db.close().await?;
    Ok(Report { violations, lines })
}
