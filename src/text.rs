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
