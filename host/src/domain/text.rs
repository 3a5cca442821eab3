//! Bounding text that came from outside (a client's value quoted in an
//! error, a plugin's error string) before it is logged, stored or sent back.

/// `text` cut to at most `max` bytes on a character boundary, marked when
/// cut, with NUL (which PostgreSQL's text refuses) replaced.
pub fn cut(mut text: String, max: usize) -> String {
    if text.contains('\0') {
        text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("… (cut)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short".into(), 300), "short");
        let out = cut("é".repeat(400), 301);
        assert!(out.ends_with("… (cut)") && out.len() <= 301 + "… (cut)".len(), "{}", out.len());
    }
}
