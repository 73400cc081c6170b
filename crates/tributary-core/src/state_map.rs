//! A [`State`](crate::State)'s storage: shared keys to shared values, kept
//! in a vector sorted by key.
//!
//! A state is immutable, so every update copies its key table. For the
//! small states actions pass around (a handful of keys) a sorted vector
//! copies, searches and frees in a fraction of a `BTreeMap`'s work: one
//! allocation of exactly its entries instead of a node sized for eleven,
//! no tree walk to drop it. For a large state both copy every entry on an
//! update; a lookup is a binary search either way.

use std::sync::Arc;

use serde_json::Value;

/// Entries sorted by key, each key once.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Map(Vec<(Arc<str>, Arc<Value>)>);

impl Map {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// A copy with room for `extra` more entries (an update then copies
    /// once and does not grow).
    pub(crate) fn copy_with_room(&self, extra: usize) -> Map {
        let mut entries = Vec::with_capacity(self.0.len() + extra);
        entries.extend(self.0.iter().cloned());
        Map(entries)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Arc<Value>> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &Arc<Value>)> {
        self.find(key).ok().map(|i| (&self.0[i].0, &self.0[i].1))
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Set `key` to `value`, reusing the map's own copy of the key when it
    /// has one: updating a key allocates no new one.
    pub(crate) fn put(&mut self, key: String, value: Arc<Value>) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (Arc::from(key), value)),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Ok(i) = self.find(key) {
            self.0.remove(i);
        }
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
        Map(out)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(k, _)| k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Value>)> {
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
impl FromIterator<(Arc<str>, Arc<Value>)> for Map {
    fn from_iter<T: IntoIterator<Item = (Arc<str>, Arc<Value>)>>(iter: T) -> Self {
        let mut entries: Vec<(Arc<str>, Arc<Value>)> = iter.into_iter().collect();
        // Stable: equal keys keep their order, the last one wins below.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut out: Vec<(Arc<str>, Arc<Value>)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Map(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(k: &str, v: i64) -> (Arc<str>, Arc<Value>) {
        (Arc::from(k), Arc::new(json!(v)))
    }

    /// The map's entries, in its order.
    fn entries(map: &Map) -> Vec<(String, Value)> {
        map.iter()
            .map(|(k, v)| (k.to_string(), (**v).clone()))
            .collect()
    }

    #[test]
    fn entries_stay_sorted_and_unique_and_the_last_value_wins() {
        let map: Map = [entry("b", 1), entry("a", 2), entry("b", 3), entry("c", 4)]
            .into_iter()
            .collect();
        let keys: Vec<&str> = map.keys().map(|k| &**k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(map.get("b").map(|v| (**v).clone()), Some(json!(3)));
        let mut m = map.copy_with_room(1);
        m.put("ab".into(), Arc::new(json!(5)));
        m.put("a".into(), Arc::new(json!(6)));
        m.remove("c");
        m.remove("zz");
        let all = entries(&m);
        assert_eq!(
            all,
            [
                ("a".into(), json!(6)),
                ("ab".into(), json!(5)),
                ("b".into(), json!(3))
            ]
        );
        assert!(m.contains_key("ab") && !m.contains_key("c"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn a_merge_keeps_every_key_once_and_the_other_side_wins() {
        let a: Map = [entry("a", 1), entry("c", 1), entry("e", 1)]
            .into_iter()
            .collect();
        let b: Map = [entry("b", 2), entry("c", 2), entry("f", 2)]
            .into_iter()
            .collect();
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
    }
}
