//! The state an application's actions read and write.
//!
//! [`State`] is an immutable map from `String` keys to JSON values. Every
//! operation returns a new `State`; the old one is untouched. Cloning is O(1):
//! the key table lives behind an [`Arc`] and every string, list or object
//! behind its own `Arc`, so a parallel action that hands one state to 100k
//! children shares it instead of copying it, and an update copies only the
//! key table, never the values it did not touch.
//!
//! Keys that begin with `__` are private to the runtime: actions may not write
//! them (see [`ActionError::ReservedKey`](crate::ActionError::ReservedKey)).
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tributary_core::{State, Wipe};
//!
//! let s = State::new().update([("count", json!(1)), ("name", json!("a"))]);
//! let s2 = s.increment("count", 2)?.append("log", json!("started"))?;
//! assert_eq!(s.get("count"), Some(&json!(1))); // the original is unchanged
//! assert_eq!(s2.get_as::<i64>("count")?, 3);
//! assert_eq!(s2.get("log"), Some(&json!(["started"])));
//! assert_eq!(s2.wipe(Wipe::keep(["name"])).keys().collect::<Vec<_>>(), ["name"]);
//! # Ok::<(), tributary_core::StateError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Prefix of the keys reserved for the runtime.
pub const RESERVED_PREFIX: &str = "__";

/// An immutable map of `String` keys to JSON values with O(1) clone.
///
/// Every operation returns a new `State`. Cloning is O(1): the key table
/// is one shared allocation, every key is shared, and every string, list
/// or object is shared behind its own `Arc` (`null`, booleans and numbers
/// are kept in the table itself, as cheap to copy as a pointer). So handing
/// one state to 100k children shares it, and an update that sets one key
/// makes one allocation: the new table, sorted by key, whose other entries
/// are copies of the old one's (an updated key keeps its shared copy).
/// Keys beginning `__` are reserved for the runtime.
#[derive(Clone, PartialEq, Default)]
pub struct State {
    map: Map,
}

/// A state's storage: keys shared (copying the table for an update copies
/// no key), values shared or inline, sorted by key. The empty state's table
/// is shared by every empty state, so making one allocates nothing.
use crate::state_map::{Map, Slot};

/// Which keys [`State::wipe`] removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wipe {
    /// Keep only these keys and delete every other one.
    Keep(Vec<String>),
    /// Delete these keys and keep every other one.
    Delete(Vec<String>),
}

impl Wipe {
    /// Keep only `keys`.
    pub fn keep<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Wipe::Keep(keys.into_iter().map(Into::into).collect())
    }

    /// Delete `keys`.
    pub fn delete<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Wipe::Delete(keys.into_iter().map(Into::into).collect())
    }
}

