//! `consistent_hash`: a hash ring with virtual nodes (ketama), weights honoured, and each key's
//! preference list of distinct backends for fallback.
//!
//! Why a ring: it gives every key a *preference order* over the backends (walk clockwise from the
//! key's point), which is exactly the replica list fallback needs, and bounded load is a walk too
//! (Mirrokni et al., "Consistent Hashing with Bounded Loads", 2017, as Envoy and HAProxy do it).
//! Maglev balances slightly better and looks up in O(1), but has no natural replica order;
//! rendezvous hashing has one but costs O(n) per pick, over 1 µs at 1,000 backends. Measured here
//! (unit tests and `benches/pick.rs`): 160 points per unit of weight keep 5 equal backends within
//! about ±10% of an even share; removing a backend moves only its keys; a pick is one table read
//! and a search of a few points, or, for most keys, one read of a table of homes (slots of the
//! ring that no point splits). The ring holds at most [`MAX_POINTS`] points, so that it stays in
//! cache: at 1,000 backends a pick takes about 55 ns instead of 104 (`cargo bench --bench pick`),
//! and at 1,000 equal backends (65 points each) the largest owns about 1.5x its even share of
//! the ring (1.3x with 160 points).
//!
//! Placement depends only on the backends' addresses and weights and on a fixed hash (FNV-1a
//! with a splitmix64 finaliser, no per-process seed), so every Fulcrum instance with the same
//! pool puts a key on the same backend.

use super::{Candidates, draw_eligible};

/// Ring points per unit of weight, up to [`MAX_POINTS`] in all.
pub const POINTS_PER_WEIGHT: usize = 160;

/// Most points a ring holds. A large pool gets fewer points per unit of weight (at least one)
/// so that the ring (8 bytes a point) and its table stay within a core's cache: at 1,000 equal
/// backends each has 65 points instead of 160, and a pick takes half the time (`cargo bench`).
/// Envoy bounds its ring the same way (`maximum_ring_size`). Each member's points are its first
/// replicas, so a change of the per-weight count moves only the keys of the points it adds or
/// removes.
pub const MAX_POINTS: usize = 1 << 16;

/// A [`HashRing::homes`] entry for a slot that a ring point splits: the ring decides.
const SPLIT: u16 = u16::MAX;

/// Largest `homes` table: 2^19 slots (1 MiB).
const MAX_HOME_BITS: u32 = 19;

/// Points per unit of weight for a ring whose weights add up to `total_weight`.
fn points_per_weight(total_weight: usize) -> usize {
    (MAX_POINTS / total_weight.max(1)).clamp(1, POINTS_PER_WEIGHT)
}

