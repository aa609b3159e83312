//! `ConfigError`: every way a configuration can be rejected, worded for the operator.
//!
//! A message always names the file and, when the fault has a place in the file, the line, followed
//! by the key or value at fault and what would have been valid. This module owns the wording and
//! the offset-to-line arithmetic; it does not decide what is valid (that is `validate.rs`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used, with the place in the file that is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// 1-based line of the fault, when the fault has a place in the file.
    pub line: Option<usize>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl ConfigError {
    /// An error with no place in the file (unreadable file, a missing section).
    pub(crate) fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// An error at byte `offset` of `source`.
    pub(crate) fn at(file: &Path, source: &str, offset: usize, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line_of(source, offset)),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The 1-based line that holds byte `offset` of `source`.
fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_are_one_based() {
        let src = "a = 1\nb = 2\nc = 3\n";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 6), 2);
        assert_eq!(line_of(src, 12), 3);
        assert_eq!(
            line_of(src, 999),
            4,
            "offsets past the end land after the last newline"
        );
    }

    #[test]
    fn display_names_file_and_line() {
        let err = ConfigError::at(Path::new("proxy.toml"), "x\ny\n", 2, "bad key");
        assert_eq!(err.to_string(), "proxy.toml:2: bad key");
        let err = ConfigError::whole_file(Path::new("p.toml"), "cannot read");
        assert_eq!(err.to_string(), "p.toml: cannot read");
    }
}
