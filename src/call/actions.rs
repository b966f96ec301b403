//! The media work of API commands on a call that runs its own media (Telnyx
//! Call Control actions: streaming, playback, recording, DTMF, mute, rooms),
//! once `call::core` has said the action applies, and the helpers every kind
//! of call uses for its agent stream and recordings. Written once for every
//! leg kind; the shell (`call::shell`) calls it.

use std::sync::Arc;

use super::CallInfo;
use super::control::{Action, ActionError, Registration};
use super::playback::{Loops, Playbacks, Playing};
use super::recording::{CallRecorder, CallRecording};
use super::services::CallServices;
use crate::agent::stream::{AgentStream, StreamEvent, StreamSpec};
use crate::config::StreamTrack;
use crate::media::leg::Tap;
use crate::media::pcm::pcm_pair;
use crate::media::session::MediaSession;

/// What an API command needs of a call that runs its own media (inbound agent or
/// echo calls, API-dialled calls).
pub struct LegControl<'a> {
    /// The call layer's handles.
    pub services: &'a CallServices,
    /// The leg's ids and client state.
    pub info: &'a mut CallInfo,
    /// Its media.
    pub media: &'a mut MediaSession,
    /// Its agent stream, if any.
    pub agent: &'a mut Option<AgentStream>,
    /// Its registration (what the API shows).
    pub control: &'a Registration,
    /// Playbacks in progress.
    pub playbacks: &'a mut Playbacks,
    /// The recorder (`None` when recording is disabled).
    pub recorder: &'a mut Option<CallRecorder>,
    /// Its place in a local room, if any.
    pub room: &'a mut Option<crate::call::rooms::Membership>,
}

