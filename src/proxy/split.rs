//! A route's `split`: which of its pools serves a request, by weight.
//!
//! A client stays on the pool it first got when the split's pools make clients stick:
//! - With a `[pool.X.sticky]` on any of its pools, the split pins each client to the pool it
//!   chose with a cookie of its own, named after the first sticky pool's (`<cookie>_pool`, the
//!   same attributes), whose value is the pool's name; the pool's own cookie then pins the client
//!   to a backend. Pinning by the split itself, not only by the sticky pools' cookies, keeps the
//!   shares: were only the canary sticky, every client would end up on it, one lucky draw each.
//!   A client with a sticky pool's own cookie and no split cookie goes back to that pool.
//! - A request with a hash key (the first one a split's pool defines) is placed by that key, so
//!   the same key always lands on the same pool.
//!
//! Other requests are split independently, at random. A share of weight 0 gets nothing, not even
//! its pinned clients: that is how a canary is rolled back.
//!
//! Each share counts the requests it got, for `/status`; the counts outlive reloads that keep
//! the route's name and the share's pool.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Request};

use crate::config::Sticky;
use crate::upstream::Pool;
use crate::upstream::affinity::cookie;

/// A route's weighted choice of pool.
#[derive(Debug)]
pub struct Split {
    shares: Vec<Share>,
    total: u64,
    /// The cookie that pins a client to its pool, when a pool is sticky: its name and
    /// attributes.
    pinning: Option<Sticky>,
}

/// The pool a request goes to, and the cookie that keeps its client there, when one must be set.
#[derive(Debug)]
pub struct Choice<'a> {
    pub pool: &'a Arc<Pool>,
    pub pin: Option<HeaderValue>,
}

#[derive(Debug)]
struct Share {
    pool: Arc<Pool>,
    weight: u32,
    served: Arc<AtomicU64>,
}

impl Split {
    /// A split over `shares` (pool and weight; the weights do not sum to 0), keeping the counts
    /// `before` has for the same pools.
    pub fn new(shares: Vec<(Arc<Pool>, u32)>, before: Option<&Split>) -> Split {
        let shares: Vec<Share> = shares
            .into_iter()
            .map(|(pool, weight)| {
                let served = before
                    .and_then(|b| b.shares.iter().find(|s| s.pool.name() == pool.name()))
                    .map(|s| Arc::clone(&s.served))
                    .unwrap_or_default();
                Share {
                    pool,
                    weight,
                    served,
                }
            })
            .collect();
        let total = shares.iter().map(|s| u64::from(s.weight)).sum();
        let pinning = shares
            .iter()
            .find_map(|share| share.pool.policy().sticky.clone())
            .map(|sticky| Sticky {
                cookie: format!("{}_pool", sticky.cookie),
                ..sticky
            });
        Split {
            shares,
            total,
            pinning,
        }
    }

