//! One unit's DAM table portion (spec FIG. 23B): every atom this unit holds,
//! whether as an owner, while handing it off, or as a cache entry, indexed
//! by expiry deadline and (for cache entries) by recency of use. A key is in
//! the table at most once. Every change goes through [`Table::insert`],
//! [`Table::modify`] or [`Table::remove`], which keep the indexes and the
//! gauges in step ([`Table::is_consistent`] checks that).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use switchyard_wire::UnitId;
use switchyard_wire::dam::Atom;

use crate::version::Clock;

/// Bookkeeping bytes per entry on top of the key and data: the slot, the
/// map node share and the index entries, rounded up.
const ENTRY_OVERHEAD: usize = 160;

/// Estimated memory of one entry in bytes: the key twice (table and
/// deadline index), the data, the owner list and [`ENTRY_OVERHEAD`].
pub fn footprint(atom: &Atom, owners: usize) -> usize {
    2 * atom.key.len() + atom.data.len() + 4 * owners + ENTRY_OVERHEAD
}

/// How this unit holds an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holding {
    /// This unit is one of the atom's owners (a durable copy).
    Owned,
    /// This unit is not an owner but keeps the atom (never evicted) until
    /// every owner it pushes to has acknowledged it: the adding unit's copy
    /// and copies whose ownership moved away.
    Handoff,
    /// A cache entry: acquired by a query or demoted after a handoff;
    /// bounded (least recently used evicted) and dropped after the cache
    /// time to live. Not a replica: never pushed, never counted as a copy.
    Cached,
}

/// An entry of the table.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) atom: Atom,
    pub(crate) holding: Holding,
    /// Owners at the last evaluation (held entries; empty for cache).
    pub(crate) owners: Vec<UnitId>,
    /// Membership epoch of that evaluation.
    pub(crate) evaluated_at: u64,
    /// The unit responsible for bringing this state to the other owners:
    /// this unit for its own adds and deletes, else the unit that pushed it.
    pub(crate) source: UnitId,
    /// Cache entries: local ms after which the entry is dropped.
    pub(crate) cached_until: Option<u64>,
    lru: u64,
    deadline: Option<u64>,
}

impl Slot {
    pub(crate) fn new(atom: Atom, holding: Holding, source: UnitId) -> Self {
        Self {
            atom,
            holding,
            owners: Vec::new(),
            evaluated_at: 0,
            source,
            cached_until: None,
            lru: 0,
            deadline: None,
        }
    }

    /// Local ms at which the entry goes (atom expiry or cache time to
    /// live), if ever.
    #[cfg(test)]
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Whether the entry is past its deadline (and must be treated as
    /// absent even before the sweep removes it).
    pub(crate) fn is_gone(&self, now_ms: u64) -> bool {
        self.deadline.is_some_and(|d| d <= now_ms)
    }

    fn is_held(&self) -> bool {
        self.holding != Holding::Cached
    }
}

/// Gauges maintained by the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) owned: u64,
    pub(crate) handoff: u64,
    pub(crate) cached: u64,
    pub(crate) zombies: u64,
    pub(crate) bytes: u64,
}

