//! Wording shared by messages of the library and the command line.

use std::fmt::Display;

/// A count with its noun in the right number: "1 file", "2 files", "0 entries".
pub fn count<N: Copy + Display + TryInto<u64>>(n: N, one: &str, many: &str) -> String {
    let noun = if n.try_into().ok() == Some(1) {
        one
    } else {
        many
    };
    format!("{n} {noun}")
}

/// Binary units: "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(count(1usize, "file", "files"), "1 file");
        assert_eq!(count(0u64, "file", "files"), "0 files");
        assert_eq!(count(2u32, "entry", "entries"), "2 entries");
        assert_eq!(count(1i64, "entry", "entries"), "1 entry");
    }
}
