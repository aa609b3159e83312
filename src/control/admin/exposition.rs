//! `GET /metrics`: every series read at scrape time from the live objects (the current snapshot,
//! the listeners, the control's reload counts) and encoded by prometheus-client's Prometheus text
//! encoder (format 0.0.4, which every Prometheus-compatible scraper reads).

use std::fmt::Error;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::Priority;
use crate::downstream::ListenerStats;
use crate::proxy::state::State;
use crate::telemetry::metrics::{BackendState, HistogramSnapshot, Outcomes, RetryReason};
use crate::upstream::overload::ShedReason;
use crate::upstream::{Backend, Pool};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a scrape reads besides the snapshot.
#[derive(Debug, Default)]
pub struct Process {
    pub listeners: Vec<Arc<ListenerStats>>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// `(change, count)` for each kind of registry change.
    pub registry_changes: Vec<(&'static str, u64)>,
    pub access_log_dropped: u64,
    /// `(pool, source, backends)`: how many backends each source gives each pool.
    pub discovered: Vec<(String, &'static str, u64)>,
    /// `(pool, source, failures)`: failed lookups of a discovery source.
    pub discovery_errors: Vec<(String, &'static str, u64)>,
}

/// The exposition of `state` and `process`.
pub fn render(state: Arc<State>, process: Process) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { state, process }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct Scrape {
    state: Arc<State>,
    process: Process,
}

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        self.requests(&mut encoder)?;
        self.durations(&mut encoder)?;
        self.backends(&mut encoder)?;
        self.pools(&mut encoder)?;
        self.overload(&mut encoder)?;
        self.routes(&mut encoder)?;
        self.process(&mut encoder)
    }
}

impl Scrape {
    fn members(&self) -> impl Iterator<Item = (&Pool, &Backend)> {
        self.state.pools().iter().flat_map(|pool| {
            pool.members()
                .map(move |(backend, _)| (&**pool, &**backend))
        })
    }

    /// `fulcrum_requests_total{pool, backend, code}`.
    fn requests(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "fulcrum_requests",
            "Responses sent, by pool, backend (empty when none was picked) and status code",
            None,
            MetricType::Counter,
        )?;
        let mut each = |pool: &str, backend: &str, outcomes: &Outcomes| -> Result<(), Error> {
            for (code, count) in outcomes.codes.seen() {
                let code = code.to_string();
                let labels = [("pool", pool), ("backend", backend), ("code", &code)];
                counter(&mut family, &labels, count)?;
            }
            Ok(())
        };
        each("", "", self.state.unrouted())?;
        for pool in self.state.pools() {
            each(pool.name(), "", &pool.stats().unattributed)?;
            for (backend, _) in pool.members() {
                each(
                    pool.name(),
                    backend.address().as_str(),
                    &backend.stats().outcomes,
                )?;
            }
        }
        Ok(())
    }

    /// The two latency histograms, per pool and backend.
    fn durations(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "fulcrum_request_duration_seconds",
            "Time from a request's arrival to its response head",
            None,
            MetricType::Histogram,
        )?;
        for (pool, backend) in self.members() {
            let labels = [
                ("pool", &**pool.name()),
                ("backend", backend.address().as_str()),
            ];
            histogram(
                &mut family,
                &labels,
                backend.stats().outcomes.duration.snapshot(),
            )?;
        }
        // Answers without a backend (unrouted; 503: nothing available) appear once there are some.
        let unrouted = self.state.unrouted().duration.snapshot();
        if unrouted.count > 0 {
            histogram(&mut family, &[("pool", ""), ("backend", "")], unrouted)?;
        }
        for pool in self.state.pools() {
            let snapshot = pool.stats().unattributed.duration.snapshot();
            if snapshot.count > 0 {
                let labels = [("pool", &**pool.name()), ("backend", "")];
                histogram(&mut family, &labels, snapshot)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_upstream_connect_duration_seconds",
            "Time to open a TCP connection to a backend",
            None,
            MetricType::Histogram,
        )?;
        for (pool, backend) in self.members() {
            let labels = [
                ("pool", &**pool.name()),
                ("backend", backend.address().as_str()),
            ];
            histogram(&mut family, &labels, backend.stats().connect.snapshot())?;
        }
        Ok(())
    }

