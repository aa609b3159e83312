//! The admin API's registry writes when registrations are shared through etcd
//! (`[registry] etcd`): each goes to etcd, and the answer waits until this instance's watch has
//! served it, so that the reply shows the member as every instance will. etcd unreachable: 503.

use std::time::Duration;

use http::StatusCode;
use http::uri::Authority;

use super::{Reply, error, json_reply, no_content, views};
use crate::control::Control;
use crate::control::etcd::{EtcdError, Shared};
use crate::control::registry::Entry;
use crate::upstream::health::AdminState;

/// How long a reply waits for the watch to bring a write back.
const APPLIED_WITHIN: Duration = Duration::from_secs(2);

pub async fn register(control: &Control, shared: &Shared, entry: Entry) -> Reply {
    let (pool, address) = (entry.pool.clone(), entry.address.clone());
    match shared.register(&entry).await {
        Ok(created) => {
            let mut reply = applied(control, &pool, &address, |found| found.is_some()).await;
            if created && reply.status() == StatusCode::OK {
                *reply.status_mut() = StatusCode::CREATED;
            }
            reply
        }
        Err(failure) => unavailable(&failure),
    }
}

/// `Ok(None)`: deleted; `Ok(Some(reply))`: there was nothing to delete, the caller says why.
pub async fn deregister(
    control: &Control,
    shared: &Shared,
    pool: &str,
    address: &Authority,
) -> Result<bool, Reply> {
    match shared.deregister(pool, address).await {
        Ok(true) => {
            applied(control, pool, address, |found| found.is_none()).await;
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(failure) => Err(unavailable(&failure)),
    }
}

pub async fn set_admin(
    control: &Control,
    shared: &Shared,
    pool: &str,
    address: &Authority,
    admin: AdminState,
) -> Reply {
    match shared.set_admin(pool, address, admin).await {
        Ok(true) => {
            applied(control, pool, address, |found| {
                found.is_some_and(|state| state == admin)
            })
            .await
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no registration of {address} in pool \"{pool}\""),
        ),
        Err(failure) => unavailable(&failure),
    }
}

pub async fn heartbeat(
    control: &Control,
    shared: &Shared,
    pool: &str,
    address: &Authority,
) -> Reply {
    match shared.heartbeat(pool, address).await {
        Ok(true) => applied(control, pool, address, |_| true).await,
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no registration of {address} in pool \"{pool}\" (its lease may have expired)"),
        ),
        Err(failure) => unavailable(&failure),
    }
}

/// Waits until `done` holds of the member at `address` (`None` when it is not a member; its
/// operator state otherwise), then answers with the member, or 204 when it is gone.
async fn applied(
    control: &Control,
    pool: &str,
    address: &Authority,
    done: impl Fn(Option<AdminState>) -> bool,
) -> Reply {
    let deadline = tokio::time::Instant::now() + APPLIED_WITHIN;
    loop {
        let state = control.state().load_full();
        let member = state
            .pool(pool)
            .and_then(|p| p.find(address).map(|(b, role)| (p, b, role)));
        let admin = member.map(|(_, backend, _)| backend.health().admin());
        if done(admin) || tokio::time::Instant::now() >= deadline {
            return match member {
                Some((pool, backend, role)) => {
                    json_reply(StatusCode::OK, views::backend(control, pool, backend, role))
                }
                None => no_content(),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unavailable(failure: &EtcdError) -> Reply {
    error(StatusCode::SERVICE_UNAVAILABLE, failure)
}
