//! [`JournalRow`] and [`WorkflowRow`]: journal entries and workflow records
//! as a database keeps them, so every database store decodes them alike.

use serde_json::Value;

use crate::error::JournalError;
use crate::store::{EntryKind, JournalEntry, Outcome, StepKey, WorkflowRecord, WorkflowStatus};

/// One journal entry as a database row: numbers as the database's
/// integers, the value as JSON text. Stores build it from their rows and
/// [`decode`](Self::decode) it; [`JournalRow::from`] gives the row to
/// write for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// [`JournalEntry::app_id`].
    pub app_id: String,
    /// [`JournalEntry::sequence_id`].
    pub sequence_id: i64,
    /// [`JournalEntry::position`].
    pub position: i64,
    /// The step key's name.
    pub step: String,
    /// The step key's occurrence.
    pub occurrence: i64,
    /// [`EntryKind::as_str`].
    pub kind: String,
    /// `completed` or `failed`.
    pub status: String,
    /// The completed value, as JSON text.
    pub value: Option<String>,
    /// The failure's message.
    pub error: Option<String>,
    /// [`JournalEntry::execution`] (0 in rows written before executions
    /// were numbered).
    pub execution: i64,
}

impl JournalRow {
    /// The entry of the row.
    ///
    /// # Errors
    ///
    /// [`JournalError::Corrupt`] for a position or occurrence out of
    /// range, an unknown kind or status, or a value that is not JSON.
    pub fn decode(self) -> Result<JournalEntry, JournalError> {
        let sequence_id = u64::try_from(self.sequence_id).unwrap_or_default();
        let corrupt = |reason: String| JournalError::Corrupt {
            app_id: self.app_id.clone(),
            sequence_id,
            reason,
        };
        let position = u32::try_from(self.position)
            .map_err(|_| corrupt(format!("position {} out of range", self.position)))?;
        let occurrence = u32::try_from(self.occurrence)
            .map_err(|_| corrupt(format!("occurrence {} out of range", self.occurrence)))?;
        let kind = EntryKind::parse(&self.kind)
            .ok_or_else(|| corrupt(format!("unknown entry kind `{}`", self.kind)))?;
        let outcome = match self.status.as_str() {
            "completed" => Outcome::Completed(match self.value.as_deref() {
                None => Value::Null,
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    corrupt(format!("value at position {position} is not JSON: {e}"))
                })?,
            }),
            "failed" => Outcome::Failed(self.error.clone().unwrap_or_default()),
            other => return Err(corrupt(format!("unknown status `{other}`"))),
        };
        let execution = u32::try_from(self.execution)
            .map_err(|_| corrupt(format!("execution {} out of range", self.execution)))?;
        Ok(JournalEntry {
            app_id: self.app_id.clone(),
            sequence_id,
            position,
            step: StepKey::new(self.step.clone(), occurrence),
            kind,
            outcome,
            execution,
        })
    }
}

impl From<&JournalEntry> for JournalRow {
    fn from(entry: &JournalEntry) -> Self {
        let (status, value, error) = match &entry.outcome {
            Outcome::Completed(v) => ("completed", Some(v.to_string()), None),
            Outcome::Failed(e) => ("failed", None, Some(e.clone())),
        };
        JournalRow {
            app_id: entry.app_id.clone(),
            // Sequence ids come from `i64` columns: they fit.
            sequence_id: i64::try_from(entry.sequence_id).unwrap_or(i64::MAX),
            position: entry.position.into(),
            step: entry.step.name.clone(),
            occurrence: entry.step.occurrence.into(),
            kind: entry.kind.as_str().to_owned(),
            status: status.to_owned(),
            value,
            error,
            execution: entry.execution.into(),
        }
    }
}

/// One workflow record as a database row: its input and output as JSON
/// text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRow {
    /// [`WorkflowRecord::workflow_id`].
    pub workflow_id: String,
    /// [`WorkflowRecord::name`].
    pub name: String,
    /// The input, as JSON text.
    pub input: String,
    /// [`WorkflowStatus::as_str`].
    pub status: String,
    /// The output, as JSON text.
    pub output: Option<String>,
    /// [`WorkflowRecord::error`].
    pub error: Option<String>,
}

impl WorkflowRow {
    /// The record of the row.
    ///
    /// # Errors
    ///
    /// [`JournalError::Corrupt`] for an unknown status, or an input or
    /// output that is not JSON.
    pub fn decode(self) -> Result<WorkflowRecord, JournalError> {
        let corrupt = |reason: String| JournalError::Corrupt {
            app_id: self.workflow_id.clone(),
            sequence_id: 0,
            reason,
        };
        let status = WorkflowStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown workflow status `{}`", self.status)))?;
        let input = serde_json::from_str(&self.input)
            .map_err(|e| corrupt(format!("workflow input is not JSON: {e}")))?;
        let output = self
            .output
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("workflow output is not JSON: {e}")))?;
        Ok(WorkflowRecord {
            workflow_id: self.workflow_id,
            name: self.name,
            input,
            status,
            output,
            error: self.error,
        })
    }
}
