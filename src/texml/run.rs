//! The runner of one call's TeXML flow: it fetches the documents from the app
//! server and drives the call through the same commands the control API sends
//! (`call::control::Action`: answer, reject, speak, playback, gather, streaming,
//! hangup), waiting on the call's own events (`call.speak.ended`,
//! `call.playback.ended`, `call.gather.ended`, `streaming.stopped`/`failed`,
//! `call.hangup`) on the event bus.
//!
//! Every wait is bounded (the audio's length plus a margin, a gather's timers,
//! [`MAX_STREAM`] for `<Connect><Stream>`), and so is the flow: at most
//! [`MAX_FETCHES`] documents per call and [`MAX_REDIRECTS`] `<Redirect>`s in a
//! row. A document that cannot be fetched or parsed goes to `fallback_url`
//! (with TwiML's `ErrorCode`/`ErrorUrl`); if that fails too the call is hung up
//! (rejected with 500 before answer), logged, and `call.texml.failed` is emitted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::document::{self, Dial, Document, Gather, Method, Prompt, Record, RejectReason, Stream, Verb};
use super::fetch;
use super::params;
use crate::call::control::{Action, ActionError, GatherPrompt, GatherRequest};
use crate::call::services::{CallControl, CallServices, DialRequest};
use crate::call::{CallEvent, CallInfo};
use crate::config::{AnswerUrl, HttpMethod, StreamProtocol};
use crate::media::clip::Clip;

/// Most documents one call fetches (the answer URL, fallbacks, `action`s,
/// `<Redirect>`s).
pub const MAX_FETCHES: usize = 64;
/// Most `<Redirect>`s followed in a row without any other verb between them.
pub const MAX_REDIRECTS: usize = 10;
/// Longest `<Connect><Stream>` the runner waits for before it goes on.
pub const MAX_STREAM: Duration = Duration::from_secs(4 * 3600);
/// Longest flow: past it the runner hangs the call up at its next step.
pub const MAX_FLOW: Duration = Duration::from_secs(4 * 3600);
/// Longest audio one `<Say>`/`<Play>` (loops included) or `<Gather>` prompt plays.
pub const MAX_AUDIO: Duration = Duration::from_secs(600);
/// Added to an audio's length when waiting for its end event.
const MARGIN: Duration = Duration::from_secs(15);
/// Samples per second of the call's PCM.
const RATE: usize = 8000;

/// TwiML error codes sent to `fallback_url` (www.twilio.com/docs/api/errors).
const HTTP_RETRIEVAL_FAILURE: &str = "11200";
const DOCUMENT_PARSE_FAILURE: &str = "12100";

/// Starts the flow of the incoming call `info` (parked, ringing) from `app`.
/// Subscribes to the event bus at once, so no event of the call is missed.
/// `control` places the calls of `<Dial>`.
pub fn spawn(control: CallControl, info: CallInfo, app: AnswerUrl) {
    let services = control.services.clone();
    let events = services.events.subscribe();
    let deadline = tokio::time::Instant::now() + MAX_FLOW;
    let flow = Flow { services, control, info, app, events, answered: None, hangup: None, deadline };
    tokio::spawn(flow.run());
}

/// The call ended (or cannot take commands any more).
struct Gone;

/// What comes after a document.
enum Next {
    /// Fetch this document and run it.
    Fetch(url::Url, Method, Vec<(String, String)>),
    /// The document ran out: hang up (TwiML).
    End,
}

struct Flow {
    services: CallServices,
    control: CallControl,
    info: CallInfo,
    app: AnswerUrl,
    events: broadcast::Receiver<Arc<CallEvent>>,
    /// When the call was answered (`call.answered`, or the answer command).
    answered: Option<std::time::Instant>,
    /// The call's `call.hangup` payload, once seen.
    hangup: Option<Map<String, Value>>,
    /// [`MAX_FLOW`] after the start.
    deadline: tokio::time::Instant,
}

fn method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Post => Method::Post,
        HttpMethod::Get => Method::Get,
    }
}

impl Flow {
    /// A document's `method`, or the route's `answer_method` when it names none.
    fn method(&self, given: Option<Method>) -> Method {
        given.unwrap_or(method(self.app.method))
    }

    fn id(&self) -> &str {
        &self.info.ids.call_control_id
    }

    async fn run(mut self) {
        let mut next = Next::Fetch(self.app.url.clone(), method(self.app.method), Vec::new());
        let mut fetches = 0;
        let mut redirects = 0;
        let outcome: Result<(), Gone> = async {
            while let Next::Fetch(url, m, extra) = next {
                fetches += 1;
                if fetches > MAX_FETCHES {
                    self.failed(&url, "limit", &format!("more than {MAX_FETCHES} documents on one call"));
                    return self.give_up().await;
                }
                let Some((doc, url)) = self.document(url, m, &extra).await else { return self.give_up().await };
                let redirect_only = matches!(doc.verbs.as_slice(), [Verb::Redirect(_)]);
                redirects = if redirect_only { redirects + 1 } else { 0 };
                if redirects > MAX_REDIRECTS {
                    self.failed(&url, "limit", &format!("more than {MAX_REDIRECTS} redirects in a row"));
                    return self.give_up().await;
                }
                next = self.execute(doc, &url).await?;
            }
            // The document ran out of verbs: the call ends (TwiML).
            self.command(Action::Hangup).await
        }
        .await;
        let _ = outcome;
        tracing::debug!(call_control_id = %self.id(), "TeXML flow over");
        if let Some(url) = self.app.status_callback.clone() {
            self.status_callback(&url).await;
        }
    }

