//! Text from a file, made safe to print on a terminal.
//!
//! Layer and weight names come from the file, and a crafted file can put
//! escape sequences in them (ESC `]0;title BEL` retitles the window, ESC `[`
//! recolours or moves the cursor, NUL and BEL confuse logs). Every name that
//! reaches a person's terminal — the `inspect` table, notes, warnings,
//! reports, error messages — goes through [`escape`], which spells control
//! characters out (`\x1b`, `\u{9b}`) instead of sending them. JSON output is
//! left exact: JSON escapes control characters itself.

use std::borrow::Cow;

/// `text` with every control character spelled out: C0 (`\0`, ESC, BEL,
/// newline...), DEL, C1 (`\u{80}`..`\u{9f}`, which some terminals obey like
/// ESC sequences) and the bidirectional overrides that reorder what is
/// shown. Text without any comes back borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_with(text, false)
}

/// Like [`escape`], but keeps line breaks: for multi-line output that we
/// compose ourselves (a table, a report) around names from a file.
pub fn escape_keeping_lines(text: &str) -> Cow<'_, str> {
    escape_with(text, true)
}

fn escape_with(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| needs_escape(c) && !(keep_newlines && c == '\n');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to at most `max` characters (at least 8) with its middle
/// replaced by `…`, so both ends stay readable: table cells from a crafted
/// file can be any length.
pub fn elide(text: &str, max: usize) -> Cow<'_, str> {
    let max = max.max(8);
    let count = text.chars().count();
    if count <= max {
        return Cow::Borrowed(text);
    }
    let tail = (max - 1) / 3;
    let head = max - 1 - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(count - tail));
    Cow::Owned(out)
}

/// `text` padded with spaces to `width` characters (left-aligned), or
/// right-aligned; never a formatting width, which panics past 65,535.
pub fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = width.saturating_sub(text.chars().count());
    let mut out = String::with_capacity(text.len() + fill);
    if right {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(text);
    } else {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', fill));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_spelled_out() {
        assert_eq!(escape("dense_1"), "dense_1");
        assert!(matches!(escape("dense_1"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\u{1b}]0;pwned\u{7}\u{1b}[31mb"),
            "a\\x1b]0;pwned\\x07\\x1b[31mb"
        );
        assert_eq!(escape("nul\0tab\tnl\ncr\r"), "nul\\0tab\\tnl\\ncr\\r");
        assert_eq!(escape("del\u{7f}csi\u{9b}"), "del\\x7fcsi\\u{9b}");
        assert_eq!(escape("rtl\u{202e}x"), "rtl\\u{202e}x");
        assert_eq!(escape("ünïcode ok"), "ünïcode ok");
        assert_eq!(escape_keeping_lines("a\nb\u{1b}"), "a\nb\\x1b");
        // Escaped text has nothing left to escape.
        let once = escape("x\u{1b}[2J\u{0}").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn long_text_keeps_both_ends() {
        assert_eq!(elide("short", 20), "short");
        let long = format!("start{}end", "x".repeat(100));
        let cut = elide(&long, 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.starts_with("start") && cut.ends_with("end"), "{cut}");
        assert!(cut.contains('…'));
    }

    #[test]
    fn padding_has_no_width_limit() {
        assert_eq!(pad("ab", 4, false), "ab  ");
        assert_eq!(pad("ab", 4, true), "  ab");
        assert_eq!(pad("abcdef", 4, false), "abcdef");
        assert_eq!(pad("", 70_000, false).len(), 70_000);
    }
}
