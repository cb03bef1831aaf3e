//! Dotted version numbers that compare numerically (`0.9.10` > `0.9.8`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// How many components are kept; driver and runtime versions have three.
const MAX_PARTS: usize = 4;

/// A dotted version number such as the rknpu driver's `0.9.8`.
///
/// Components compare as numbers, and missing trailing components count as zero, so `0.9.10`
/// is newer than `0.9.8` and `0.9` equals `0.9.0`. Up to four components are kept.
///
/// ```
/// use rkllm::diagnosis::Version;
///
/// let found = Version::find_in("RKNPU driver: v0.9.10").unwrap();
/// assert!(found > Version::DRIVER_RECOMMENDED);
/// assert_eq!(found.to_string(), "0.9.10");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Version {
    parts: [u64; MAX_PARTS],
    len: usize,
}

impl Version {
    /// The oldest rknpu driver the runtime accepts without warning (0.9.7).
    pub const DRIVER_MINIMUM: Version = Version::new(0, 9, 7);
    /// The rknpu driver the RKLLM 1.1 guide requires (0.9.8).
    pub const DRIVER_RECOMMENDED: Version = Version::new(0, 9, 8);

    /// `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            parts: [major, minor, patch, 0],
            len: 3,
        }
    }

    /// The numeric components as written, e.g. `[0, 9, 8]`.
    pub fn components(&self) -> &[u64] {
        &self.parts[..self.len]
    }

    /// The first version number in `text`: digits separated by dots, with at least two
    /// components, optionally after a `v` (`RKNPU driver: v0.9.8` gives 0.9.8). A suffix such
    /// as `-rc1` is ignored.
    pub fn find_in(text: &str) -> Option<Version> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let at_word_start =
                i == 0 || !bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'v';
            if bytes[i].is_ascii_digit() && at_word_start {
                if let Some(v) = Version::leading(&text[i..]) {
                    return Some(v);
                }
            }
            i += 1;
        }
        None
    }

    /// The dotted number at the very start of `s`, if it has at least two components.
    fn leading(s: &str) -> Option<Version> {
        let mut parts = [0; MAX_PARTS];
        let mut len = 0;
        for piece in s.split('.') {
            let end = piece
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(piece.len());
            if end == 0 {
                break;
            }
            if len < MAX_PARTS {
                parts[len] = piece[..end].parse().ok()?;
                len += 1;
            }
            if end < piece.len() {
                break;
            }
        }
        (len >= 2).then_some(Version { parts, len })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.components().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.parts == other.parts
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Numeric, component by component; absent components are zero.
    fn cmp(&self, other: &Version) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::find_in(s).unwrap()
    }

    #[test]
    fn compares_numerically() {
        assert!(v("0.9.10") > v("0.9.8"));
        assert!(v("0.9.6") < Version::DRIVER_MINIMUM);
        assert!(v("0.8.2") < v("0.9.0"));
        assert!(v("1.0") > v("0.9.8"));
        assert_eq!(v("0.9"), v("0.9.0"));
        assert_eq!(v("0.9.8"), Version::DRIVER_RECOMMENDED);
    }

    #[test]
    fn finds_versions_in_text() {
        assert_eq!(v("RKNPU driver: v0.9.8").to_string(), "0.9.8");
        assert_eq!(v("0.9.8\n").to_string(), "0.9.8");
        assert_eq!(v("Initialized rknpu 0.9.8 20240828").to_string(), "0.9.8");
        assert_eq!(v("0.9.8-rc1").to_string(), "0.9.8");
        assert_eq!(v("1.2.3.4.5").components(), &[1, 2, 3, 4]);
        assert_eq!(Version::find_in("RKNPU driver"), None);
        assert_eq!(Version::find_in("rk3588"), None);
        assert_eq!(Version::find_in("7"), None);
        assert_eq!(Version::find_in("99999999999999999999999.1"), None);
    }
}
