//! [`Scope`]: the replay cursor of one action attempt (or one workflow run).
//!
//! A scope hands each step its position and key, compares them with the
//! journal on replay, writes outcomes, and keeps the compensations
//! registered so far. It is the one place where journaling logic lives;
//! actions reach it through [`Journal`](crate::Journal), workflows own one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tributary_core::BoxError;

use crate::error::DurableError;
use crate::policy::StepPolicy;
use crate::store::{EntryKind, JournalEntry, JournalStore, Outcome, StepKey};

/// Where durable code reads the time of day (the wake-up time of a durable
/// sleep is journaled in it).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

pub(crate) fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// What a step's body is told about the attempt it runs in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepAttempt {
    /// The step's key.
    pub step: StepKey,
    /// The attempt, from 1.
    pub attempt: u32,
    /// A key derived from the step's identity (app id, sequence id, step
    /// key): the same on every attempt and every replay, different for any
    /// other step. Hand it to outside systems that deduplicate requests.
    pub idempotency_key: String,
}

/// Where a step whose retries ran out waits to be resumed (workflows
/// have one; actions do not).
pub(crate) trait PauseGate: Send + Sync {
    /// Pause on `error`; `true` once resumed (the step retries again).
    fn pause<'a>(&'a self, step: &'a StepKey, error: &'a BoxError) -> BoxFuture<'a, bool>;
}

/// A registered compensation, ready to run.
pub(crate) struct Pending {
    pub(crate) name: String,
    pub(crate) run: BoxFuture<'static, Result<(), BoxError>>,
}

#[derive(Default)]
struct Cursor {
    loaded: Option<Arc<Vec<JournalEntry>>>,
    position: u32,
    occurrences: HashMap<String, u32>,
    compensations: Vec<Pending>,
}

/// The replay cursor of one action attempt or one workflow run: which step
/// comes next, what the journal holds for it, and the compensations
/// registered so far.
///
/// Obtained through [`DurableExt::scope`](crate::DurableExt::scope); most
/// code uses the extension's methods instead.
pub struct Scope {
    store: Arc<dyn JournalStore>,
    app_id: String,
    sequence_id: u64,
    clock: Clock,
    cursor: Mutex<Cursor>,
    pause: std::sync::OnceLock<Arc<dyn PauseGate>>,
    /// This execution's number, counted at its first step.
    execution: tokio::sync::OnceCell<u32>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("app_id", &self.app_id)
            .field("sequence_id", &self.sequence_id)
            .finish_non_exhaustive()
    }
}

/// A position handed to a step, and what the journal holds there.
pub(crate) struct Claim {
    position: u32,
    step: StepKey,
    recorded: Option<Outcome>,
}

impl Scope {
    pub(crate) fn new(
        store: Arc<dyn JournalStore>,
        app_id: impl Into<String>,
        sequence_id: u64,
        clock: Clock,
    ) -> Self {
        Scope {
            store,
            app_id: app_id.into(),
            sequence_id,
            clock,
            cursor: Mutex::new(Cursor::default()),
            pause: std::sync::OnceLock::new(),
            execution: tokio::sync::OnceCell::new(),
        }
    }

    /// A scope whose exhausted steps may pause at `gate`.
    pub(crate) fn with_pause(self, gate: Arc<dyn PauseGate>) -> Self {
        let _ = self.pause.set(gate);
        self
    }

    /// Give a scope made without one its pause gate (the first wins).
    pub(crate) fn set_pause(&self, gate: impl FnOnce() -> Arc<dyn PauseGate>) {
        if self.pause.get().is_none() {
            let _ = self.pause.set(gate());
        }
    }

    /// A scope that knows its journal is empty (a workflow record created
    /// just now), so its first step does not read the store.
    pub(crate) fn with_empty_journal(self) -> Self {
        self.cursor().loaded = Some(Arc::new(Vec::new()));
        self
    }

