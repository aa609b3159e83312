//! `ProxyError`: every reason the proxy answers a request itself instead of relaying a backend.
//!
//! One variant per condition, each carrying the pool and backend it concerns; one exhaustive match
//! gives each its status. The `Display` text is the response body the client sees: it names the
//! cause and the pool but not backend addresses, which stay in the operator's log.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::uri::Authority;

use crate::config::Priority;
use crate::upstream::overload::ShedReason;

/// Why a request was answered by the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route takes the request's host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// Backends read the path's `..` segments in different ways (`path::routing_path`): after
    /// an empty segment, an escaped slash or a backslash, or with `;parameters`.
    #[error("ambiguous path: backends read its '..' segments differently")]
    AmbiguousPath,
    /// The pool has no backend that may take a request now.
    #[error("no healthy backend in pool \"{pool}\"")]
    NoHealthyBackend { pool: Arc<str> },
    /// The TCP connect to the backend did not complete in time.
    #[error("upstream connect timeout in pool \"{pool}\" after {after:?}")]
    ConnectTimeout {
        pool: Arc<str>,
        backend: Authority,
        after: Duration,
    },
    /// The TCP connect to the backend failed.
    #[error("upstream connect error in pool \"{pool}\": {reason}")]
    ConnectFailed {
        pool: Arc<str>,
        backend: Authority,
        reason: String,
    },
    /// The TLS handshake with the backend failed. The client is told only that: `reason`
    /// names certificates and addresses, and goes to the log.
    #[error("upstream TLS handshake failed in pool \"{pool}\"")]
    TlsFailed {
        pool: Arc<str>,
        backend: Authority,
        reason: String,
    },
    /// An upgrade (WebSocket) routed to a pool that speaks HTTP/2 to its backends, where the
    /// `Upgrade` mechanism does not exist: refused rather than sent as a plain request.
    #[error("pool \"{pool}\" speaks HTTP/2 to its backends: an upgrade cannot pass")]
    UpgradeUnsupported { pool: Arc<str> },
    /// The backend sent no response head within the response timeout.
    #[error("upstream timeout in pool \"{pool}\": no response within {after:?}")]
    ResponseTimeout {
        pool: Arc<str>,
        backend: Authority,
        after: Duration,
    },
    /// The backend reset or closed the connection, or did not speak HTTP.
    #[error("upstream error in pool \"{pool}\": {reason}")]
    UpstreamFailed {
        pool: Arc<str>,
        backend: Authority,
        reason: String,
    },
    /// The client's request body failed while it was being forwarded.
    #[error("request body could not be read: {reason}")]
    RequestBody {
        pool: Arc<str>,
        backend: Authority,
        reason: String,
    },
    /// The client's request body went past `max_body` while it was being forwarded.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        pool: Arc<str>,
        backend: Authority,
        limit: u64,
    },
    /// The client's request body stalled for `request_body_idle`.
    #[error("request body timeout: no data for {idle:?}")]
    BodyIdle {
        pool: Arc<str>,
        backend: Authority,
        idle: Duration,
    },
    /// The pool's backends were at their limits and its queue shed the request
    /// (`[pool.NAME.overload]`); no backend saw it.
    #[error("overloaded: pool \"{pool}\" shed a {} priority request ({})", priority.name(), reason.describe())]
    Shed {
        pool: Arc<str>,
        priority: Priority,
        reason: ShedReason,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// The client went past its route's `rate_limit`; no backend saw the request.
    #[error("too many requests: route \"{route}\" allows {quota} per {window:?}")]
    RateLimited {
        route: Arc<str>,
        /// Until the client's next request would pass; sent as `Retry-After`.
        retry_after: Duration,
        /// The limit: `quota` requests per `window`.
        quota: u32,
        window: Duration,
    },
    /// A reload removed the pool while the request waited in its queue.
    #[error("pool \"{pool}\" was removed by a reload while the request waited")]
    PoolRemoved { pool: Arc<str> },
    /// The whole request took longer than `timeouts.request`.
    #[error("request timeout: no response within {after:?}")]
    Deadline { after: Duration },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::AmbiguousPath => StatusCode::BAD_REQUEST,
            ProxyError::NoHealthyBackend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Shed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::PoolRemoved { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpgradeUnsupported { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::TlsFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the client connection must close after the answer: the request's body was not
    /// read to its end, so the next request's start is unknown.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::RequestBody { .. }
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::BodyIdle { .. }
        )
    }

    /// How long the client is asked to wait before trying again (`Retry-After`), if at all.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Shed { retry_after, .. } | ProxyError::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The pool and backend the error concerns, for the log line.
    pub fn location(&self) -> (Option<&str>, Option<&Authority>) {
        match self {
            ProxyError::NoRoute
            | ProxyError::AmbiguousPath
            | ProxyError::Deadline { .. }
            | ProxyError::RateLimited { .. } => (None, None),
            ProxyError::NoHealthyBackend { pool }
            | ProxyError::UpgradeUnsupported { pool }
            | ProxyError::Shed { pool, .. }
            | ProxyError::PoolRemoved { pool } => (Some(pool), None),
            ProxyError::ConnectTimeout { pool, backend, .. }
            | ProxyError::ConnectFailed { pool, backend, .. }
            | ProxyError::TlsFailed { pool, backend, .. }
            | ProxyError::ResponseTimeout { pool, backend, .. }
            | ProxyError::UpstreamFailed { pool, backend, .. }
            | ProxyError::RequestBody { pool, backend, .. }
            | ProxyError::BodyTooLarge { pool, backend, .. }
            | ProxyError::BodyIdle { pool, backend, .. } => (Some(pool), Some(backend)),
        }
    }
}
