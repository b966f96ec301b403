//! A TeXML/TwiML document (developers.telnyx.com/docs/voice/programmable-voice/texml-verbs;
//! www.twilio.com/docs/voice/twiml where TeXML is silent) parsed into the verbs
//! sipbridge runs. Sans-IO: text in, [`Document`] or a [`DocumentError`] out.
//!
//! The document comes from an app server over the network, so everything is
//! bounded before it is looked at: at most [`MAX_DOCUMENT_BYTES`] bytes, at most
//! [`MAX_ELEMENTS`] elements nested at most [`MAX_DEPTH`] deep, attribute and text
//! values at most [`MAX_VALUE_CHARS`] characters. A DTD is refused (no entity
//! can expand); only the five predefined entities and character references are
//! decoded. The tokenizer is `xmlparser` (already in the tree under rusty-s3).
//!
//! Verb and attribute names are case-sensitive, as in TwiML. A verb sipbridge
//! does not run becomes [`Verb::Unsupported`] (the runner logs and reports it
//! and goes on); an unknown attribute is ignored, as Twilio does.

use std::time::Duration;

/// Largest document read (bytes of the HTTP body).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most elements (verbs, nouns, `<Parameter>`s) in one document.
pub const MAX_ELEMENTS: usize = 256;
/// Deepest nesting (`Response` › `Gather` › `Say` is 3).
pub const MAX_DEPTH: usize = 5;
/// Longest attribute value or element text, in characters.
pub const MAX_VALUE_CHARS: usize = 4096;
/// Most times one `<Say>` or `<Play>` repeats (`loop="0"`, "until the call
/// ends" in TwiML, repeats this many times).
pub const MAX_LOOPS: u32 = 10;
/// Longest `<Pause length>`.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not well-formed XML, with the tokenizer's position.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Over one of the bounds.
    #[error("document too large: {0}")]
    TooLarge(String),
    /// Well-formed but not a TeXML document (root, a bad attribute value).
    #[error("not a TeXML document: {0}")]
    Invalid(String),
}

/// HTTP method of a request the document asks for (`method`, `action` ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Form-encoded body (the default everywhere in TwiML).
    Post,
    /// Query string.
    Get,
}

/// A URL the document names, as written (resolved against the document's own
/// URL when it runs), and how to request it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Absolute or relative URL.
    pub url: String,
    /// `method` attribute; `None`: the route's `answer_method` (Telnyx: "Same
    /// method (GET/POST) as set for the TeXML application"; Twilio: POST, which
    /// is also `answer_method`'s default).
    pub method: Option<Method>,
}

/// `<Say>`: text spoken by `[tts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Say {
    /// The text (plain; SSML inside `<Say>` is read as its text).
    pub text: String,
    /// `voice` (`man`, `woman`, `alice`, `Polly.*`...): passed to `[tts]` as
    /// Telnyx `speak` does.
    pub voice: Option<String>,
    /// `language` (`en-US`).
    pub language: Option<String>,
    /// `loop` (default 1; 0 means [`MAX_LOOPS`]).
    pub loops: u32,
}

/// `<Play>`: a WAV file at a URL (or in `[media] dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Play {
    /// The element's text.
    pub url: String,
    /// `loop` (default 1; 0 means [`MAX_LOOPS`]).
    pub loops: u32,
}

/// A prompt nested in `<Gather>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Nested `<Say>`.
    Say(Say),
    /// Nested `<Play>`.
    Play(Play),
    /// Nested `<Pause>`.
    Pause(Duration),
}

/// `<Gather>` (DTMF input only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    /// `action` + `method`; `None`: the current document's URL (TwiML).
    pub action: Option<Target>,
    /// `numDigits` (default: unlimited, up to 128).
    pub num_digits: Option<usize>,
    /// `finishOnKey` (default `#`; `""` none).
    pub finish_on_key: Option<char>,
    /// `timeout` in seconds (default 5, 1 to 120 as Telnyx): the wait for each
    /// digit after the prompts.
    pub timeout: Duration,
    /// `actionOnEmptyResult` (default false): request `action` even without digits.
    pub action_on_empty_result: bool,
    /// Nested `<Say>`, `<Play>`, `<Pause>`, played until the first digit.
    pub prompts: Vec<Prompt>,
}