/// Bits of a key that index the lookup table (65,536 buckets).
const BUCKET_BITS: u32 = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A stable 64-bit hash: FNV-1a, then splitmix64's finaliser to spread the bits.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    finish(fnv(FNV_OFFSET, bytes))
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn finish(mut hash: u64) -> u64 {
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The point of `identity`'s `replica`-th virtual node: `stable_hash("{identity}#{replica}")`,
/// computed without building the string.
fn point(identity: &str, replica: usize) -> u64 {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut value = replica;
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let hash = fnv(fnv(FNV_OFFSET, identity.as_bytes()), b"#");
    finish(fnv(hash, &digits[start..]))
}

/// The ring: points sorted by position (the top 32 bits of their hash, as ketama uses), each
/// with the member it names, packed so one cache line holds both; and a table from a key's top
/// bits to the first point at or after them, so a lookup reads one table entry and a handful of
/// points instead of a binary search over all of them.
#[derive(Debug)]
pub struct HashRing {
    points: Box<[(u32, u32)]>,
    buckets: Box<[u32]>,
    /// The home member of every key whose position falls in a slot (the top bits) that holds no
    /// ring point, so that most picks read one entry instead of the table and the ring; [`SPLIT`]
    /// for the others. About eight slots per point; empty when members do not fit in a `u16`.
    homes: Box<[u16]>,
    home_bits: u32,
    members: usize,
    weights: Box<[u32]>,
    /// `hash_balance_factor`: skip members above this multiple of the average load.
    balance_factor: Option<f64>,
}

impl HashRing {
    /// A ring over members identified by `identities` (their addresses) with these weights.
    pub fn new(identities: &[&str], weights: &[u32], balance_factor: Option<f64>) -> HashRing {
        let per_weight = points_per_weight(weights.iter().map(|&w| w as usize).sum());
        let total: usize = weights.iter().map(|&w| w as usize).sum::<usize>() * per_weight;
        let mut points = Vec::with_capacity(total);
        for (member, (identity, &weight)) in identities.iter().zip(weights).enumerate() {
            for replica in 0..weight as usize * per_weight {
                points.push(((point(identity, replica) >> 32) as u32, member as u32));
            }
        }
        points.sort_unstable();
        // buckets[b] = index of the first point whose top bits are >= b.
        let mut buckets = vec![0u32; (1 << BUCKET_BITS) + 1];
        let mut next = 0usize;
        for (bucket, start) in buckets.iter_mut().enumerate() {
            while next < points.len() && ((points[next].0 >> (32 - BUCKET_BITS)) as usize) < bucket
            {
                next += 1;
            }
            *start = next as u32;
        }
        let (homes, home_bits) = homes(&points, identities.len());
        HashRing {
            points: points.into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
            homes,
            home_bits,
            members: identities.len(),
            weights: weights.into(),
            balance_factor,
        }
    }

    /// The member owning `key`'s position: the member of the first point at or after it.
    fn home(&self, key: u64) -> usize {
        if let Some(&member) = self.homes.get((key >> (64 - self.home_bits)) as usize)
            && member != SPLIT
        {
            return member as usize;
        }
        self.points[self.locate(key)].1 as usize
    }

    /// The index of the first point at or after `key`'s position, wrapping to 0.
    fn locate(&self, key: u64) -> usize {
        let position = (key >> 32) as u32;
        let bucket = (position >> (32 - BUCKET_BITS)) as usize;
        let (from, to) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        let found = from + self.points[from..to].partition_point(|&(at, _)| at < position);
        if found == self.points.len() { 0 } else { found }
    }

    /// The members in `key`'s preference order: distinct, clockwise from the key's point.
    pub fn preference(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = if self.points.is_empty() {
            0
        } else {
            self.locate(key)
        };
        let mut seen = vec![false; self.members];
        let mut left = self.members;
        (0..self.points.len())
            .map(move |offset| self.points[(start + offset) % self.points.len()].1 as usize)
            .filter(move |&member| {
                if left == 0 || seen[member] {
                    return false;
                }
                seen[member] = true;
                left -= 1;
                true
            })
            .take(self.members)
    }

    /// The first `n` members of `key`'s preference order.
    pub fn replicas(&self, key: u64, n: usize) -> Vec<usize> {
        self.preference(key).take(n).collect()
    }

    /// The first eligible member in `key`'s preference order, passing over members loaded above
    /// the balance factor; without a key, a weighted random eligible member.
    pub fn pick(&self, key: Option<u64>, candidates: &impl Candidates) -> Option<usize> {
        let Some(key) = key else {
            return draw_eligible(candidates, |member| {
                self.weights.get(member).copied().unwrap_or(1)
            });
        };
        if self.points.is_empty() {
            return None;
        }
        // Fast path: the key's home on the ring, found without walking.
        let home = self.home(key);
        let limit = self.load_limit(candidates);
        if candidates.is_eligible(home)
            && limit.is_none_or(|l| candidates.in_flight(home) as f64 <= l)
        {
            return Some(home);
        }
        let mut first_eligible = None;
        for member in self.preference(key) {
            if !candidates.is_eligible(member) {
                continue;
            }
            if limit.is_none_or(|l| candidates.in_flight(member) as f64 <= l) {
                return Some(member);
            }
            first_eligible.get_or_insert(member);
        }
        // Every eligible member is above the limit: the key's first eligible one still serves.
        first_eligible
    }

    /// The most in-flight requests a member may carry and still take a key: the balance factor
    /// times the average (counting the request being placed).
    fn load_limit(&self, candidates: &impl Candidates) -> Option<f64> {
        let factor = self.balance_factor?;
        let members = candidates.len().max(1);
        let total: usize = (0..candidates.len()).map(|i| candidates.in_flight(i)).sum();
        Some(factor * (total + 1) as f64 / members as f64)
    }
}

/// The `homes` table for sorted `points` (see [`HashRing::homes`]) and its index bits.
fn homes(points: &[(u32, u32)], members: usize) -> (Box<[u16]>, u32) {
    if points.is_empty() || members >= usize::from(SPLIT) {
        return (Box::default(), 1);
    }
    let bits = (points.len() * 8)
        .next_power_of_two()
        .trailing_zeros()
        .clamp(1, MAX_HOME_BITS);
    let width = 1u64 << (32 - bits);
    let mut homes = vec![SPLIT; 1 << bits];
    let mut next = 0; // the first point at or after the current slot's start
    for (slot, home) in homes.iter_mut().enumerate() {
        let start = slot as u64 * width;
        while next < points.len() && u64::from(points[next].0) < start {
            next += 1;
        }
        let owner = points[next % points.len()];
        // Every position in the slot has this owner unless a point lies inside the slot.
        if next == points.len() || u64::from(owner.0) >= start + width {
            *home = owner.1 as u16;
        }
    }
    (homes.into_boxed_slice(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::testing::Members;

    fn addresses(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn ring(addresses: &[String], weights: &[u32]) -> HashRing {
        let ids: Vec<&str> = addresses.iter().map(String::as_str).collect();
        HashRing::new(&ids, weights, None)
    }

    fn key(i: usize) -> u64 {
        stable_hash(format!("user-{i}").as_bytes())
    }

    fn home(ring: &HashRing, addresses: &[String], k: u64) -> String {
        let members = Members::all_up(addresses.len());
        addresses[ring.pick(Some(k), &members).unwrap()].clone()
    }

    #[test]
    fn hash_is_stable_across_processes() {
        // Fixed values: a change here moves every key on every deployed instance.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"user-1"), stable_hash(b"user-1"));
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
    }

    #[test]
    fn points_match_the_documented_formula() {
        assert_eq!(point("10.0.0.1:80", 0), stable_hash(b"10.0.0.1:80#0"));
        assert_eq!(point("10.0.0.1:80", 159), stable_hash(b"10.0.0.1:80#159"));
    }

    #[test]
    fn homes_agree_with_the_ring() {
        for (n, weights) in [
            (3, vec![1, 1, 1]),
            (7, vec![1, 2, 3, 1, 1, 5, 2]),
            (300, vec![1; 300]),
        ] {
            let addrs = addresses(n);
            let r = ring(&addrs, &weights);
            let direct = r.homes.iter().filter(|&&h| h != SPLIT).count();
            assert!(
                direct * 10 > r.homes.len() * 8,
                "{direct} of {} slots direct",
                r.homes.len()
            );
            for i in 0..20_000 {
                let k = key(i);
                assert_eq!(r.home(k), r.points[r.locate(k)].1 as usize, "key {i}");
            }
            for k in [0, u64::MAX, 1 << 63] {
                assert_eq!(r.home(k), r.points[r.locate(k)].1 as usize);
            }
        }
    }

    #[test]
    fn lookup_table_agrees_with_a_plain_search() {
        let addrs = addresses(7);
        let r = ring(&addrs, &[1, 2, 3, 1, 1, 5, 2]);
        for i in 0..5000 {
            let k = key(i);
            let position = (k >> 32) as u32;
            let plain = r.points.partition_point(|&(at, _)| at < position) % r.points.len();
            assert_eq!(r.locate(k), plain);
        }
        assert_eq!(
            r.locate(u64::MAX),
            0,
            "past the last point wraps to the first"
        );
        assert_eq!(r.locate(0), 0);
    }

    #[test]
    fn same_key_same_backend() {
        let addrs = addresses(5);
        let (a, b) = (ring(&addrs, &[1; 5]), ring(&addrs, &[1; 5]));
        for i in 0..200 {
            assert_eq!(
                home(&a, &addrs, key(i)),
                home(&b, &addrs, key(i)),
                "two rings agree"
            );
        }
    }

    #[test]
    fn a_large_pool_has_a_bounded_ring_and_still_spreads() {
        let addrs: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
            .collect();
        let r = ring(&addrs, &[1; 1000]);
        assert!(r.points.len() <= MAX_POINTS, "{} points", r.points.len());
        assert_eq!(r.points.len(), 1000 * (MAX_POINTS / 1000));
        // The share of the ring each backend owns: no backend gets more than twice its due.
        let mut owned = vec![0u64; 1000];
        for (i, &(at, member)) in r.points.iter().enumerate() {
            let previous = if i == 0 {
                r.points[r.points.len() - 1].0
            } else {
                r.points[i - 1].0
            };
            owned[member as usize] += u64::from(at.wrapping_sub(previous));
        }
        let due = (1u64 << 32) / 1000;
        let most = owned.iter().max().copied().unwrap_or_default();
        assert!(
            most < 2 * due,
            "the largest share is {:.2}x its due",
            most as f64 / due as f64
        );
        // Still consistent: the same keys land on the same backends when one is added.
        let mut more = addrs.clone();
        more.push("10.0.9.9:80".to_owned());
        let bigger = ring(&more, &[1; 1001]);
        let moved = (0..2000)
            .filter(|&i| home(&r, &addrs, key(i)) != home(&bigger, &more, key(i)))
            .count();
        assert!(
            moved < 40,
            "{moved} of 2000 keys moved when one backend joined 1,000"
        );
    }

    #[test]
    fn thousand_keys_over_five_backends_stay_between_12_and_28_percent() {
        let addrs = addresses(5);
        let r = ring(&addrs, &[1; 5]);
        let mut counts = std::collections::HashMap::new();
        for i in 0..1000 {
            *counts.entry(home(&r, &addrs, key(i))).or_insert(0) += 1;
        }
        for address in &addrs {
            let share = counts.get(address).copied().unwrap_or(0);
            assert!(
                (120..=280).contains(&share),
                "{address} got {share} of 1000: {counts:?}"
            );
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let addrs = addresses(5);
        let before = ring(&addrs, &[1; 5]);
        let fewer: Vec<String> = addrs
            .iter()
            .filter(|a| *a != "10.0.0.3:80")
            .cloned()
            .collect();
        let after = ring(&fewer, &[1; 4]);
        for i in 0..2000 {
            let was = home(&before, &addrs, key(i));
            if was != "10.0.0.3:80" {
                assert_eq!(
                    home(&after, &fewer, key(i)),
                    was,
                    "key {i} moved between survivors"
                );
            }
        }
    }

    #[test]
    fn adding_a_sixth_takes_about_a_sixth_and_moves_nothing_else() {
        let addrs = addresses(5);
        let more = addresses(6);
        let (before, after) = (ring(&addrs, &[1; 5]), ring(&more, &[1; 6]));
        let mut moved = 0;
        for i in 0..3000 {
            let (was, now) = (home(&before, &addrs, key(i)), home(&after, &more, key(i)));
            if was != now {
                assert_eq!(now, "10.0.0.6:80", "a key moved between old backends");
                moved += 1;
            }
        }
        assert!(
            (350..=650).contains(&moved),
            "the new backend took {moved} of 3000"
        );
    }

    #[test]
    fn weights_are_honoured() {
        let addrs = addresses(2);
        let r = ring(&addrs, &[1, 3]);
        let heavy = (0..4000)
            .filter(|&i| home(&r, &addrs, key(i)) == addrs[1])
            .count();
        assert!(
            (2700..=3300).contains(&heavy),
            "weight 3 of 4 took {heavy} of 4000"
        );
    }

    #[test]
    fn an_unavailable_home_passes_the_key_to_its_first_replica_consistently() {
        let addrs = addresses(5);
        let r = ring(&addrs, &[1; 5]);
        for i in 0..100 {
            let order = r.replicas(key(i), 5);
            assert_eq!(order.len(), 5, "every backend appears once");
            let members = Members {
                down: vec![order[0]],
                load: vec![0; 5],
            };
            assert_eq!(r.pick(Some(key(i)), &members), Some(order[1]));
            assert_eq!(
                r.pick(Some(key(i)), &members),
                Some(order[1]),
                "the same replica every time"
            );
        }
    }

    #[test]
    fn bounded_load_passes_a_hot_key_on() {
        let addrs = addresses(4);
        let ids: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let r = HashRing::new(&ids, &[1; 4], Some(1.25));
        let k = key(7);
        let order = r.replicas(k, 4);
        let mut load = vec![0; 4];
        load[order[0]] = 10; // average (10 + 1) / 4 = 2.75, limit 3.4
        let members = Members { down: vec![], load };
        assert_eq!(r.pick(Some(k), &members), Some(order[1]));
    }
}
