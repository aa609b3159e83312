//! From a request to what serves it: its route (first match), the route's rate limit, and the
//! route's target: a pool, one of a split's pools, or an answer written here (a `redirect` or a
//! `respond`, with the route's response header rules applied).

use std::sync::Arc;

use http::{HeaderValue, Request, Response, header};

use super::ProxyBody;
use super::client_ip::ClientAddr;
use super::error::ProxyError;
use super::forward::Forwarding;
use super::header_rules::{self, Facts};
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
    Answered(Response<ProxyBody>),
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
        return Err(ProxyError::RateLimited {
            route: Arc::clone(&settings.name),
            retry_after: refusal.retry_after,
            quota: limiter.config().count,
            window: limiter.config().per,
        });
    }
    let pool = match route.target() {
        Target::Pool(pool) => pool,
        Target::Split(split) => split.choose(request, client.ip),
        Target::Redirect(redirect) => {
            return Ok(Routed::Answered(redirected(
                redirect, route, request, client,
            )));
        }
        Target::Respond(respond) => {
            return Ok(Routed::Answered(responded(respond, route, request, client)));
        }
    };
    let rewritten = route
        .rewrite()
        .and_then(|rule| rewrite::rewritten(rule, &path, request.uri()));
    Ok(Routed::Forward(Forwarding {
        route,
        pool,
        rewritten,
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
    let location = header_rules::render(&redirect.to, &facts).and_then(|to| {
        let Some(query) = request.uri().query() else {
            return Some(to);
        };
        let mut target = to.as_bytes().to_vec();
        target.push(if target.contains(&b'?') { b'&' } else { b'?' });
        target.extend_from_slice(query.as_bytes());
        HeaderValue::from_bytes(&target).ok()
    });
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_response_rules(response, route, &facts)
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
