//! The `Date` header every response carries (RFC 9110 section 6.6.1), formatted once a second
//! per thread rather than once a response, as hyper and nginx cache it.
//!
//! Whether the second has turned is asked of the proxy's clock (`clock.rs`), whose reading a
//! connection's task already made in this poll: the wall clock is read once a second, to format.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::clock;

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(super) const LEN: usize = 29;

thread_local! {
    /// Until when the text is today's date (the next second's start), and the text.
    static CACHED: RefCell<(Option<Instant>, [u8; LEN])> = const { RefCell::new((None, [0; LEN])) };
}

/// The current date in IMF-fixdate form.
pub(super) fn today() -> [u8; LEN] {
    let now = clock::now();
    CACHED.with_borrow_mut(|(until, text)| {
        if until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now();
            let formatted = httpdate::fmt_http_date(wall);
            if formatted.len() == LEN {
                text.copy_from_slice(formatted.as_bytes());
                let into_second = wall
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos();
                *until =
                    Some(now + Duration::from_secs(1) - Duration::from_nanos(into_second.into()));
            }
        }
        *text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_imf_fixdate_of_now() {
        let out = today();
        let text = std::str::from_utf8(&out).unwrap();
        let parsed = httpdate::parse_http_date(text).expect("an HTTP date");
        let skew = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(skew.as_secs() <= 2, "{text} is now");
        assert!(text.ends_with(" GMT"), "{text}");
    }
}
