//! The SSML subset sipbridge speaks (W3C SSML 1.1): `<speak>` (the root),
//! `<break time="…"/>` (`ms` or `s`, at most 10 s, §3.2.3) and
//! `<say-as interpret-as="digits">` (digits read one by one; other
//! `interpret-as` values read the text as is). Other elements are dropped with
//! their tags, their text kept. `&amp; &lt; &gt; &quot; &apos;` are decoded.
//!
//! No XML crate is in the dependency tree, so this is a small bounded scanner:
//! the input is at most [`MAX_PAYLOAD_CHARS`] characters (Telnyx's payload limit)
//! and at most [`MAX_SEGMENTS`] segments come out; it never recurses.

use std::time::Duration;

/// Telnyx's `payload` limit (developers.telnyx.com/api-reference/call-commands/speak:
/// "There is a 3,000 character limit").
pub const MAX_PAYLOAD_CHARS: usize = 3000;

/// Most pieces of text and pauses one payload may make.
pub const MAX_SEGMENTS: usize = 64;

/// Longest `<break>` (SSML allows more; a prompt has no use for it).
pub const MAX_BREAK: Duration = Duration::from_secs(10);

/// A piece of speech.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text to synthesize.
    Text(String),
    /// Silence.
    Break(Duration),
}

/// The segments of an SSML document.
///
/// # Errors
/// What is wrong, for the API's 400: too long, no `<speak>` root, an unclosed
/// tag, a bad `time`, too many segments.
pub fn parse(ssml: &str) -> Result<Vec<Segment>, String> {
    if ssml.chars().count() > MAX_PAYLOAD_CHARS {
        return Err(format!("the payload is longer than {MAX_PAYLOAD_CHARS} characters"));
    }
    let body = ssml.trim();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, r)| r.trim_start()).ok_or("unclosed <?xml ... ?>")?,
        None => body,
    };
    if !body.starts_with("<speak") {
        return Err("SSML must have a <speak> root element".into());
    }
    let mut out = Vec::new();
    let mut text = String::new();
    let mut digits_depth = 0usize;
    let mut rest = body;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_text(&mut text, rest, digits_depth > 0);
            break;
        };
        push_text(&mut text, &rest[..lt], digits_depth > 0);
        let gt = rest[lt..].find('>').ok_or("a tag is not closed with >")? + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        let (closing, tag) = match tag.strip_prefix('/') {
            Some(t) => (true, t),
            None => (false, tag),
        };
        let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
        match (name, closing) {
            ("break", false) => {
                flush(&mut out, &mut text)?;
                let time = attribute(tag, "time").map(break_time).transpose()?.unwrap_or(Duration::from_millis(500));
                push(&mut out, Segment::Break(time))?;
            }
            ("say-as", false) if attribute(tag, "interpret-as").as_deref() == Some("digits") => {
                digits_depth += 1;
                text.push(' ');
            }
            ("say-as", true) if digits_depth > 0 => {
                digits_depth -= 1;
                text.push(' ');
            }
            _ => {}
        }
    }
    flush(&mut out, &mut text)?;
    Ok(out)
}

/// Appends `raw` (entities decoded) to `text`; inside `say-as digits`, each digit
/// is spaced so engines read "1 2 3", not "one hundred twenty-three".
fn push_text(text: &mut String, raw: &str, digits: bool) {
    let decoded = raw
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    if digits {
        for c in decoded.chars() {
            text.push(c);
            if c.is_ascii_digit() {
                text.push(' ');
            }
        }
    } else {
        text.push_str(&decoded);
    }
}

fn flush(out: &mut Vec<Segment>, text: &mut String) -> Result<(), String> {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.clear();
    if words.is_empty() { Ok(()) } else { push(out, Segment::Text(words)) }
}

fn push(out: &mut Vec<Segment>, s: Segment) -> Result<(), String> {
    if out.len() >= MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} pieces of text and breaks"));
    }
    out.push(s);
    Ok(())
}

/// The value of `name="…"` (or `'…'`) in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    value.find(quote).map(|end| value[..end].to_string())
}

/// SSML `time`: `250ms`, `1.5s`, `2s` (§3.2.3), at most [`MAX_BREAK`].
fn break_time(v: String) -> Result<Duration, String> {
    let v = v.trim();
    let (number, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (v.strip_suffix('s').ok_or_else(|| format!("break time {v:?} is not like 500ms or 1s"))?, 1.0),
    };
    let secs = number.trim().parse::<f64>().map_err(|_| format!("break time {v:?} is not a number"))? * scale;
    if !(0.0..=MAX_BREAK.as_secs_f64()).contains(&secs) {
        return Err(format!("break time {v:?} must be 0 to 10s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    #[test]
    fn speak_break_and_digits() {
        let s = r#"<?xml version="1.0"?><speak version="1.1">Your code is
            <say-as interpret-as="digits">1234</say-as>.<break time="750ms"/>Goodbye &amp; thanks<break time='1.5s'/></speak>"#;
        assert_eq!(
            parse(s).unwrap(),
            vec![
                text("Your code is 1 2 3 4 ."),
                Segment::Break(Duration::from_millis(750)),
                text("Goodbye & thanks"),
                Segment::Break(Duration::from_millis(1500)),
            ]
        );
        assert_eq!(parse("<speak>a<break/>b</speak>").unwrap()[1], Segment::Break(Duration::from_millis(500)));
        assert_eq!(
            parse(r#"<speak><say-as interpret-as="date">2024</say-as> <prosody rate="slow">x</prosody></speak>"#)
                .unwrap(),
            vec![text("2024 x")],
            "other elements keep their text"
        );
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        assert!(parse("hello").unwrap_err().contains("<speak>"));
        assert!(parse("<speak>hello <break").unwrap_err().contains("not closed"));
        assert!(parse(r#"<speak><break time="11s"/></speak>"#).unwrap_err().contains("0 to 10s"));
        assert!(parse(r#"<speak><break time="soon"/></speak>"#).is_err());
        assert!(parse(&format!("<speak>{}</speak>", "a".repeat(3000))).unwrap_err().contains("3000"));
        let many = format!("<speak>{}</speak>", "a<break/>".repeat(40));
        assert!(parse(&many).unwrap_err().contains("64"));
    }
}
