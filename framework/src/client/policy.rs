//! The picking policies, each over an immutable list of candidates.
//!
//! Every pick is a few atomic operations and at most a binary search: no lock, and a cost that
//! does not grow with the number of instances (the weighted scheduler loops about max/mean
//! weight times, independent of N). What a policy precomputes is O(1) to update, except the
//! consistent-hash ring, which is rebuilt (O(N log N)) when the candidates change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::instance::Instance;
use super::options::Policy;
use super::slots::Chunked;

type Candidates = Chunked<Arc<Instance>>;

/// What a policy precomputed for one candidate list.
pub(super) enum Picker {
    RoundRobin,
    Weighted(StrideScheduler),
    PowerOfTwo,
    Hash(Ring),
    Random,
}

impl Picker {
    /// The picker for `candidates`, whose largest weight is `max_weight`.
    pub(super) fn build(policy: &Policy, candidates: &Candidates, max_weight: u32) -> Self {
        match policy {
            Policy::RoundRobin => Picker::RoundRobin,
            Policy::WeightedRoundRobin => Picker::Weighted(StrideScheduler::new(max_weight)),
            Policy::PowerOfTwoChoices => Picker::PowerOfTwo,
            Policy::ConsistentHash(_) => Picker::Hash(Ring::new(candidates)),
            Policy::Random => Picker::Random,
        }
    }

    /// The index of the candidate for the next call. `sequence` is the balancer's counter;
    /// `key` the request's hash key, if the policy uses one.
    pub(super) fn pick(&self, candidates: &Candidates, sequence: &AtomicU64, key: Option<u64>) -> usize {
        let n = candidates.len();
        let next = || sequence.fetch_add(1, Ordering::Relaxed);
        match self {
            Picker::RoundRobin => (next() % n as u64) as usize,
            Picker::Weighted(scheduler) => scheduler.pick(candidates.len(), |i| candidates.get(i).info.weight, next),
            Picker::Random => rand::rng().random_range(0..n),
            Picker::PowerOfTwo => {
                if n == 1 {
                    return 0;
                }
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let load = |i: usize| (candidates.get(i).in_flight(), candidates.get(i).latency_us());
                if load(b) < load(a) { b } else { a }
            }
            Picker::Hash(ring) => match key {
                Some(key) => ring.lookup(key),
                None => (next() % n as u64) as usize,
            },
        }
    }

    /// Every candidate in the order to try when `first` cannot take the call: clockwise on the
    /// ring for a hashed key (so a key's fallback is stable too), onwards from `first` otherwise.
    pub(super) fn fallback_order(&self, first: usize, n: usize, key: Option<u64>) -> Vec<usize> {
        match (self, key) {
            (Picker::Hash(ring), Some(key)) => ring.clockwise(key, n),
            _ => (1..n).map(|step| (first + step) % n).collect(),
        }
    }
}

/// gRPC's static stride scheduler: weights scaled to 16 bits of the largest; sequence number
/// `s` picks candidate `s mod n` when its weight "fires" in generation `s / n`. Over 65,535
/// generations each candidate fires exactly its scaled weight times, evenly spread. Scaling at
/// pick time keeps the scheduler O(1) to update: only the largest weight is precomputed.
pub(super) struct StrideScheduler {
    max: u64,
}

const MAX_WEIGHT: u64 = u16::MAX as u64;

impl StrideScheduler {
    fn new(max_weight: u32) -> Self {
        Self {
            max: u64::from(max_weight),
        }
    }

    fn scaled(&self, weight: u32) -> u64 {
        // All zero: nobody said otherwise, so share equally rather than refuse every call.
        match self.max {
            0 => MAX_WEIGHT,
            max => u64::from(weight) * MAX_WEIGHT / max,
        }
    }

    /// Picks one of `n` candidates, `weight_of` each, drawing sequence numbers from `next`.
    fn pick(&self, n: usize, weight_of: impl Fn(usize) -> u32, mut next: impl FnMut() -> u64) -> usize {
        let n = n as u64;
        loop {
            let sequence = next();
            let index = sequence % n;
            let generation = sequence / n;
            let weight = self.scaled(weight_of(index as usize));
            let offset = index * (MAX_WEIGHT / 2);
            if weight > 0 && (weight * generation + offset) % MAX_WEIGHT >= MAX_WEIGHT - weight {
                return index as usize;
            }
        }
    }
}

/// A consistent-hash ring: each candidate at several points, a key served by the first point
/// at or after its hash.
pub(super) struct Ring {
    points: Vec<(u64, u32)>,
}

/// Points per candidate, shrinking for large services so a ring stays about 100k points.
fn points_per_candidate(n: usize) -> usize {
    (100_000 / n.max(1)).clamp(8, 160)
}

impl Ring {
    fn new(candidates: &Candidates) -> Self {
        let per = points_per_candidate(candidates.len());
        let mut points = Vec::with_capacity(candidates.len() * per);
        for (index, candidate) in candidates.iter().enumerate() {
            let name = candidate.info.uri();
            for replica in 0..per {
                points.push((hash(format!("{name}#{replica}").as_bytes()), index as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    fn position(&self, key: u64) -> usize {
        self.points.partition_point(|&(point, _)| point < key) % self.points.len()
    }

    fn lookup(&self, key: u64) -> usize {
        self.points[self.position(key)].1 as usize
    }

    /// Distinct candidates clockwise from the key, the key's own first.
    fn clockwise(&self, key: u64, n: usize) -> Vec<usize> {
        let start = self.position(key);
        let mut seen = vec![false; n];
        let mut order = Vec::with_capacity(n);
        for offset in 0..self.points.len() {
            let index = self.points[(start + offset) % self.points.len()].1 as usize;
            if !std::mem::replace(&mut seen[index], true) {
                order.push(index);
            }
        }
        order
    }
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser for spread), the same in every
/// process so that every client maps a key alike.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduler's defining property, which a random or plain round-robin choice fails:
    /// over every window of picks each candidate's share is its weight's, to within one pick.
    #[test]
    fn weighted_picks_follow_the_weights_exactly_and_evenly() {
        let weights = [100u32, 50, 0, 25];
        let scheduler = StrideScheduler::new(100);
        let mut sequence = 0u64;
        let mut counts = [0usize; 4];
        let total: u32 = weights.iter().sum();
        for picks in 1..=7_000usize {
            let picked = scheduler.pick(
                weights.len(),
                |i| weights[i],
                || {
                    sequence += 1;
                    sequence - 1
                },
            );
            counts[picked] += 1;
            for (i, &weight) in weights.iter().enumerate() {
                let ideal = picks as f64 * f64::from(weight) / f64::from(total);
                assert!(
                    (counts[i] as f64 - ideal).abs() <= 2.0,
                    "after {picks} picks candidate {i} (weight {weight}) had {} instead of about {ideal:.1}: {counts:?}",
                    counts[i]
                );
            }
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked");
    }

    #[test]
    fn equal_weights_take_turns() {
        let scheduler = StrideScheduler::new(7);
        let mut sequence = 0u64;
        let picked: Vec<usize> = (0..9)
            .map(|_| {
                scheduler.pick(
                    3,
                    |_| 7,
                    || {
                        sequence += 1;
                        sequence - 1
                    },
                )
            })
            .collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }
}