    /// The application (or workflow) id the steps are journaled under.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The sequence id the steps are journaled under.
    pub fn sequence_id(&self) -> u64 {
        self.sequence_id
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idempotency_key(&self, step: &StepKey) -> String {
        format!("{}/{}/{}", self.app_id, self.sequence_id, step)
    }

    /// Hand out the next position to a step named `name`, checking it
    /// against the journal.
    async fn claim(&self, name: &str, kind: EntryKind) -> Result<Claim, DurableError> {
        // One count per execution, at its first step (replayed or not).
        self.execution
            .get_or_try_init(|| self.store.begin_execution(&self.app_id, self.sequence_id))
            .await?;
        if self.cursor().loaded.is_none() {
            let entries = self.store.load(&self.app_id, self.sequence_id).await?;
            self.cursor().loaded.get_or_insert(Arc::new(entries));
        }
        let mut cursor = self.cursor();
        let occurrence = {
            let n = cursor.occurrences.entry(name.to_owned()).or_insert(0);
            let this = *n;
            *n += 1;
            this
        };
        let position = cursor.position;
        cursor.position += 1;
        let step = StepKey::new(name, occurrence);
        let recorded = cursor
            .loaded
            .as_ref()
            .and_then(|entries| entries.iter().find(|e| e.position == position))
            .cloned();
        drop(cursor);
        match recorded {
            None => Ok(Claim {
                position,
                step,
                recorded: None,
            }),
            Some(entry) if entry.step == step && entry.kind == kind => Ok(Claim {
                position,
                step,
                recorded: Some(entry.outcome),
            }),
            Some(entry) => Err(DurableError::NonDeterminism {
                app_id: self.app_id.clone(),
                sequence_id: self.sequence_id,
                position,
                expected: entry.step,
                expected_kind: entry.kind,
                found: step,
                found_kind: kind,
            }),
        }
    }

    /// Journal `outcome` at the claim's position; the stored outcome (an
    /// earlier writer's, if one raced ahead).
    async fn record(
        &self,
        claim: &Claim,
        kind: EntryKind,
        outcome: Outcome,
    ) -> Result<Outcome, DurableError> {
        let stored = self
            .store
            .append(JournalEntry {
                app_id: self.app_id.clone(),
                sequence_id: self.sequence_id,
                position: claim.position,
                step: claim.step.clone(),
                kind,
                outcome,
                execution: self.execution.get().copied().unwrap_or(0),
            })
            .await?;
        Ok(stored.outcome)
    }

    /// Run (or replay) one step.
    pub(crate) async fn run_step<'a, T>(
        &self,
        name: &str,
        body: Body<'a, T>,
        policy: &StepPolicy,
        compensation: Option<Compensation<'a, T>>,
    ) -> Result<T, DurableError>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
    {
        let claim = self.claim(name, EntryKind::Step).await?;
        self.complete(claim, body, policy, compensation).await
    }

    /// Hand out the next position to a step named `name` (a durable join
    /// claims its branches' positions in order before running them).
    pub(crate) async fn claim_step(&self, name: &str) -> Result<Claim, DurableError> {
        self.claim(name, EntryKind::Step).await
    }

