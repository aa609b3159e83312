//! Admission: how many client connections may be open at once, in all (`max_connections`) and
//! from one IP address (`max_connections_per_ip`). A connection beyond either is closed at once,
//! before a byte is read, and counted; the proxy keeps serving the ones it has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::config::Limits;

/// The open client connections, counted.
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
    /// Open connections per client address; kept only while a per-IP limit is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Full,
    /// Its address has `max_connections_per_ip` open.
    PerIp,
}

impl Refused {
    pub fn name(self) -> &'static str {
        match self {
            Refused::Full => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    /// Its address, when counted per IP.
    ip: Option<IpAddr>,
}

impl Admission {
    /// Admits a connection from `ip` under `limits`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Admitted, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        let mut admitted = Admitted {
            admission: Arc::clone(self),
            ip: None,
        };
        if let Some(per_ip) = limits.max_connections_per_ip {
            let mut counts = self.lock();
            let count = counts.entry(ip).or_default();
            if *count >= per_ip {
                return Err(Refused::PerIp); // `admitted` drops: the total is given back
            }
            *count += 1;
            admitted.ip = Some(ip);
        }
        Ok(admitted)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut counts = self.admission.lock();
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limits_and_frees_places() {
        let admission = Arc::new(Admission::default());
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: Some(2),
            ..Limits::default()
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(a, &limits).unwrap();
        let _second = admission.admit(a, &limits).unwrap();
        assert_eq!(admission.admit(a, &limits).unwrap_err(), Refused::PerIp);
        let _third = admission.admit(b, &limits).unwrap();
        assert_eq!(admission.admit(b, &limits).unwrap_err(), Refused::Full);
        drop(first);
        assert!(
            admission.admit(a, &limits).is_ok(),
            "a closed connection frees its place"
        );
    }
}
