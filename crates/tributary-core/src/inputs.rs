//! The inputs of a step: values given to `run` (or a task) that each action
//! receives filtered to what it declares.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ActionError;

/// An input an action declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The input's name.
    pub name: String,
    /// Whether a step of the action fails when the input is not given.
    pub required: bool,
}

/// The inputs given to a step: a JSON object.
///
/// Inputs passed to [`Application::run`](crate::Application::run) reach every
/// step, filtered to what each action declares.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::Inputs;
///
/// let inputs = Inputs::from_json(json!({ "query": "rust actors" })).unwrap();
/// assert_eq!(inputs.get_as::<String>("query").unwrap(), "rust actors");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Inputs(Map<String, Value>);

impl Inputs {
    /// No inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inputs from a JSON object; `None` when `value` is not an object (null
    /// counts as no inputs).
    pub fn from_json(value: Value) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Inputs(map)),
            Value::Null => Some(Inputs::new()),
            _ => None,
        }
    }

    /// Add an input.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Add an input, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// The input `name`, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The input `name` deserialized as `T`.
    ///
    /// # Errors
    ///
    /// When the input is missing or does not deserialize as `T`.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Result<T, crate::error::BoxError> {
        let value = self
            .get(name)
            .ok_or_else(|| format!("input `{name}` was not given"))?;
        Ok(T::deserialize(value)
            .map_err(|e| format!("input `{name}` does not deserialize: {e}"))?)
    }

    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inputs as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Keep only the inputs `specs` declares; a required one that is missing
    /// is an error naming `action`.
    pub(crate) fn select(&self, action: &str, specs: &[InputSpec]) -> Result<Inputs, ActionError> {
        let mut out = Map::new();
        for spec in specs {
            match self.0.get(&spec.name) {
                Some(v) => {
                    out.insert(spec.name.clone(), v.clone());
                }
                None if spec.required => {
                    return Err(ActionError::MissingInput {
                        action: action.to_owned(),
                        input: spec.name.clone(),
                    });
                }
                None => {}
            }
        }
        Ok(Inputs(out))
    }
}

impl From<Map<String, Value>> for Inputs {
    fn from(map: Map<String, Value>) -> Self {
        Inputs(map)
    }
}