    /// In flight, state, ejections and health checks, per backend.
    fn backends(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        self.per_backend(
            encoder,
            (
                "fulcrum_backend_in_flight",
                "Requests sent to a backend whose response has not finished",
                MetricType::Gauge,
            ),
            |backend| Sample::Gauge(backend.in_flight() as i64),
        )?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_backend_state",
            "1 for a backend's current state (healthy, unhealthy, ejected, draining, disabled)",
            None,
            MetricType::Gauge,
        )?;
        for (pool, backend) in self.members() {
            let now = backend.health().state();
            for state in BackendState::ALL {
                let labels = [
                    ("pool", &**pool.name()),
                    ("backend", backend.address().as_str()),
                    ("state", state.name()),
                ];
                gauge(&mut family, &labels, i64::from(now == state))?;
            }
        }
        self.per_backend(
            encoder,
            (
                "fulcrum_backend_ejections",
                "Times a backend was ejected for consecutive failures",
                MetricType::Counter,
            ),
            |backend| Sample::Counter(backend.stats().ejections.get()),
        )?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_backend_state_changes",
            "Backend state changes, by the state changed to",
            None,
            MetricType::Counter,
        )?;
        for (pool, backend) in self.members() {
            for state in BackendState::ALL {
                let labels = [
                    ("pool", &**pool.name()),
                    ("backend", backend.address().as_str()),
                    ("state", state.name()),
                ];
                counter(&mut family, &labels, backend.stats().changes_to(state))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_health_checks",
            "Active health check probes, by result (success, failure)",
            None,
            MetricType::Counter,
        )?;
        for (pool, backend) in self.members() {
            let stats = backend.stats();
            for (result, count) in [
                ("success", stats.checks_passed.get()),
                ("failure", stats.checks_failed.get()),
            ] {
                let labels = [
                    ("pool", &**pool.name()),
                    ("backend", backend.address().as_str()),
                    ("result", result),
                ];
                counter(&mut family, &labels, count)?;
            }
        }
        Ok(())
    }

    /// Retries and fail-open, per pool.
    fn pools(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "fulcrum_retries",
            "Attempts retried on another backend, by reason",
            None,
            MetricType::Counter,
        )?;
        for pool in self.state.pools() {
            for reason in RetryReason::ALL {
                let labels = [("pool", &**pool.name()), ("reason", reason.name())];
                counter(&mut family, &labels, pool.stats().retries(reason))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_pool_fail_open",
            "1 while a pool spreads over unavailable backends because none is available",
            None,
            MetricType::Gauge,
        )?;
        for pool in self.state.pools() {
            gauge(
                &mut family,
                &[("pool", &**pool.name())],
                i64::from(pool.is_failing_open()),
            )?;
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_pool_fail_open_started",
            "Times a pool started failing open",
            None,
            MetricType::Counter,
        )?;
        for pool in self.state.pools() {
            let count = pool.stats().fail_open_started.get();
            counter(&mut family, &[("pool", &**pool.name())], count)?;
        }
        Ok(())
    }

    /// Shedding, queues and limits, per pool with `[pool.NAME.overload]` limits.
    fn overload(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let limited = || self.state.pools().iter().filter(|pool| pool.limited());
        let mut family = encoder.encode_descriptor(
            "fulcrum_requests_shed",
            "Requests answered 503 without a backend because the pool was saturated, by priority \
             and reason (queue_full, evicted, queue_timeout)",
            None,
            MetricType::Counter,
        )?;
        for pool in limited() {
            for priority in Priority::ALL {
                for reason in ShedReason::ALL {
                    let labels = [
                        ("pool", &**pool.name()),
                        ("priority", priority.name()),
                        ("reason", reason.name()),
                    ];
                    counter(&mut family, &labels, pool.gate().shed(priority, reason))?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_pool_queued",
            "Requests waiting in a pool's queue for a free backend, by priority",
            None,
            MetricType::Gauge,
        )?;
        for pool in limited() {
            for priority in Priority::ALL {
                let labels = [("pool", &**pool.name()), ("priority", priority.name())];
                gauge(&mut family, &labels, pool.gate().queued(priority) as i64)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_queue_wait_seconds",
            "Time requests waited in a pool's queue, whatever became of them",
            None,
            MetricType::Histogram,
        )?;
        for pool in limited() {
            let labels = [("pool", &**pool.name())];
            histogram(&mut family, &labels, pool.gate().waited())?;
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_backend_in_flight_limit",
            "Requests a backend takes at once: max_in_flight, or the adaptive limit now",
            None,
            MetricType::Gauge,
        )?;
        for pool in limited() {
            for (backend, _) in pool.members() {
                let labels = [
                    ("pool", &**pool.name()),
                    ("backend", backend.address().as_str()),
                ];
                gauge(&mut family, &labels, i64::from(backend.limit().get()))?;
            }
        }
        Ok(())
    }

    /// Rate limits per route and mirrors per shadow pool.
    fn routes(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(
            "fulcrum_rate_limited",
            "Requests answered 429 because their client went past the route's rate_limit",
            None,
            MetricType::Counter,
        )?;
        for route in self.state.routes() {
            let settings = route.settings();
            if let Some(limiter) = &settings.limiter {
                counter(
                    &mut family,
                    &[("route", &*settings.name)],
                    limiter.refused(),
                )?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_mirror_dropped",
            "Mirrored requests not sent: too many under way to the pool, or none of its backends \
             available",
            None,
            MetricType::Counter,
        )?;
        let mut shadows: Vec<&Pool> = self
            .state
            .routes()
            .iter()
            .filter_map(|route| route.settings().mirror.as_ref())
            .map(|mirror| &**mirror.pool())
            .collect();
        shadows.sort_by_key(|pool| pool.name());
        shadows.dedup_by_key(|pool| pool.name());
        for pool in shadows {
            let dropped = pool.stats().mirrors_dropped.get();
            counter(&mut family, &[("pool", &**pool.name())], dropped)?;
        }
        Ok(())
    }

    /// Listeners, reloads and the build.
    fn process(&self, encoder: &mut DescriptorEncoder) -> Result<(), Error> {
        self.per_listener(
            encoder,
            (
                "fulcrum_downstream_connections",
                "Client connections open now, by listener",
                MetricType::Gauge,
            ),
            |listener| Sample::Gauge(listener.open()),
        )?;
        self.per_listener(
            encoder,
            (
                "fulcrum_downstream_connections",
                "Client connections accepted, by listener",
                MetricType::Counter,
            ),
            |listener| Sample::Counter(listener.accepted()),
        )?;
        self.per_listener(
            encoder,
            (
                "fulcrum_downstream_connections_rejected",
                "Client connections closed at once because a connection limit was reached",
                MetricType::Counter,
            ),
            |listener| Sample::Counter(listener.rejected()),
        )?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_config_reloads",
            "Config reloads, by result (success, failure)",
            None,
            MetricType::Counter,
        )?;
        counter(
            &mut family,
            &[("result", "success")],
            self.process.reloads_succeeded,
        )?;
        counter(
            &mut family,
            &[("result", "failure")],
            self.process.reloads_failed,
        )?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_registry_changes",
            "Runtime registrations (admin API), by change: registered, updated, deregistered, expired",
            None,
            MetricType::Counter,
        )?;
        for (change, count) in &self.process.registry_changes {
            counter(&mut family, &[("change", change)], *count)?;
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_discovery_backends",
            "Backends each source gives a pool: file, api (admin registrations), dns",
            None,
            MetricType::Gauge,
        )?;
        for (pool, source, count) in &self.process.discovered {
            let labels = [("pool", pool.as_str()), ("source", *source)];
            gauge(&mut family, &labels, *count as i64)?;
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_discovery_errors",
            "Failed lookups of a discovery source (the last answer stays in force)",
            None,
            MetricType::Counter,
        )?;
        for (pool, source, count) in &self.process.discovery_errors {
            let labels = [("pool", pool.as_str()), ("source", *source)];
            counter(&mut family, &labels, *count)?;
        }
        let mut family = encoder.encode_descriptor(
            "fulcrum_access_log_dropped",
            "Access log lines dropped because the writer could not keep up",
            None,
            MetricType::Counter,
        )?;
        family.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &self.process.access_log_dropped,
            None,
        )?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_config_generation",
            "Generation of the config in force: 1 at start, one more per successful reload",
            None,
            MetricType::Gauge,
        )?;
        family.encode_gauge(&(self.state.generation() as i64))?;
        let mut family = encoder.encode_descriptor(
            "fulcrum_build_info",
            "Always 1; the version is a label",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut family, &[("version", env!("CARGO_PKG_VERSION"))], 1)
    }
}

