//! Field values with a grammar of their own: comma-separated token lists (`Connection`, `TE`,
//! `Transfer-Encoding`, `Upgrade`: RFC 9110 section 5.6.1) and `Content-Length` (RFC 9110 section
//! 8.6). One reader of each, used for requests and responses alike.

use http::HeaderValue;

/// The elements of a comma-separated list, each trimmed of optional whitespace; empty elements
/// are skipped, as RFC 9110 section 5.6.1 asks of recipients.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|token| !token.is_empty())
}

/// A `tchar`, a byte a token (a method, a field name, a coding) may hold (RFC 9110 section
/// 5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether any of `values` lists `token` (ASCII case ignored).
pub(crate) fn lists<'a>(values: impl IntoIterator<Item = &'a HeaderValue>, token: &[u8]) -> bool {
    values
        .into_iter()
        .any(|value| tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(token)))
}

/// `value` without leading and trailing spaces and tabs (OWS).
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |end| end + 1);
    &value[start..end]
}

/// Why a `Content-Length` cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthError {
    /// An element that is not one or more digits (a sign, a space inside, hex, empty...).
    Invalid,
    /// Elements that disagree.
    Conflicting,
    /// More than `u64` holds.
    Overflow,
}

impl LengthError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            LengthError::Invalid => "invalid Content-Length",
            LengthError::Conflicting => "conflicting Content-Length values",
            LengthError::Overflow => "Content-Length too large",
        }
    }
}

/// What `declared` (the length earlier `Content-Length` fields declared, if any) and one more
/// such field, `value`, declare together: fields are met one at a time, as a head is read. Every
/// element of every field must be `1*DIGIT`, and all must be equal: `5` and `5, 5` and two
/// fields of `5` all declare 5 (RFC 9110 section 8.6 lets a recipient take identical repeats
/// as one).
pub(crate) fn add_length(
    mut declared: Option<u64>,
    value: &HeaderValue,
) -> Result<Option<u64>, LengthError> {
    // Elements are split by hand: an empty element (`5,,5`, or an empty field) is invalid here,
    // unlike in token lists.
    for element in value.as_bytes().split(|&b| b == b',') {
        let length = digits(trim_ows(element))?;
        match declared {
            Some(earlier) if earlier != length => return Err(LengthError::Conflicting),
            _ => declared = Some(length),
        }
    }
    Ok(declared)
}

/// `1*DIGIT` as a number.
fn digits(text: &[u8]) -> Result<u64, LengthError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(LengthError::Invalid);
    }
    text.iter().try_fold(0u64, |n, &digit| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            .ok_or(LengthError::Overflow)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length the `Content-Length` fields `values` declare, `None` without any.
    fn content_length<'a>(
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Option<u64>, LengthError> {
        values.into_iter().try_fold(None, add_length)
    }

    fn values(list: &[&str]) -> Vec<HeaderValue> {
        list.iter()
            .map(|v| HeaderValue::from_bytes(v.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped() {
        let listed: Vec<&[u8]> = tokens(b" close ,, Upgrade,\tx-a\t,").collect();
        assert_eq!(listed, [&b"close"[..], b"Upgrade", b"x-a"]);
        assert_eq!(tokens(b"").count(), 0);
        assert_eq!(tokens(b" , ,").count(), 0);
    }

    #[test]
    fn a_token_is_found_in_any_field_in_any_case() {
        let fields = values(&["keep-alive", "x-foo, CLOSE"]);
        assert!(lists(&fields, b"close"));
        assert!(!lists(&fields, b"upgrade"));
        assert!(!lists(&values(&["closed"]), b"close"));
    }

    #[test]
    fn equal_lengths_are_one_length() {
        assert_eq!(content_length(&values(&["5"])), Ok(Some(5)));
        assert_eq!(content_length(&values(&["5, 5"])), Ok(Some(5)));
        assert_eq!(content_length(&values(&["5", "5"])), Ok(Some(5)));
        assert_eq!(content_length(&values(&[" 007 "])), Ok(Some(7)));
        assert_eq!(content_length(&values(&[])), Ok(None));
        assert_eq!(
            content_length(&values(&["18446744073709551615"])),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn anything_but_digits_or_disagreement_is_refused() {
        for bad in [
            "", "+5", "-1", "0x10", "5 5", "1e3", "5,", ",5", "5,,5", "\u{663}",
        ] {
            assert_eq!(
                content_length(&values(&[bad])),
                Err(LengthError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            content_length(&values(&["5, 6"])),
            Err(LengthError::Conflicting)
        );
        assert_eq!(
            content_length(&values(&["5", "6"])),
            Err(LengthError::Conflicting)
        );
        assert_eq!(
            content_length(&values(&["18446744073709551616"])),
            Err(LengthError::Overflow)
        );
    }
}