/// `<Stream>` inside `<Connect>` or `<Start>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `url` (`wss://`, `ws://`).
    pub url: String,
    /// `name`.
    pub name: Option<String>,
    /// `track`: `inbound_track` (default), `outbound_track`, `both_tracks`.
    pub track: Option<String>,
    /// sipbridge's `protocol` attribute (`twilio` default, `telnyx`, `exotel`, `plivo`, `audiosocket`).
    pub protocol: Option<String>,
    /// `<Parameter name value>`s, passed to the agent as `customParameters`.
    pub parameters: Vec<(String, String)>,
}

/// `<Dial>`: a number through a trunk, bridged with the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The number: the element's text or its first `<Number>`.
    pub number: String,
    /// `action` + `method`: requested with `DialCallStatus` when the dialled
    /// call ends; `None`: the document goes on.
    pub action: Option<Target>,
    /// `timeout` in seconds (default 30, 5 to 600): the ring limit.
    pub timeout: Duration,
    /// `callerId` (default: the caller's number).
    pub caller_id: Option<String>,
    /// `timeLimit` in seconds (default and at most 4 h).
    pub time_limit: Duration,
    /// sipbridge's `trunk` attribute: the `[[trunk]]` to dial through (default:
    /// the trunk the call came in on).
    pub trunk: Option<String>,
}

/// `<Record>`: the caller's audio, through the call's recording (`[recording]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `action` + `method`: requested with `RecordingUrl`, `RecordingDuration`,
    /// `Digits`; `None`: the current document's URL (TwiML).
    pub action: Option<Target>,
    /// `maxLength` in seconds (default 3600, 1 to 3600).
    pub max_length: Duration,
    /// `playBeep` (default true).
    pub play_beep: bool,
    /// `finishOnKey`: any of these keys ends the recording (default `1234567890*#`).
    pub finish_on_key: String,
    /// `recordingStatusCallback` + `recordingStatusCallbackMethod`.
    pub status_callback: Option<Target>,
}

/// `<Reject reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `rejected` (default): 603 Decline... (Twilio plays a not-in-service tone; SIP 603 here).
    Rejected,
    /// `busy`: 486 Busy Here.
    Busy,
}

/// One instruction of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Say>`.
    Say(Say),
    /// `<Play>`.
    Play(Play),
    /// `<Pause length>` (seconds, default 1).
    Pause(Duration),
    /// `<Gather>`.
    Gather(Gather),
    /// `<Dial>`.
    Dial(Dial),
    /// `<Record>`.
    Record(Record),
    /// `<Connect><Stream>`: the call streams to the agent until the stream ends.
    Connect(Stream),
    /// `<Start><Stream>`: the stream starts and the document goes on.
    Start(Stream),
    /// `<Start><Suppression direction>` (`inbound` default, `outbound`, `both`)
    /// and `<Stop><Suppression/>` (off): noise suppression, as the API's
    /// `suppression_start` / `suppression_stop` (Telnyx TeXML `<Suppression>`).
    Suppression(crate::config::Suppression),
    /// `<Redirect method>url</Redirect>`.
    Redirect(Target),
    /// `<Hangup/>`.
    Hangup,
    /// `<Reject reason>`.
    Reject(RejectReason),
    /// A verb sipbridge does not run (its name): logged, reported, skipped.
    Unsupported(String),
}

/// A parsed `<Response>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// The verbs in order.
    pub verbs: Vec<Verb>,
}

/// A generic element: the first pass, before the verbs are read.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a document.
///
/// # Errors
/// Not well-formed, over a bound, a DTD, a root other than `<Response>`, or an
/// attribute value out of its range ([`DocumentError`]).
pub fn parse(text: &str) -> Result<Document, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge(format!("more than {MAX_DOCUMENT_BYTES} bytes")));
    }
    let root = tree(text)?;
    if root.name != "Response" {
        return Err(DocumentError::Invalid(format!("the root element is <{}>, not <Response>", root.name)));
    }
    let verbs = root.children.iter().map(verb).collect::<Result<Vec<_>, _>>()?;
    Ok(Document { verbs })
}

