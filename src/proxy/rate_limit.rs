//! A route's rate limit ([`Limiter`]): requests per client by GCRA (the `governor` crate), over
//! a store of bounded size ([`Store`]).
//!
//! A client is its key's 64-bit keyed hash (SipHash with a random key): the store's size does
//! not depend on how long keys are, and a client cannot aim its keys at one slot. Requests
//! without the key (no such header or cookie) all count as one client, so that leaving the key
//! out is no way around the limit.
//!
//! The store holds at most `max_keys` clients, in shards each with its own least-recently-seen
//! order: when a shard is full, the client seen longest ago is forgotten. A forgotten client
//! starts again with a full burst, as a client whose allowance had come back would. A flood of
//! distinct keys therefore costs a bounded amount of memory, grown as clients come.
//!
//! The lock of a shard is held for one lookup and one store; `parking_lot`'s, which cannot be
//! poisoned.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use lru::LruCache;
use parking_lot::Mutex;

use crate::config::{LimitKey, RateLimit};
use crate::upstream::affinity::cookie;

/// Stores with at least this many clients are split in [`SHARDS`] shards.
const SHARDED_FROM: usize = 1024;
const SHARDS: usize = 16;

/// A route's limiter; it outlives reloads that keep the route's name and limit.
#[derive(Debug)]
pub struct Limiter {
    config: RateLimit,
    gcra: RateLimiter<u64, Store, MonotonicClock>,
    /// The same store governor holds, to count its clients.
    store: Store,
    clock: MonotonicClock,
    hasher: RandomState,
    /// Requests refused, for `fulcrum_rate_limited_total`.
    refused: AtomicU64,
}

/// A refusal: how long until the client's next request would pass.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub retry_after: Duration,
}

impl Limiter {
    pub fn new(config: &RateLimit) -> Limiter {
        let burst = NonZeroU32::new(config.burst).expect("burst is at least 1 (config)");
        let quota = Quota::with_period(config.interval())
            .expect("the interval is above zero (config)")
            .allow_burst(burst);
        let clock = MonotonicClock;
        let store = Store::new(config.max_keys);
        Limiter {
            config: config.clone(),
            gcra: RateLimiter::new(quota, store.clone(), clock.clone()),
            store,
            clock,
            hasher: RandomState::new(),
            refused: AtomicU64::new(0),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// Counts a request from `client` (with these `headers`) against its key's allowance.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), Refusal> {
        let key = self.key(headers, client);
        self.gcra.check_key(&key).map_err(|not_until| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Refusal {
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.store.len()
    }

    /// The client a request counts as: its key's hash, tagged so that no key's hash is the
    /// shared one of requests without a key.
    fn key(&self, headers: &HeaderMap, client: IpAddr) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        match &self.config.key {
            LimitKey::ClientIp => client.to_canonical().hash(&mut hasher),
            LimitKey::Header(name) => match headers.get(name) {
                Some(value) => (1u8, value.as_bytes()).hash(&mut hasher),
                None => 0u8.hash(&mut hasher),
            },
            LimitKey::Cookie(name) => match cookie(headers, name) {
                Some(value) => (1u8, value).hash(&mut hasher),
                None => 0u8.hash(&mut hasher),
            },
        }
        hasher.finish()
    }
}

/// Clients' theoretical arrival times, at most a fixed number, the stalest forgotten first.
/// Cloning shares it.
#[derive(Debug, Clone)]
pub struct Store {
    shards: Arc<[Mutex<LruCache<u64, Nanos>>]>,
    /// Clients one shard keeps at most.
    each: usize,
}

impl Store {
    fn new(max_keys: usize) -> Store {
        let shards = if max_keys >= SHARDED_FROM { SHARDS } else { 1 };
        // Grown as clients come, not allocated whole: a large `max_keys` costs only what is used.
        Store {
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::unbounded()))
                .collect(),
            each: (max_keys / shards).max(1),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<LruCache<u64, Nanos>> {
        // The high bits: the low ones pick the slot in the shard's own table.
        &self.shards[(key >> 59) as usize % self.shards.len()]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }
}

impl StateStore for Store {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(*key).lock();
        let known = shard.get(key).copied();
        let (outcome, next) = f(known)?;
        if known.is_none() && shard.len() >= self.each {
            shard.pop_lru();
        }
        shard.put(*key, next);
        Ok(outcome)
    }
}