    /// `statusCallback` on call end (www.twilio.com/docs/voice/api/call-resource#statuscallback):
    /// POST of the call's fields with the final `CallStatus` (`completed`,
    /// `busy`, `no-answer`, `canceled`, `failed`) and `CallDuration` (seconds
    /// from the answer). The answer is not read; a failure is logged only.
    async fn status_callback(&mut self, url: &url::Url) {
        if self.hangup.is_none() {
            // The flow may end before the call does (a stream, or the hangup
            // still on its way): wait for it, at most the park limit.
            let _ = self.wait(&[], crate::call::core::PARK_LIMIT).await;
        }
        let cause = self.hangup.as_ref().and_then(|p| p.get("hangup_cause")).and_then(Value::as_str).unwrap_or("");
        let status = match (self.answered.is_some(), cause) {
            (true, _) => "completed",
            (false, "user_busy") => "busy",
            (false, "no_answer" | "timeout") => "no-answer",
            (false, "originator_cancel") => "canceled",
            (false, _) => "failed",
        };
        let mut form = params::call(&self.info, status);
        let duration = self.answered.map_or(0, |a| a.elapsed().as_secs());
        form.push(("CallDuration".into(), duration.to_string()));
        form.push(("Timestamp".into(), crate::call::rfc3339_micros(std::time::SystemTime::now())));
        if let Err(e) = fetch::request(url, Method::Post, &form, self.app.timeout).await {
            tracing::warn!(call_control_id = %self.id(), url = %url, "TeXML statusCallback: {e}");
        }
    }

    /// The document at `url`, or the fallback's; `None` when neither could be
    /// had (each failure logged and reported).
    async fn document(&mut self, url: url::Url, m: Method, extra: &[(String, String)]) -> Option<(Document, url::Url)> {
        let mut form = params::call(&self.info, if self.answered.is_some() { "in-progress" } else { "ringing" });
        form.extend(extra.iter().cloned());
        let code = match self.fetch_one(&url, m, &form).await {
            Ok(doc) => return Some((doc, url)),
            Err(code) => code,
        };
        let fallback = self.app.fallback_url.clone()?;
        form.push(("ErrorCode".into(), code.into()));
        form.push(("ErrorUrl".into(), url.to_string()));
        match self.fetch_one(&fallback, m, &form).await {
            Ok(doc) => Some((doc, fallback)),
            Err(_) => None,
        }
    }