/// An error from a [`State`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// `append` or `extend` found a value that is not a list.
    #[error("cannot append to key `{key}`: it holds {found}, not a list")]
    NotAList {
        /// The key.
        key: String,
        /// The JSON type it holds.
        found: &'static str,
    },
    /// `increment` found a value that is not an integer.
    #[error("cannot increment key `{key}`: it holds {found}, not an integer")]
    NotAnInteger {
        /// The key.
        key: String,
        /// The JSON type it holds.
        found: &'static str,
    },
    /// `increment` would overflow an `i64`.
    #[error("incrementing key `{key}` overflows a 64-bit integer")]
    Overflow {
        /// The key.
        key: String,
    },
    /// A typed read found no such key.
    #[error("state has no key `{key}` (keys: {available})")]
    Missing {
        /// The key.
        key: String,
        /// The public keys the state does have, comma separated.
        available: String,
    },
    /// A typed read found a value of the wrong shape.
    #[error("state key `{key}` does not deserialize as the requested type: {source}")]
    Type {
        /// The key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON document that is not an object cannot become a state.
    #[error("a state is built from a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A typed write could not serialize its value as JSON.
    #[error("value for state key `{key}` does not serialize as JSON: {source}")]
    Serialize {
        /// The key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// The JSON type name of a value, for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).map(Slot::value)
    }

    /// The value of `key` deserialized as `T`.
    ///
    /// # Errors
    ///
    /// [`StateError::Missing`] when the key is absent, [`StateError::Type`]
    /// when the value does not deserialize as `T`.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, StateError> {
        let value = self.get(key).ok_or_else(|| StateError::Missing {
            key: key.to_owned(),
            available: self.public_keys().collect::<Vec<_>>().join(", "),
        })?;
        T::deserialize(value).map_err(|source| StateError::Type {
            key: key.to_owned(),
            source,
        })
    }

    /// The value of `key` deserialized as `T`, or `None` when the key is absent.
    ///
    /// # Errors
    ///
    /// [`StateError::Type`] when the value does not deserialize as `T`.
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|source| StateError::Type {
                    key: key.to_owned(),
                    source,
                }),
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// All keys, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.map.keys().map(|k| &**k)
    }

    /// The keys that do not begin with `__`, in sorted order.
    pub fn public_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys().filter(|k| !k.starts_with(RESERVED_PREFIX))
    }

    /// Every `(key, value)` pair, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.map.iter().map(|(k, v)| (&**k, v.value()))
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the state has no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether two states share the same storage (a clone of each other with
    /// no update in between). Useful to check that no copy was made.
    pub fn ptr_eq(&self, other: &State) -> bool {
        self.map.ptr_eq(&other.map)
    }

    /// A new state with `key` set to `value` (inserted or overwritten).
    ///
    /// One allocation for the new key table, one more when `key` is new
    /// (its shared copy; an existing key is reused) and one for `value`
    /// when it is a string, a list or an object.
    pub fn set(&self, key: impl AsRef<str>, value: impl Into<Value>) -> State {
        State {
            map: self.map.with(key.as_ref(), Slot::new(value.into())),
        }
    }

    /// A new state with `key` set to `value` serialized as JSON (inserted or
    /// overwritten): the typed counterpart of [`get_as`](Self::get_as).
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use tributary_core::State;
    ///
    /// #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// struct Forecast {
    ///     city: String,
    ///     rain_mm: f64,
    /// }
    ///
    /// let forecast = Forecast { city: "Ghent".into(), rain_mm: 12.5 };
    /// let state = State::new().set_as("forecast", &forecast)?;
    /// assert_eq!(state.get_as::<Forecast>("forecast")?, forecast);
    /// # Ok::<(), tributary_core::StateError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StateError::Serialize`] when `value` does not serialize as JSON (a
    /// map with non-string keys, a `Serialize` impl that fails); the state
    /// is unchanged.
    pub fn set_as<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<str>,
        value: &T,
    ) -> Result<State, StateError> {
        let key = key.as_ref();
        match serde_json::to_value(value) {
            Ok(value) => Ok(self.set(key, value)),
            Err(source) => Err(StateError::Serialize {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// A new state with every pair of `pairs` set (inserted or overwritten).
    pub fn update<I, K, V>(&self, pairs: I) -> State
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Value>,
    {
        State {
            map: self.map.with_all(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), Slot::new(v.into()))),
            ),
        }
    }

    /// A new state with `value` appended to the list at `key`; a missing key
    /// becomes a one-element list.
    ///
    /// # Errors
    ///
    /// [`StateError::NotAList`] when `key` holds something other than a list.
    pub fn append(&self, key: &str, value: impl Into<Value>) -> Result<State, StateError> {
        self.extend(key, [value.into()])
    }

    /// A new state with `values` appended to the list at `key`; a missing key
    /// becomes a list of `values`.
    ///
    /// # Errors
    ///
    /// [`StateError::NotAList`] when `key` holds something other than a list.
    pub fn extend<I, V>(&self, key: &str, values: I) -> Result<State, StateError>
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        let mut list = match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(StateError::NotAList {
                    key: key.to_owned(),
                    found: json_type(other),
                });
            }
        };
        list.extend(values.into_iter().map(Into::into));
        Ok(self.set(key, Value::Array(list)))
    }

    /// A new state with the integer at `key` increased by `delta`; a missing
    /// key is created holding `delta`.
    ///
    /// # Errors
    ///
    /// [`StateError::NotAnInteger`] when `key` holds something other than an
    /// integer (a float is not an integer), [`StateError::Overflow`] when the
    /// sum does not fit an `i64`.
    pub fn increment(&self, key: &str, delta: i64) -> Result<State, StateError> {
        let current = match self.get(key) {
            None => 0,
            Some(value) => value.as_i64().ok_or_else(|| StateError::NotAnInteger {
                key: key.to_owned(),
                found: json_type(value),
            })?,
        };
        let sum = current
            .checked_add(delta)
            .ok_or_else(|| StateError::Overflow {
                key: key.to_owned(),
            })?;
        Ok(self.set(key, sum))
    }

    /// A new state holding every key of `self` and of `other`; where both have
    /// a key, `other` wins.
    pub fn merge(&self, other: &State) -> State {
        if self.is_empty() {
            return other.clone();
        }
        State {
            map: self.map.merged(&other.map),
        }
    }

    /// A new state with only `keys`; keys that are missing are skipped.
    pub fn subset<I, K>(&self, keys: I) -> State
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let map: Map = keys
            .into_iter()
            .filter_map(|key| self.map.get_entry(key.as_ref()).cloned())
            .collect();
        State { map }
    }

    /// A new state with the keys selected by `wipe` removed.
    pub fn wipe(&self, wipe: Wipe) -> State {
        match wipe {
            Wipe::Keep(keys) => self.subset(keys),
            Wipe::Delete(keys) => State {
                map: self.map.without(|k| keys.iter().any(|d| d == k)),
            },
        }
    }

    /// A new state without `key`.
    pub fn remove(&self, key: &str) -> State {
        State {
            map: self.map.without(|k| k == key),
        }
    }

    /// The state without its reserved (`__`) keys.
    pub fn public(&self) -> State {
        State {
            map: self.map.without(|k| k.starts_with(RESERVED_PREFIX)),
        }
    }

    /// The state as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.map
                .iter()
                .map(|(k, v)| (k.to_string(), v.value().clone()))
                .collect(),
        )
    }

    /// A state from a JSON object.
    ///
    /// # Errors
    ///
    /// [`StateError::NotAnObject`] when `value` is not an object.
    pub fn from_json(value: Value) -> Result<State, StateError> {
        match value {
            Value::Object(map) => Ok(map.into_iter().collect()),
            other => Err(StateError::NotAnObject {
                found: json_type(&other),
            }),
        }
    }

    /// The keys whose values differ between `self` and `other` (added,
    /// removed or changed), in sorted order.
    pub fn changed_keys<'a>(&'a self, other: &'a State) -> Vec<&'a str> {
        let mut changed = Vec::new();
        let _ = self.try_for_each_changed(other, |key| {
            changed.push(key);
            Ok::<(), ()>(())
        });
        changed
    }

    /// Call `f` with each key whose value differs between `self` and
    /// `other`, in sorted order, stopping at the first error: the same keys
    /// as [`changed_keys`](Self::changed_keys), without collecting them
    /// (every step's validation walks them).
    pub(crate) fn try_for_each_changed<'a, E>(
        &'a self,
        other: &'a State,
        mut f: impl FnMut(&'a str) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.ptr_eq(other) {
            return Ok(());
        }
        let (a, b) = (self.map.entries(), other.map.entries());
        let (mut i, mut j) = (0, 0);
        while let (Some((ka, va)), Some((kb, vb))) = (a.get(i), b.get(j)) {
            // A key an update kept is the same allocation in both tables.
            let order = if Arc::ptr_eq(ka, kb) {
                std::cmp::Ordering::Equal
            } else {
                ka.cmp(kb)
            };
            match order {
                std::cmp::Ordering::Less => {
                    f(ka)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    f(kb)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if !va.same(vb) {
                        f(ka)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        for (k, _) in a[i..].iter().chain(&b[j..]) {
            f(k)?;
        }
        Ok(())
    }

    /// Identity of the value behind `key` (for sharing checks in tests and
    /// benchmarks): two states whose `value_ptr` match share that value.
    /// Only strings, lists and objects are shared; a `null`, a boolean or a
    /// number is kept in each state's own key table, so its `value_ptr`
    /// differs from one state to the next.
    pub fn value_ptr(&self, key: &str) -> Option<*const Value> {
        self.map.get(key).map(|slot| match slot {
            Slot::Shared(v) => Arc::as_ptr(v),
            Slot::Inline(v) => std::ptr::from_ref(v),
        })
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for State {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        State {
            map: iter
                .into_iter()
                .map(|(k, v)| (Arc::from(k.into()), Slot::new(v.into())))
                .collect(),
        }
    }
}

impl TryFrom<Value> for State {
    type Error = StateError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        State::from_json(value)
    }
}

impl From<State> for Value {
    fn from(state: State) -> Value {
        state.to_json()
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Value>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}
