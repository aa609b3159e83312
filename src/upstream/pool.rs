//! `Pool`: a named set of backends in two tiers, the balancer that chooses among them, and the
//! pool's failure policy (ejection, retries budget, fail-open).
//!
//! Selection only sees *available* backends (healthy: see `health.rs`). Primaries are used while
//! any is available; otherwise backups, with the same strategy; the moment a primary is available
//! again, new requests go back to it. With nothing available, a pool answers 503, or, with
//! `fail_open`, spreads over every enabled backend as Envoy's panic mode does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use super::overload::{Acquire, Gate, Want};
use super::tier::Tier;
use super::{Backend, RetryBudget};
use crate::config::{HashKey, Sticky, Strategy};
use crate::config::{HealthCheck, Outlier, Overload};
use crate::telemetry::metrics::{BackendState, PoolStats};

/// Whether a backend is a primary or a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

/// A pool's policy, from its config; the default is no retries, no health checks, no limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub retries: u32,
    pub fail_open: bool,
    /// Consistent hashing's bounded load (`hash_balance_factor`).
    pub balance_factor: Option<f64>,
    /// Where a consistent-hash pool finds a request's key.
    pub hash_key: Option<HashKey>,
    /// Sticky sessions.
    pub sticky: Option<Sticky>,
    pub outlier: Outlier,
    pub health: Option<HealthCheck>,
    /// Per-backend limits and the queue (`[pool.NAME.overload]`).
    pub overload: Overload,
}

/// A pool as the snapshot holds it; immutable once built but for atomics.
#[derive(Debug)]
pub struct Pool {
    name: Arc<str>,
    strategy: Strategy,
    primaries: Tier,
    backups: Tier,
    /// Primaries and backups together; built only for a fail-open pool.
    everyone: Option<Tier>,
    policy: Policy,
    budget: RetryBudget,
    /// Shared with the pool of the same name in the snapshots before and after this one.
    stats: Arc<PoolStats>,
    /// Where requests wait for a slot; shared like `stats`.
    gate: Arc<Gate>,
    /// Set when a newer snapshot replaced the one holding this pool: its checkers stop.
    retired: AtomicBool,
    /// Sticky token → member and its role, for a pool with sticky sessions.
    pinned: HashMap<u64, (Arc<Backend>, Role)>,
}

/// Runs `tick` on `pool` every `period` until the pool is retired (a reload replaced its
/// snapshot; the new one starts its own) or gone: the shape of each pool's background work.
pub fn every(pool: Weak<Pool>, period: Duration, mut tick: impl FnMut(&Pool) + Send + 'static) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_retired() {
                return;
            }
            tick(&pool);
        }
    });
}

impl Pool {
    /// A pool over `primaries` and `backups`, chosen among by `strategy`, counting into fresh
    /// stats with an empty queue (see [`Pool::succeeding`]). Each backend's limit is set from
    /// the policy.
    pub fn new(
        name: &str,
        strategy: Strategy,
        primaries: Vec<Arc<Backend>>,
        backups: Vec<Arc<Backend>>,
        policy: Policy,
    ) -> Pool {
        let factor = policy.balance_factor;
        for backend in primaries.iter().chain(&backups) {
            backend.limit().configure(&policy.overload);
        }
        let everyone = policy.fail_open.then(|| {
            let all: Vec<Arc<Backend>> = primaries.iter().chain(&backups).cloned().collect();
            Tier::new(strategy, all, factor)
        });
        Pool {
            name: name.into(),
            strategy,
            primaries: Tier::new(strategy, primaries, factor),
            backups: Tier::new(strategy, backups, factor),
            everyone,
            policy,
            budget: RetryBudget::default(),
            stats: Arc::default(),
            gate: Arc::default(),
            retired: AtomicBool::new(false),
            pinned: HashMap::new(),
        }
        .with_sticky_tokens()
    }

