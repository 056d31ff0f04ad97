//! Bounded echoes of input in messages: a value read from a file (a field, a line, a name) is
//! shown as an [`excerpt`] with its size, and a file name that is not UTF-8 is shown with its
//! bytes escaped ([`escaped_path`]), so that no input, however large or strange, makes an error
//! message or a report entry large or empty.

use std::fmt::{self, Write as _};
use std::path::Path;

/// The most bytes of one value read from a file (a field, a line, a token) that a message
/// shows.
pub const VALUE_EXCERPT: usize = 200;

/// The most bytes of a name read from a file (an image path, a sample id) or of a whole
/// message (a problem, a skip reason) that a message or a report entry shows: Linux's
/// `PATH_MAX`, so every real path is shown whole.
pub const MESSAGE_EXCERPT: usize = 4096;

/// `value` as text of at most `max` bytes: whole when it fits, else its first bytes (cut at a
/// character) followed by `…(N bytes)`, N being the size of the whole text. Control characters
/// are escaped (`\0`, `\n`, `\u{1b}`), so a binary value cannot garble a terminal or a report.
/// Only the excerpt is kept in memory, however long the value's text.
pub fn excerpt(value: impl fmt::Display, max: usize) -> String {
    let mut out = Bounded::new(max);
    // Writing into a `Bounded` never fails; a `Display` impl that fails leaves what it wrote.
    let _ = write!(out, "{value}");
    let total = out.total;
    out.finish(total)
}

/// [`excerpt`] of a value of which only `prefix` was kept (a line read through without being
/// held, [`crate::formats`]): the size stated is `total`, the whole value's.
pub(crate) fn excerpt_of_prefix(prefix: &str, total: u64, max: usize) -> String {
    let mut out = Bounded::new(max);
    let _ = out.write_str(prefix);
    out.cut |= total > prefix.len() as u64;
    out.finish(total)
}

/// A writer that keeps the first `max` bytes of escaped text and counts all of it.
struct Bounded {
    kept: String,
    max: usize,
    total: u64,
    cut: bool,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Bounded {
            kept: String::new(),
            max,
            total: 0,
            cut: false,
        }
    }

    /// The kept text, with the size of the whole (`total` bytes) when it was cut.
    fn finish(self, total: u64) -> String {
        if self.cut {
            format!("{}…({total} bytes)", self.kept)
        } else {
            self.kept
        }
    }
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total += s.len() as u64;
        if self.cut {
            return Ok(());
        }
        for c in s.chars() {
            let before = self.kept.len();
            if c.is_control() {
                self.kept.extend(c.escape_debug());
            } else {
                self.kept.push(c);
            }
            if self.kept.len() > self.max {
                self.kept.truncate(before);
                self.cut = true;
                break;
            }
        }
        Ok(())
    }
}

/// A path as text that names it exactly when it is UTF-8, with every byte that is not part of
/// a UTF-8 character written `\xNN` (`\xff`), never dropped or replaced by `�`.
pub fn escaped_path(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_encoded_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_values_are_whole_and_long_ones_state_their_size() {
        assert_eq!(excerpt("12a", 10), "12a");
        assert_eq!(excerpt("0123456789", 10), "0123456789");
        assert_eq!(excerpt("0123456789x", 10), "0123456789…(11 bytes)");
        // Cut at a character, never inside one; the size counts bytes.
        assert_eq!(excerpt("ééééé", 5), "éé…(10 bytes)");
        let nul = "\0".repeat(5_000_000);
        let e = excerpt(&nul, VALUE_EXCERPT);
        assert!(e.len() < VALUE_EXCERPT + 30, "{e}");
        assert!(
            e.starts_with("\\0\\0\\0") && e.ends_with("…(5000000 bytes)"),
            "{e}"
        );
        assert_eq!(excerpt("a\tb\u{1b}", 20), "a\\tb\\u{1b}");
        assert_eq!(excerpt(format_args!("{}-{}", 12, "ab"), 3), "12-…(5 bytes)");
        assert_eq!(excerpt_of_prefix("\0\0", 9, 3), "\\0…(9 bytes)");
        assert_eq!(excerpt_of_prefix("ab", 2, 3), "ab");
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_dropped() {
        use std::os::unix::ffi::OsStrExt as _;
        let p = Path::new(std::ffi::OsStr::from_bytes(
            b"afw/\xff\xfeface_\xc3\xa9.pts",
        ));
        assert_eq!(escaped_path(p), "afw/\\xff\\xfeface_é.pts");
        assert_eq!(escaped_path(Path::new("afw/ok.pts")), "afw/ok.pts");
    }

    proptest! {
        #[test]
        fn an_excerpt_is_bounded_and_a_prefix_of_the_escaped_text(
            text in ".{0,300}", max in 0usize..120,
        ) {
            let e = excerpt(&text, max);
            let escaped: String = text
                .chars()
                .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
                .collect();
            if escaped.len() <= max {
                prop_assert_eq!(e, escaped);
            } else {
                let suffix = format!("…({} bytes)", text.len());
                prop_assert!(e.ends_with(&suffix));
                let kept = &e[..e.len() - suffix.len()];
                prop_assert!(kept.len() <= max && escaped.starts_with(kept));
            }
        }
    }
}
