//! The one tokio shell around `call::core`: every call, whatever its kind
//! (incoming to an agent, the echo, a park, a room; forwarded to a far leg;
//! dialled by the API), is this loop. It waits on the legs' dialogs
//! ([`Signalling::next`]), their media, the agent stream, the API's commands, the
//! core's next timer and the shutdown, feeds each to the core, then carries out
//! what the core asks ([`Output`]): SIP on a leg, media work, events, the state
//! the API shows. It keeps each leg's jitter/loss series from the media's quality
//! samples ([`QualitySeries`]). At the end it stops the media and commits each
//! leg's `call.hangup` (with the series for the call record) before the call's
//! permit is released.
//!
//! Decisions live in the core; this file only moves things between it and I/O.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use std::future::Future;

use super::CallInfo;
use super::actions::{LegControl, finish_recording, new_recorder, next_agent_event, start_recording_if, stream_pair};
use super::control::{Action, Refer, RoomJoin, RoomRef};
use super::core::{CallCore, DialogInput, Input, LegId, MediaInput, MediaOut, Output, Prompt, SipOut};
use super::playback::Playbacks;
use super::quality_series::QualitySeries;
use super::recording::{CallRecorder, CallRecording};
use super::services::CallServices;
use crate::agent::stream::{AgentStream, StreamEvent, StreamSpec};
use crate::config::OnDisconnect;
use crate::media::bridge::Side;
use crate::media::leg::{LegEvent, Tap};
use crate::media::session::{LegReport, MediaSession, Relay};

/// A leg's signalling as the shell drives it: the SIP adapter (`sip::leg`)
/// implements it over an rsipstack dialog.
pub trait Signalling: Send {
    /// The next thing the dialog reports; pending forever once it has ended.
    /// `info` names the leg in its events and logs.
    fn next(&mut self, info: &CallInfo) -> impl Future<Output = DialogInput> + Send;
    /// Carries out what the core asked of this leg.
    ///
    /// # Errors
    /// What failed (logged; a refresh that fails is not counted as one).
    fn send(&mut self, out: SipOut, info: &CallInfo) -> impl Future<Output = Result<(), String>> + Send;
    /// Blind transfer by REFER in this leg's dialog (Telnyx `refer`): the final
    /// response's status (202 when accepted). Its NOTIFYs come back through
    /// [`Signalling::next`] as `DialogInput::ReferNotify`.
    ///
    /// # Errors
    /// The REFER could not be sent (no confirmed dialog, transport error).
    fn refer(&self, info: &CallInfo, refer: &Refer) -> impl Future<Output = Result<u16, String>> + Send;
    /// After the call: lets the dialog's last transaction end, then forgets it.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
    /// The leg's media.
    fn media(&mut self) -> &mut MediaSession;
}

/// The shell's answer to whoever admitted the call: released once every leg's
/// `call.hangup` is committed (the daemon's call permit).
pub type Permit = Box<dyn Send>;

/// Playback id of the box's own prompts (PIN): far above the API's, and not
/// reported as `call.playback.*`.
const PROMPT_ID: u64 = u64::MAX - 1;

/// Playback id of a gather's prompt (`gather_using_audio`/`_speak`): reported to
/// the core, not as `call.playback.*`.
const GATHER_PROMPT_ID: u64 = u64::MAX - 2;

/// What the near leg's media does once answered.
#[derive(Debug, Clone)]
pub enum MediaPlan {
    /// The built-in echo.
    Echo,
    /// Stream to a voice agent; `on_disconnect` of its `[[agent]]` (`None`: a
    /// stream the API started, which ends alone and leaves the call up).
    Agent {
        /// The stream.
        spec: Box<StreamSpec>,
        /// What the agent's failure does to the call.
        on_disconnect: OnDisconnect,
    },
    /// The route's agent was removed by a reload: the call ends at answer.
    Unavailable,
    /// Silence until the API starts something (parked calls; the API's `answer`
    /// may bring a stream).
    Silence,
    /// A local room (joined when the core says, after the PIN).
    Room(String),
    /// Relayed to the far leg (forward routes).
    Relay,
}

