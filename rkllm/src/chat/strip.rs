//! Python `str.strip()` semantics, which the Gemma chat templates use through jinja2's `trim`.
//!
//! Python's `str.isspace()` is true for exactly the characters Rust's `char::is_whitespace`
//! accepts (the Unicode `White_Space` property) plus U+001C..U+001F, the ASCII information
//! separators that Python counts as whitespace through their bidirectional class. Using
//! `str::trim` would keep those four and render a different prompt than Hugging Face does.

/// Whether Python's `str.isspace()` is true for `c` (the set `str.strip()` removes): true for
/// U+001F, which Rust's `char::is_whitespace` rejects, false for the zero-width space U+200B,
/// which neither strips.
pub(crate) fn is_python_space(c: char) -> bool {
    matches!(c, '\u{1c}'..='\u{1f}') || c.is_whitespace()
}

/// `s` with leading and trailing whitespace removed exactly as Python's `str.strip()` does.
pub(crate) fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code point for which CPython 3's `str.isspace()` is true, generated with
    /// `[hex(c) for c in range(0x110000) if chr(c).isspace()]`.
    const PYTHON_ISSPACE: &[u32] = &[
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];

    #[test]
    fn chat_strip_matches_python_isspace_on_every_code_point() {
        for cp in 0..=0x10_FFFFu32 {
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(
                    is_python_space(c),
                    PYTHON_ISSPACE.contains(&cp),
                    "U+{cp:04X} disagrees with Python's str.isspace()"
                );
            }
        }
    }

    #[test]
    fn chat_strip_removes_both_ends_only() {
        assert_eq!(python_strip("  \n Hello there \t\n"), "Hello there");
        assert_eq!(python_strip("\u{1c}\u{1d}a b\u{1e}\u{1f}"), "a b");
        assert_eq!(python_strip("\u{200b}x\u{200b}"), "\u{200b}x\u{200b}");
        assert_eq!(python_strip(" \n\t  "), "");
        assert_eq!(python_strip(""), "");
        assert_eq!(
            python_strip("line one\n\n  line two"),
            "line one\n\n  line two"
        );
    }
}