    /// One fetch and parse; on failure, the TwiML error code (after the log
    /// line and `call.texml.failed`).
    async fn fetch_one(
        &mut self,
        url: &url::Url,
        m: Method,
        form: &[(String, String)],
    ) -> Result<Document, &'static str> {
        let timeout = self.app.timeout;
        let body = match fetch::request(url, m, form, timeout).await {
            Ok(b) => b,
            Err(e) => {
                self.failed(url, "fetch", &e.to_string());
                return Err(HTTP_RETRIEVAL_FAILURE);
            }
        };
        match document::parse(&body) {
            Ok(d) => Ok(d),
            Err(e) => {
                self.failed(url, "parse", &e.to_string());
                Err(DOCUMENT_PARSE_FAILURE)
            }
        }
    }

    /// Logs and emits `call.texml.failed` (`url`, `stage`: fetch, parse, verb or
    /// limit, `reason`).
    fn failed(&self, url: &url::Url, stage: &str, reason: &str) {
        tracing::warn!(call_control_id = %self.id(), url = %url, stage, "TeXML: {reason}");
        let mut p = self.info.payload(if self.answered.is_some() { "answered" } else { "parked" });
        p.insert("url".into(), json!(url.as_str()));
        p.insert("stage".into(), json!(stage));
        p.insert("reason".into(), json!(reason));
        self.services.events.emit(self.info.event("call.texml.failed", p));
    }

    /// No document to run: the call ends (500 before answer).
    async fn give_up(&mut self) -> Result<(), Gone> {
        if self.answered.is_some() {
            self.command(Action::Hangup).await
        } else {
            self.command(Action::Reject { sip_code: 500 }).await
        }
    }

    /// Sends `action`; an error other than "ended" is logged and the flow goes on.
    async fn command(&mut self, action: Action) -> Result<(), Gone> {
        let name = crate::call::core::action_name(&action);
        match self.services.calls.command(&self.info.ids.call_control_id, action).await {
            None => Err(Gone),
            Some(Ok(())) => Ok(()),
            Some(Err(e)) if e == ActionError::ended() => Err(Gone),
            Some(Err(e)) => {
                tracing::warn!(call_control_id = %self.id(), "TeXML: {name} refused: {}", e.detail);
                Ok(())
            }
        }
    }

    async fn answer(&mut self) -> Result<(), Gone> {
        if self.answered.is_none() {
            self.command(Action::Answer { stream: None }).await?;
            self.answered = Some(std::time::Instant::now());
            // Media commands wait for the answer to be confirmed (the ACK:
            // `call.answered`); 32 s is RFC 3261's Timer H.
            if self.wait(&["call.answered"], Duration::from_secs(32)).await?.is_none() {
                tracing::warn!(call_control_id = %self.id(), "TeXML: no call.answered 32 s after the answer");
            }
        }
        Ok(())
    }

    /// Waits for one of `types` of this call (its payload), at most `limit`
    /// (`None` after it); `Gone` on `call.hangup`.
    async fn wait(&mut self, types: &[&str], limit: Duration) -> Result<Option<Map<String, Value>>, Gone> {
        let deadline = (tokio::time::Instant::now() + limit).min(self.deadline);
        loop {
            let e = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(None),
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(call_control_id = %self.id(), "TeXML: {n} events missed");
                    continue;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Gone),
                Ok(Ok(e)) => e,
            };
            if e.payload.get("call_control_id").and_then(Value::as_str) != Some(self.id()) {
                continue;
            }
            if e.event_type == "call.hangup" {
                self.hangup = Some(e.payload.clone());
                return Err(Gone);
            }
            if types.contains(&e.event_type.as_str()) {
                return Ok(Some(e.payload.clone()));
            }
        }
    }

    async fn execute(&mut self, doc: Document, url: &url::Url) -> Result<Next, Gone> {
        for verb in doc.verbs {
            if tokio::time::Instant::now() >= self.deadline {
                self.failed(url, "limit", &format!("the flow ran longer than {MAX_FLOW:?}"));
                self.command(Action::Hangup).await?;
                return Err(Gone);
            }
            match verb {
                Verb::Reject(reason) if self.answered.is_none() => {
                    let sip_code = if reason == RejectReason::Busy { 486 } else { 603 };
                    self.command(Action::Reject { sip_code }).await?;
                    return Err(Gone);
                }
                Verb::Hangup | Verb::Reject(_) => {
                    self.command(Action::Hangup).await?;
                    return Err(Gone);
                }
                Verb::Redirect(t) => match fetch::resolve(url, &t.url) {
                    Ok(u) => return Ok(Next::Fetch(u, self.method(t.method), Vec::new())),
                    Err(e) => self.failed(url, "verb", &format!("<Redirect>: {e}")),
                },
                Verb::Unsupported(name) => {
                    self.answer().await?;
                    self.failed(url, "verb", &format!("<{name}> is not supported; skipped"));
                }
                Verb::Say(s) => {
                    self.answer().await?;
                    if let Some(pcm) = self.say(&s, url).await {
                        self.play_pcm(pcm).await?;
                    }
                }
                Verb::Play(p) => {
                    self.answer().await?;
                    if let Some(pcm) = self.load(&p.url, p.loops, url).await {
                        self.play_pcm(pcm).await?;
                    }
                }
                Verb::Pause(d) => {
                    self.answer().await?;
                    self.wait(&[], d).await?;
                }
                Verb::Gather(g) => {
                    self.answer().await?;
                    if let Some(next) = self.gather(g, url).await? {
                        return Ok(next);
                    }
                }
                Verb::Dial(d) => {
                    self.answer().await?;
                    if let Some(next) = self.dial(d, url).await? {
                        return Ok(next);
                    }
                }
                Verb::Record(r) => {
                    self.answer().await?;
                    if let Some(next) = self.record(r, url).await? {
                        return Ok(next);
                    }
                }
                Verb::Connect(s) => {
                    self.answer().await?;
                    if self.stream(&s, url).await? {
                        self.wait(&["streaming.stopped", "streaming.failed"], MAX_STREAM).await?;
                    }
                }
                Verb::Start(s) => {
                    self.answer().await?;
                    self.stream(&s, url).await?;
                }
                Verb::Suppression(s) => {
                    self.answer().await?;
                    self.command(Action::Suppress(s)).await?;
                }
            }
        }
        Ok(Next::End)
    }

    /// Speech of a `<Say>` by `[tts]`, repeated `loop` times; `None` (reported)
    /// when it cannot be synthesized.
    async fn say(&self, s: &document::Say, url: &url::Url) -> Option<Clip> {
        let segments = match crate::tts::segments(&s.text, false) {
            Ok(seg) => seg,
            Err(e) => {
                self.failed(url, "verb", &format!("<Say>: {e}"));
                return None;
            }
        };
        let speech = crate::tts::Speech { segments, voice: s.voice.clone(), language: s.language.clone() };
        let cfg = self.services.config.borrow().tts.clone();
        match crate::tts::synthesize(&cfg, &speech).await {
            Ok(pcm) => Some(repeat(&pcm, s.loops)),
            Err(e) => {
                self.failed(url, "verb", &format!("<Say> not synthesized: {e}"));
                None
            }
        }
    }

    /// The audio of a `<Play>` (`[media]` policy), repeated; `None` (reported)
    /// when it cannot be had.
    async fn load(&self, given: &str, loops: u32, url: &url::Url) -> Option<Clip> {
        let source = match fetch::resolve(url, given) {
            Ok(u) => u,
            Err(e) => {
                self.failed(url, "verb", &format!("<Play>: {e}"));
                return None;
            }
        };
        let policy = self.services.config.borrow().media.clone();
        match crate::call::playback::load(source.as_str(), &policy).await {
            Ok(pcm) => Some(repeat(&pcm, loops)),
            Err(e) => {
                self.failed(url, "verb", &format!("<Play> {source}: {e}"));
                None
            }
        }
    }

    /// Plays `pcm` as `speak` does and waits for its end.
    async fn play_pcm(&mut self, pcm: Clip) -> Result<(), Gone> {
        let limit = length(&pcm.narrow) + MARGIN;
        self.command(Action::Speak { pcm: Arc::new(pcm), stop: false }).await?;
        self.wait(&["call.speak.ended"], limit).await?;
        Ok(())
    }

    /// Runs a `<Gather>`: `Some(next)` when its `action` is to be requested.
    async fn gather(&mut self, g: Gather, url: &url::Url) -> Result<Option<Next>, Gone> {
        let mut prompt = Clip::empty();
        for p in &g.prompts {
            // A part that cannot be had is reported and left out.
            let part = match p {
                Prompt::Say(s) => self.say(s, url).await,
                Prompt::Play(p) => self.load(&p.url, p.loops, url).await,
                Prompt::Pause(d) => {
                    prompt.append_silence(d.as_millis() as usize);
                    None
                }
            };
            if let Some(part) = part {
                prompt.append(&part);
            }
            prompt.truncate_ms(MAX_AUDIO.as_millis() as usize);
        }
        if prompt.narrow.is_empty() {
            // The gather's timers run from its prompt's end: 20 ms of silence
            // makes a gather without one time like one with.
            prompt = Clip::narrowband(vec![0; RATE / 50]);
        }
        let limit = length(&prompt.narrow) + g.timeout * (crate::call::gather::MAX_DIGITS as u32 + 2) + MARGIN;
        let spec = crate::call::gather::GatherSpec {
            minimum_digits: 1,
            maximum_digits: g.num_digits.unwrap_or(crate::call::gather::MAX_DIGITS),
            terminating_digit: g.finish_on_key,
            timeout: g.timeout,
            inter_digit_timeout: g.timeout,
            initial_timeout: g.timeout,
            maximum_tries: 1,
            ..Default::default()
        };
        let request = GatherRequest { spec, prompt: Some(GatherPrompt { prompt: Arc::new(prompt), invalid: None }) };
        self.command(Action::Gather(Box::new(request))).await?;
        let ended = self.wait(&["call.gather.ended"], limit).await?;
        let digits = ended.as_ref().and_then(|p| p.get("digits")).and_then(Value::as_str).unwrap_or_default();
        if digits.is_empty() && !g.action_on_empty_result {
            return Ok(None);
        }
        let action = match &g.action {
            None => Ok(url.clone()),
            Some(t) => fetch::resolve(url, &t.url),
        };
        match action {
            Ok(u) => {
                let m = self.method(g.action.as_ref().and_then(|t| t.method));
                Ok(Some(Next::Fetch(u, m, vec![("Digits".into(), digits.to_string())])))
            }
            Err(e) => {
                self.failed(url, "verb", &format!("<Gather> action: {e}"));
                Ok(None)
            }
        }
    }

    /// Runs a `<Dial>`: the number is called through the trunk and, once it
    /// answers, bridged with this call (as `transfer` does) until either side
    /// hangs up or `timeLimit` passes. `Some(next)` when `action` is to be
    /// requested with TwiML's `DialCallStatus` (`completed`, `busy`,
    /// `no-answer`, `failed`), `DialCallSid` and `DialCallDuration`.
    async fn dial(&mut self, d: Dial, url: &url::Url) -> Result<Option<Next>, Gone> {
        let req = DialRequest {
            trunk: d.trunk.clone().unwrap_or_else(|| self.info.connection_id.clone()),
            from: d.caller_id.clone().unwrap_or_else(|| self.info.from.clone()),
            to: d.number.clone(),
            timeout: d.timeout,
            client_state: None,
            stream: None,
            record: false,
            record_format: None,
            webhook_url: None,
            bridge_with: Some(self.id().to_string()),
            // TwiML's `<Number machineDetection>` is not read (docs/texml.md).
            answering_machine_detection: None,
        };
        // TwiML: when the dialled party hangs up, the caller goes on with the
        // document (`action`, or the next verb).
        self.services.calls.set_park_after_unbridge(self.id(), true);
        let (status, sid, duration) = match self.control.dial(req).await {
            Err(e) => {
                self.failed(url, "verb", &format!("<Dial> {}: {}", d.number, e.detail));
                ("failed", String::new(), Duration::ZERO)
            }
            Ok(view) => {
                let other = view.info.ids.call_control_id.clone();
                let (status, duration) = self.follow(&other, &d).await?;
                if self.hangup.is_none() {
                    // This call stays up, alone in the bridge: out of it, for the next verb.
                    let _ = self.services.calls.command(self.id(), Action::LeaveRoom).await;
                }
                (status, other, duration)
            }
        };
        let gone = self.hangup.is_some();
        let Some(t) = &d.action else { return if gone { Err(Gone) } else { Ok(None) } };
        match fetch::resolve(url, &t.url) {
            Ok(u) => {
                let form = vec![
                    ("DialCallStatus".to_string(), status.to_string()),
                    ("DialCallSid".to_string(), sid),
                    ("DialCallDuration".to_string(), duration.as_secs().to_string()),
                ];
                if gone {
                    // Requested, not run: the call is over (TwiML).
                    let mut all = params::call(&self.info, "completed");
                    all.extend(form);
                    let _ = fetch::request(&u, self.method(t.method), &all, self.app.timeout).await;
                    return Err(Gone);
                }
                Ok(Some(Next::Fetch(u, self.method(t.method), form)))
            }
            Err(e) => {
                self.failed(url, "verb", &format!("<Dial> action: {e}"));
                Ok(None)
            }
        }
    }

    /// Follows the dialled call `other` to its end: (`DialCallStatus`, time
    /// answered). This call hanging up first hangs `other` up (`self.hangup`
    /// is then set).
    async fn follow(&mut self, other: &str, d: &Dial) -> Result<(&'static str, Duration), Gone> {
        let mut deadline = tokio::time::Instant::now() + d.timeout + MARGIN;
        let mut answered: Option<tokio::time::Instant> = None;
        let mut hung_up = false;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv()).await;
            let e = match event {
                Err(_) if !hung_up => {
                    // Ring or time limit over: end the dialled call, wait for its hangup.
                    hung_up = true;
                    let _ = self.services.calls.command(other, Action::Hangup).await;
                    deadline = tokio::time::Instant::now() + MARGIN;
                    continue;
                }
                Err(_) => return Ok(("failed", answered.map_or(Duration::ZERO, |a| a.elapsed()))),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Gone),
                Ok(Ok(e)) => e,
            };
            let of = e.payload.get("call_control_id").and_then(Value::as_str);
            if of == Some(self.id()) && e.event_type == "call.hangup" {
                // The caller left (or the bridge ended it): the dialled call
                // ends too; the action still hears how the dial went.
                self.hangup = Some(e.payload.clone());
                let _ = self.services.calls.command(other, Action::Hangup).await;
                let status = if answered.is_some() { "completed" } else { "canceled" };
                return Ok((status, answered.map_or(Duration::ZERO, |a| a.elapsed())));
            }
            if of != Some(other) {
                continue;
            }
            match e.event_type.as_str() {
                "call.answered" if answered.is_none() => {
                    answered = Some(tokio::time::Instant::now());
                    deadline = tokio::time::Instant::now() + d.time_limit;
                }
                "call.hangup" => {
                    let status = match (answered, e.payload.get("hangup_cause").and_then(Value::as_str)) {
                        (Some(_), _) => "completed",
                        (None, Some("user_busy")) => "busy",
                        (None, Some("no_answer" | "timeout" | "originator_cancel")) => "no-answer",
                        _ => "failed",
                    };
                    return Ok((status, answered.map_or(Duration::ZERO, |a| a.elapsed())));
                }
                _ => {}
            }
        }
    }

    /// Runs a `<Record>`: a beep, then the call's recording (`record_start`,
    /// mono) until a `finishOnKey` key, `maxLength` or the hangup. `action` gets
    /// TwiML's `RecordingUrl` (the box's download URL), `RecordingDuration`,
    /// `RecordingSid` and `Digits` (the key, or `hangup`); the
    /// `recordingStatusCallback` gets `RecordingStatus` `completed` with the
    /// same fields. After a hangup the action is requested but not run (TwiML).
    async fn record(&mut self, r: Record, url: &url::Url) -> Result<Option<Next>, Gone> {
        if r.play_beep {
            self.play_pcm(Clip::narrowband(beep())).await?;
        }
        let started = self
            .services
            .calls
            .command(
                self.id(),
                Action::RecordStart(crate::call::recording::StartOptions {
                    channels: Some(crate::config::Channels::Single),
                    ..Default::default()
                }),
            )
            .await;
        match started {
            None => return Err(Gone),
            Some(Err(e)) if e == ActionError::ended() => return Err(Gone),
            Some(Err(e)) => {
                self.failed(url, "verb", &format!("<Record>: {}", e.detail));
                return Ok(None);
            }
            Some(Ok(())) => {}
        }
        let mut deadline = tokio::time::Instant::now() + r.max_length;
        let mut digits = String::new();
        let mut stopped = false;
        let saved = loop {
            let e = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) if !stopped => {
                    stopped = true;
                    let _ = self.services.calls.command(self.id(), Action::RecordStop).await;
                    deadline = tokio::time::Instant::now() + MARGIN;
                    continue;
                }
                Err(_) => break None,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Gone),
                Ok(Ok(e)) => e,
            };
            if e.payload.get("call_control_id").and_then(Value::as_str) != Some(self.id()) {
                continue;
            }
            match e.event_type.as_str() {
                "call.dtmf.received" if !stopped => {
                    let key = e.payload.get("digit").and_then(Value::as_str).unwrap_or_default();
                    if !key.is_empty() && r.finish_on_key.contains(key) {
                        digits = key.to_string();
                        stopped = true;
                        let _ = self.services.calls.command(self.id(), Action::RecordStop).await;
                        deadline = tokio::time::Instant::now() + MARGIN;
                    }
                }
                "call.hangup" => {
                    // The recording is saved as the call ends: wait for it.
                    self.hangup = Some(e.payload.clone());
                    digits = "hangup".into();
                    stopped = true;
                    deadline = tokio::time::Instant::now() + MARGIN;
                }
                "call.recording.saved" => break Some(e.payload.clone()),
                _ => {}
            }
        };
        let Some(saved) = saved else {
            self.failed(url, "verb", "<Record>: the recording was not saved");
            return if self.hangup.is_some() { Err(Gone) } else { Ok(None) };
        };
        let recording_url = saved
            .get("recording_urls")
            .and_then(|u| u.get("wav").or_else(|| u.get("mp3")))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let millis = saved.get("duration_millis").and_then(Value::as_u64).unwrap_or(0);
        let fields = vec![
            ("RecordingUrl".to_string(), recording_url.to_string()),
            (
                "RecordingSid".to_string(),
                saved.get("recording_id").and_then(Value::as_str).unwrap_or_default().to_string(),
            ),
            ("RecordingDuration".to_string(), (millis / 1000).to_string()),
        ];
        if let Some(cb) = &r.status_callback {
            match fetch::resolve(url, &cb.url) {
                Ok(u) => {
                    let mut form =
                        params::call(&self.info, if self.hangup.is_some() { "completed" } else { "in-progress" });
                    form.extend(fields.iter().cloned());
                    form.push(("RecordingStatus".into(), "completed".into()));
                    form.push(("RecordingChannels".into(), "1".into()));
                    form.push(("RecordingSource".into(), "RecordVerb".into()));
                    if let Err(e) = fetch::request(&u, self.method(cb.method), &form, self.app.timeout).await {
                        tracing::warn!(call_control_id = %self.id(), url = %u, "TeXML recordingStatusCallback: {e}");
                    }
                }
                Err(e) => self.failed(url, "verb", &format!("<Record> recordingStatusCallback: {e}")),
            }
        }
        let action = match &r.action {
            None => Ok(url.clone()),
            Some(t) => fetch::resolve(url, &t.url),
        };
        let method = self.method(r.action.as_ref().and_then(|t| t.method));
        let mut form = fields;
        form.push(("Digits".into(), digits));
        match action {
            Ok(u) if self.hangup.is_some() => {
                // Requested, not run: the call is over.
                let mut all = params::call(&self.info, "completed");
                all.extend(form);
                let _ = fetch::request(&u, method, &all, self.app.timeout).await;
                Err(Gone)
            }
            Ok(u) => Ok(Some(Next::Fetch(u, method, form))),
            Err(e) => {
                self.failed(url, "verb", &format!("<Record> action: {e}"));
                Ok(None)
            }
        }
    }

    /// Starts a `<Stream>`; `false` (reported) when it could not start.
    async fn stream(&mut self, s: &Stream, url: &url::Url) -> Result<bool, Gone> {
        let spec = match stream_spec(s) {
            Ok(spec) => spec,
            Err(e) => {
                self.failed(url, "verb", &format!("<Stream>: {e}"));
                return Ok(false);
            }
        };
        match self.services.calls.command(self.id(), Action::StreamingStart(Box::new(spec))).await {
            None => Err(Gone),
            Some(Err(e)) if e == ActionError::ended() => Err(Gone),
            Some(Err(e)) => {
                self.failed(url, "verb", &format!("<Stream>: {}", e.detail));
                Ok(false)
            }
            Some(Ok(())) => Ok(true),
        }
    }
}