    /// The pool that serves `request`, from `client`.
    pub fn choose<B>(&self, request: &Request<B>, client: IpAddr) -> Choice<'_> {
        if let Some(share) = self.pinned(request) {
            share.served.fetch_add(1, Ordering::Relaxed);
            return Choice {
                pool: &share.pool,
                pin: None,
            };
        }
        let share = self
            .stuck(request)
            .unwrap_or_else(|| self.at(self.point(request, client)));
        share.served.fetch_add(1, Ordering::Relaxed);
        Choice {
            pool: &share.pool,
            pin: self
                .pinning
                .as_ref()
                .map(|pin| pin.set_named(&pin.cookie, share.pool.name())),
        }
    }

    /// The share the request's split cookie names, if it names one that still gets requests.
    fn pinned<B>(&self, request: &Request<B>) -> Option<&Share> {
        let pinning = self.pinning.as_ref()?;
        let named = cookie(request.headers(), &pinning.cookie)?;
        self.shares
            .iter()
            .find(|share| share.weight > 0 && **share.pool.name() == *named)
    }

    /// `(pool, weight, requests)` of each share, in config order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u32, u64)> {
        self.shares
            .iter()
            .map(|s| (&**s.pool.name(), s.weight, s.served.load(Ordering::Relaxed)))
    }

    /// The share whose pool issued the request's sticky cookie.
    fn stuck<B>(&self, request: &Request<B>) -> Option<&Share> {
        self.shares.iter().filter(|s| s.weight > 0).find(|share| {
            let sticky = share.pool.policy().sticky.as_ref();
            sticky
                .and_then(|sticky| sticky.requested(request.headers()))
                .is_some_and(|token| share.pool.issued(token))
        })
    }

    /// Where in `0..total` the request falls: by its hash key when a pool has one, else at
    /// random.
    fn point<B>(&self, request: &Request<B>, client: IpAddr) -> u64 {
        let keyed = self.shares.iter().find_map(|share| {
            let key = share.pool.policy().hash_key.as_ref()?;
            Some(key.hash(request, client))
        });
        match keyed.flatten() {
            // Mixed again: the pool's own ring places the same key, and the two choices should
            // not be correlated.
            Some(hash) => hash.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) % self.total,
            None => fastrand::u64(0..self.total),
        }
    }

    /// The share `point` falls in.
    fn at(&self, mut point: u64) -> &Share {
        for share in &self.shares {
            if point < u64::from(share.weight) {
                return share;
            }
            point -= u64::from(share.weight);
        }
        unreachable!("the point is below the total of the weights")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use crate::upstream::Policy;

    fn pool(name: &str) -> Arc<Pool> {
        Arc::new(Pool::new(
            name,
            Strategy::RoundRobin,
            Vec::new(),
            Vec::new(),
            Policy::default(),
        ))
    }

    #[test]
    fn weights_set_the_shares() {
        let split = Split::new(vec![(pool("stable"), 95), (pool("canary"), 5)], None);
        let request = Request::new(());
        let client = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..10_000 {
            assert!(
                split.choose(&request, client).pin.is_none(),
                "no pool is sticky"
            );
        }
        let counts: Vec<u64> = split.counts().map(|(_, _, n)| n).collect();
        assert_eq!(counts.iter().sum::<u64>(), 10_000);
        assert!(
            (300..=700).contains(&counts[1]),
            "about 5% of 10,000 go to the canary, got {}",
            counts[1]
        );
    }

    #[test]
    fn a_zero_weight_gets_nothing_and_counts_survive_a_rebuild() {
        let split = Split::new(vec![(pool("stable"), 0), (pool("canary"), 1)], None);
        let request = Request::new(());
        for _ in 0..100 {
            assert_eq!(
                &**split
                    .choose(&request, IpAddr::from([1, 2, 3, 4]))
                    .pool
                    .name(),
                "canary"
            );
        }
        let again = Split::new(vec![(pool("canary"), 1), (pool("new"), 1)], Some(&split));
        let counts: Vec<(&str, u32, u64)> = again.counts().collect();
        assert_eq!(counts, vec![("canary", 1, 100), ("new", 1, 0)]);
    }

    #[test]
    fn one_sticky_pool_makes_the_split_pin_every_client() {
        let sticky = Policy {
            sticky: Some(Sticky {
                cookie: "srv".into(),
                max_age: None,
                secure: false,
                http_only: true,
                same_site: None,
            }),
            ..Policy::default()
        };
        let canary = Arc::new(Pool::new(
            "canary",
            Strategy::RoundRobin,
            Vec::new(),
            Vec::new(),
            sticky,
        ));
        let split = Split::new(vec![(pool("stable"), 9), (canary, 1)], None);
        let client = IpAddr::from([127, 0, 0, 1]);
        let first = split.choose(&Request::new(()), client);
        let pin = first.pin.expect("the split pins the client");
        let set = pin.to_str().unwrap();
        let value = set.split(';').next().unwrap();
        assert_eq!(value, format!("srv_pool={}", first.pool.name()));
        let back = Request::builder().header("cookie", value).body(()).unwrap();
        for _ in 0..100 {
            let again = split.choose(&back, client);
            assert_eq!(again.pool.name(), first.pool.name(), "pinned to its pool");
            assert!(again.pin.is_none(), "already pinned");
        }
    }

    #[test]
    fn the_point_walks_the_weights_in_order() {
        let split = Split::new(vec![(pool("a"), 2), (pool("b"), 0), (pool("c"), 3)], None);
        let names: Vec<&str> = (0..5).map(|p| &**split.at(p).pool.name()).collect();
        assert_eq!(names, vec!["a", "a", "c", "c", "c"]);
    }
}
