//! The `Date` header every response carries (RFC 9110 section 6.6.1), formatted once a second
//! per thread rather than once a response, as hyper and nginx cache it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
const LEN: usize = 29;

thread_local! {
    /// The second last formatted, and its text.
    static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
}

/// The current date in IMF-fixdate form.
pub(super) fn today() -> [u8; LEN] {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == LEN {
                text.copy_from_slice(formatted.as_bytes());
                *cached = second;
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