/// The stream spec of a `<Stream>`: `protocol` twilio unless the document
/// names another; the protocol's default encoding at 8000 Hz; bidirectional.
///
/// # Errors
/// Unknown protocol or track, a URL of the wrong scheme.
pub fn stream_spec(s: &Stream) -> Result<crate::agent::stream::StreamSpec, String> {
    use crate::config::StreamTrack;
    let protocol = match s.protocol.as_deref() {
        None => StreamProtocol::Twilio,
        Some(p) => StreamProtocol::from_name(p).ok_or_else(|| format!("protocol {p:?} is not known"))?,
    };
    let url = crate::config::values::parse_url(&s.url, protocol.schemes())?;
    let track = match s.track.as_deref() {
        None | Some("inbound_track" | "inbound") => StreamTrack::InboundTrack,
        Some("outbound_track" | "outbound") => StreamTrack::OutboundTrack,
        Some("both_tracks") => StreamTrack::BothTracks,
        Some(t) => return Err(format!("track {t:?} is not inbound_track, outbound_track or both_tracks")),
    };
    let custom_parameters = s.parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    Ok(crate::agent::stream::StreamSpec {
        name: s.name.clone().unwrap_or_else(|| "texml".into()),
        url,
        protocol,
        auth_token: None,
        encoding: protocol.default_encoding(),
        sample_rate: 8000,
        track,
        bidirectional: true,
        connect_timeout: Duration::from_secs(5),
        custom_parameters,
    })
}