impl LegControl<'_> {
    /// Applies an API command other than hangup (Telnyx Call Control actions).
    pub async fn command(
        &mut self,
        action: Action,
        answered: bool,
        tap: Option<Arc<dyn Tap>>,
    ) -> Result<(), ActionError> {
        let media_err = |e: String| ActionError::invalid(e);
        match action {
            Action::Hangup => Ok(()),
            Action::Answer { .. } | Action::Reject { .. } => {
                Err(ActionError::invalid("only a parked call that is still ringing can be answered or rejected"))
            }
            Action::ClientState(state) => {
                self.info.client_state = state.clone();
                self.control.update(|v| v.info.client_state = state);
                Ok(())
            }
            _ if !answered => Err(ActionError::invalid("the call is not answered yet")),
            Action::SendDtmf { digits, duration } => self.media.send_dtmf(&digits, duration).map_err(media_err),
            // REFER is sent in the leg's dialog: the shell's signalling does it.
            Action::Refer(_) => Err(ActionError::invalid("refer is sent by the call's signalling")),
            Action::Mute(muted) => self.media.mute_inbound(muted).map_err(media_err),
            Action::Suppress(s) => {
                let now = self.media.suppression();
                let adds = (s.inbound && !now.inbound) || (s.outbound && !now.outbound);
                if adds && !crate::media::suppress::available() {
                    return Err(ActionError::no_capacity(format!(
                        "{} noise-suppressed streams already run ([rtp] max_suppressed_streams)",
                        crate::media::suppress::active()
                    )));
                }
                self.media.set_suppression(s).map_err(media_err)
            }
            Action::StreamingStart(spec) => {
                if self.agent.is_some() {
                    return Err(ActionError::invalid("a stream is already running on this call"));
                }
                let (port, endpoint) = stream_pair(&spec);
                self.media.switch_to_pcm(tap, port).await.map_err(media_err)?;
                // Spans started from now on record at the stream's rate.
                if let Some(rec) = self.recorder.as_mut() {
                    let wide = self.media.audio().codec.is_wideband();
                    rec.set_sample_rate(if wide { 16_000 } else { spec.playout_rate() });
                }
                let stream = AgentStream::start(
                    *spec,
                    self.info.stream_call(),
                    Arc::new(self.services.events.clone()),
                    endpoint,
                );
                let id = stream.stream_id.clone();
                self.control.update(|v| v.stream_id = Some(id));
                *self.agent = Some(stream);
                Ok(())
            }
            Action::PlaybackStart { url, pcm, loops, overlay } => {
                let id = self.playbacks.keys().max().map_or(1, |m| m + 1);
                self.media.play(id, &pcm, overlay, tap).await.map_err(media_err)?;
                self.playbacks.insert(id, Playing { url: url.clone(), overlay, pcm, loops, speak: false });
                self.playback_event("call.playback.started", &url, overlay, None);
                Ok(())
            }
            Action::Speak { pcm, stop } => {
                if stop && !self.playbacks.is_empty() {
                    // Queued before the speech: the player drops what plays first.
                    self.media.stop_playback().await.map_err(media_err)?;
                }
                let id = self.playbacks.keys().max().map_or(1, |m| m + 1);
                self.media.play(id, &pcm, false, tap).await.map_err(media_err)?;
                let speech = Playing { url: String::new(), overlay: false, pcm, loops: Loops::Times(1), speak: true };
                self.playbacks.insert(id, speech);
                self.speak_event("call.speak.started", None);
                Ok(())
            }
            // Carried out by the call core.
            Action::Gather(_) | Action::GatherStop => Ok(()),
            Action::RecordStart(opts) => {
                let Some(rec) = self.recorder.as_mut() else {
                    return Err(ActionError::invalid("recording is disabled ([recording] enabled = false)"));
                };
                match rec.record_start(opts) {
                    Ok(path) => {
                        tracing::info!(call_control_id = %self.info.ids.call_control_id, path = %path.display(), "recording started");
                    }
                    Err(e) => {
                        if !matches!(e, super::recording::StartError::AlreadyRecording) {
                            recording_error(&self.services.events, self.info, e.reason());
                        }
                        return Err(ActionError {
                            status: 422,
                            code: "90055",
                            title: "Recording could not start",
                            detail: format!("{e} ({})", e.reason()),
                        });
                    }
                }
                if opts.play_beep {
                    // Mixed over whatever plays; not a playback of the API's (no events).
                    let beep = Arc::new(crate::media::clip::Clip::narrowband(super::recording::beep_pcm()));
                    if let Err(e) = self.media.play(BEEP_PLAYBACK_ID, &beep, true, tap).await {
                        tracing::warn!(call_control_id = %self.info.ids.call_control_id, "recording beep not played: {e}");
                    }
                }
                Ok(())
            }
            Action::RecordPause | Action::RecordResume => {
                let pause = matches!(action, Action::RecordPause);
                let Some(rec) = self.recorder.as_mut() else {
                    return Err(ActionError::invalid("the call is not being recorded"));
                };
                let done = if pause { rec.record_pause() } else { rec.record_resume() };
                done.map_err(|why| {
                    ActionError::invalid(match why {
                        "already_paused" => "the recording is already paused",
                        "not_paused" => "the recording is not paused",
                        _ => "the call is not being recorded",
                    })
                })
            }
            Action::RecordStop => {
                let span = self.recorder.as_mut().and_then(|r| r.record_stop());
                if span.is_none() {
                    return Err(ActionError::invalid("the call is not being recorded"));
                }
                finish_recording(self.services, self.info, span).await;
                Ok(())
            }
            Action::PlaybackStop => {
                if self.playbacks.is_empty() {
                    return Err(ActionError::invalid("nothing is playing on this call"));
                }
                self.media.stop_playback().await.map_err(media_err)
            }
            Action::JoinRoom(_) if self.room.is_some() => Err(ActionError::invalid("the call is already in a room")),
            Action::JoinRoom(join) => {
                let rooms = self.services.rooms.clone();
                let leg =
                    crate::call::rooms::join_leg(&rooms, self.media, tap, self.info, &join).await.map_err(|e| {
                        ActionError { status: 422, code: "90020", title: "Could not join the conference", detail: e }
                    })?;
                let mut membership = crate::call::rooms::Membership { leg, agent: None };
                if let Some(agent) = self.agent.take() {
                    match crate::call::rooms::move_agent(
                        &self.services.rooms,
                        &self.services.events,
                        agent,
                        self.info,
                        &membership.leg,
                    )
                    .await
                    {
                        Ok((stream, handle)) => {
                            let id = stream.stream_id.clone();
                            self.control.update(|v| v.stream_id = Some(id));
                            *self.agent = Some(stream);
                            membership.agent = Some(handle);
                        }
                        Err(e) => {
                            tracing::warn!(call_control_id = %self.info.ids.call_control_id, "the call's agent could not follow it into the room: {e}")
                        }
                    }
                }
                *self.room = Some(membership);
                Ok(())
            }
            Action::LeaveRoom => match self.room.take() {
                // The leg leaves (silence until something else is attached), and an
                // agent that followed the call in leaves with it.
                Some(m) => {
                    m.leg.leave();
                    Ok(())
                }
                None => Err(ActionError::invalid("the call is not in a room")),
            },
            Action::StreamingStop => match self.agent.take() {
                Some(a) => {
                    if let Some(m) = self.room.as_mut() {
                        // The agent leaves the room with its stream.
                        m.agent = None;
                    }
                    a.stop().await;
                    if let Some(rec) = self.recorder.as_mut() {
                        let wide = self.media.audio().codec.is_wideband();
                        rec.set_sample_rate(if wide { 16_000 } else { 8000 });
                    }
                    self.control.update(|v| v.stream_id = None);
                    Ok(())
                }
                None => Err(ActionError::invalid("no stream is running on this call")),
            },
        }
    }
}

