//! The instance map behind [`Instances`](super::Instances): copy-on-write buckets, so that a
//! snapshot is a pointer copy, one change copies one bucket, and two snapshots of one lineage
//! are compared bucket by bucket, skipping every bucket they still share.
//!
//! Entries are spread over a fixed number of buckets by a hash of their key, each bucket a
//! vector sorted by key. The key (`scheme://address`) is read from the entry itself, never
//! stored: an entry costs the map one pointer. With 64 buckets a change costs about N/64 pointer copies and a comparison
//! about 64 pointer checks plus the changed buckets: flat in practice from a handful of
//! instances to hundreds of thousands, without the pointer-chasing of a persistent tree on the
//! read side.

use std::sync::{Arc, OnceLock};

use crate::ServiceInfo;

const BUCKETS: usize = 64;

type Entry = Arc<ServiceInfo>;
type Bucket = Arc<Vec<Entry>>;

/// An entry's key as two parts, ordered like the `scheme://address` string they make.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a> {
    scheme: &'a str,
    address: &'a str,
}

impl<'a> Key<'a> {
    fn of(info: &'a ServiceInfo) -> Self {
        Key {
            scheme: &info.scheme,
            address: &info.address,
        }
    }

    /// `scheme://address` taken apart; a string without `://` matches no entry.
    fn parse(uri: &'a str) -> Option<Self> {
        let (scheme, address) = uri.split_once("://")?;
        Some(Key { scheme, address })
    }

    fn bucket(self) -> usize {
        // FNV-1a over the bytes of `scheme://address`: stable, and plenty to spread them.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [self.scheme, "://", self.address] {
            for &byte in part.as_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        (hash ^ (hash >> 32)) as usize % BUCKETS
    }
}

#[derive(Clone)]
pub(super) struct InstanceMap {
    /// Empty until the first insert, so an empty snapshot allocates nothing.
    buckets: Arc<Vec<Bucket>>,
    len: usize,
}

