//! From a request to what serves it: its route (first match), the route's rate limit, and the
//! route's target: a pool, one of a split's pools, or an answer written here (a `redirect` or a
//! `respond`, with the route's response header rules applied).

use std::sync::Arc;

use http::{HeaderValue, Request, Response, header};

use super::ProxyBody;
use super::answer::error_response;
use super::client_ip::ClientAddr;
use super::error::ProxyError;
use super::forward::Forwarding;
use super::header_rules::{self, Facts};
use super::request_id;
use super::rewrite;
use super::route::{Asked, Route, Target, host_name};
use super::state::State;
use super::target::request_host;
use crate::config::{Redirect, Respond};
use crate::path::routing_path;

/// What a request's route does with it.
#[derive(Debug)]
pub(super) enum Routed<'a> {
    /// Answered by the route itself.
    Answered(Box<Response<ProxyBody>>),
    /// Forwarded to a pool.
    Forward(Forwarding<'a>),
}

/// Finds the route of `request`, from `client`, and what it does with it.
pub(super) fn dispatch<'a, B>(
    state: &'a State,
    request: &Request<B>,
    client: &ClientAddr,
) -> Result<Routed<'a>, ProxyError> {
    let host = request_host(request).map(host_name);
    let path = routing_path(request.uri().path()).ok_or(ProxyError::AmbiguousPath)?;
    let asked = Asked {
        method: request.method(),
        headers: request.headers(),
        query: request.uri().query(),
    };
    let route = state
        .route(host, &path, &asked)
        .ok_or(ProxyError::NoRoute)?;
    let settings = route.settings();
    if let Some(limiter) = &settings.limiter
        && let Err(refusal) = limiter.check(request.headers(), client.ip)
    {
        let error = ProxyError::RateLimited {
            route: Arc::clone(&settings.name),
            retry_after: refusal.retry_after,
            quota: limiter.config().count,
            window: limiter.config().per,
        };
        // The route's own answer: its response headers apply (CORS, say), as to a respond.
        let id = request.headers().get(request_id::X_REQUEST_ID);
        let refused = error_response(&error, id.unwrap_or(&HeaderValue::from_static("")));
        return Ok(Routed::Answered(Box::new(match route.header_rules() {
            Some(_) => with_response_rules(refused, route, &Facts::of(request, client)),
            None => refused,
        })));
    }
    let (pool, pin) = match route.target() {
        Target::Pool(pool) => (pool, None),
        Target::Split(split) => {
            let choice = split.choose(request, client.ip);
            (choice.pool, choice.pin.map(Box::new))
        }
        Target::Redirect(redirect) => {
            return Ok(Routed::Answered(Box::new(redirected(
                redirect, route, request, client,
            ))));
        }
        Target::Respond(respond) => {
            return Ok(Routed::Answered(Box::new(responded(
                respond, route, request, client,
            ))));
        }
    };
    let rewritten = route
        .rewrite()
        .and_then(|rule| rewrite::rewritten(rule, &path, request.uri()))
        .map(Box::new);
    Ok(Routed::Forward(Forwarding {
        route,
        pool,
        rewritten,
        pin,
    }))
}

/// A route's `redirect`: its `Location` filled in, the request's query appended.
fn redirected<B>(
    redirect: &Redirect,
    route: &Route,
    request: &Request<B>,
    client: &ClientAddr,
) -> Response<ProxyBody> {
    let facts = Facts::of(request, client);
    let mut response = Response::new(ProxyBody::text(""));
    *response.status_mut() = redirect.status;
    let location =
        header_rules::render(&redirect.to, &facts).and_then(|to| match request.uri().query() {
            Some(query) => HeaderValue::from_bytes(&with_query(to.as_bytes(), query)).ok(),
            None => Some(to),
        });
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_response_rules(response, route, &facts)
}

/// `location` with `query` appended: after its own query if it has one, before its fragment.
fn with_query(location: &[u8], query: &str) -> Vec<u8> {
    let split = location
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(location.len());
    let (base, fragment) = location.split_at(split);
    let mut out = base.to_vec();
    match base.iter().position(|&b| b == b'?') {
        None => out.push(b'?'),
        Some(_) if base.ends_with(b"?") || base.ends_with(b"&") => {}
        Some(_) => out.push(b'&'),
    }
    out.extend_from_slice(query.as_bytes());
    out.extend_from_slice(fragment);
    out
}

/// A route's `respond`.
fn responded<B>(
    respond: &Respond,
    route: &Route,
    request: &Request<B>,
    client: &ClientAddr,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(respond.body.clone()));
    *response.status_mut() = respond.status;
    if !respond.body.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, respond.content_type.clone());
    }
    match route.header_rules() {
        Some(_) => with_response_rules(response, route, &Facts::of(request, client)),
        None => response,
    }
}

fn with_response_rules(
    mut response: Response<ProxyBody>,
    route: &Route,
    facts: &Facts,
) -> Response<ProxyBody> {
    if let Some((_, rules)) = route.header_rules() {
        header_rules::apply(rules, response.headers_mut(), facts);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn the_query_goes_after_the_locations_own_and_before_its_fragment() {
        for (location, expected) in [
            ("/new", "/new?a=1"),
            ("/new?from=old", "/new?from=old&a=1"),
            ("/new?", "/new?a=1"),
            ("/new?x=1&", "/new?x=1&a=1"),
            ("/new#top", "/new?a=1#top"),
            ("https://b.test/p?x=1#f?g", "https://b.test/p?x=1&a=1#f?g"),
        ] {
            let got = with_query(location.as_bytes(), "a=1");
            assert_eq!(String::from_utf8(got).unwrap(), expected, "{location}");
        }
    }
}