    fn with_sticky_tokens(mut self) -> Pool {
        if self.policy.sticky.is_some() {
            self.pinned = self
                .members()
                .map(|(b, role)| {
                    (
                        Sticky::token(&self.name, b.address().as_str()),
                        (Arc::clone(b), role),
                    )
                })
                .collect();
        }
        self
    }

    /// The same pool taking over the counts and the queue of `before`, the pool it replaces.
    pub fn succeeding(mut self, before: &Pool) -> Pool {
        self.stats = Arc::clone(&before.stats);
        self.gate = Arc::clone(&before.gate);
        self
    }

    /// Where its requests wait for a slot.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Whether some of its requests are tied to one backend (sticky sessions, consistent
    /// hashing).
    pub fn targeted(&self) -> bool {
        self.policy.sticky.is_some() || self.policy.hash_key.is_some()
    }

    /// Whether its backends have limits, so that requests go through its gate.
    pub fn limited(&self) -> bool {
        self.policy.overload.limited()
    }

    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.stats
    }

    /// Whether the last pick had to fail open.
    pub fn is_failing_open(&self) -> bool {
        self.stats.failing_open.load(Ordering::Relaxed)
    }

    /// The member a sticky token names, when it may take this request: available, not tried,
    /// and, for a backup, only while no primary is available (failback beats affinity).
    pub fn pinned(&self, token: u64, tried: &[Arc<Backend>]) -> Option<&Arc<Backend>> {
        let (backend, role) = self.pinned.get(&token)?;
        let untried = !tried.iter().any(|t| Arc::ptr_eq(t, backend));
        let tier_ok = *role == Role::Primary || !self.primaries.any_available();
        (untried && tier_ok && backend.health().is_available()).then_some(backend)
    }

    /// Whether `token` is a sticky token of one of this pool's backends.
    pub fn issued(&self, token: u64) -> bool {
        self.pinned.contains_key(&token)
    }

    /// Whether `backend` is among those a request would be sent to now: the available
    /// primaries; else the available backups; else, failing open, every enabled member.
    pub fn would_pick(&self, backend: &Backend, role: Role) -> bool {
        if self.primaries.any_available() {
            return role == Role::Primary && backend.health().is_available();
        }
        if self.backups.any_available() {
            return role == Role::Backup && backend.health().is_available();
        }
        self.policy.fail_open && backend.health().is_enabled()
    }

    /// The sticky token for `backend` of this pool.
    pub fn sticky_token(&self, backend: &Backend) -> u64 {
        Sticky::token(&self.name, backend.address().as_str())
    }

    /// Marks the pool as replaced by a newer snapshot.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// The member at `address`, if any.
    pub fn find(&self, address: &http::uri::Authority) -> Option<(&Arc<Backend>, Role)> {
        self.members().find(|(b, _)| b.address() == address)
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Every backend with its role, primaries first.
    pub fn members(&self) -> impl Iterator<Item = (&Arc<Backend>, Role)> {
        let primaries = self.primaries.backends.iter().map(|b| (b, Role::Primary));
        let backups = self.backups.backends.iter().map(|b| (b, Role::Backup));
        primaries.chain(backups)
    }

    /// The backend for the next attempt, never one of `tried` (the backends that already failed
    /// this request). `key` is the request's hash key, for consistent hashing.
    pub fn pick(&self, tried: &[Arc<Backend>], key: Option<u64>) -> Option<&Arc<Backend>> {
        let untried = |b: &Backend| !tried.iter().any(|t| std::ptr::eq(Arc::as_ptr(t), b));
        let available = |b: &Backend| b.health().is_available() && untried(b);
        let picked = self
            .primaries
            .pick(available, key)
            .or_else(|| self.backups.pick(available, key));
        if picked.is_some() {
            self.set_failing_open(false);
            return picked;
        }
        let everyone = self.everyone.as_ref()?;
        let enabled = |b: &Backend| b.health().is_enabled() && untried(b);
        let picked = everyone.pick(enabled, key);
        // A retry that only excluded the available backends it tried is not the pool failing.
        if picked.is_some() && !self.primaries.any_available() && !self.backups.any_available() {
            self.set_failing_open(true);
        }
        picked
    }

    /// A slot for the next attempt of a request that can use what `want` says, by the rules of
    /// [`Pool::pick`], on a backend below its limit. A request with a sticky token or a
    /// consistent-hash key takes only its own backend (`Full` while that one is at its limit);
    /// any other takes the strategy's choice among the serving tier's backends with a free
    /// slot. Tiers are chosen by availability alone: a full primary does not send requests to
    /// the backups.
    pub fn acquire(&self, want: &Want) -> Acquire {
        let own = match (
            want.pinned.and_then(|t| self.pinned(t, &want.tried)),
            want.key,
        ) {
            (Some(pinned), _) => Some(pinned),
            (None, Some(key)) if self.strategy == Strategy::ConsistentHash => {
                match self.pick(&want.tried, Some(key)) {
                    Some(home) => Some(home),
                    None => return Acquire::Nothing,
                }
            }
            (None, _) => None,
        };
        if let Some(own) = own {
            return match own.try_start_request() {
                Some(in_flight) => Acquire::Got(in_flight),
                None => Acquire::Busy(Arc::clone(own)),
            };
        }
        let untried = |b: &Backend| !want.tried.iter().any(|t| std::ptr::eq(Arc::as_ptr(t), b));
        let available = |b: &Backend| b.health().is_available() && untried(b);
        for tier in [&self.primaries, &self.backups] {
            if tier.backends.iter().any(|b| available(b)) {
                self.set_failing_open(false);
                return take_slot(tier, |b| available(b), want.key);
            }
        }
        match &self.everyone {
            Some(everyone) => {
                let enabled = |b: &Backend| b.health().is_enabled() && untried(b);
                if !everyone.backends.iter().any(|b| enabled(b)) {
                    return Acquire::Nothing;
                }
                self.set_failing_open(true);
                take_slot(everyone, enabled, want.key)
            }
            None => Acquire::Nothing,
        }
    }

    /// A backend passed its health checks again: fail-open ends now if any backend is
    /// available, not at the next request (which may be long in coming).
    pub fn backend_recovered(&self) {
        if self.primaries.any_available() || self.backups.any_available() {
            self.set_failing_open(false);
        }
    }

    /// Logs the start and end of fail-open, once each.
    fn set_failing_open(&self, on: bool) {
        // A plain load first: the swap (a write) only happens on a change.
        let failing_open = &self.stats.failing_open;
        if failing_open.load(Ordering::Relaxed) == on
            || failing_open.swap(on, Ordering::Relaxed) == on
        {
            return;
        }
        if on {
            self.stats.fail_open_started.inc();
            warn!(pool = %self.name, "fail-open started: no backend is available, spreading over all");
        } else {
            info!(pool = %self.name, "fail-open ended: a backend is available again");
        }
    }

    /// A request to `backend` got a response that does not count as a failure.
    pub fn record_success(&self, backend: &Backend) {
        backend.health().record_success();
    }

    /// A request to `backend` failed (connect error, reset, timeout, or 502/503/504 from it);
    /// ejects it after `consecutive_failures` in a row, within `max_ejected_percent` of its tier
    /// (primaries beyond it while a backup is available to take over).
    pub fn record_failure(&self, backend: &Backend, reason: &str) {
        let outlier = &self.policy.outlier;
        let streak = backend.health().record_failure();
        if outlier.consecutive_failures == 0 || streak < outlier.consecutive_failures {
            return;
        }
        let may_eject = match self.role_of(backend) {
            // With a backup to take over, ejecting primaries beyond the cap loses nothing.
            Some(Role::Primary) => {
                self.primaries.may_eject(outlier.max_ejected_percent)
                    || self
                        .backups
                        .backends
                        .iter()
                        .any(|b| b.health().is_available())
            }
            Some(Role::Backup) => self.backups.may_eject(outlier.max_ejected_percent),
            None => false,
        };
        if !may_eject {
            return;
        }
        // Live traffic can eject a backend again before the pool's watcher has seen the last
        // ejection run out: that end is reported first, so each ejection and each end of one
        // is one event (reporting compares with the state now: nothing if it is still ejected).
        if backend.stats().last_state() == BackendState::Ejected {
            super::transitions::report(&self.name, backend, "ejection period over");
        }
        if let Some(period) = backend
            .health()
            .eject(outlier.base_ejection, outlier.max_ejection)
        {
            backend.stats().ejections.inc();
            let why = format!(
                "{streak} consecutive failures, the last: {reason}; ejected for {period:?}"
            );
            super::transitions::report(&self.name, backend, &why);
        }
    }

    /// `key`'s preference list over the primaries: `n` distinct backends, home first (consistent
    /// hashing only). Health is not considered: this is where the key lives. `key` is the key as
    /// the request carries it (a header value, a cookie value, a decoded query value, a path, a
    /// client address). `None` for an empty key too: a request carrying one is spread at random.
    pub fn replicas(&self, key: &str, n: usize) -> Option<Vec<&Arc<Backend>>> {
        self.replicas_of_hash(crate::upstream::affinity::key_hash(key)?, n)
    }

    /// [`Pool::replicas`] for a key already hashed.
    pub fn replicas_of_hash(&self, key: u64, n: usize) -> Option<Vec<&Arc<Backend>>> {
        let order = self.primaries.balancer.replicas(key, n)?;
        Some(
            order
                .into_iter()
                .map(|i| &self.primaries.backends[i])
                .collect(),
        )
    }

    fn role_of(&self, backend: &Backend) -> Option<Role> {
        self.members()
            .find(|(b, _)| std::ptr::eq(Arc::as_ptr(b), backend))
            .map(|(_, role)| role)
    }
}