    /// Run (or replay) a step at its claimed position.
    pub(crate) async fn complete<'a, T>(
        &self,
        claim: Claim,
        mut body: Body<'a, T>,
        policy: &StepPolicy,
        compensation: Option<Compensation<'a, T>>,
    ) -> Result<T, DurableError>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
    {
        let value = match &claim.recorded {
            Some(Outcome::Completed(value)) => value.clone(),
            Some(Outcome::Failed(error)) => {
                return Err(self.compensate(claim.step.clone(), error.clone()).await);
            }
            None => {
                let value = match self.attempts(&claim, &mut body, policy).await {
                    Ok(value) => value,
                    Err(failure) => return Err(self.fail(&claim, failure).await),
                };
                let encoded =
                    serde_json::to_value(&value).map_err(|source| DurableError::Value {
                        step: claim.step.clone(),
                        source,
                    })?;
                match self
                    .record(&claim, EntryKind::Step, Outcome::Completed(encoded))
                    .await?
                {
                    Outcome::Completed(value) => value,
                    Outcome::Failed(error) => {
                        return Err(self.compensate(claim.step.clone(), error).await);
                    }
                }
            }
        };
        let value: T = serde_json::from_value(value).map_err(|source| DurableError::Value {
            step: claim.step.clone(),
            source,
        })?;
        if let Some(register) = compensation {
            let run = (register.make)(&value);
            self.cursor().compensations.push(Pending {
                name: register.name,
                run,
            });
        }
        Ok(value)
    }

    /// Run the body under the policy: the value, or the step's failure.
    async fn attempts<'a, T>(
        &self,
        claim: &Claim,
        body: &mut Body<'a, T>,
        policy: &StepPolicy,
    ) -> Result<T, DurableError> {
        let mut delays = policy.delays();
        let mut attempt: u32 = 0;
        let mut last_error: Option<BoxError> = None;
        loop {
            attempt += 1;
            let info = StepAttempt {
                step: claim.step.clone(),
                attempt,
                idempotency_key: self.idempotency_key(&claim.step),
            };
            let fut = match (body(info), last_error.take()) {
                (Some(fut), _) => fut,
                // A body of one future cannot run again: its one failure
                // is the step's.
                (None, Some(source)) => {
                    return Err(DurableError::StepFailed {
                        step: claim.step.clone(),
                        attempts: attempt - 1,
                        source,
                    });
                }
                (None, None) => {
                    return Err(DurableError::StepFailed {
                        step: claim.step.clone(),
                        attempts: 0,
                        source: "the step's body was already taken".into(),
                    });
                }
            };
            let outcome = match policy.attempt_timeout() {
                None => fut.await,
                Some(limit) => match tokio::time::timeout(limit, fut).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(DurableError::TimedOut {
                        step: claim.step.clone(),
                        after: limit,
                    }
                    .into()),
                },
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retryable = policy.should_retry(&error);
            let mut delay = if retryable { delays.next() } else { None };
            if delay.is_none() && retryable && policy.pauses_on_exhausted() {
                if let Some(gate) = self.pause.get() {
                    tracing::info!(step = %claim.step, attempt, error = %error, "durable step out of retries; paused");
                    if gate.pause(&claim.step, &error).await {
                        // Resumed: a fresh round of retries, the first now.
                        delays = policy.delays();
                        delay = Some(Duration::ZERO);
                    }
                }
            }
            match delay {
                Some(delay) => {
                    tracing::debug!(step = %claim.step, attempt, error = %error, ?delay, "durable step failed; retrying");
                    last_error = Some(error);
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(DurableError::StepFailed {
                        step: claim.step.clone(),
                        attempts: attempt,
                        source: error,
                    });
                }
            }
        }
    }

    /// A step failed for good: with compensations registered, journal the
    /// failure and undo; without, report it (nothing is journaled, so the
    /// step runs again when the action does).
    async fn fail(&self, claim: &Claim, failure: DurableError) -> DurableError {
        let undo = !self.cursor().compensations.is_empty();
        if !undo {
            return failure;
        }
        let message = match &failure {
            DurableError::StepFailed { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        match self
            .record(claim, EntryKind::Step, Outcome::Failed(message.clone()))
            .await
        {
            Err(e) => e,
            // A racing writer may have completed the step first; its value
            // is what replay will see, but this attempt has no value of
            // type T to return, so it still reports the failure.
            Ok(Outcome::Completed(_)) => failure,
            Ok(Outcome::Failed(error)) => self.compensate(claim.step.clone(), error).await,
        }
    }

    /// Run the registered compensations in reverse, each journaled; the
    /// error the step then fails with.
    async fn compensate(&self, step: StepKey, error: String) -> DurableError {
        let pending = std::mem::take(&mut self.cursor().compensations);
        let mut done = 0;
        for undo in pending.into_iter().rev() {
            let claim = match self.claim(&undo.name, EntryKind::Compensation).await {
                Ok(claim) => claim,
                Err(e) => return e,
            };
            if claim.recorded.is_none() {
                if let Err(source) = undo.run.await {
                    return DurableError::CompensationFailed {
                        step,
                        compensation: claim.step,
                        source,
                    };
                }
                if let Err(e) = self
                    .record(
                        &claim,
                        EntryKind::Compensation,
                        Outcome::Completed(Value::Null),
                    )
                    .await
                {
                    return e;
                }
            }
            done += 1;
        }
        DurableError::Compensated {
            step,
            error,
            compensated: done,
        }
    }

    /// Wait for the next event named `name` sent to this scope's id (the
    /// n-th wait for a name takes the n-th event of that name), journal it,
    /// return it; a replay returns the journaled event.
    pub(crate) async fn await_event(
        &self,
        name: &str,
        wake: &tokio::sync::Notify,
        poll: Duration,
    ) -> Result<(StepKey, Value), DurableError> {
        let claim = self
            .claim(&format!("event:{name}"), EntryKind::Event)
            .await?;
        let recorded = match claim.recorded.clone() {
            Some(outcome) => outcome,
            None => {
                let index = u64::from(claim.step.occurrence);
                loop {
                    // Registered before the store is read: an event sent in
                    // between still wakes this wait.
                    let notified = wake.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if let Some(value) = self.store.event(&self.app_id, name, index).await? {
                        break self
                            .record(&claim, EntryKind::Event, Outcome::Completed(value))
                            .await?;
                    }
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(poll) => {}
                    }
                }
            }
        };
        match recorded {
            Outcome::Completed(value) => Ok((claim.step, value)),
            Outcome::Failed(_) => Err(crate::error::JournalError::Corrupt {
                app_id: self.app_id.clone(),
                sequence_id: self.sequence_id,
                reason: format!("event {} is journaled as a failure", claim.step),
            }
            .into()),
        }
    }

    /// A durable sleep: journal the wake-up time, then sleep until it.
    pub(crate) async fn sleep(&self, duration: Duration) -> Result<(), DurableError> {
        let claim = self.claim("sleep", EntryKind::Sleep).await?;
        let recorded = match &claim.recorded {
            Some(outcome) => outcome.clone(),
            None => {
                let wake = (self.clock)() + duration;
                let millis = wake
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                self.record(&claim, EntryKind::Sleep, Outcome::Completed(millis.into()))
                    .await?
            }
        };
        let wake = match recorded {
            Outcome::Completed(Value::Number(n)) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| crate::error::JournalError::Corrupt {
            app_id: self.app_id.clone(),
            sequence_id: self.sequence_id,
            reason: format!("sleep {} holds no wake-up time", claim.step),
        })?;
        let wake = UNIX_EPOCH + Duration::from_millis(wake);
        let rest = wake
            .duration_since((self.clock)())
            .unwrap_or(Duration::ZERO);
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
        Ok(())
    }
}

/// A step's body: builds the future of each attempt (`None` when it cannot
/// build another).
pub(crate) type Body<'a, T> =
    Box<dyn FnMut(StepAttempt) -> Option<BoxFuture<'a, Result<T, BoxError>>> + Send + 'a>;

/// A compensation to register once the step has its value.
pub(crate) struct Compensation<'a, T> {
    pub(crate) name: String,
    #[allow(clippy::type_complexity)]
    pub(crate) make: Box<dyn FnOnce(&T) -> BoxFuture<'static, Result<(), BoxError>> + Send + 'a>,
}
