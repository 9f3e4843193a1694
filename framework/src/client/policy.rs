//! The picking policies, each over an immutable list of candidates.
//!
//! Every pick is a few atomic operations and at most a binary search: no lock, and a cost that
//! does not grow with the number of instances (the weighted scheduler loops about max/mean
//! weight times, independent of N). What a policy precomputes follows a change in O(changed):
//! the weighted scheduler keeps only the largest weight, the consistent-hash ring updates the
//! chunks the changed candidates' points fall in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use super::instance::Instance;
use super::options::Policy;
use super::slots::{Chunked, Slotted};

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
    /// The picker for candidates whose largest weight is `max_weight`; `ring` gives the
    /// consistent-hash ring over them, which the balancer keeps from change to change.
    pub(super) fn build(policy: &Policy, max_weight: u32, ring: impl FnOnce() -> Ring) -> Self {
        match policy {
            Policy::RoundRobin => Picker::RoundRobin,
            Policy::WeightedRoundRobin => Picker::Weighted(StrideScheduler::new(max_weight)),
            Policy::PowerOfTwoChoices => Picker::PowerOfTwo,
            Policy::ConsistentHash(_) => Picker::Hash(ring()),
            Policy::Random => Picker::Random,
        }
    }

    /// The index of the candidate for the next call. `sequence` is the balancer's counter. A
    /// call with a hash key under the consistent-hash policy is the ring's (see
    /// [`Ring::clockwise`]); without one it goes round robin.
    pub(super) fn pick(&self, candidates: &Candidates, sequence: &AtomicU64) -> usize {
        let n = candidates.len();
        let next = || sequence.fetch_add(1, Ordering::Relaxed);
        match self {
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
            Picker::RoundRobin | Picker::Hash(_) => (next() % n as u64) as usize,
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

/// A consistent-hash ring: each candidate at [`points_per_candidate`] points, a key served by
/// the first point at or after its hash, clockwise.
///
/// The points are kept sorted in copy-on-write chunks, with each chunk's first point in a table
/// for finding a point's chunk by binary search. A change of one candidate copies the chunks
/// its points fall in and the (points/128-long) table, so the ring follows the candidates in
/// O(changed), as every other policy does; it is rebuilt only when the number of candidates
/// crosses a power of two far enough to change the points per candidate.
#[derive(Clone)]
pub(super) struct Ring {
    chunks: Arc<Vec<Arc<Vec<Point>>>>,
    firsts: Arc<Vec<u64>>,
    len: usize,
    per: usize,
}

type Point = (u64, Arc<Instance>);

/// Points per chunk as built; a chunk splits at twice this.
const RING_CHUNK: usize = 128;

/// Points per candidate: 128 up to 781 candidates, then halving as the candidates double, so a
/// ring holds 50,000 to 100,000 points (at least 8 per candidate). A function of the number of
/// candidates alone, so every client with the same candidates has the same ring.
fn points_per_candidate(n: usize) -> usize {
    let per = 100_000 / n.max(1);
    // The largest power of two at most `per`.
    (1usize << per.max(1).ilog2()).clamp(8, 128)
}

impl Ring {
    pub(super) fn new(candidates: &Candidates) -> Self {
        let per = points_per_candidate(candidates.len());
        let mut points = Vec::with_capacity(candidates.len() * per);
        for candidate in candidates.iter() {
            points.extend((0..per).map(|replica| (point_hash(candidate.key(), replica), Arc::clone(candidate))));
        }
        points.sort_unstable_by_key(|(point, _)| *point);
        let chunks: Vec<_> = points
            .chunks(RING_CHUNK)
            .map(|chunk| Arc::new(chunk.to_vec()))
            .collect();
        Self {
            firsts: Arc::new(chunks.iter().map(|chunk| chunk[0].0).collect()),
            chunks: Arc::new(chunks),
            len: points.len(),
            per,
        }
    }

    /// Whether the ring can follow a change to `n` candidates, or needs building anew.
    pub(super) fn fits(&self, n: usize) -> bool {
        points_per_candidate(n) == self.per
    }

    /// Puts `candidate`'s points on the ring.
    pub(super) fn add(&mut self, candidate: &Arc<Instance>) {
        for replica in 0..self.per {
            self.insert((point_hash(candidate.key(), replica), Arc::clone(candidate)));
        }
    }

    /// Takes the points of the candidate keyed `key` off the ring.
    pub(super) fn remove(&mut self, key: &str) {
        for replica in 0..self.per {
            let point = point_hash(key, replica);
            let mut at = self.position(point);
            for _ in 0..self.len {
                let (c, i) = at;
                match &self.chunks[c][i] {
                    (p, instance) if *p == point && &**instance.key() == key => {
                        self.remove_at(c, i);
                        break;
                    }
                    (p, _) if *p == point => at = self.next(at),
                    _ => break,
                }
            }
        }
    }

    /// Every candidate clockwise from `key`'s point, the key's own first, each as often as it
    /// has points.
    pub(super) fn clockwise(&self, key: u64) -> impl Iterator<Item = &Arc<Instance>> {
        let start = (self.len > 0).then(|| self.position(key));
        std::iter::successors(start, |&at| Some(self.next(at)))
            .take(self.len)
            .map(|(c, i)| &self.chunks[c][i].1)
    }

    /// The chunk and index of the first point at or after `point`, wrapping to the first.
    fn position(&self, point: u64) -> (usize, usize) {
        let c = self.chunk_of(point);
        let i = self.chunks[c].partition_point(|(p, _)| *p < point);
        match i < self.chunks[c].len() {
            true => (c, i),
            false => self.next((c, i - 1)),
        }
    }

    /// The point after `(c, i)`, wrapping.
    fn next(&self, (c, i): (usize, usize)) -> (usize, usize) {
        match i + 1 < self.chunks[c].len() {
            true => (c, i + 1),
            false => ((c + 1) % self.chunks.len(), 0),
        }
    }

    /// The chunk `point` belongs in: the last whose first point is at most `point`, else the
    /// first.
    fn chunk_of(&self, point: u64) -> usize {
        self.firsts.partition_point(|&first| first <= point).saturating_sub(1)
    }

    fn insert(&mut self, point: Point) {
        let chunks = Arc::make_mut(&mut self.chunks);
        let firsts = Arc::make_mut(&mut self.firsts);
        self.len += 1;
        if chunks.is_empty() {
            firsts.push(point.0);
            chunks.push(Arc::new(vec![point]));
            return;
        }
        let c = firsts.partition_point(|&first| first <= point.0).saturating_sub(1);
        let chunk = Arc::make_mut(&mut chunks[c]);
        let i = chunk.partition_point(|(p, _)| *p < point.0);
        chunk.insert(i, point);
        firsts[c] = chunk[0].0;
        if chunk.len() >= 2 * RING_CHUNK {
            let second = chunk.split_off(RING_CHUNK);
            firsts.insert(c + 1, second[0].0);
            chunks.insert(c + 1, Arc::new(second));
        }
    }

    fn remove_at(&mut self, c: usize, i: usize) {
        let chunks = Arc::make_mut(&mut self.chunks);
        let firsts = Arc::make_mut(&mut self.firsts);
        let chunk = Arc::make_mut(&mut chunks[c]);
        chunk.remove(i);
        self.len -= 1;
        match chunk.first() {
            Some(first) => firsts[c] = first.0,
            None => {
                chunks.remove(c);
                firsts.remove(c);
            }
        }
    }
}

/// The hash of a candidate's `replica`th point: of `{key}#{replica}`, made without a string.
fn point_hash(key: &str, replica: usize) -> u64 {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = replica;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    finish(fnv(fnv(fnv(FNV_OFFSET, key.as_bytes()), b"#"), &digits[at..]))
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser for spread), the same in every
/// process so that every client maps a key alike.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    finish(fnv(FNV_OFFSET, bytes))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn finish(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceInfo;

    fn candidate(i: usize) -> Arc<Instance> {
        let info = ServiceInfo::new("svc", format!("10.0.{}.{}:80", i / 250, i % 250));
        Arc::new(Instance::new(Arc::new(info), None))
    }

    /// The ring's points in order, each with its candidate's key.
    fn points(ring: &Ring) -> Vec<(u64, String)> {
        let points: Vec<_> = ring
            .chunks
            .iter()
            .flat_map(|chunk| chunk.iter().map(|(point, c)| (*point, c.key().to_string())))
            .collect();
        assert_eq!(points.len(), ring.len);
        assert!(points.is_sorted(), "the points are in order across chunks");
        let firsts: Vec<u64> = ring.chunks.iter().map(|chunk| chunk[0].0).collect();
        assert_eq!(&firsts, &*ring.firsts, "the table holds each chunk's first point");
        points
    }

    /// A ring that followed every change is the ring built from the candidates it ended with,
    /// point for point, while a reader's copy stays as it was.
    #[test]
    fn a_ring_updated_change_by_change_is_the_ring_built_at_the_end() {
        let mut slots = super::super::slots::Slots::new();
        for i in 0..300 {
            slots.put(candidate(i));
        }
        let mut ring = Ring::new(slots.list());
        let before = ring.clone();
        let before_points = points(&before);
        let mut rng = rand::rng();
        for step in 0..600 {
            let i = rng.random_range(0..400);
            let key = candidate(i).key().to_string();
            ring.remove(&key);
            slots.remove(&key);
            if step % 3 != 0 {
                let added = candidate(i);
                ring.add(&added);
                slots.put(added);
            }
            assert!(ring.fits(slots.len()));
        }
        assert_eq!(points(&ring), points(&Ring::new(slots.list())));
        assert_eq!(points(&before), before_points, "a reader's ring does not change");
        let keys: Vec<_> = (0..64u64).map(|k| hash(&k.to_be_bytes())).collect();
        let owner = |ring: &Ring, key| ring.clockwise(key).next().unwrap().key().to_string();
        let rebuilt = Ring::new(slots.list());
        for key in keys {
            assert_eq!(owner(&ring, key), owner(&rebuilt, key));
        }
    }

    #[test]
    fn points_are_where_they_always_were_and_fewer_per_candidate_in_powers_of_two() {
        // `{key}#{replica}` hashed as a string, as rings were built before.
        for replica in [0, 7, 10, 127] {
            assert_eq!(
                point_hash("grpc://a:1", replica),
                hash(format!("grpc://a:1#{replica}").as_bytes())
            );
        }
        assert_eq!(points_per_candidate(0), 128);
        assert_eq!(points_per_candidate(781), 128);
        assert_eq!(points_per_candidate(782), 64);
        assert_eq!(points_per_candidate(10_000), 8);
        assert_eq!(points_per_candidate(50_000), 8);
        for n in 1..20_000 {
            let per = points_per_candidate(n);
            assert!(per.is_power_of_two() && (8..=128).contains(&per), "{n}: {per}");
            assert!(per == 8 || n * per <= 100_000, "{n}: {per}");
        }
    }

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