/// A slot on the strategy's choice among `tier`'s `eligible` backends with one free.
fn take_slot(tier: &Tier, eligible: impl Fn(&Backend) -> bool, key: Option<u64>) -> Acquire {
    // A slot seen free can be taken by another request before this one's count lands.
    for _ in 0..4 {
        let Some(backend) = tier.pick(|b| eligible(b) && b.has_free_slot(), key) else {
            return Acquire::Full;
        };
        if let Some(in_flight) = backend.try_start_request() {
            return Acquire::Got(in_flight);
        }
    }
    Acquire::Full
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::health::AdminState;
    use http::uri::Authority;

    fn backends(ports: &[u16]) -> Vec<Arc<Backend>> {
        ports
            .iter()
            .map(|p| {
                let address: Authority = format!("127.0.0.1:{p}").parse().unwrap();
                Backend::new(address, 1, true)
            })
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            retries: 2,
            fail_open: false,
            balance_factor: None,
            hash_key: None,
            sticky: None,
            outlier: Outlier {
                consecutive_failures: 2,
                base_ejection: Duration::from_secs(60),
                ..Outlier::default()
            },
            health: None,
            overload: Overload::default(),
        }
    }

    fn pool(strategy: Strategy, primaries: &[u16], backups: &[u16], policy: Policy) -> Pool {
        Pool::new(
            "web",
            strategy,
            backends(primaries),
            backends(backups),
            policy,
        )
    }

    fn port(backend: &Backend) -> u16 {
        backend.address().port_u16().unwrap()
    }

    #[test]
    fn tried_backends_are_excluded_by_every_strategy() {
        for name in Strategy::NAMES.split(", ") {
            let strategy = Strategy::from_name(name).unwrap();
            let pool = pool(strategy, &[1, 2, 3], &[], policy());
            let failed = vec![Arc::clone(&pool.primaries.backends[1])];
            for _ in 0..50 {
                let picked = pool.pick(&failed, Some(42)).expect("two members remain");
                assert_ne!(port(picked), 2, "{strategy} re-picked the tried backend");
            }
        }
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_available() {
        let pool = pool(Strategy::RoundRobin, &[1, 2], &[9], policy());
        pool.primaries.backends[0]
            .health()
            .set_admin(AdminState::Disabled);
        assert_eq!(port(pool.pick(&[], None).unwrap()), 2);
        pool.primaries.backends[1]
            .health()
            .set_admin(AdminState::Draining);
        assert_eq!(
            port(pool.pick(&[], None).unwrap()),
            9,
            "no primary left: the backup serves"
        );
        pool.primaries.backends[1]
            .health()
            .set_admin(AdminState::Enabled);
        assert_eq!(port(pool.pick(&[], None).unwrap()), 2, "failback at once");
    }

    #[test]
    fn nothing_available_is_none_unless_fail_open() {
        let closed = pool(Strategy::RoundRobin, &[1], &[], policy());
        closed.primaries.backends[0]
            .health()
            .eject(Duration::from_secs(60), Duration::from_secs(60));
        assert!(closed.pick(&[], None).is_none());

        let open = pool(
            Strategy::RoundRobin,
            &[1],
            &[],
            Policy {
                fail_open: true,
                ..policy()
            },
        );
        open.primaries.backends[0]
            .health()
            .eject(Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(
            port(open.pick(&[], None).unwrap()),
            1,
            "fail-open uses the ejected backend"
        );
        open.primaries.backends[0]
            .health()
            .set_admin(AdminState::Draining);
        assert!(open.pick(&[], None).is_none(), "but never a drained one");
    }

    #[test]
    fn consecutive_failures_eject_within_the_percentage() {
        let pool = pool(Strategy::RoundRobin, &[1, 2, 3], &[], policy());
        let [a, b, _c] = [0, 1, 2].map(|i| Arc::clone(&pool.primaries.backends[i]));
        pool.record_failure(&a, "test");
        assert!(a.health().is_available(), "one failure is not enough");
        pool.record_failure(&a, "test");
        assert_eq!(a.health().state(), BackendState::Ejected);
        pool.record_failure(&b, "test");
        pool.record_failure(&b, "test");
        assert!(
            b.health().is_available(),
            "a second ejection would pass 50% of 3 primaries"
        );
    }

    #[test]
    fn primaries_are_ejected_beyond_the_cap_when_a_backup_can_take_over() {
        let pool = pool(Strategy::RoundRobin, &[1, 2], &[9], policy());
        for index in 0..2 {
            let primary = Arc::clone(&pool.primaries.backends[index]);
            pool.record_failure(&primary, "test");
            pool.record_failure(&primary, "test");
            assert_eq!(primary.health().state(), BackendState::Ejected);
        }
        assert_eq!(port(pool.pick(&[], None).unwrap()), 9, "the backup serves");
    }

    #[test]
    fn fail_open_spreads_over_primaries_and_backups() {
        let pool = pool(
            Strategy::RoundRobin,
            &[1],
            &[9],
            Policy {
                fail_open: true,
                ..policy()
            },
        );
        for (backend, _) in pool.members() {
            backend
                .health()
                .eject(Duration::from_secs(60), Duration::from_secs(60));
        }
        let ports: Vec<u16> = (0..4)
            .map(|_| port(pool.pick(&[], None).unwrap()))
            .collect();
        assert_eq!(ports, [1, 9, 1, 9]);
    }

    #[test]
    fn success_breaks_the_failure_streak() {
        let pool = pool(Strategy::RoundRobin, &[1, 2], &[], policy());
        let a = Arc::clone(&pool.primaries.backends[0]);
        pool.record_failure(&a, "test");
        pool.record_success(&a);
        pool.record_failure(&a, "test");
        assert!(a.health().is_available());
    }

    #[test]
    fn least_connections_sees_live_in_flight_counts() {
        let pool = pool(Strategy::LeastConnections, &[1, 2, 3], &[], policy());
        let _busy0 = pool.primaries.backends[0].start_request();
        let _busy2 = pool.primaries.backends[2].start_request();
        assert_eq!(port(pool.pick(&[], None).unwrap()), 2);
    }
}