/// One call's shell. Built by whoever admitted the call (`inbound`, `dial`).
pub struct Shell<S: Signalling> {
    /// The call layer's handles.
    pub ctx: CallServices,
    /// The call's control.
    pub core: CallCore,
    /// The near leg.
    pub near: S,
    /// The far leg (forward routes).
    pub far: Option<S>,
    /// What the near leg's media does.
    pub plan: MediaPlan,
    /// Record from answer (`record = true`, `record-from-answer`).
    pub record: bool,
    /// The format of that recording (a route's `record_format`, dial's
    /// `record_format`); `None` takes `[recording] format`.
    pub record_format: Option<crate::config::RecordingFormat>,
    /// `transfer`: once answered, bridge with this call.
    pub bridge_with: Option<String>,
    /// Answering-machine detection from the answer (dial, transfer).
    pub amd: Option<super::amd::AmdRequest>,
    /// The API's registration of the near leg.
    pub control: super::control::Registration,
    /// Released once every leg's hangup is committed.
    pub permit: Option<Permit>,
    agent: Option<AgentStream>,
    on_disconnect: OnDisconnect,
    playbacks: Playbacks,
    recorder: Option<CallRecorder>,
    /// The answering-machine detection running (its tap is in [`Self::tap`]).
    amd_run: Option<super::amd::AmdRun>,
    /// A forwarded call's recording (of the relay).
    recording: Option<CallRecording>,
    /// When the call ended: the first moment its near leg had a hangup
    /// ([`Self::mark_end`]); `call.hangup`'s `end_time`.
    end_time: Option<SystemTime>,
    relay: Option<Relay>,
    room: Option<super::rooms::Membership>,
    media_events: Option<tokio::sync::mpsc::UnboundedReceiver<LegEvent>>,
    /// Each leg's jitter and loss over time (near, far), from its media's start.
    quality: [Option<QualitySeries>; 2],
    shutdown_seen: bool,
    /// The room a room route joins.
    room_target: Option<String>,
}