impl Stats {
    fn apply(&mut self, slot: &Slot, add: bool) {
        let step = |x: &mut u64, n: u64| {
            *x = if add {
                x.saturating_add(n)
            } else {
                x.saturating_sub(n)
            }
        };
        match slot.holding {
            Holding::Owned => step(&mut self.owned, 1),
            Holding::Handoff => step(&mut self.handoff, 1),
            Holding::Cached => step(&mut self.cached, 1),
        }
        if slot.atom.meta.zombie {
            step(&mut self.zombies, 1);
        }
        let bytes = footprint(&slot.atom, slot.owners.len());
        step(&mut self.bytes, u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}

/// The indexes and gauges over the entries, apart from the entries so an
/// entry can be changed in place while they are updated.
#[derive(Debug)]
struct Indexes {
    clock: Clock,
    deadlines: BTreeSet<(u64, Vec<u8>)>,
    lru: BTreeMap<u64, Vec<u8>>,
    tick: u64,
    stats: Stats,
}

impl Indexes {
    /// Computes the entry's deadline (and recency, for a cache entry) and
    /// indexes it.
    fn add(&mut self, key: &[u8], slot: &mut Slot) {
        if slot.holding != Holding::Cached {
            slot.cached_until = None;
        }
        let expiry = match slot.atom.meta.expires_at_ms {
            0 => None,
            unix => Some(self.clock.local_of_unix(unix)),
        };
        slot.deadline = match (expiry, slot.cached_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(d) = slot.deadline {
            self.deadlines.insert((d, key.to_vec()));
        }
        if slot.holding == Holding::Cached {
            self.tick += 1;
            slot.lru = self.tick;
            self.lru.insert(self.tick, key.to_vec());
        }
        self.stats.apply(slot, true);
    }

    /// Takes the entry out of the indexes and gauges.
    fn remove(&mut self, key: &[u8], slot: &Slot) {
        if let Some(d) = slot.deadline {
            self.deadlines.remove(&(d, key.to_vec()));
        }
        if slot.holding == Holding::Cached {
            self.lru.remove(&slot.lru);
        }
        self.stats.apply(slot, false);
    }
}

/// The table.
#[derive(Debug)]
pub(crate) struct Table {
    slots: BTreeMap<Vec<u8>, Slot>,
    indexes: Indexes,
}

impl Table {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            slots: BTreeMap::new(),
            indexes: Indexes {
                clock,
                deadlines: BTreeSet::new(),
                lru: BTreeMap::new(),
                tick: 0,
                stats: Stats::default(),
            },
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.slots.get(key)
    }

    pub(crate) fn stats(&self) -> Stats {
        self.indexes.stats
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.values()
    }

    /// Inserts or replaces the entry for `slot.atom.key` (a replaced entry
    /// is overwritten in place).
    pub(crate) fn insert(&mut self, mut slot: Slot) {
        if let Some(entry) = self.slots.get_mut(slot.atom.key.as_slice()) {
            self.indexes.remove(&entry.atom.key, entry);
            let key = std::mem::take(&mut entry.atom.key);
            *entry = slot;
            self.indexes.add(&key, entry);
            return;
        }
        let key = slot.atom.key.clone();
        self.indexes.add(&key, &mut slot);
        self.slots.insert(key, slot);
    }

    /// Changes the entry for `key` in place; false if there is none.
    pub(crate) fn modify(&mut self, key: &[u8], f: impl FnOnce(&mut Slot)) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        self.indexes.remove(key, slot);
        f(slot);
        // The key is part of the atom; a closure must not change it.
        debug_assert_eq!(slot.atom.key, key);
        self.indexes.add(key, slot);
        true
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.indexes.remove(key, &slot);
        Some(slot)
    }

    /// Marks a cache entry as just used.
    pub(crate) fn touch(&mut self, key: &[u8]) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let ix = &mut self.indexes;
        if slot.holding == Holding::Cached {
            ix.lru.remove(&slot.lru);
            ix.tick += 1;
            slot.lru = ix.tick;
            ix.lru.insert(ix.tick, key.to_vec());
        }
    }

    /// The least recently used cache entry.
    pub(crate) fn lru_victim(&self) -> Option<Vec<u8>> {
        self.indexes.lru.values().next().cloned()
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.indexes.deadlines.first().map(|(d, _)| *d)
    }

    /// A key whose deadline is at or before `now_ms`.
    pub(crate) fn due(&self, now_ms: u64) -> Option<Vec<u8>> {
        self.indexes
            .deadlines
            .first()
            .filter(|(d, _)| *d <= now_ms)
            .map(|(_, k)| k.clone())
    }

