//! Formatting shared by commands.

use std::borrow::Cow;
use std::io::Write;

use anyhow::Result;

pub use cairn::text::{bytes, count};

/// Text for a terminal: control characters (C0, DEL, C1) and bidirectional
/// overrides are shown escaped (`\u{1b}`), so that a file name, host name, tag
/// or message taken from a repository or a source directory can't move the
/// cursor, rewrite the screen, or make one name look like another. Everything
/// else passes unchanged. `--json` output is exact and doesn't use this.
pub fn printable(s: &str) -> Cow<'_, str> {
    let risky =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(risky) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if risky(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] of a path (names that aren't UTF-8 are shown lossily).
pub fn path(p: &std::path::Path) -> String {
    printable(&p.to_string_lossy()).into_owned()
}

/// A stored RFC 3339 time in local time; a time that doesn't parse (it comes
/// from the repository) is shown as it is, escaped.
pub fn local_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| printable(rfc3339).into_owned())
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, v)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
    match written {
        // The reader of a pipe has gone (`cairn ... --json | head`): end
        // quietly, as SIGPIPE would have.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(super::signals::EXIT_BROKEN_PIPE)
        }
        r => Ok(r?),
    }
}

/// `ls -l`-style mode string.
pub fn mode_string(kind: cairn::tree::NodeKind, mode: u32) -> String {
    use cairn::tree::NodeKind::*;
    let t = match kind {
        File => '-',
        Dir => 'd',
        Symlink => 'l',
        Fifo => 'p',
        Chardev => 'c',
        Blockdev => 'b',
        Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, ch)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *ch,
            (false, false, _) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        assert!(matches!(printable("plain name.txt"), Cow::Borrowed(_)));
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("line\nbreak\r"), "line\\u{a}break\\u{d}");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(printable("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }
}