/// `<Record playBeep>`'s beep: 250 ms of 1000 Hz (8 kHz PCM).
fn beep() -> Vec<i16> {
    (0..RATE / 4)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / RATE as f64).sin()) as i16)
        .collect()
}

/// `clip` `loops` times (at least once), at most [`MAX_AUDIO`] long.
fn repeat(clip: &Clip, loops: u32) -> Clip {
    let cap = RATE * MAX_AUDIO.as_secs() as usize;
    let mut out = Clip::empty();
    for _ in 0..loops.max(1) {
        out.append(clip);
        if out.narrow.len() >= cap {
            break;
        }
    }
    out.truncate_ms(MAX_AUDIO.as_millis() as usize);
    out
}

fn length(pcm: &[i16]) -> Duration {
    Duration::from_millis(pcm.len() as u64 * 1000 / RATE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::control::Command;
    use crate::call::{CallIds, Direction};

    /// A dialer that places nothing.
    struct NoDialer;

    impl crate::call::services::Dialer for NoDialer {
        fn dial(&self, _: DialRequest) -> crate::call::services::Dialing<'_> {
            Box::pin(async { Err(ActionError::invalid("no dialer in this test")) })
        }
        fn test_route(&self, _: crate::call::services::RouteTestRequest) -> crate::call::services::Testing<'_> {
            Box::pin(async { Err(ActionError::invalid("no route tests")) })
        }
    }

    /// A flow over in-memory call services (no sockets), its call registered and
    /// played by a task that answers every command, emits what a call would
    /// (`call.answered`, `call.gather.ended` with `digits`, `call.hangup` after
    /// a hangup or reject) and reports each command's name.
    fn flow(digits: &'static str) -> (Flow, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[[trunk]]\nname = \"pbx\"\ninbound_allow = [\"127.0.0.0/8\"]\n").unwrap();
        let cfg = crate::config::load_with_env(&path, Vec::new()).unwrap().config;
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(cfg));
        let bus = crate::call::EventBus::new();
        let calls = crate::call::control::CallRegistry::default();
        let services =
            CallServices::new(rx, bus.clone(), calls.clone(), tokio_util::sync::CancellationToken::new()).unwrap();
        let control = CallControl::new(services.clone(), Arc::new(NoDialer));
        let info = CallInfo {
            ids: CallIds::new_session(),
            direction: Direction::Incoming,
            from: "+15550000001".into(),
            to: "+13125550100".into(),
            connection_id: "pbx".into(),
            sip_call_id: "c".into(),
            start_time: std::time::SystemTime::now(),
            client_state: None,
            custom_headers: vec![],
            webhook_url: None,
        };
        let mut reg = calls.register(&info, "parked");
        let (names, seen) = tokio::sync::mpsc::unbounded_channel();
        let call = info.clone();
        let call_bus = bus.clone();
        tokio::spawn(async move {
            for _ in 0..32 {
                let Command { action, reply } = reg.next().await;
                let _ = names.send(crate::call::core::action_name(&action).to_string());
                let _ = reply.send(Ok(()));
                match *action {
                    Action::Answer { .. } => call_bus.emit(call.answered()),
                    Action::Gather(_) => {
                        let mut p = call.payload("answered");
                        p.insert("digits".into(), json!(digits));
                        call_bus.emit(call.event("call.gather.ended", p));
                    }
                    Action::Hangup | Action::Reject { .. } => {
                        call_bus.emit(call.event("call.hangup", call.payload("hangup")));
                        return;
                    }
                    _ => {}
                }
            }
        });
        let app = AnswerUrl {
            url: "https://app.example/ivr/answer".parse().unwrap(),
            method: HttpMethod::Post,
            timeout: Duration::from_secs(1),
            fallback_url: None,
            status_callback: None,
        };
        let events = bus.subscribe();
        let deadline = tokio::time::Instant::now() + MAX_FLOW;
        (Flow { services, control, info, app, events, answered: None, hangup: None, deadline }, seen)
    }

    fn drained(mut seen: tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(n) = seen.try_recv() {
            out.push(n);
        }
        out
    }

    #[tokio::test]
    async fn a_gather_with_digits_hands_over_to_its_action_and_unsupported_verbs_are_skipped() {
        let (mut f, seen) = flow("7");
        let mut bus = f.services.events.subscribe();
        let doc = document::parse(
            "<Response><Pause length=\"0\"/><Enqueue>q</Enqueue><Gather action=\"next\" numDigits=\"1\"/>\
             <Hangup/></Response>",
        )
        .unwrap();
        let url = f.app.url.clone();
        let Ok(Next::Fetch(next, m, form)) = f.execute(doc, &url).await else { panic!("the action is next") };
        assert_eq!((next.as_str(), m), ("https://app.example/ivr/next", Method::Post));
        assert_eq!(form, vec![("Digits".to_string(), "7".to_string())]);
        assert_eq!(drained(seen), ["answer", "gather"], "nothing after the gather ran");
        let failed = loop {
            let e = bus.recv().await.unwrap();
            if e.event_type == "call.texml.failed" {
                break e;
            }
        };
        assert_eq!(
            (failed.payload["stage"].as_str(), failed.payload["url"].as_str()),
            (Some("verb"), Some(url.as_str()))
        );
        assert!(failed.payload["reason"].as_str().unwrap().contains("<Enqueue> is not supported"));
    }

    #[tokio::test]
    async fn an_empty_gather_goes_on_and_reject_before_the_answer_refuses_the_call() {
        let (mut f, seen) = flow("");
        let url = f.app.url.clone();
        let doc = document::parse("<Response><Gather/><Hangup/><Say>never</Say></Response>").unwrap();
        assert!(matches!(f.execute(doc, &url).await, Err(Gone)));
        assert_eq!(drained(seen), ["answer", "gather", "hangup"]);

        let (mut f, seen) = flow("");
        let doc = document::parse("<Response><Reject reason=\"busy\"/><Hangup/></Response>").unwrap();
        assert!(matches!(f.execute(doc, &url).await, Err(Gone)));
        assert_eq!(drained(seen), ["reject"], "refused while ringing, never answered");

        let (mut f, seen) = flow("");
        let doc =
            document::parse("<Response><Redirect method=\"GET\">/top?x=1</Redirect><Hangup/></Response>").unwrap();
        let Ok(Next::Fetch(next, m, _)) = f.execute(doc, &url).await else { panic!("redirected") };
        assert_eq!((next.as_str(), m), ("https://app.example/top?x=1", Method::Get));
        assert!(drained(seen).is_empty(), "a redirect alone neither answers nor refuses");
    }

    #[test]
    fn a_stream_is_twilio_at_8000_hz_unless_the_document_names_a_protocol() {
        let s = Stream {
            url: "wss://agent.example/s".into(),
            name: None,
            track: None,
            protocol: None,
            parameters: vec![("k".into(), "v".into())],
        };
        let spec = stream_spec(&s).unwrap();
        assert_eq!((spec.protocol, spec.sample_rate, spec.bidirectional), (StreamProtocol::Twilio, 8000, true));
        assert_eq!(spec.custom_parameters["k"], "v");
        let t = Stream { protocol: Some("telnyx".into()), track: Some("both_tracks".into()), ..s.clone() };
        assert_eq!(stream_spec(&t).unwrap().protocol, StreamProtocol::Telnyx);
        assert!(stream_spec(&Stream { protocol: Some("sms".into()), ..s.clone() }).is_err());
        assert!(stream_spec(&Stream { url: "https://x/".into(), ..s.clone() }).is_err());
        assert!(stream_spec(&Stream { track: Some("left".into()), ..s }).is_err());
    }

    #[test]
    fn repeated_audio_is_capped() {
        assert_eq!(repeat(&Clip::narrowband(vec![1, 2]), 3), Clip::narrowband(vec![1, 2, 1, 2, 1, 2]));
        let both = Clip { narrow: vec![1], wide: Some(vec![1, 1]) };
        assert_eq!(repeat(&both, 2), Clip { narrow: vec![1, 1], wide: Some(vec![1, 1, 1, 1]) }, "each rate repeated");
        let long = Clip { narrow: vec![0i16; RATE * 400], wide: Some(vec![0i16; 2 * RATE * 400]) };
        let capped = repeat(&long, 10);
        assert_eq!(capped.narrow.len(), RATE * MAX_AUDIO.as_secs() as usize);
        assert_eq!(capped.wide.map(|w| w.len()), Some(2 * RATE * MAX_AUDIO.as_secs() as usize));
        assert_eq!(length(&[0; 8000]), Duration::from_secs(1));
    }
}