    /// Up to `n` keys of held (owned or handoff) entries after `after`, in
    /// key order.
    pub(crate) fn held_after(&self, after: Option<&[u8]>, n: usize) -> Vec<Vec<u8>> {
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.slots
            .range::<[u8], _>((lower, Bound::Unbounded))
            .filter(|(_, s)| s.is_held())
            .take(n)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Held entries at or after `from` in key order (for gauges).
    pub(crate) fn held_from(&self, from: Option<&[u8]>) -> usize {
        let lower = match from {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.slots
            .range::<[u8], _>((lower, Bound::Unbounded))
            .filter(|(_, s)| s.is_held())
            .count()
    }

    /// Whether the indexes and gauges agree with the entries.
    pub(crate) fn is_consistent(&self) -> bool {
        let mut stats = Stats::default();
        let mut deadlines = 0;
        let mut cached = 0;
        for (key, slot) in &self.slots {
            if &slot.atom.key != key {
                return false;
            }
            stats.apply(slot, true);
            if let Some(d) = slot.deadline {
                deadlines += 1;
                if !self.indexes.deadlines.contains(&(d, key.clone())) {
                    return false;
                }
            }
            if slot.holding == Holding::Cached {
                cached += 1;
                if self.indexes.lru.get(&slot.lru) != Some(key) || slot.cached_until.is_none() {
                    return false;
                }
            } else if slot.cached_until.is_some() {
                return false;
            }
        }
        let ix = &self.indexes;
        stats == ix.stats && deadlines == ix.deadlines.len() && cached == ix.lru.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use switchyard_wire::dam::AtomMeta;

    use super::*;

    const UNIX0: u64 = 1_700_000_000_000;

    fn atom(key: &str, expires_at_ms: u64, zombie: bool) -> Atom {
        Atom {
            key: key.as_bytes().to_vec(),
            data: b"10.0.0.1:80".to_vec(),
            meta: AtomMeta {
                added_by: UnitId(1),
                version: 1,
                zombie,
                expires_at_ms,
            },
        }
    }

    fn table() -> Table {
        Table::new(Clock::new(Instant::now(), UNIX0))
    }

    fn cached(a: Atom, until: u64) -> Slot {
        let mut s = Slot::new(a, Holding::Cached, UnitId(1));
        s.cached_until = Some(until);
        s
    }

    #[test]
    fn deadlines_take_the_earlier_of_expiry_and_cache_ttl() {
        let mut t = table();
        t.insert(cached(atom("a", UNIX0 + 500, false), 900));
        t.insert(cached(atom("b", UNIX0 + 900, false), 300));
        t.insert(Slot::new(atom("c", 0, false), Holding::Owned, UnitId(1)));
        assert_eq!(t.get(b"a").and_then(Slot::deadline), Some(500));
        assert_eq!(t.get(b"b").and_then(Slot::deadline), Some(300));
        assert_eq!(t.get(b"c").and_then(Slot::deadline), None);
        assert_eq!(t.next_deadline(), Some(300));
        assert_eq!(t.due(299), None);
        assert_eq!(t.due(300), Some(b"b".to_vec()));
        assert!(
            t.get(b"b")
                .is_some_and(|s| s.is_gone(300) && !s.is_gone(299))
        );
        assert!(t.is_consistent());
    }

    #[test]
    fn lru_victim_is_least_recently_used_cache_entry() {
        let mut t = table();
        for k in ["a", "b", "c"] {
            t.insert(cached(atom(k, 0, false), 10_000));
        }
        t.insert(Slot::new(atom("held", 0, false), Holding::Owned, UnitId(1)));
        assert_eq!(t.lru_victim(), Some(b"a".to_vec()));
        t.touch(b"a");
        assert_eq!(t.lru_victim(), Some(b"b".to_vec()));
        t.remove(b"b");
        assert_eq!(t.lru_victim(), Some(b"c".to_vec()));
        assert!(t.is_consistent());
    }

    #[test]
    fn replacing_an_entry_reindexes_it_in_place() {
        let mut t = table();
        t.insert(cached(atom("a", UNIX0 + 500, false), 900));
        t.insert(cached(atom("b", 0, false), 900));
        assert_eq!(t.lru_victim(), Some(b"a".to_vec()));
        // A cache entry becomes a held copy: out of the LRU, no deadline.
        t.insert(Slot::new(atom("a", 0, false), Holding::Owned, UnitId(2)));
        let s = t.stats();
        assert_eq!((s.owned, s.cached), (1, 1));
        assert_eq!(t.lru_victim(), Some(b"b".to_vec()));
        assert_eq!(t.next_deadline(), Some(900));
        assert_eq!(t.get(b"a").map(|s| s.source), Some(UnitId(2)));
        // And back, with a new deadline; the key is kept.
        t.insert(cached(atom("a", 0, true), 100));
        assert_eq!(t.next_deadline(), Some(100));
        assert_eq!(t.due(100), Some(b"a".to_vec()));
        assert_eq!(t.get(b"a").map(|s| s.atom.key.clone()), Some(b"a".to_vec()));
        assert_eq!(t.stats().zombies, 1);
        assert!(t.is_consistent());
    }

    #[test]
    fn gauges_follow_every_change() {
        let mut t = table();
        t.insert(Slot::new(atom("a", 0, false), Holding::Owned, UnitId(1)));
        t.insert(Slot::new(atom("b", 0, false), Holding::Handoff, UnitId(1)));
        t.insert(cached(atom("c", UNIX0 + 5, true), 10));
        let s = t.stats();
        assert_eq!((s.owned, s.handoff, s.cached, s.zombies), (1, 1, 1, 1));
        assert_eq!(
            s.bytes,
            3 * u64::try_from(footprint(&atom("a", 0, false), 0)).unwrap_or(0)
        );
        assert!(t.modify(b"b", |s| {
            s.holding = Holding::Cached;
            s.cached_until = Some(50);
            s.atom.meta.zombie = true;
        }));
        let s = t.stats();
        assert_eq!((s.owned, s.handoff, s.cached, s.zombies), (1, 0, 2, 2));
        assert_eq!(t.held_after(None, 10), vec![b"a".to_vec()]);
        assert!(t.remove(b"c").is_some());
        assert!(!t.modify(b"c", |_| {}));
        assert_eq!(t.stats().cached, 1);
        assert!(t.is_consistent());
    }
}