impl LegControl<'_> {
    fn playback_event(&self, event_type: &str, url: &str, overlay: bool, status: Option<&str>) {
        let mut p = self.info.payload("answered");
        p.insert("media_url".into(), serde_json::json!(url));
        p.insert("overlay".into(), serde_json::json!(overlay));
        if let Some(s) = status {
            p.insert("status".into(), serde_json::json!(s));
        }
        self.services.events.emit(self.info.event(event_type, p));
    }

    /// `call.speak.started` / `call.speak.ended` (Telnyx: the common fields, and
    /// `status` on the end).
    fn speak_event(&self, event_type: &str, status: Option<&str>) {
        speak_event(&self.services.events, self.info, event_type, status);
    }

    /// A playback reached its end or was stopped: loop it again, or report
    /// `call.playback.ended` (`status`: `completed` / `cancelled`); speech reports
    /// `call.speak.ended` (`completed` / `stopped`).
    pub async fn playback_done(&mut self, id: u64, completed: bool) {
        let Some(mut p) = self.playbacks.remove(&id) else { return };
        if p.speak {
            self.speak_event("call.speak.ended", Some(if completed { "completed" } else { "stopped" }));
            return;
        }
        let again = completed
            && match p.loops {
                Loops::Forever => true,
                Loops::Times(n) => {
                    p.loops = Loops::Times(n.saturating_sub(1));
                    n > 1
                }
            };
        if again && self.media.play(id, &p.pcm, p.overlay, None).await.is_ok() {
            self.playbacks.insert(id, p);
            return;
        }
        let status = if completed { "completed" } else { "cancelled" };
        self.playback_event("call.playback.ended", &p.url, p.overlay, Some(status));
    }

    /// The call ended: playbacks still running end with `call_hangup`.
    pub fn playbacks_hung_up(&mut self) {
        for (_, p) in std::mem::take(self.playbacks) {
            if p.speak {
                self.speak_event("call.speak.ended", Some("call_hangup"));
            } else {
                self.playback_event("call.playback.ended", &p.url, p.overlay, Some("call_hangup"));
            }
        }
    }
}

/// Emits `call.speak.started` / `call.speak.ended` of the call `info`
/// (developers.telnyx.com/api-reference/callbacks/call-speak-ended): the common
/// payload fields and, on the end, `status` (`completed`, `call_hangup`, and
/// sipbridge's `stopped` and `failed`).
pub fn speak_event(events: &super::EventBus, info: &CallInfo, event_type: &str, status: Option<&str>) {
    let mut p = info.payload(if status == Some("call_hangup") { "hangup" } else { "answered" });
    if let Some(s) = status {
        p.insert("status".into(), serde_json::json!(s));
    }
    events.emit(info.event(event_type, p));
}

/// The media task's port and the stream's endpoint for `spec`'s tracks.
pub fn stream_pair(spec: &StreamSpec) -> (crate::media::pcm::PcmPort, crate::media::pcm::PcmEndpoint) {
    let heard = matches!(spec.track, StreamTrack::InboundTrack | StreamTrack::BothTracks);
    let said = matches!(spec.track, StreamTrack::OutboundTrack | StreamTrack::BothTracks);
    let (mut port, endpoint) = pcm_pair(64, heard, said);
    port.sample_rate = spec.playout_rate();
    (port, endpoint)
}

/// The next event of the call's agent stream; pending forever without one.
pub async fn next_agent_event(agent: &mut Option<AgentStream>) -> StreamEvent {
    match agent {
        Some(a) => a.next_event().await,
        None => std::future::pending().await,
    }
}

