//! A map keyed by span id that costs no more than its entries while small.
//!
//! Each trace keeps a few such maps. A hash map holding 8 entries has 16
//! buckets, so most traces, which have a handful of spans, would pay for
//! twice the entries they hold. Up to [`SMALL`] entries are kept in a vector
//! and found by a linear scan, which at that size is also faster than
//! hashing. Larger traces switch to a hash map.

use std::collections::hash_map;

use crate::span::SpanId;

use super::state::FastMap;

/// Entries kept in a vector; beyond this a table becomes a hash map.
const SMALL: usize = 16;

/// A map from span id to `V`.
#[derive(Clone, Debug)]
pub enum SpanTable<V> {
    Small(Vec<(SpanId, V)>),
    Large(Box<FastMap<SpanId, V>>),
}

impl<V> Default for SpanTable<V> {
    fn default() -> Self {
        SpanTable::Small(Vec::new())
    }
}

impl<V> SpanTable<V> {
    pub fn len(&self) -> usize {
        match self {
            SpanTable::Small(entries) => entries.len(),
            SpanTable::Large(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &SpanId) -> Option<&V> {
        match self {
            SpanTable::Small(entries) => entries
                .iter()
                .find(|(candidate, _)| candidate == key)
                .map(|(_, value)| value),
            SpanTable::Large(map) => map.get(key),
        }
    }

    pub fn get_mut(&mut self, key: &SpanId) -> Option<&mut V> {
        match self {
            SpanTable::Small(entries) => entries
                .iter_mut()
                .find(|(candidate, _)| candidate == key)
                .map(|(_, value)| value),
            SpanTable::Large(map) => map.get_mut(key),
        }
    }

    pub fn contains_key(&self, key: &SpanId) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `value` under `key`; returns the value it replaces.
    pub fn insert(&mut self, key: SpanId, value: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&key) {
            return Some(std::mem::replace(slot, value));
        }
        match self {
            SpanTable::Small(entries) if entries.len() < SMALL => {
                if entries.capacity() == 0 {
                    // Many tables only ever hold one entry.
                    entries.reserve_exact(1);
                }
                entries.push((key, value));
            }
            SpanTable::Small(entries) => {
                let mut map = FastMap::with_capacity_and_hasher(SMALL * 2, Default::default());
                map.extend(entries.drain(..));
                map.insert(key, value);
                *self = SpanTable::Large(Box::new(map));
            }
            SpanTable::Large(map) => {
                map.insert(key, value);
            }
        }
        None
    }

    pub fn remove(&mut self, key: &SpanId) -> Option<V> {
        match self {
            SpanTable::Small(entries) => {
                let index = entries.iter().position(|(candidate, _)| candidate == key)?;
                Some(entries.swap_remove(index).1)
            }
            SpanTable::Large(map) => map.remove(key),
        }
    }

    /// Gives back spare room; a large table that has shrunk becomes small.
    pub fn shrink_to_fit(&mut self) {
        match self {
            SpanTable::Small(entries) => entries.shrink_to_fit(),
            SpanTable::Large(map) if map.len() <= SMALL => {
                let entries: Vec<(SpanId, V)> = map.drain().collect();
                *self = SpanTable::Small(entries);
            }
            SpanTable::Large(map) => map.shrink_to_fit(),
        }
    }

    /// Entries in no particular order.
    pub fn iter(&self) -> Iter<'_, V> {
        match self {
            SpanTable::Small(entries) => Iter::Small(entries.iter()),
            SpanTable::Large(map) => Iter::Large(map.iter()),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &SpanId> {
        self.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }
}

impl<'a, V> IntoIterator for &'a SpanTable<V> {
    type Item = (&'a SpanId, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

/// Iterator over a [`SpanTable`].
pub enum Iter<'a, V> {
    Small(std::slice::Iter<'a, (SpanId, V)>),
    Large(hash_map::Iter<'a, SpanId, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a SpanId, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(entries) => entries.next().map(|(key, value)| (key, value)),
            Iter::Large(entries) => entries.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(n: u64) -> SpanId {
        SpanId(n.to_be_bytes())
    }

    /// Every operation agrees with a `HashMap` across the switch from
    /// vector to hash map and back.
    #[test]
    fn matches_a_hash_map_across_both_forms() {
        let mut table = SpanTable::default();
        let mut model = HashMap::new();
        for round in 0..3u64 {
            for n in 0..40u64 {
                let key = id(n * 7 % 41);
                assert_eq!(table.insert(key, n + round), model.insert(key, n + round));
                assert_eq!(table.len(), model.len());
            }
            assert!(matches!(table, SpanTable::Large(_)), "40 entries are large");
            for n in (0..41u64).step_by(2) {
                assert_eq!(table.remove(&id(n)), model.remove(&id(n)));
            }
            table.shrink_to_fit();
            assert_eq!(table.len(), model.len());
            for n in 0..41u64 {
                assert_eq!(table.get(&id(n)), model.get(&id(n)), "key {n}");
                assert_eq!(table.contains_key(&id(n)), model.contains_key(&id(n)));
            }
            let mut listed: Vec<(SpanId, u64)> = table.iter().map(|(k, v)| (*k, *v)).collect();
            let mut expected: Vec<(SpanId, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected);
            for n in 0..41u64 {
                assert_eq!(table.remove(&id(n)), model.remove(&id(n)));
            }
            table.shrink_to_fit();
            assert!(matches!(&table, SpanTable::Small(entries) if entries.capacity() == 0));
        }
    }

    #[test]
    fn small_table_holds_exactly_its_entries() {
        let mut table = SpanTable::default();
        table.insert(id(1), 1u32);
        assert!(matches!(&table, SpanTable::Small(entries) if entries.capacity() == 1));
        for n in 2..=8 {
            table.insert(id(n), n as u32);
        }
        table.shrink_to_fit();
        assert!(matches!(&table, SpanTable::Small(entries) if entries.capacity() == 8));
        *table.get_mut(&id(3)).expect("present") = 30;
        assert_eq!(table.get(&id(3)), Some(&30));
        assert_eq!(table.keys().count(), 8);
        assert_eq!(table.values().sum::<u32>(), 1 + 2 + 30 + 4 + 5 + 6 + 7 + 8);
    }
}
