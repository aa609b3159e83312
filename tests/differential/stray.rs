//! Bytes a backend sends after the head of a response that has no body (a 204, a 304) are not
//! part of it: they must reach neither the client nor the next exchange on the connection.

use super::common::{self, Certs};
use super::responses::{CLIENTS, Method, POOL, Session};
use crate::support::recorder::scripted_keep_alive_backend;
use crate::support::wire;

/// The answer a backend gives on a connection after the first: told apart from the first.
pub const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";

/// For each bodiless response with stray bytes after its head, and each client: a backend
/// answering it first on each connection and [`SECOND`] after; several requests in a row (on one
/// client connection while the proxy keeps it) must each get one of the two, whole: never an
/// error from the stray bytes read as a response, nor the stray bytes themselves.
pub async fn check(invariant: &str, cases: &[(&'static str, &'static [u8], u16)]) {
    let certs = Certs::new();
    let mut failures = Vec::new();
    for &(name, reply, status) in cases {
        for client in CLIENTS {
            let backend = scripted_keep_alive_backend(reply, SECOND, false).await;
            let proxy = certs.proxy(backend, POOL).await;
            let mut session = Session::new(&proxy, client);
            for (index, method) in [Method::Get, Method::Get, Method::Post, Method::Get]
                .into_iter()
                .enumerate()
            {
                let outcome = session.send(method).await;
                let fine = match &outcome {
                    Ok(o) => {
                        (o.status == status && o.body.is_empty())
                            || (index > 0 && o.status == 200 && o.body == b"second")
                    }
                    Err(_) => false,
                };
                if !fine {
                    let got = match &outcome {
                        Ok(o) => format!("{} {:?}", o.status, wire::escape(&o.body)),
                        Err(why) => format!("no response: {why}"),
                    };
                    let what = format!(
                        "request {} ({}) got {got}; expected {status}, or 200 \"second\"",
                        index + 1,
                        method.name()
                    );
                    failures.push((name.to_owned(), format!("[{client}] {what}")));
                }
            }
        }
    }
    common::assert_none(invariant, cases.len(), &failures);
}
