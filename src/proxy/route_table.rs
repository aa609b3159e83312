//! The route table ([`RouteTable`]): routes in file order, indexed by host so that finding a
//! request's route reads only the routes that could take it, as nginx finds a `server` by a hash
//! of its names before it looks at locations.
//!
//! Each route is filed under its exact host, under its wildcard's suffix, or with the routes that
//! name no host. A request's candidates are the routes filed under its host, under each suffix of
//! its host (`b.example.com`, `example.com`, `com` for `a.b.example.com`), and those without a
//! host: a few short lists, each in file order, read merged so that the first route to match is
//! still the first in the file. A host with more labels than the merge holds is matched against
//! every route, the same answer by the long way; so is every table of fewer than 32 routes, for
//! which hashing the host costs more than reading them all (`benches/routing.rs`).

use std::collections::HashMap;

use crate::config::HostPattern;

use super::route::{Asked, Route};

/// Tables of fewer routes are read in order: hashing the host would cost more than reading them.
const INDEXED_FROM: usize = 32;
/// Lists merged at once: those without a host, the exact host's, and one per suffix.
const MAX_LISTS: usize = 8;
/// Longest host looked up in the index (a DNS name is at most 253 bytes).
const LONGEST_HOST: usize = 255;

/// Routes in file order, indexed by host.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Lower-cased exact host → its routes' positions, ascending.
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// A wildcard's suffix without its dot (`example.com` for `*.example.com`) → positions.
    wildcard: HashMap<Box<str>, Box<[u32]>>,
    /// Positions of the routes that name no host.
    hostless: Box<[u32]>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut hostless = Vec::new();
        for (position, route) in routes.iter().enumerate() {
            let position = position as u32;
            match route.host() {
                None => hostless.push(position),
                Some(HostPattern::Exact(name)) => exact
                    .entry(name.as_str().into())
                    .or_default()
                    .push(position),
                Some(HostPattern::Wildcard(suffix)) => {
                    let suffix = suffix.strip_prefix('.').unwrap_or(suffix);
                    wildcard.entry(suffix.into()).or_default().push(position)
                }
            }
        }
        let boxed = |map: HashMap<Box<str>, Vec<u32>>| {
            map.into_iter()
                .map(|(host, positions)| (host, positions.into_boxed_slice()))
                .collect()
        };
        RouteTable {
            routes,
            exact: boxed(exact),
            wildcard: boxed(wildcard),
            hostless: hostless.into_boxed_slice(),
        }
    }

    /// Every route, in file order.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// The first route that takes a request for `host` (port stripped) and `path`, with what
    /// else `asked` says of it.
    pub fn find(&self, host: Option<&str>, path: &str, asked: &Asked<'_>) -> Option<&Route> {
        if self.routes.len() < INDEXED_FROM {
            return self.scan(host, path, asked);
        }
        let mut lists: [&[u32]; MAX_LISTS] = [&[]; MAX_LISTS];
        lists[0] = &self.hostless;
        let mut count = 1;
        let mut lowered = [0u8; LONGEST_HOST];
        if let Some(host) = host {
            let Some(lower) = lower_case(host, &mut lowered) else {
                return self.scan(Some(host), path, asked);
            };
            if let Some(positions) = self.exact.get(lower) {
                lists[count] = positions;
                count += 1;
            }
            if !self.wildcard.is_empty() {
                for (dot, _) in lower.match_indices('.') {
                    let Some(positions) = self.wildcard.get(&lower[dot + 1..]) else {
                        continue;
                    };
                    if count == MAX_LISTS {
                        return self.scan(Some(host), path, asked);
                    }
                    lists[count] = positions;
                    count += 1;
                }
            }
        }
        self.merged(&lists[..count], host, path, asked)
    }

    /// The first route of `lists` (positions, each ascending) that takes the request, read in
    /// file order.
    fn merged(
        &self,
        lists: &[&[u32]],
        host: Option<&str>,
        path: &str,
        asked: &Asked<'_>,
    ) -> Option<&Route> {
        let mut next = [0usize; MAX_LISTS];
        loop {
            let (list, position) = lists
                .iter()
                .enumerate()
                .filter_map(|(list, positions)| Some((list, *positions.get(next[list])?)))
                .min_by_key(|(_, position)| *position)?;
            next[list] += 1;
            let route = &self.routes[position as usize];
            if route.matches(host, path, asked) {
                return Some(route);
            }
        }
    }

    /// Every route in file order: for hosts the index does not cover.
    fn scan(&self, host: Option<&str>, path: &str, asked: &Asked<'_>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matches(host, path, asked))
    }
}

/// `host` in lower case, written into `buffer`; `None` when it does not fit.
fn lower_case<'b>(host: &str, buffer: &'b mut [u8; LONGEST_HOST]) -> Option<&'b str> {
    let out = buffer.get_mut(..host.len())?;
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing (proptest): the index finds what reading every route in order finds.

    use std::sync::Arc;

    use http::{HeaderMap, Method};
    use proptest::prelude::*;

    use super::*;
    use crate::config::{Priority, Strategy};
    use crate::proxy::route::Target;
    use crate::upstream::{Policy, Pool};

    fn table(routes: &[(Option<&str>, Option<&str>)]) -> RouteTable {
        let pool = Arc::new(Pool::new(
            "p",
            Strategy::RoundRobin,
            Vec::new(),
            Vec::new(),
            Policy::default(),
        ));
        RouteTable::new(
            routes
                .iter()
                .map(|(host, prefix)| {
                    Route::new(
                        host.map(|h| HostPattern::parse(h).unwrap()),
                        prefix.map(str::to_owned),
                        Target::Pool(Arc::clone(&pool)),
                        Priority::Normal,
                    )
                })
                .collect(),
        )
    }

    const HOSTS: [&str; 7] = [
        "a.test",
        "*.test",
        "*.b.test",
        "b.test",
        "*.c.b.test",
        "x.c.b.test",
        "*.k.j.i.h.g.f.e",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn the_index_finds_the_first_match_in_file_order(
            routes in prop::collection::vec(
                (prop::option::of(prop::sample::select(HOSTS.to_vec())),
                 prop::option::of(prop::sample::select(vec!["/", "/api"]))),
                1..48,
            ),
            host in prop::option::of(prop::sample::select(vec![
                "a.test", "A.Test", "b.test", "z.b.test", "x.c.b.test", "y.X.c.b.test", "test",
                "other", "a.b.c.d.e.f.g.h.i.j.k.j.i.h.g.f.e", "z.k.j.i.h.g.f.e",
            ])),
            path in prop::sample::select(vec!["/", "/api/x", "/other"]),
        ) {
            let table = table(&routes);
            let headers = HeaderMap::new();
            let asked = Asked { method: &Method::GET, headers: &headers, query: None };
            let found = table.find(host, path, &asked).map(|r| r as *const Route);
            let scanned = table.scan(host, path, &asked).map(|r| r as *const Route);
            prop_assert_eq!(found, scanned);
        }
    }
}
