//! A [`State`](crate::State)'s storage: one shared slice of entries sorted
//! by key, each a shared key and a value.
//!
//! A state is immutable, so every update makes a new table. The table is a
//! single allocation of exactly its entries (an `Arc<[Entry]>`): an update
//! that sets one key allocates once, copies the other entries (a key and a
//! value each, both cheap to copy) and frees once. A lookup is a binary
//! search.
//!
//! Values come in two kinds. `null`, booleans and numbers are stored in
//! their entry (numbers unless serde_json keeps them as strings, see
//! `NUMBERS_COPY`): copying one is as cheap as copying a pointer, and setting
//! one allocates nothing. Strings, lists and objects are shared behind an
//! `Arc`, so an update never copies a value it did not touch, however
//! large.

use std::iter;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// Whether a JSON number copies without allocating: it does unless a crate
/// in the build turns on serde_json's `arbitrary_precision`, which keeps
/// each number as a string (and makes it larger than 16 bytes). Then
/// numbers are shared like strings, so that copying a table never copies
/// a string.
const NUMBERS_COPY: bool = size_of::<serde_json::Number>() <= 16;

/// One value of a state.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// `null`, a boolean or a number, kept in the entry.
    Inline(Value),
    /// A string, a list or an object, shared.
    Shared(Arc<Value>),
}

impl Slot {
    pub(crate) fn new(value: Value) -> Slot {
        match value {
            Value::Null | Value::Bool(_) => Slot::Inline(value),
            Value::Number(_) if NUMBERS_COPY => Slot::Inline(value),
            other => Slot::Shared(Arc::new(other)),
        }
    }

    pub(crate) fn value(&self) -> &Value {
        match self {
            Slot::Inline(v) => v,
            Slot::Shared(v) => v,
        }
    }