/// One sample's value.
enum Sample {
    Counter(u64),
    Gauge(i64),
}

impl Sample {
    fn encode<const N: usize>(
        &self,
        family: &mut MetricEncoder,
        labels: &Labels<'_, N>,
    ) -> Result<(), Error> {
        match *self {
            Sample::Counter(value) => counter(family, labels, value),
            Sample::Gauge(value) => gauge(family, labels, value),
        }
    }
}

impl Scrape {
    /// A family of `kind` with one sample per backend, labelled `pool` and `backend`.
    fn per_backend(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&Backend) -> Sample,
    ) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (pool, backend) in self.members() {
            let labels = [
                ("pool", &**pool.name()),
                ("backend", backend.address().as_str()),
            ];
            value(backend).encode(&mut family, &labels)?;
        }
        Ok(())
    }

    /// A family of `kind` with one sample per listener, labelled `listener`.
    fn per_listener(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        value: impl Fn(&ListenerStats) -> Sample,
    ) -> Result<(), Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for listener in &self.process.listeners {
            value(listener).encode(&mut family, &[("listener", listener.address())])?;
        }
        Ok(())
    }
}

fn counter<const N: usize>(
    family: &mut MetricEncoder,
    labels: &Labels<'_, N>,
    value: u64,
) -> Result<(), Error> {
    family
        .encode_family(labels)?
        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)
}

fn gauge<const N: usize>(
    family: &mut MetricEncoder,
    labels: &Labels<'_, N>,
    value: i64,
) -> Result<(), Error> {
    family.encode_family(labels)?.encode_gauge(&value)
}

fn histogram<const N: usize>(
    family: &mut MetricEncoder,
    labels: &Labels<'_, N>,
    snapshot: HistogramSnapshot,
) -> Result<(), Error> {
    family
        .encode_family(labels)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            snapshot.sum_seconds,
            snapshot.count,
            &snapshot.buckets,
            None,
        )
}
