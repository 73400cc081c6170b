//! Transition conditions.
//!
//! A condition decides whether a transition is taken. Transitions out of an
//! action are checked in insertion order; the first whose condition holds
//! wins; when none holds the run ends.
//!
//! Conditions read state keys: a condition whose keys are not all present is
//! an error ([`ActionError::ConditionKeyMissing`](crate::ActionError::ConditionKeyMissing)),
//! so a typo in a key never silently routes a run. [`default()`] reads
//! nothing and always holds.
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tributary_core::{condition, when, State};
//!
//! let done = when("done", true);
//! let big = condition("big", ["n"], |s: &State| s.get("n").and_then(|v| v.as_i64()) > Some(10));
//! let go_on = !done.clone() & (big | when("force", true));
//! assert_eq!(go_on.to_string(), "!(done == true) & (big | force == true)");
//!
//! let s = State::new().update([("done", json!(false)), ("n", json!(11)), ("force", json!(false))]);
//! assert!(go_on.evaluate(&s).unwrap());
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{BitAnd, BitOr, Not};
use std::sync::Arc;

use serde_json::Value;

use crate::state::State;

type Predicate = Arc<dyn Fn(&State) -> bool + Send + Sync>;

/// A transition condition. Combine with `!`, `&` and `|`.
#[derive(Clone)]
pub struct Condition {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Default,
    When(String, Value),
    Fn {
        name: String,
        keys: Vec<String>,
        f: Predicate,
    },
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

/// Holds when state `key` equals `value`.
pub fn when(key: impl Into<String>, value: impl Into<Value>) -> Condition {
    Condition {
        kind: Kind::When(key.into(), value.into()),
    }
}

/// Always holds. At most one default transition may leave an action.
pub fn default() -> Condition {
    Condition {
        kind: Kind::Default,
    }
}

/// A condition computed by `f`, which reads the declared `keys`. `name` is
/// how it is displayed (in errors and graph exports).
pub fn condition<I, K, F>(name: impl Into<String>, keys: I, f: F) -> Condition
where
    I: IntoIterator<Item = K>,
    K: Into<String>,
    F: Fn(&State) -> bool + Send + Sync + 'static,
{
    Condition {
        kind: Kind::Fn {
            name: name.into(),
            keys: keys.into_iter().map(Into::into).collect(),
            f: Arc::new(f),
        },
    }
}

impl Default for Condition {
    fn default() -> Self {
        default()
    }
}

impl Condition {
    /// Whether this is the `default` condition.
    pub fn is_default(&self) -> bool {
        matches!(self.kind, Kind::Default)
    }

    /// The state keys the condition reads, sorted and without duplicates.
    pub fn reads(&self) -> Vec<&str> {
        let mut keys = BTreeSet::new();
        self.collect_keys(&mut keys);
        keys.into_iter().collect()
    }

    fn collect_keys<'a>(&'a self, keys: &mut BTreeSet<&'a str>) {
        match &self.kind {
            Kind::Default => {}
            Kind::When(k, _) => {
                keys.insert(k);
            }
            Kind::Fn { keys: ks, .. } => keys.extend(ks.iter().map(String::as_str)),
            Kind::Not(c) => c.collect_keys(keys),
            Kind::And(a, b) | Kind::Or(a, b) => {
                a.collect_keys(keys);
                b.collect_keys(keys);
            }
        }
    }

    /// Evaluate the condition on `state`.
    ///
    /// # Errors
    ///
    /// The first key the condition reads that `state` lacks.
    pub fn evaluate(&self, state: &State) -> Result<bool, String> {
        // Every step evaluates its transitions: look for a missing key
        // without collecting them, and sort them only to name the first.
        if self.lacks_a_key(state)
            && let Some(missing) = self.reads().into_iter().find(|k| !state.contains_key(k))
        {
            return Err(missing.to_owned());
        }
        Ok(self.eval(state))
    }

    /// Whether `state` lacks a key the condition reads.
    fn lacks_a_key(&self, state: &State) -> bool {
        match &self.kind {
            Kind::Default => false,
            Kind::When(k, _) => !state.contains_key(k),
            Kind::Fn { keys, .. } => keys.iter().any(|k| !state.contains_key(k)),
            Kind::Not(c) => c.lacks_a_key(state),
            Kind::And(a, b) | Kind::Or(a, b) => a.lacks_a_key(state) || b.lacks_a_key(state),
        }
    }

    fn eval(&self, state: &State) -> bool {
        match &self.kind {
            Kind::Default => true,
            Kind::When(k, v) => state.get(k) == Some(v),
            Kind::Fn { f, .. } => f(state),
            Kind::Not(c) => !c.eval(state),
            Kind::And(a, b) => a.eval(state) && b.eval(state),
            Kind::Or(a, b) => a.eval(state) || b.eval(state),
        }
    }

    fn is_compound(&self) -> bool {
        matches!(self.kind, Kind::And(..) | Kind::Or(..))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paren = |f: &mut fmt::Formatter<'_>, c: &Condition, wrap: bool| {
            if wrap {
                write!(f, "({c})")
            } else {
                write!(f, "{c}")
            }
        };
        match &self.kind {
            Kind::Default => f.write_str("default"),
            Kind::When(k, v) => write!(f, "{k} == {v}"),
            Kind::Fn { name, .. } => f.write_str(name),
            Kind::Not(c) => {
                f.write_str("!")?;
                paren(f, c, !matches!(c.kind, Kind::Fn { .. } | Kind::Default))
            }
            Kind::And(a, b) => {
                paren(f, a, matches!(a.kind, Kind::Or(..)))?;
                f.write_str(" & ")?;
                paren(f, b, b.is_compound())
            }
            Kind::Or(a, b) => {
                paren(f, a, matches!(a.kind, Kind::And(..)))?;
                f.write_str(" | ")?;
                paren(f, b, b.is_compound())
            }
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({self})")
    }
}

impl Not for Condition {
    type Output = Condition;

    fn not(self) -> Condition {
        Condition {
            kind: Kind::Not(Box::new(self)),
        }
    }
}

impl BitAnd for Condition {
    type Output = Condition;

    fn bitand(self, rhs: Condition) -> Condition {
        Condition {
            kind: Kind::And(Box::new(self), Box::new(rhs)),
        }
    }
}

impl BitOr for Condition {
    type Output = Condition;

    fn bitor(self, rhs: Condition) -> Condition {
        Condition {
            kind: Kind::Or(Box::new(self), Box::new(rhs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_key_is_named_first_in_key_order_whatever_the_shape() {
        let empty = State::new();
        assert_eq!(default().evaluate(&empty), Ok(true));
        // Both missing: the first in key order is named, not the first read.
        let both = when("b", 1) & when("a", 1);
        assert_eq!(both.evaluate(&empty), Err("a".to_owned()));
        // One missing, under a negation, an `or` and a function's keys.
        let nested = !(when("x", 1) | condition("f", ["z", "y"], |_| true));
        let s = State::new().update([("x", json!(2)), ("z", json!(0))]);
        assert_eq!(nested.evaluate(&s), Err("y".to_owned()));
        // Every key present: evaluated, not an error.
        let s = s.set("y", 0);
        assert_eq!(nested.evaluate(&s), Ok(false));
        assert_eq!((when("x", 2) & !when("z", 1)).evaluate(&s), Ok(true));
    }
}