/// How one key differs between two maps.
pub(super) enum Difference<'a> {
    Added(&'a Arc<ServiceInfo>),
    Removed(&'a Arc<ServiceInfo>),
    Updated(&'a Arc<ServiceInfo>, &'a Arc<ServiceInfo>),
}

impl InstanceMap {
    pub(super) fn new() -> Self {
        static EMPTY: OnceLock<Arc<Vec<Bucket>>> = OnceLock::new();
        Self {
            buckets: Arc::clone(EMPTY.get_or_init(|| Arc::new(Vec::new()))),
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The entry at `uri` (`scheme://address`).
    pub(super) fn get(&self, uri: &str) -> Option<&Arc<ServiceInfo>> {
        let key = Key::parse(uri)?;
        let bucket = self.buckets.get(key.bucket())?;
        let at = bucket.binary_search_by(|e| Key::of(e).cmp(&key)).ok()?;
        Some(&bucket[at])
    }

    /// Puts `info` at its `scheme://address`; returns what was there.
    pub(super) fn insert(&mut self, info: Arc<ServiceInfo>) -> Option<Arc<ServiceInfo>> {
        let key = Key::of(&info);
        let bucket = self.bucket_mut(key.bucket());
        match bucket.binary_search_by(|e| Key::of(e).cmp(&key)) {
            Ok(at) => Some(std::mem::replace(&mut bucket[at], info)),
            Err(at) => {
                bucket.insert(at, info);
                self.len += 1;
                None
            }
        }
    }

    /// Removes the entry at `uri` (`scheme://address`); returns it.
    pub(super) fn remove(&mut self, uri: &str) -> Option<Arc<ServiceInfo>> {
        let key = Key::parse(uri)?;
        let index = key.bucket();
        let at = self
            .buckets
            .get(index)?
            .binary_search_by(|e| Key::of(e).cmp(&key))
            .ok()?;
        let bucket = Arc::make_mut(&mut Arc::make_mut(&mut self.buckets)[index]);
        self.len -= 1;
        Some(bucket.remove(at))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<ServiceInfo>> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// Every key whose value differs between `older` and `self`, bucket by bucket: buckets the
    /// two maps share are skipped without being read. Values are compared by content, so an
    /// entry put again unchanged is no difference.
    pub(super) fn differences<'a>(&'a self, older: &'a InstanceMap) -> impl Iterator<Item = Difference<'a>> {
        let shared = Arc::ptr_eq(&self.buckets, &older.buckets);
        let count = if shared { 0 } else { BUCKETS };
        (0..count).flat_map(move |index| {
            let new = self.buckets.get(index).map_or(&[][..], |b| b.as_slice());
            let old = older.buckets.get(index).map_or(&[][..], |b| b.as_slice());
            let same = match (self.buckets.get(index), older.buckets.get(index)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => new.is_empty() && old.is_empty(),
            };
            let (new, old) = if same { (&[][..], &[][..]) } else { (new, old) };
            MergeDiff { new, old }
        })
    }

    fn bucket_mut(&mut self, index: usize) -> &mut Vec<Entry> {
        let buckets = Arc::make_mut(&mut self.buckets);
        if buckets.is_empty() {
            buckets.resize_with(BUCKETS, Bucket::default);
        }
        Arc::make_mut(&mut buckets[index])
    }
}

impl PartialEq for InstanceMap {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.differences(other).next().is_none()
    }
}

impl Eq for InstanceMap {}

/// Walks two sorted buckets side by side, yielding where they differ.
struct MergeDiff<'a> {
    new: &'a [Entry],
    old: &'a [Entry],
}

impl<'a> Iterator for MergeDiff<'a> {
    type Item = Difference<'a>;

    fn next(&mut self) -> Option<Difference<'a>> {
        loop {
            match (self.new.split_first(), self.old.split_first()) {
                (None, None) => return None,
                (Some((added, rest)), None) => {
                    self.new = rest;
                    return Some(Difference::Added(added));
                }
                (None, Some((removed, rest))) => {
                    self.old = rest;
                    return Some(Difference::Removed(removed));
                }
                (Some((new, new_rest)), Some((old, old_rest))) => match Key::of(new).cmp(&Key::of(old)) {
                    std::cmp::Ordering::Less => {
                        self.new = new_rest;
                        return Some(Difference::Added(new));
                    }
                    std::cmp::Ordering::Greater => {
                        self.old = old_rest;
                        return Some(Difference::Removed(old));
                    }
                    std::cmp::Ordering::Equal => {
                        self.new = new_rest;
                        self.old = old_rest;
                        if !Arc::ptr_eq(new, old) && new != old {
                            return Some(Difference::Updated(old, new));
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(port: u16) -> Arc<ServiceInfo> {
        Arc::new(ServiceInfo::new("svc", format!("10.0.0.1:{port}")))
    }

    #[test]
    fn a_copy_shares_everything_and_one_change_is_one_difference() {
        let mut map = InstanceMap::new();
        for port in 0..5_000 {
            map.insert(info(port));
        }
        let before = map.clone();
        assert!(map.differences(&before).next().is_none());
        map.insert(info(60_000));
        map.remove("grpc://10.0.0.1:7");
        let mut changes: Vec<String> = map
            .differences(&before)
            .map(|d| match d {
                Difference::Added(i) => format!("+{}", i.address),
                Difference::Removed(i) => format!("-{}", i.address),
                Difference::Updated(_, i) => format!("~{}", i.address),
            })
            .collect();
        changes.sort();
        assert_eq!(changes, ["+10.0.0.1:60000", "-10.0.0.1:7"]);
        assert_eq!(map.len(), 5_000);
        assert_eq!(before.len(), 5_000, "the copy is untouched");
        assert!(before.get("grpc://10.0.0.1:7").is_some());
    }

    #[test]
    fn an_equal_value_put_again_is_no_difference_and_a_changed_one_is() {
        let mut map = InstanceMap::new();
        let value = info(1);
        map.insert(Arc::clone(&value));
        let before = map.clone();
        map.insert(Arc::new((*value).clone()));
        assert!(map.differences(&before).next().is_none());
        assert!(map == before);
        assert!(map.get("grpc://10.0.0.1:1").is_some() && map.get("10.0.0.1:1").is_none());
        map.insert(Arc::new((*value).clone().with_weight(5)));
        assert!(matches!(map.differences(&before).next(), Some(Difference::Updated(..))));
    }
}
