//! Overload protection: each backend takes at most its limit of requests at once, and a pool's
//! requests beyond what its backends take wait in a queue served by priority, or are shed, the
//! least important first.
//!
//! - `limit.rs`: a backend's limit, none, fixed or adaptive.
//! - `gradient.rs`: the adaptive limit's controller, pure (the algorithm is described there).
//! - `queue.rs`: the order waiting requests are served and shed in, pure.
//! - `gate.rs`: a pool's [`Gate`]: taking a slot, waiting for one, shedding, and the counts.
//!
//! Which backend a request may use and whether it has a free slot is the pool's business
//! (`Pool::acquire`); the gate decides who waits and who goes first.

mod gate;
mod gradient;
mod limit;
mod queue;

pub use gate::{Acquire, Gate, Refused, ShedReason, Want};
pub use limit::Limit;
