//! What keeps one question from being answered twice without serialising every start: a lock
//! per question (two readers of the same question wait for each other, readers of different
//! questions do not), and a record of which questions' generations finished recently, so that
//! a start re-reads the database only when its own question may have been answered meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// How many finished questions are remembered; beyond that a start re-reads to be sure.
const REMEMBERED: usize = 4096;

type Locks = HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update below is a single step: the data is consistent even after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
pub(super) struct StartLocks {
    locks: Mutex<Locks>,
}

/// Held while a question's answer is being looked up or started; dropping it lets the next
/// reader of that question in, and forgets the lock when nobody else wants it.
pub(super) struct StartGuard<'a> {
    locks: &'a Mutex<Locks>,
    question: Uuid,
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl StartLocks {
    pub(super) async fn lock(&self, question: Uuid) -> StartGuard<'_> {
        let mutex = lock(&self.locks).entry(question).or_default().clone();
        let held = mutex.clone().lock_owned().await;
        StartGuard {
            locks: &self.locks,
            question,
            lock: mutex,
            held: Some(held),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.locks).len()
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut locks = lock(self.locks);
        // The map's reference and ours: nobody else is waiting for this question.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.question);
        }
    }
}

/// The questions whose generations left the registry, numbered in order.
#[derive(Default)]
pub(super) struct Forgotten {
    state: Mutex<(u64, VecDeque<(u64, Uuid)>)>,
}

impl Forgotten {
    /// The current mark, to be compared later with [`Forgotten::may_have_finished`].
    pub(super) fn mark(&self) -> u64 {
        lock(&self.state).0
    }

    pub(super) fn record(&self, question: Uuid) {
        let mut state = lock(&self.state);
        state.0 += 1;
        let mark = state.0;
        state.1.push_back((mark, question));
        if state.1.len() > REMEMBERED {
            state.1.pop_front();
        }
    }

    /// Whether a generation for `question` may have finished since `mark`: false only when
    /// every finish since then is remembered and none was this question's.
    pub(super) fn may_have_finished(&self, mark: u64, question: Uuid) -> bool {
        let state = lock(&self.state);
        if state.0 == mark {
            return false;
        }
        match state.1.front() {
            Some((oldest, _)) if *oldest <= mark + 1 => {
                state.1.iter().any(|(at, q)| *at > mark && *q == question)
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn readers_of_one_question_wait_for_each_other_and_others_do_not() {
        let locks = Arc::new(StartLocks::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = locks.lock(a).await;
        // Another question starts while `a` is held.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(b)).await;
        assert!(other.is_ok());
        drop(other);
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock(a).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locks.len(), 0, "locks nobody waits for are forgotten");
    }

    #[test]
    fn a_start_re_reads_only_when_its_question_may_have_finished() {
        let forgotten = Forgotten::default();
        let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mark = forgotten.mark();
        assert!(!forgotten.may_have_finished(mark, mine));
        forgotten.record(other);
        assert!(!forgotten.may_have_finished(mark, mine));
        forgotten.record(mine);
        assert!(forgotten.may_have_finished(mark, mine));
        // Finishes before the mark do not count.
        let later = forgotten.mark();
        assert!(!forgotten.may_have_finished(later, mine));
        // More finishes than remembered: unsure, so yes.
        for _ in 0..=REMEMBERED {
            forgotten.record(other);
        }
        assert!(forgotten.may_have_finished(later, mine));
    }
}