/// The recorder of an answered call when recording is enabled, with its first span
/// started when `record` (the route's `record = true`, or `record-from-answer`);
/// a span that cannot start is logged and the call goes on.
/// `sample_rate_hz`: 16000 when the call's agent streams L16/16000
/// ([`StreamSpec::playout_rate`]), else 8000.
pub fn new_recorder(
    services: &CallServices,
    info: &CallInfo,
    record: bool,
    format: Option<crate::config::RecordingFormat>,
    sample_rate_hz: u32,
) -> Option<CallRecorder> {
    let cfg = services.config.borrow().clone();
    if !cfg.recording.enabled {
        return None;
    }
    let mut rec = CallRecorder::new(&cfg.recording, &info.ids.call_session_id, &info.ids.call_control_id);
    rec.set_sample_rate(sample_rate_hz);
    rec.set_sink(span_sink(services, info));
    if record {
        if let Err(e) = rec.record_start(super::recording::StartOptions { format, ..Default::default() }) {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "recording not started: {e} (the call goes on)");
            recording_error(&services.events, info, e.reason());
        }
    }
    Some(rec)
}

/// Playback id of the `play_beep` beep: outside the ids of the API's playbacks,
/// so its end reports nothing.
const BEEP_PLAYBACK_ID: u64 = u64::MAX;

/// The events of spans that end by themselves (`max_length`, `timeout_secs`:
/// `call.recording.saved`) or fail (`call.recording.error`), emitted from the
/// recording's writer thread with the call's fields as they were at answer.
fn span_sink(services: &CallServices, info: &CallInfo) -> super::recording::SpanSink {
    let events = services.events.clone();
    let info = info.clone();
    let api_base = services.config.borrow().api.base_url();
    Arc::new(move |end| match end {
        super::recording::SpanEnd::Saved(saved) => {
            let mut p = info.payload("answered");
            p.extend(crate::record::recording_saved_fields(&saved, &api_base));
            events.emit(info.event("call.recording.saved", p));
        }
        super::recording::SpanEnd::Error(reason) => recording_error(&events, &info, reason),
    })
}

/// `call.recording.error` (developers.telnyx.com/api-reference/callbacks/call-recording-error):
/// the call's fields and `reason`, sipbridge's machine-readable cause
/// (`disk_full`, `permission_denied`, `read_only_file_system`, `low_disk_space`,
/// `io_error`, ...) where Telnyx sends a sentence.
pub fn recording_error(events: &super::EventBus, info: &CallInfo, reason: &str) {
    let mut p = info.payload("answered");
    p.insert("reason".into(), serde_json::json!(reason));
    events.emit(info.event("call.recording.error", p));
}

/// Starts a recording of the call when `wanted` and recording is enabled.
pub fn start_recording_if(
    services: &CallServices,
    wanted: bool,
    format: Option<crate::config::RecordingFormat>,
    info: &CallInfo,
    sample_rate_hz: u32,
) -> Option<CallRecording> {
    let cfg = services.config.borrow().clone();
    if !wanted || !cfg.recording.enabled {
        return None;
    }
    let mut recording = cfg.recording.clone();
    if let Some(f) = format {
        recording.format = f;
    }
    match crate::record::can_start(&cfg.recording.dir, MIN_FREE_FOR_RECORDING) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "not recording: low disk space");
            return None;
        }
        Err(_) => {} // the directory may not exist yet; starting creates it
    }
    match CallRecording::start(&recording, &info.ids.call_session_id, &info.ids.call_control_id, 1, sample_rate_hz) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "recording not started: {e} (the call goes on)");
            None
        }
    }
}

/// Stops a recording (on a blocking thread) and emits `call.recording.saved`.
pub async fn finish_recording(services: &CallServices, info: &CallInfo, recording: Option<CallRecording>) {
    let Some(rec) = recording else { return };
    let saved = tokio::task::spawn_blocking(move || rec.stop_blocking()).await.ok().flatten();
    if let Some(saved) = saved {
        let api_base = services.config.borrow().api.base_url();
        let mut p = info.payload("hangup");
        p.extend(crate::record::recording_saved_fields(&saved, &api_base));
        services.events.emit(info.event("call.recording.saved", p));
    }
}

/// Free space a new recording needs on the recordings' file system.
pub const MIN_FREE_FOR_RECORDING: u64 = 64 * 1024 * 1024;