impl<S: Signalling> Shell<S> {
    /// A call ready to run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: CallServices,
        core: CallCore,
        near: S,
        far: Option<S>,
        plan: MediaPlan,
        record: bool,
        control: super::control::Registration,
        permit: Option<Permit>,
    ) -> Self {
        let plan_room = plan.clone();
        Self {
            ctx,
            core,
            near,
            far,
            plan,
            record,
            record_format: None,
            bridge_with: None,
            amd: None,
            control,
            permit,
            agent: None,
            on_disconnect: OnDisconnect::Hangup,
            playbacks: Playbacks::new(),
            recorder: None,
            amd_run: None,
            recording: None,
            end_time: None,
            relay: None,
            room: None,
            media_events: None,
            quality: [None, None],
            shutdown_seen: false,
            room_target: match &plan_room {
                MediaPlan::Room(name) => Some(name.clone()),
                _ => None,
            },
        }
    }

    /// Runs the call to its end.
    ///
    /// Memory: this future lives as long as the call, so it is kept small (issue
    /// 20: RSS per call). The shell itself is boxed (an async fn's by-value
    /// `self` is stored twice in its state), and the awaits that run rarely and
    /// need large states — the outputs of the core, API commands, playback
    /// reports, the end of the call — are boxed for as long as they run, instead
    /// of reserving their size for the whole call.
    pub async fn run(mut self: Box<Self>) {
        let hangup_all = self.ctx.hangup_all.clone();
        loop {
            Box::pin(self.drain()).await;
            if self.core.is_ended() {
                break;
            }
            // The media task is replaced when the leg switches mode (echo → PCM,
            // room): its events come on a new channel.
            if let Some(rx) = self.near.media().take_events() {
                self.media_events = Some(rx);
            }
            let timeout = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            // Borrowed, not cloned: two CallInfo (528 B) would sit in this future
            // for the whole call, and cloning them allocated on every turn.
            let (near_info, far_info) = (self.core.info(LegId::Near), self.core.info(LegId::Far));
            let input = tokio::select! {
                d = async {
                    match near_info {
                        Some(i) => self.near.next(i).await,
                        None => std::future::pending().await,
                    }
                } => Input::Dialog(LegId::Near, d),
                d = async {
                    match (self.far.as_mut(), far_info) {
                        (Some(f), Some(i)) => f.next(i).await,
                        _ => std::future::pending().await,
                    }
                } => Input::Dialog(LegId::Far, d),
                _ = tokio::time::sleep_until(timeout.unwrap_or_else(tokio::time::Instant::now)), if timeout.is_some() => Input::Timeout,
                _ = hangup_all.cancelled(), if !self.shutdown_seen => {
                    self.shutdown_seen = true;
                    Input::Shutdown
                }
                cmd = self.control.next() => {
                    Box::pin(self.command(cmd)).await;
                    continue;
                }
                ev = next_agent_event(&mut self.agent) => {
                    let StreamEvent::Failed(reason) = ev;
                    self.agent = None;
                    self.control.update(|v| v.stream_id = None);
                    let hang_up = self.on_disconnect == OnDisconnect::Hangup;
                    tracing::info!(
                        call_control_id = %self.control_id(),
                        "agent stream failed ({reason}): {}", if hang_up { "BYE" } else { "the call continues" }
                    );
                    Input::AgentFailed { hang_up }
                }
                Some(ev) = async {
                    match self.media_events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await }
                } => match ev {
                    LegEvent::Dtmf(d) => self.dtmf_input(LegId::Near, d),
                    LegEvent::Timeout(after) => self.timeout_input(LegId::Near, after),
                    LegEvent::Quality(sample) => {
                        self.quality_sample(LegId::Near, *sample);
                        continue;
                    }
                    LegEvent::PlaybackDone { id: GATHER_PROMPT_ID, .. } => Input::GatherPromptDone,
                    LegEvent::PlaybackDone { id, completed } => {
                        if id != PROMPT_ID {
                            Box::pin(self.leg_control().playback_done(id, completed)).await;
                        }
                        continue;
                    }
                },
                ev = async { match self.relay.as_mut() { Some(r) => r.next_event().await, None => std::future::pending().await } } => {
                    let leg = if ev.0 == Side::A { LegId::Near } else { LegId::Far };
                    match ev.1 {
                        LegEvent::Dtmf(d) => self.dtmf_input(leg, d),
                        LegEvent::Timeout(after) => self.timeout_input(leg, after),
                        LegEvent::Quality(sample) => {
                            self.quality_sample(leg, *sample);
                            continue;
                        }
                        LegEvent::PlaybackDone { .. } => continue,
                    }
                }
            };
            if let Input::Dialog(_, DialogInput::Dtmf(digit)) = &input {
                tracing::info!(call_control_id = %self.control_id(), %digit, "DTMF (SIP INFO)");
                self.dtmf_to_agent(*digit);
            }
            self.core.handle(Instant::now(), input);
        }
        Box::pin(self.finish()).await;
    }

    fn control_id(&self) -> String {
        self.core.info(LegId::Near).map(|i| i.ids.call_control_id.clone()).unwrap_or_default()
    }

    fn dtmf_to_agent(&self, digit: char) {
        if let Some(agent) = &self.agent {
            agent.dtmf(digit);
        }
    }

    fn dtmf_input(&self, leg: LegId, digit: char) -> Input {
        tracing::info!(call_control_id = %self.control_id(), %digit, "DTMF (RFC 4733)");
        if leg == LegId::Near {
            self.dtmf_to_agent(digit);
        }
        Input::Media(leg, MediaInput::Dtmf(digit))
    }

    /// A leg's media started now: its quality series counts from here.
    fn quality_from_now(&mut self, leg: LegId) {
        self.quality[slot(leg)] = Some(QualitySeries::new(Instant::now()));
    }

    fn quality_sample(&mut self, leg: LegId, sample: crate::media::leg::QualitySample) {
        if let Some(series) = self.quality[slot(leg)].as_mut() {
            series.push(sample);
        }
    }

    /// A leg's stopped media: its `call_quality_stats`, and its series with the
    /// stop's sample as the last point (`None`: no media ran).
    fn leg_quality(
        &mut self,
        leg: LegId,
        report: Option<LegReport>,
    ) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        let Some(report) = report else { return (None, None) };
        self.quality_sample(leg, report.last_sample);
        let series = self.quality[slot(leg)].take();
        (Some(report.quality_stats), series.and_then(|s| s.to_json()))
    }

    fn timeout_input(&self, leg: LegId, after: std::time::Duration) -> Input {
        tracing::info!(call_control_id = %self.control_id(), ?leg, "no RTP for {}s: BYE", after.as_secs());
        Input::Media(leg, MediaInput::Timeout(after))
    }

    /// Carries out everything the core has asked for.
    async fn drain(&mut self) {
        while let Some(out) = self.core.poll() {
            // Before the BYE or CANCEL that a hangup asks for is carried out (a
            // BYE's transaction waits up to 32 s for a peer that does not answer).
            self.mark_end();
            match out {
                Output::Sip(leg, s) => {
                    let info = self.core.info(leg).cloned();
                    let target = match leg {
                        LegId::Near => Some(&mut self.near),
                        LegId::Far => self.far.as_mut(),
                    };
                    if let (Some(t), Some(info)) = (target, info) {
                        let refresh = matches!(s, SipOut::Refresh { .. });
                        let result = t.send(s, &info).await;
                        if refresh && result.is_ok() {
                            // The 2xx to the box's own refresh restarts the interval.
                            self.core.handle(
                                Instant::now(),
                                Input::Dialog(leg, DialogInput::Refreshed { session_expires: None }),
                            );
                        }
                    }
                }
                Output::Emit(e) => {
                    if e.event_type == "call.answered" {
                        let id = e.payload.get("call_control_id").and_then(|v| v.as_str()).unwrap_or_default();
                        tracing::info!(call_control_id = %id, "answered");
                    }
                    self.ctx.events.emit(e)
                }
                Output::ViewState(state) => self.control.update(|v| v.state = state.into()),
                Output::Media(m) => self.media(m).await,
                Output::Ended => {}
            }
        }
    }

    fn tap(&self) -> Option<Arc<dyn Tap>> {
        let tap = super::listen::call_tap(&self.control.listen, self.recorder.as_ref().map(|r| r.tap()));
        super::amd::with_amd(tap, self.amd_run.as_ref())
    }

    async fn media(&mut self, m: MediaOut) {
        match m {
            MediaOut::Start => {
                if !self.start_media().await {
                    self.core.handle(Instant::now(), Input::MediaFailed);
                }
            }
            MediaOut::Relay { answered } => {
                // A wideband party (G.722, Opus) on either leg: recorded at 16 kHz.
                let wide = self.near.media().audio().codec.is_wideband()
                    || self.far.as_mut().is_some_and(|f| f.media().audio().codec.is_wideband());
                let Some(far) = self.far.as_mut() else { return };
                if answered {
                    let info = self.core.info(LegId::Near).cloned().expect("near leg");
                    let rate = if wide { 16_000 } else { 8000 };
                    self.recording = start_recording_if(&self.ctx, self.record, self.record_format, &info, rate);
                }
                let tap = super::listen::call_tap(&self.control.listen, self.recording.as_ref().map(|r| r.tap()));
                match self.relay.as_mut() {
                    None => {
                        self.relay = Relay::start(self.near.media(), far.media(), tap);
                        if self.relay.is_some() {
                            self.quality_from_now(LegId::Near);
                            self.quality_from_now(LegId::Far);
                        }
                    }
                    Some(r) if answered => r.set_tap(tap).await,
                    Some(_) => {}
                }
            }
            MediaOut::Prompt(p) => {
                let pcm = match p {
                    Prompt::EnterPin => super::pin::enter_prompt(),
                    Prompt::WrongPin => {
                        tracing::info!(call_control_id = %self.control_id(), "wrong PIN");
                        super::pin::wrong_prompt()
                    }
                };
                let clip = std::sync::Arc::new(crate::media::clip::Clip::narrowband(pcm));
                let _ = self.near.media().play(PROMPT_ID, &clip, false, None).await;
            }
            MediaOut::StopPrompt | MediaOut::StopGatherPrompt => {
                // The player stops everything queued: a gather's barge-in also
                // ends API playbacks and speech (reported as stopped).
                let _ = self.near.media().stop_playback().await;
            }
            MediaOut::GatherPrompt(pcm) => {
                let tap = self.tap();
                if let Err(e) = self.near.media().play(GATHER_PROMPT_ID, &pcm, false, tap).await {
                    tracing::warn!(call_control_id = %self.control_id(), "gather prompt not played: {e}");
                    self.core.handle(Instant::now(), Input::GatherPromptDone);
                }
            }
            MediaOut::JoinRoom => {
                if let Err(e) = self.join_room().await {
                    tracing::warn!(call_control_id = %self.control_id(), "could not join the room: {e}");
                    self.core.handle(Instant::now(), Input::RoomJoinFailed);
                }
            }
        }
    }

    /// The near leg is answered: its recorder, then its media as planned.
    /// `false` when it cannot start (the call is ended).
    async fn start_media(&mut self) -> bool {
        let info = self.core.info(LegId::Near).cloned().expect("near leg");
        let rate = match &self.plan {
            MediaPlan::Agent { spec, .. } => spec.playout_rate(),
            _ => 8000,
        };
        // A wideband leg (G.722, Opus) records at 16 kHz whatever its endpoint.
        let rate = if self.near.media().audio().codec.is_wideband() { 16_000 } else { rate };
        self.recorder = new_recorder(&self.ctx, &info, self.record, self.record_format, rate);
        if let Some(req) = self.amd.take() {
            self.amd_run = Some(super::amd::AmdRun::start(&self.ctx, &info, req));
        }
        self.quality_from_now(LegId::Near);
        let tap = self.tap();
        match std::mem::replace(&mut self.plan, MediaPlan::Silence) {
            MediaPlan::Echo => self.near.media().start(tap.clone()),
            MediaPlan::Unavailable => {
                tracing::warn!(call_control_id = %info.ids.call_control_id, "the route's agent is no longer configured: BYE");
                return false;
            }
            MediaPlan::Agent { spec, on_disconnect } => {
                let (port, endpoint) = stream_pair(&spec);
                self.near.media().start_pcm(tap.clone(), port);
                let stream = AgentStream::start(
                    *spec,
                    info.stream_call(),
                    std::sync::Arc::new(self.ctx.events.clone()),
                    endpoint,
                );
                let id = stream.stream_id.clone();
                self.control.update(|v| v.stream_id = Some(id));
                self.agent = Some(stream);
                self.on_disconnect = on_disconnect;
            }
            MediaPlan::Silence | MediaPlan::Room(_) | MediaPlan::Relay => {
                let port = self.near.media().player_port();
                self.near.media().start_pcm(tap.clone(), port)
            }
        }
        if let Some(other) = self.bridge_with.take() {
            // `transfer`: the new leg and the original call meet in a bridge.
            let join = super::rooms::bridge_join(&other);
            let joined = self.leg_control().command(Action::JoinRoom(join.clone()), true, tap).await;
            let other_joined = match joined {
                Ok(()) => self.ctx.calls.command(&other, Action::JoinRoom(join)).await,
                Err(e) => Some(Err(e)),
            };
            match (other_joined, self.ctx.calls.get(&other)) {
                (Some(Ok(())), super::control::Lookup::Live(view)) => {
                    super::rooms::emit_bridged(&self.ctx.events, &view.info, &info);
                }
                (result, _) => {
                    tracing::info!(
                        call_control_id = %info.ids.call_control_id, original = %other,
                        "transfer answered but the original call could not be bridged ({result:?}): hanging up"
                    );
                    self.core.handle(Instant::now(), Input::MediaFailed);
                }
            }
        }
        true
    }

    async fn join_room(&mut self) -> Result<(), String> {
        let Some(name) = self.room_target.clone() else { return Ok(()) };
        let info = self.core.info(LegId::Near).cloned().expect("near leg");
        let tap = self.tap();
        let join = RoomJoin {
            room: RoomRef::Name(name.clone()),
            options: self.ctx.config.borrow().rooms.options(),
            muted: false,
            held: false,
        };
        let rooms = self.ctx.rooms.clone();
        let leg = super::rooms::join_leg(&rooms, self.near.media(), tap, &info, &join).await?;
        tracing::info!(call_control_id = %info.ids.call_control_id, room = %name, "joined the room");
        self.room = Some(super::rooms::Membership { leg, agent: None });
        Ok(())
    }

    /// An API command: the core's action table first, then the media work.
    async fn command(&mut self, cmd: super::control::Command) {
        let now = Instant::now();
        let answered = self.core.state() == super::CallState::Answered;
        let result = match self.core.action(now, *cmd.action) {
            Err(e) => Err(e),
            Ok(None) => {
                if let Some(info) = self.core.info(LegId::Near) {
                    let state = info.client_state.clone();
                    self.control.update(|v| v.info.client_state = state);
                }
                Ok(())
            }
            Ok(Some(Action::Answer { stream })) => {
                // Parked call answered: the stream (if any) starts at the ACK.
                if let Some(spec) = stream {
                    self.plan = MediaPlan::Agent { spec, on_disconnect: OnDisconnect::Hangup };
                }
                Ok(())
            }
            Ok(Some(Action::Refer(refer))) => {
                // As on Telnyx the command succeeds once the REFER is sent; the
                // outcome is in the events, which the core emits.
                let info = self.core.info(LegId::Near).cloned().expect("near leg");
                let sent = self.near.refer(&info, &refer).await;
                if let Ok(status) = &sent {
                    tracing::info!(call_control_id = %info.ids.call_control_id, status, to = %refer.sip_address, "REFER answered");
                    self.core.handle(Instant::now(), Input::Dialog(LegId::Near, DialogInput::ReferAnswered(*status)));
                }
                sent.map(|_| ()).map_err(super::control::ActionError::invalid)
            }
            Ok(Some(action)) => {
                let tap = self.tap();
                let streaming_start = matches!(action, Action::StreamingStart(_));
                let r = self.leg_control().command(action, answered, tap).await;
                if streaming_start && r.is_ok() {
                    // A stream the API started ends alone; the call stays up (Telnyx).
                    self.on_disconnect = OnDisconnect::Continue;
                }
                r
            }
        };
        let _ = cmd.reply.send(result);
        self.drain().await;
    }

    fn leg_control(&mut self) -> LegControl<'_> {
        LegControl {
            services: &self.ctx,
            info: self.core.info_mut(LegId::Near).expect("near leg"),
            media: self.near.media(),
            agent: &mut self.agent,
            control: &self.control,
            playbacks: &mut self.playbacks,
            recorder: &mut self.recorder,
            room: &mut self.room,
        }
    }

    /// Fixes the call's end the first time its near leg has a hangup (the core
    /// decided it or learned it from the peer): `call.hangup`'s `end_time`, and
    /// the end of the running recordings (first end wins, so stopping them later
    /// cuts them here).
    fn mark_end(&mut self) {
        if self.end_time.is_some() || self.core.hangup(LegId::Near).is_none() {
            return;
        }
        let at = Instant::now();
        self.end_time = Some(SystemTime::now());
        if let Some(r) = &self.recorder {
            r.end_at(at);
        }
        if let Some(r) = &self.recording {
            r.end_at(at);
        }
    }

    /// Media stopped, each leg's hangup committed (far first), recordings
    /// saved, then the permit released.
    async fn finish(mut self) {
        // A detection still running ends without a result (none after call.hangup).
        drop(self.amd_run.take());
        // The call's end was fixed when its hangup was decided or learned: not
        // once the agent's WebSocket has closed (up to 3 s), the media tasks
        // have stopped and the far leg's BYE has been answered, nor once the
        // hangups below are committed (that waits for the store's group commit).
        self.mark_end();
        let end_time = self.end_time.unwrap_or_else(SystemTime::now);
        let span = self.recorder.as_mut().and_then(|r| r.record_stop());
        let relay_recording = self.recording.take();
        if let Some(r) = &relay_recording {
            r.end_at(Instant::now());
        }
        self.leg_control().playbacks_hung_up();
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        let (near_report, far_report) = match self.relay.take() {
            Some(r) => r.stop().await,
            None => (self.near.media().stop().await, None),
        };
        let (near_quality, near_samples) = self.leg_quality(LegId::Near, near_report);
        let (far_quality, far_samples) = self.leg_quality(LegId::Far, far_report);
        if let Some(far) = self.far.as_mut() {
            far.finish().await;
            if let Some(e) = self.core.hangup_event(LegId::Far, end_time, far_quality) {
                log_hangup(self.core.info(LegId::Far), &self.core, LegId::Far);
                let _ = self.ctx.events.emit_durable(e.with_quality_samples(far_samples)).await;
            }
        }
        self.near.finish().await;
        log_hangup(self.core.info(LegId::Near), &self.core, LegId::Near);
        if let Some(e) = self.core.hangup_event(LegId::Near, end_time, near_quality) {
            // The call counts as ended once its hangup is committed (webhook outbox
            // and call record); only then is its permit released. The quality
            // series goes to the call record only, never into the webhook.
            let _ = self.ctx.events.emit_durable(e.with_quality_samples(near_samples)).await;
        }
        let info = self.core.info(LegId::Near).cloned().expect("near leg");
        finish_recording(&self.ctx, &info, span).await;
        finish_recording(&self.ctx, &info, relay_recording).await;
        drop(self.permit.take());
    }
}

/// A leg's index in per-leg arrays: near 0, far 1.
fn slot(leg: LegId) -> usize {
    match leg {
        LegId::Near => 0,
        LegId::Far => 1,
    }
}

fn log_hangup(info: Option<&CallInfo>, core: &CallCore, leg: LegId) {
    let (Some(info), Some(h)) = (info, core.hangup(leg)) else { return };
    tracing::info!(
        call_control_id = %info.ids.call_control_id,
        cause = h.cause.as_str(), source = h.source.as_str(), sip_code = h.sip_code,
        "hangup"
    );
}