    /// Whether the two hold the same value: a shared one is compared by
    /// address first.
    pub(crate) fn same(&self, other: &Slot) -> bool {
        match (self, other) {
            (Slot::Shared(a), Slot::Shared(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.value() == other.value(),
        }
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.same(other)
    }
}

/// A key and its value.
pub(crate) type Entry = (Arc<str>, Slot);

/// Entries sorted by key, each key once.
#[derive(Clone)]
pub(crate) struct Map(Arc<[Entry]>);

impl Default for Map {
    /// The empty table. Every empty state shares one, so that making one
    /// (every task starts from one) allocates nothing.
    fn default() -> Self {
        static EMPTY: OnceLock<Arc<[Entry]>> = OnceLock::new();
        Map(Arc::clone(EMPTY.get_or_init(|| Arc::new([]))))
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        self.ptr_eq(other)
            || (self.0.len() == other.0.len()
                && self
                    .0
                    .iter()
                    .zip(other.0.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && va.same(vb)))
    }
}

impl Map {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// A table of `entries`, already sorted with each key once.
    fn of_sorted(entries: Vec<Entry>) -> Map {
        if entries.is_empty() {
            return Map::default();
        }
        Map(Arc::from(entries))
    }

    pub(crate) fn ptr_eq(&self, other: &Map) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Slot> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_entry(&self, key: &str) -> Option<&Entry> {
        self.find(key).ok().map(|i| &self.0[i])
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// A copy with `key` set to `value`, in one allocation; an updated key
    /// keeps the table's own copy of it (no new key is made).
    pub(crate) fn with(&self, key: &str, value: Slot) -> Map {
        let all = &*self.0;
        // Each part is an exact-size iterator, so the new table is
        // allocated once, at its size, and filled in place.
        let table: Arc<[Entry]> = match self.find(key) {
            Ok(i) => all[..i]
                .iter()
                .cloned()
                .chain(iter::once((Arc::clone(&all[i].0), value)))
                .chain(all[i + 1..].iter().cloned())
                .collect(),
            Err(i) => all[..i]
                .iter()
                .cloned()
                .chain(iter::once((Arc::from(key), value)))
                .chain(all[i..].iter().cloned())
                .collect(),
        };
        Map(table)
    }

    /// A copy with every pair of `pairs` set, in order (a later pair for
    /// the same key wins).
    pub(crate) fn with_all(&self, pairs: impl IntoIterator<Item = (String, Slot)>) -> Map {
        let mut pairs = pairs.into_iter().peekable();
        let Some((key, value)) = pairs.next() else {
            return self.clone();
        };
        if pairs.peek().is_none() {
            return self.with(&key, value);
        }
        let mut entries = self.0.to_vec();
        for (key, value) in iter::once((key, value)).chain(pairs) {
            match entries.binary_search_by(|(k, _)| (**k).cmp(&key)) {
                Ok(i) => entries[i].1 = value,
                Err(i) => entries.insert(i, (Arc::from(key), value)),
            }
        }
        Map::of_sorted(entries)
    }

    /// A copy without the entries whose key `drop` says to remove.
    pub(crate) fn without(&self, mut drop: impl FnMut(&str) -> bool) -> Map {
        if !self.0.iter().any(|(k, _)| drop(k)) {
            return self.clone();
        }
        Map::of_sorted(self.0.iter().filter(|(k, _)| !drop(k)).cloned().collect())
    }

    /// Every entry of `self` and of `other`; where both have a key,
    /// `other`'s value (one pass over both).
    pub(crate) fn merged(&self, other: &Map) -> Map {
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next(),
                    std::cmp::Ordering::Equal => {
                        a.next();
                        b.next()
                    }
                },
            };
            out.extend(next.cloned());
        }
        Map::of_sorted(out)
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.0
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Slot)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorted by key; where a key comes more than once, the last value wins
/// (as inserting them one by one would).
impl FromIterator<Entry> for Map {
    fn from_iter<T: IntoIterator<Item = Entry>>(iter: T) -> Self {
        let mut entries: Vec<Entry> = iter.into_iter().collect();
        // Stable: equal keys keep their order, the last one wins below.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Map::of_sorted(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A map of `pairs`, inserted in order (integers for values).
    fn map_of(pairs: &[(&str, i64)]) -> Map {
        pairs.iter().map(|&(k, v)| entry(k, json!(v))).collect()
    }

    fn entry(k: &str, v: Value) -> Entry {
        (Arc::from(k), Slot::new(v))
    }

    /// The map's entries, in its order.
    fn entries(map: &Map) -> Vec<(String, Value)> {
        map.iter()
            .map(|(k, v)| (k.to_string(), v.value().clone()))
            .collect()
    }

    #[test]
    fn entries_stay_sorted_and_unique_and_the_last_value_wins() {
        let map = map_of(&[("b", 1), ("a", 2), ("b", 3), ("c", 4)]);
        let keys: Vec<&str> = map.keys().map(|k| &**k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(map.get("b").map(Slot::value), Some(&json!(3)));
        let m = map
            .with("ab", Slot::new(json!(5)))
            .with("a", Slot::new(json!(6)))
            .without(|k| k == "c" || k == "zz");
        assert_eq!(
            entries(&m),
            [
                ("a".into(), json!(6)),
                ("ab".into(), json!(5)),
                ("b".into(), json!(3))
            ]
        );
        assert!(m.contains_key("ab") && !m.contains_key("c"));
        assert_eq!(m.len(), 3);
        // The original is untouched.
        assert_eq!(entries(&map).len(), 3);
        assert_eq!(map.get("a").map(Slot::value), Some(&json!(2)));
        let all = map.with_all([
            ("d".to_owned(), Slot::new(json!(7))),
            ("a".to_owned(), Slot::new(json!(8))),
            ("d".to_owned(), Slot::new(json!(9))),
        ]);
        assert_eq!(
            entries(&all),
            [
                ("a".into(), json!(8)),
                ("b".into(), json!(3)),
                ("c".into(), json!(4)),
                ("d".into(), json!(9))
            ]
        );
    }

    #[test]
    fn an_updated_key_is_the_tables_own_and_scalars_are_inline() {
        let map = Map::default().with("k", Slot::new(json!("text")));
        let updated = map.with("k", Slot::new(json!(1)));
        let (old_key, new_key) = (map.get_entry("k").unwrap(), updated.get_entry("k").unwrap());
        assert!(Arc::ptr_eq(&old_key.0, &new_key.0), "the key is shared");
        assert!(matches!(new_key.1, Slot::Inline(_)));
        assert!(matches!(old_key.1, Slot::Shared(_)));
        for scalar in [json!(null), json!(true)] {
            assert!(matches!(Slot::new(scalar), Slot::Inline(_)));
        }
        for number in [json!(-3), json!(2.5)] {
            assert_eq!(matches!(Slot::new(number), Slot::Inline(_)), NUMBERS_COPY);
        }
        for shared in [json!("s"), json!([1]), json!({ "a": 1 })] {
            assert!(matches!(Slot::new(shared), Slot::Shared(_)));
        }
    }

    #[test]
    fn a_merge_keeps_every_key_once_and_the_other_side_wins() {
        let a = map_of(&[("a", 1), ("c", 1), ("e", 1)]);
        let b = map_of(&[("b", 2), ("c", 2), ("f", 2)]);
        let m = a.merged(&b);
        let all = entries(&m);
        assert_eq!(
            all,
            [
                ("a".into(), json!(1)),
                ("b".into(), json!(2)),
                ("c".into(), json!(2)),
                ("e".into(), json!(1)),
                ("f".into(), json!(2)),
            ]
        );
        assert!(Map::default().merged(&Map::default()).is_empty());
        assert!(
            Map::default()
                .merged(&Map::default())
                .ptr_eq(&Map::default())
        );
    }
}