fn tree(text: &str) -> Result<Element, DocumentError> {
    use xmlparser::{ElementEnd, Token};
    let xml = |e: xmlparser::Error| DocumentError::Xml(e.to_string());
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    for token in xmlparser::Tokenizer::from(text) {
        match token.map_err(xml)? {
            Token::DtdStart { .. } | Token::EmptyDtd { .. } | Token::EntityDeclaration { .. } => {
                return Err(DocumentError::Invalid("a DTD is not allowed".into()));
            }
            Token::ElementStart { local, .. } => {
                if root.is_some() {
                    return Err(DocumentError::Xml("content after the root element".into()));
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(DocumentError::TooLarge(format!("more than {MAX_ELEMENTS} elements")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(DocumentError::TooLarge(format!("elements nested more than {MAX_DEPTH} deep")));
                }
                stack.push(Element { name: local.as_str().to_string(), ..Element::default() });
            }
            Token::Attribute { local, value, .. } => {
                let value = unescape(value.as_str())?;
                if let Some(e) = stack.last_mut() {
                    e.attrs.push((local.as_str().to_string(), value));
                }
            }
            Token::ElementEnd { end, .. } => {
                let close = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => true,
                    ElementEnd::Close(_, local) => {
                        if stack.last().map(|e| e.name.as_str()) != Some(local.as_str()) {
                            return Err(DocumentError::Xml(format!("</{}> does not close the open element", local)));
                        }
                        true
                    }
                };
                if close {
                    let Some(done) = stack.pop() else {
                        return Err(DocumentError::Xml("a closing tag without an open element".into()));
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => root = Some(done),
                    }
                }
            }
            Token::Text { text } | Token::Cdata { text, .. } => {
                let Some(e) = stack.last_mut() else { continue };
                let piece = unescape(text.as_str())?;
                if e.text.chars().count() + piece.chars().count() > MAX_VALUE_CHARS {
                    return Err(DocumentError::TooLarge(format!("a text longer than {MAX_VALUE_CHARS} characters")));
                }
                e.text.push_str(&piece);
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(DocumentError::Xml(format!("<{}> is not closed", stack[stack.len() - 1].name)));
    }
    root.ok_or_else(|| DocumentError::Xml("no root element".into()))
}

/// Decodes `&amp; &lt; &gt; &quot; &apos;` and `&#N;` / `&#xN;`.
fn unescape(raw: &str) -> Result<String, DocumentError> {
    if raw.chars().count() > MAX_VALUE_CHARS {
        return Err(DocumentError::TooLarge(format!("a value longer than {MAX_VALUE_CHARS} characters")));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let Some(semi) = rest[amp..].find(';') else {
            return Err(DocumentError::Xml("an & that starts no entity".into()));
        };
        let name = &rest[amp + 1..amp + semi];
        let c = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            n => match n.strip_prefix("#x").or_else(|| n.strip_prefix("#X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                None => n.strip_prefix('#').and_then(|d| d.parse::<u32>().ok()).and_then(char::from_u32),
            },
        };
        let Some(c) = c else { return Err(DocumentError::Xml(format!("unknown entity &{name};"))) };
        out.push(c);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn invalid(e: &Element, key: &str, why: impl std::fmt::Display) -> DocumentError {
    DocumentError::Invalid(format!("<{}> {key}: {why}", e.name))
}

fn method(e: &Element, key: &str) -> Result<Option<Method>, DocumentError> {
    match e.attr(key) {
        None => Ok(None),
        Some(m) if m.eq_ignore_ascii_case("POST") => Ok(Some(Method::Post)),
        Some(m) if m.eq_ignore_ascii_case("GET") => Ok(Some(Method::Get)),
        Some(m) => Err(invalid(e, key, format!("{m:?} is not POST or GET"))),
    }
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    e: &Element,
    key: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, DocumentError> {
    let Some(v) = e.attr(key) else { return Ok(None) };
    match v.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(invalid(e, key, format!("{v:?} is not a number from {} to {}", range.start(), range.end()))),
    }
}

fn flag(e: &Element, key: &str, default: bool) -> Result<bool, DocumentError> {
    match e.attr(key) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(invalid(e, key, format!("{v:?} is not true or false"))),
    }
}

fn loops(e: &Element) -> Result<u32, DocumentError> {
    Ok(match number::<u32>(e, "loop", 0..=1000)? {
        None => 1,
        Some(0) => MAX_LOOPS,
        Some(n) => n.min(MAX_LOOPS),
    })
}

fn say(e: &Element) -> Result<Say, DocumentError> {
    // SSML children (<break>, <say-as>...) keep their text.
    let mut text = e.text.clone();
    for c in &e.children {
        text.push(' ');
        text.push_str(&c.text);
    }
    Ok(Say {
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        voice: e.attr("voice").map(str::to_string),
        language: e.attr("language").map(str::to_string),
        loops: loops(e)?,
    })
}

fn play(e: &Element) -> Result<Play, DocumentError> {
    let url = e.text.trim().to_string();
    if url.is_empty() {
        return Err(invalid(e, "text", "no URL to play"));
    }
    Ok(Play { url, loops: loops(e)? })
}

fn pause(e: &Element) -> Result<Duration, DocumentError> {
    let secs = number::<u64>(e, "length", 0..=MAX_PAUSE.as_secs())?.unwrap_or(1);
    Ok(Duration::from_secs(secs))
}

fn target(e: &Element, url_key: &str, method_key: &str) -> Result<Option<Target>, DocumentError> {
    let method = method(e, method_key)?;
    Ok(e.attr(url_key).map(str::trim).filter(|u| !u.is_empty()).map(|u| Target { url: u.to_string(), method }))
}

fn gather(e: &Element) -> Result<Gather, DocumentError> {
    let input = e.attr("input").unwrap_or("dtmf");
    if !input.split_whitespace().any(|i| i == "dtmf") {
        return Err(invalid(e, "input", format!("{input:?}: only dtmf input is supported")));
    }
    let finish_on_key = match e.attr("finishOnKey") {
        None => Some('#'),
        Some("") => None,
        Some(k) => {
            let mut chars = k.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if "0123456789*#".contains(c) => Some(c),
                _ => return Err(invalid(e, "finishOnKey", format!("{k:?} is not one of 0-9, * or #"))),
            }
        }
    };
    let mut prompts = Vec::new();
    for c in &e.children {
        prompts.push(match c.name.as_str() {
            "Say" => Prompt::Say(say(c)?),
            "Play" => Prompt::Play(play(c)?),
            "Pause" => Prompt::Pause(pause(c)?),
            other => return Err(invalid(e, "children", format!("<{other}> cannot be nested in <Gather>"))),
        });
    }
    Ok(Gather {
        action: target(e, "action", "method")?,
        num_digits: number::<usize>(e, "numDigits", 1..=crate::call::gather::MAX_DIGITS)?,
        finish_on_key,
        timeout: Duration::from_secs(number::<u64>(e, "timeout", 1..=120)?.unwrap_or(5)),
        action_on_empty_result: flag(e, "actionOnEmptyResult", false)?,
        prompts,
    })
}

fn stream(parent: &Element) -> Result<Stream, DocumentError> {
    let [e] = parent.children.as_slice() else {
        return Err(invalid(parent, "children", "needs exactly one <Stream>"));
    };
    if e.name != "Stream" {
        return Err(invalid(parent, "children", format!("<{}> is not supported here; use <Stream>", e.name)));
    }
    let url = e.attr("url").map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| invalid(e, "url", "missing"))?;
    let mut parameters = Vec::new();
    for p in &e.children {
        if p.name != "Parameter" {
            return Err(invalid(e, "children", format!("<{}> is not a <Parameter>", p.name)));
        }
        let (Some(n), Some(v)) = (p.attr("name"), p.attr("value")) else {
            return Err(invalid(p, "name", "a <Parameter> needs name and value"));
        };
        parameters.push((n.to_string(), v.to_string()));
    }
    Ok(Stream {
        url: url.to_string(),
        name: e.attr("name").map(str::to_string),
        track: e.attr("track").map(str::to_string),
        protocol: e.attr("protocol").map(str::to_string),
        parameters,
    })
}

/// Longest `<Dial timeLimit>` (TwiML's default and maximum, 4 h).
pub const MAX_DIAL: Duration = Duration::from_secs(4 * 3600);

fn dial(e: &Element) -> Result<Dial, DocumentError> {
    let mut dialled = e.text.trim().to_string();
    for c in &e.children {
        match c.name.as_str() {
            "Number" if dialled.is_empty() => dialled = c.text.trim().to_string(),
            // The URI's user part, through the trunk: the box never sends to a
            // host a document names (far legs go to the trunk's proxy only).
            "Sip" if dialled.is_empty() => dialled = sip_user(c)?,
            "Number" | "Sip" => {}
            other => return Err(invalid(e, "children", format!("<{other}> is not supported; use <Number> or <Sip>"))),
        }
    }
    if dialled.is_empty() {
        return Err(invalid(e, "text", "no number to dial"));
    }
    Ok(Dial {
        number: dialled,
        action: target(e, "action", "method")?,
        timeout: Duration::from_secs(number::<u64>(e, "timeout", 5..=600)?.unwrap_or(30)),
        caller_id: e.attr("callerId").map(str::to_string),
        time_limit: Duration::from_secs(
            number::<u64>(e, "timeLimit", 1..=MAX_DIAL.as_secs())?.unwrap_or(MAX_DIAL.as_secs()),
        ),
        trunk: e.attr("trunk").map(str::to_string),
    })
}

/// The user part of `<Sip>sip:user@host;params</Sip>` (`sips:` too).
fn sip_user(e: &Element) -> Result<String, DocumentError> {
    let uri = e.text.trim();
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .ok_or_else(|| invalid(e, "text", format!("{uri:?} is not a sip: or sips: URI")))?;
    match rest.split_once('@') {
        Some((user, _host)) if !user.is_empty() => Ok(user.split(';').next().unwrap_or(user).to_string()),
        _ => Err(invalid(e, "text", format!("{uri:?} names no user to dial"))),
    }
}

fn record(e: &Element) -> Result<Record, DocumentError> {
    let finish_on_key = e.attr("finishOnKey").unwrap_or("1234567890*#").to_string();
    if !finish_on_key.chars().all(|c| "0123456789*#".contains(c)) {
        return Err(invalid(e, "finishOnKey", format!("{finish_on_key:?} is not made of 0-9, * and #")));
    }
    Ok(Record {
        action: target(e, "action", "method")?,
        max_length: Duration::from_secs(number::<u64>(e, "maxLength", 1..=3600)?.unwrap_or(3600)),
        play_beep: flag(e, "playBeep", true)?,
        finish_on_key,
        status_callback: target(e, "recordingStatusCallback", "recordingStatusCallbackMethod")?,
    })
}

/// Whether `<Start>`/`<Stop>` holds exactly one `<Suppression>`.
fn is_suppression(parent: &Element) -> bool {
    matches!(parent.children.as_slice(), [e] if e.name == "Suppression")
}

/// `<Start><Suppression direction>`: Telnyx's `direction` (`inbound` default).
fn suppression(parent: &Element) -> Result<crate::config::Suppression, DocumentError> {
    let e = &parent.children[0];
    let direction = e.attr("direction").unwrap_or("inbound");
    crate::config::Suppression::from_direction(direction)
        .ok_or_else(|| invalid(e, "direction", format!("{direction:?} is not inbound, outbound or both")))
}

fn verb(e: &Element) -> Result<Verb, DocumentError> {
    Ok(match e.name.as_str() {
        "Say" => Verb::Say(say(e)?),
        "Play" => Verb::Play(play(e)?),
        "Pause" => Verb::Pause(pause(e)?),
        "Gather" => Verb::Gather(gather(e)?),
        "Dial" => Verb::Dial(dial(e)?),
        "Record" => Verb::Record(record(e)?),
        "Connect" => Verb::Connect(stream(e)?),
        "Start" if is_suppression(e) => Verb::Suppression(suppression(e)?),
        "Stop" if is_suppression(e) => Verb::Suppression(crate::config::Suppression::OFF),
        "Start" => Verb::Start(stream(e)?),
        "Redirect" => {
            let url = e.text.trim();
            if url.is_empty() {
                return Err(invalid(e, "text", "no URL to redirect to"));
            }
            Verb::Redirect(Target { url: url.to_string(), method: method(e, "method")? })
        }
        "Hangup" => Verb::Hangup,
        "Reject" => Verb::Reject(match e.attr("reason") {
            None | Some("rejected") => RejectReason::Rejected,
            Some("busy") => RejectReason::Busy,
            Some(r) => return Err(invalid(e, "reason", format!("{r:?} is not rejected or busy"))),
        }),
        other => Verb::Unsupported(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<Dial><Sip>`: the user part is dialled (through the trunk); a URI
    /// without a user, or not sip:, is a bad document.
    #[test]
    fn a_sip_uri_in_dial_dials_its_user_part() {
        let doc = parse(r#"<Response><Dial><Sip>sip:+13125550199@pbx.example;transport=tcp</Sip></Dial></Response>"#)
            .unwrap();
        let Verb::Dial(d) = &doc.verbs[0] else { panic!("{doc:?}") };
        assert_eq!(d.number, "+13125550199");
        for bad in ["<Sip>sip:pbx.example</Sip>", "<Sip>tel:+1555</Sip>", "<Sip>sip:@pbx</Sip>"] {
            assert!(parse(&format!("<Response><Dial>{bad}</Dial></Response>")).is_err(), "{bad}");
        }
    }

    /// Telnyx TeXML's `<Start><Suppression>` / `<Stop><Suppression/>`.
    #[test]
    fn suppression_starts_and_stops_with_telnyx_directions() {
        use crate::config::Suppression;
        let doc = parse(
            r#"<Response><Start><Suppression/></Start><Start><Suppression direction="both"/></Start>
               <Stop><Suppression/></Stop><Stop><Stream name="x"/></Stop></Response>"#,
        )
        .unwrap();
        let both = Suppression { inbound: true, outbound: true };
        assert_eq!(
            doc.verbs,
            [
                Verb::Suppression(Suppression { inbound: true, outbound: false }),
                Verb::Suppression(both),
                Verb::Suppression(Suppression::OFF),
                Verb::Unsupported("Stop".into()),
            ]
        );
        let bad = parse(r#"<Response><Start><Suppression direction="up"/></Start></Response>"#);
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn the_verbs_and_their_attributes_are_read_with_twiml_defaults() {
        let doc = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
            <Response>
              <Say voice="woman" language="en-US" loop="2">Hello &amp; welcome</Say>
              <Play loop="0">https://app.example/a.wav</Play>
              <Pause length="3"/>
              <Pause/>
              <Gather action="/menu" method="GET" numDigits="2" finishOnKey="*" timeout="7">
                <Say>Press two digits</Say><Pause length="1"/>
              </Gather>
              <Gather/>
              <Connect><Stream url="wss://agent.example/s" name="bot">
                <Parameter name="lang" value="fr"/></Stream></Connect>
              <Start><Stream url="ws://agent.example/t" protocol="telnyx"/></Start>
              <Redirect method="GET">next.xml</Redirect>
              <Dial>+13125550100</Dial>
              <Reject reason="busy"/>
              <Hangup/>
            </Response>"#,
        )
        .unwrap();
        let v = &doc.verbs;
        assert_eq!(
            v[0],
            Verb::Say(Say {
                text: "Hello & welcome".into(),
                voice: Some("woman".into()),
                language: Some("en-US".into()),
                loops: 2
            })
        );
        assert_eq!(v[1], Verb::Play(Play { url: "https://app.example/a.wav".into(), loops: MAX_LOOPS }));
        assert_eq!(v[2], Verb::Pause(Duration::from_secs(3)));
        assert_eq!(v[3], Verb::Pause(Duration::from_secs(1)));
        let Verb::Gather(g) = &v[4] else { panic!("{:?}", v[4]) };
        assert_eq!(g.action, Some(Target { url: "/menu".into(), method: Some(Method::Get) }));
        assert_eq!((g.num_digits, g.finish_on_key, g.timeout), (Some(2), Some('*'), Duration::from_secs(7)));
        assert_eq!(g.prompts.len(), 2);
        let Verb::Gather(g) = &v[5] else { panic!() };
        assert_eq!((g.action.clone(), g.num_digits, g.finish_on_key), (None, None, Some('#')));
        assert_eq!(g.timeout, Duration::from_secs(5));
        let Verb::Connect(s) = &v[6] else { panic!() };
        assert_eq!(s.url, "wss://agent.example/s");
        assert_eq!(s.parameters, vec![("lang".to_string(), "fr".to_string())]);
        let Verb::Start(s) = &v[7] else { panic!() };
        assert_eq!(s.protocol.as_deref(), Some("telnyx"));
        assert_eq!(v[8], Verb::Redirect(Target { url: "next.xml".into(), method: Some(Method::Get) }));
        assert!(matches!(&v[9], Verb::Dial(d) if d.number == "+13125550100" && d.timeout == Duration::from_secs(30)));
        assert_eq!(v[10], Verb::Reject(RejectReason::Busy));
        assert_eq!(v[11], Verb::Hangup);
    }

    #[test]
    fn malformed_or_hostile_documents_are_refused_with_the_reason() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert!(
            err("<Response><Say>hi</Response>").contains("not well-formed"),
            "{}",
            err("<Response><Say>hi</Response>")
        );
        assert!(err("<Response>").contains("not closed"));
        assert!(err("<Reply/>").contains("not <Response>"));
        assert!(err("").contains("no root element"));
        assert!(err("<!DOCTYPE r [<!ENTITY a \"aaaa\">]><Response>&a;</Response>").contains("DTD"));
        assert!(err("<Response><Say>&bogus;</Say></Response>").contains("unknown entity"));
        assert!(err("<Response><Pause length=\"9999\"/></Response>").contains("length"));
        assert!(err("<Response><Gather finishOnKey=\"ab\"/></Response>").contains("finishOnKey"));
        assert!(err("<Response><Gather input=\"speech\"/></Response>").contains("only dtmf"));
        assert!(err("<Response><Redirect/></Response>").contains("no URL"));
        assert!(err("<Response><Reject reason=\"x\"/></Response>").contains("reason"));
        assert!(err("<Response><Connect/></Response>").contains("exactly one <Stream>"));
        let big = format!("<Response>{}</Response>", "<Pause/>".repeat(MAX_ELEMENTS));
        assert!(err(&big).contains("more than 256 elements"));
        let deep = format!("<Response>{}{}</Response>", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(err(&deep).contains("nested"));
        let huge = format!("<Response><Say>{}</Say></Response>", "a".repeat(MAX_DOCUMENT_BYTES));
        assert!(err(&huge).contains("bytes"));
        assert!(err("<Response/><Response/>").contains("not well-formed"), "{}", err("<Response/><Response/>"));
    }

    #[test]
    fn dial_and_record_read_their_attributes() {
        let d = parse(
            "<Response><Dial action=\"/done\" timeout=\"12\" callerId=\"+1555\" timeLimit=\"60\" trunk=\"b\">\
             <Number>+13125550100</Number><Number>+13125550101</Number></Dial><Record maxLength=\"20\" playBeep=\"false\" finishOnKey=\"#\" \
             recordingStatusCallback=\"/rec\"/></Response>",
        )
        .unwrap();
        let Verb::Record(r) = &d.verbs[1] else { panic!("{:?}", d.verbs[1]) };
        assert_eq!((r.max_length, r.play_beep, r.finish_on_key.as_str()), (Duration::from_secs(20), false, "#"));
        assert_eq!(r.status_callback, Some(Target { url: "/rec".into(), method: None }));
        assert_eq!(r.action, None);
        let Verb::Dial(d) = &d.verbs[0] else { panic!() };
        assert_eq!(d.number, "+13125550100");
        assert_eq!(d.action, Some(Target { url: "/done".into(), method: None }));
        assert_eq!((d.timeout, d.time_limit), (Duration::from_secs(12), Duration::from_secs(60)));
        assert_eq!((d.caller_id.as_deref(), d.trunk.as_deref()), (Some("+1555"), Some("b")));
        assert!(
            parse("<Response><Dial><Client>alice</Client></Dial></Response>")
                .unwrap_err()
                .to_string()
                .contains("<Client>")
        );
        assert!(parse("<Response><Dial/></Response>").unwrap_err().to_string().contains("no number"));
    }

    #[test]
    fn an_empty_response_has_no_verbs_and_entities_decode() {
        assert_eq!(parse("<Response/>").unwrap().verbs, vec![]);
        let d = parse("<Response><Say>a&#65;&#x42;&lt;&quot;</Say></Response>").unwrap();
        assert!(matches!(&d.verbs[0], Verb::Say(s) if s.text == "aAB<\""));
    }
}
