//! The media session of one call leg: answers the SDP offer (port pair from the
//! pool, `sdp::answer_offer`), re-answers re-INVITEs/UPDATEs (hold, resume, new
//! address), runs the leg's media task once the call is answered, and reports
//! RTP timeouts, DTMF, quality samples during the call and, when it stops,
//! `call_quality_stats` with the last sample ([`LegReport`]).
//!
//! Media targets: the built-in echo agent (`start`), a PCM endpoint such as a voice
//! agent's stream (`start_pcm`), or another leg (`Relay`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Codec;
use crate::media::bridge::Side;
use crate::media::engine::{Commands, EchoJob, Engine, Events, Finished, Job, Leg, PcmJob, RelayJob, Task};
use crate::media::latch::LatchConfig;
use crate::media::leg::{LegCommand, LegEvent, QualitySample, RtpSession, Tap};
use crate::media::pcm::{PcmPort, Playback};
use crate::media::ports::{PortPair, PortPool};
use crate::media::suppress::Suppression;
use crate::sdp::codec::AudioCodec;
use crate::sdp::{
    LocalAudio, LocalSession, NegotiatedAudio, OfferOptions, OfferedAudio, SessionDescription, answer_offer,
    apply_answer, build_offer,
};

/// Shared media resources of the box.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    /// The worker threads every call's RTP runs on.
    pub engine: Arc<Engine>,
    /// RTP/RTCP port pairs.
    pub pool: PortPool,
    /// `[rtp].timeout`.
    pub rtp_timeout: Duration,
    /// Address the RTP sockets bind to (the wildcard of the address family).
    pub bind_ip: IpAddr,
}

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400: the SDP is malformed (RFC 4566 syntax); the reason, for a Warning.
    Malformed(String),
    /// 488: well-formed but unusable (no common codec, SRTP...); the reason.
    NotAcceptable(String),
    /// 503: no RTP ports left.
    NoPorts,
}

/// The media of one leg.
pub struct MediaSession {
    local: LocalAudio,
    session: LocalSession,
    audio: NegotiatedAudio,
    last_answer: Vec<u8>,
    ports: Option<PortPair>,
    rtp_timeout: Duration,
    /// `[rtp]` latching settings of the config in force when the call began.
    latch: LatchConfig,
    engine: Arc<Engine>,
    /// The leg's media job while it runs on the engine (echo or PCM bridge).
    task: Option<Task>,
    events: Option<mpsc::UnboundedReceiver<LegEvent>>,
    /// Set while this leg is one side of a relay (forward route).
    relay: Option<(Side, Commands)>,
    /// Our offer, while waiting for the answer (outbound legs).
    offered: Option<OfferedAudio>,
    /// Playback from the box into the PCM bridge, while one runs.
    player: Option<mpsc::Sender<Playback>>,
    /// The PCM bridge's playout rate, Hz (its port's `sample_rate`): what
    /// `Playback::Play` audio must be at.
    player_rate: u32,
    /// Noise suppression asked for (`suppression_start`, `noise_suppression`):
    /// kept here so that it follows the leg into every media job it runs in.
    suppression: Suppression,
}

/// What a leg's media reports when it stops.
#[derive(Debug, Clone)]
pub struct LegReport {
    /// The Telnyx `call_quality_stats` object (`RtpSession::quality_json`).
    pub quality_stats: serde_json::Value,
    /// The receiver figures at the stop: the last point of the leg's quality
    /// series (the earlier ones came as `LegEvent::Quality`).
    pub last_sample: QualitySample,
}

impl LegReport {
    fn of(session: &RtpSession) -> Self {
        Self { quality_stats: session.quality_json(), last_sample: session.quality_sample(std::time::Instant::now()) }
    }
}

/// Two legs relayed to each other (forward routes): the relay task and its
/// events, tagged with the side they concern.
pub struct Relay {
    task: Task,
    /// DTMF, timeouts and quality samples of either side.
    pub events: mpsc::UnboundedReceiver<(Side, LegEvent)>,
}

impl Relay {
    /// Joins the media of `a` (the caller's leg) and `b` (the dialled leg).
    /// Both must have negotiated (answer sent / answer applied) and not started.
    pub fn start(a: &mut MediaSession, b: &mut MediaSession, tap: Option<Arc<dyn Tap>>) -> Option<Relay> {
        let (pa, pb) = (a.ports.take()?, b.ports.take()?);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (la, lb) = (a.leg(pa), b.leg(pb));
        let task = a.engine.spawn(Job::Relay(Box::new(RelayJob::new(la, lb, ev_tx, tap))));
        a.relay = Some((Side::A, task.commands().clone()));
        b.relay = Some((Side::B, task.commands().clone()));
        for (side, s) in [(Side::A, a.suppression), (Side::B, b.suppression)] {
            if s.any() {
                let _ = task.commands().send(side, LegCommand::Suppress(s));
            }
        }
        Some(Relay { task, events: ev_rx })
    }

    /// Hands the relayed audio to `tap` from now on (recording from answer).
    pub async fn set_tap(&mut self, tap: Option<Arc<dyn Tap>>) {
        let _ = self.task.commands().send(Side::A, LegCommand::Tap(tap));
    }

    /// The next event of either side; pending forever once the relay ended.
    pub async fn next_event(&mut self) -> (Side, LegEvent) {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Stops the relay; returns each side's report (A, B).
    pub async fn stop(self) -> (Option<LegReport>, Option<LegReport>) {
        match self.task.stop().await {
            Some(Finished::Two(a, b)) => (Some(LegReport::of(&a.session)), Some(LegReport::of(&b.session))),
            _ => (None, None),
        }
    }
}

impl From<Codec> for AudioCodec {
    fn from(c: Codec) -> AudioCodec {
        match c {
            Codec::Pcmu => AudioCodec::Pcmu,
            Codec::Pcma => AudioCodec::Pcma,
            Codec::G722 => AudioCodec::G722,
            Codec::Opus => AudioCodec::Opus,
        }
    }
}

/// Whether this build can decode and encode `codec` (checked once per codec).
fn implemented(codec: AudioCodec) -> bool {
    use std::sync::OnceLock;
    static CHECKED: [OnceLock<bool>; 4] = [const { OnceLock::new() }; 4];
    let index = AudioCodec::ALL.iter().position(|&c| c == codec).unwrap_or(0);
    *CHECKED[index].get_or_init(|| {
        let ok = crate::media::codec::Decoder::new(codec).is_ok() && crate::media::codec::Encoder::new(codec).is_ok();
        if !ok {
            tracing::warn!(codec = codec.encoding_name(), "codec configured but not in this build: not offered");
        }
        ok
    })
}

/// The trunk's codecs this build implements, in the trunk's order.
fn audio_codecs(codecs: &[Codec]) -> Vec<AudioCodec> {
    codecs.iter().map(|&c| AudioCodec::from(c)).filter(|&c| implemented(c)).collect()
}

impl MediaSession {
    /// Answers an offer (`offer` = the INVITE body) with one of `codecs`,
    /// advertising `advertised_ip`. Returns the session and the answer body.
    pub async fn answer(
        engine: &MediaEngine,
        offer: &[u8],
        codecs: &[Codec],
        advertised_ip: IpAddr,
    ) -> Result<(Self, Vec<u8>), Reject> {
        if offer.is_empty() {
            return Err(Reject::NotAcceptable("an SDP offer is required in the INVITE".into()));
        }
        let offer = SessionDescription::parse(offer).map_err(|e| Reject::Malformed(e.to_string()))?;
        let ports = engine.pool.take(engine.bind_ip).map_err(|_| Reject::NoPorts)?;
        let local = LocalAudio { codecs: audio_codecs(codecs), address: advertised_ip, port: ports.port };
        let mut session = LocalSession::new(uuid::Uuid::new_v4().as_u64_pair().0);
        let answer = answer_offer(&offer, &local, &mut session).map_err(|e| {
            if e.sip_status() == 400 { Reject::Malformed(e.to_string()) } else { Reject::NotAcceptable(e.to_string()) }
        })?;
        let body = answer.body.into_bytes();
        Ok((Self::with(engine, ports, local, session, answer.audio, &body, None), body))
    }

    fn with(
        engine: &MediaEngine,
        ports: PortPair,
        local: LocalAudio,
        session: LocalSession,
        audio: NegotiatedAudio,
        body: &[u8],
        offered: Option<OfferedAudio>,
    ) -> Self {
        Self {
            local,
            session,
            audio,
            last_answer: body.to_vec(),
            ports: Some(ports),
            rtp_timeout: engine.rtp_timeout,
            latch: LatchConfig::default(),
            engine: Arc::clone(&engine.engine),
            task: None,
            events: None,
            relay: None,
            offered,
            player: None,
            player_rate: 8000,
            suppression: Suppression::OFF,
        }
    }

    /// An offer for an outbound leg with `codecs`, advertising `advertised_ip`.
    pub fn offer(engine: &MediaEngine, codecs: &[Codec], advertised_ip: IpAddr) -> Result<(Self, Vec<u8>), Reject> {
        let ports = engine.pool.take(engine.bind_ip).map_err(|_| Reject::NoPorts)?;
        let local = LocalAudio { codecs: audio_codecs(codecs), address: advertised_ip, port: ports.port };
        let mut session = LocalSession::new(uuid::Uuid::new_v4().as_u64_pair().0);
        let offer = build_offer(&local, OfferOptions::default(), &mut session);
        let body = offer.body.into_bytes();
        // Until the answer arrives the stream is "our offer": nothing to send to.
        let first = local.codecs.first().copied().unwrap_or(AudioCodec::Pcmu);
        let audio = NegotiatedAudio {
            codec: first,
            payload_type: first.offered_payload_type(),
            receive_payload_type: first.offered_payload_type(),
            telephone_event: None,
            receive_telephone_event: Some(offer.offered.telephone_event),
            remote_rtp: None,
            remote_rtcp: None,
            rtcp_mux: false,
            ptime_ms: offer.offered.ptime_ms,
            direction: crate::sdp::Direction::SendRecv,
        };
        let offered = Some(offer.offered);
        Ok((Self::with(engine, ports, local, session, audio, &body, offered), body))
    }

    /// Applies the peer's answer to our offer (200 OK or 183 with SDP).
    pub fn apply_answer(&mut self, answer: &[u8]) -> Result<(), Reject> {
        let offered = self.offered.as_ref().ok_or_else(|| Reject::NotAcceptable("no offer outstanding".into()))?;
        let sdp = SessionDescription::parse(answer).map_err(|e| Reject::NotAcceptable(e.to_string()))?;
        self.audio = apply_answer(offered, &sdp).map_err(|e| Reject::NotAcceptable(e.to_string()))?;
        self.send_update();
        Ok(())
    }

    fn send_update(&self) {
        if let Some(task) = &self.task {
            let _ = task.commands().send(Side::A, LegCommand::Update(self.audio));
        }
        if let Some((side, tx)) = &self.relay {
            let _ = tx.send(*side, LegCommand::Update(self.audio));
        }
    }

    /// A leg on `ports` for the negotiated stream, its session starting now.
    fn leg(&self, ports: PortPair) -> Leg {
        let session = RtpSession::new(
            self.audio,
            self.latch,
            self.rtp_timeout,
            std::time::Instant::now(),
            std::time::SystemTime::now(),
        );
        Leg { ports, session }
    }

    /// Sends `digits` to the peer as RFC 4733 events, each held for `duration`
    /// (Telnyx `send_dtmf`: `0-9*#A-D`, default 250 ms).
    ///
    /// Errors: the peer did not negotiate `telephone-event`, a character is not a
    /// digit, media is not running, or the leg is relayed (forward routes pass the
    /// peers' own DTMF through).
    pub fn send_dtmf(&self, digits: &str, duration: Duration) -> Result<(), String> {
        if self.audio.telephone_event.is_none() {
            return Err("the peer did not negotiate telephone-event (RFC 4733)".into());
        }
        if let Some(bad) = digits.chars().find(|c| crate::media::dtmf::digit_to_event(*c).is_none()) {
            return Err(format!("{bad:?} is not a DTMF digit (0-9, *, #, A-D)"));
        }
        if self.relay.is_some() {
            return Err("the leg is relayed to another leg: its DTMF passes through".into());
        }
        let task = self.task.as_ref().ok_or("media is not running")?;
        task.commands().send(Side::A, LegCommand::SendDtmf(digits.to_string(), duration))
    }

    /// Stops (`true`) or resumes passing what the peer says to the other side.
    pub fn mute_inbound(&self, muted: bool) -> Result<(), String> {
        if let Some((side, tx)) = &self.relay {
            return tx.send(*side, LegCommand::MuteInbound(muted));
        }
        let task = self.task.as_ref().ok_or("media is not running")?;
        task.commands().send(Side::A, LegCommand::MuteInbound(muted))
    }

    /// Suppresses noise on the directions `suppression` names from now on, and
    /// in every media job the leg runs in later (`suppression_start` with its
    /// `direction`; `Suppression::OFF` for `suppression_stop`). Before media
    /// starts it is only remembered.
    ///
    /// Errors: the media task has ended; inbound suppression on a G.722 or Opus
    /// leg (not available yet: the suppressor works on G.711 payloads in place).
    pub fn set_suppression(&mut self, suppression: Suppression) -> Result<(), String> {
        if suppression.inbound && self.audio.codec.is_wideband() {
            // The suppressor works in place on G.711 payloads (issue 21); a G.722
            // or Opus leg's audio would need it in the decode path.
            return Err(format!(
                "noise suppression of what the caller says is not available on {} legs yet",
                self.audio.codec.encoding_name()
            ));
        }
        self.suppression = suppression;
        if let Some((side, tx)) = &self.relay {
            return tx.send(*side, LegCommand::Suppress(suppression));
        }
        match self.task.as_ref() {
            Some(task) => task.commands().send(Side::A, LegCommand::Suppress(suppression)),
            None => Ok(()),
        }
    }

    /// The suppression asked for.
    pub fn suppression(&self) -> Suppression {
        self.suppression
    }

    /// Tells a media job just spawned about the suppression asked for.
    fn apply_suppression(&self) {
        if let (true, Some(task)) = (self.suppression.any(), self.task.as_ref()) {
            let _ = task.commands().send(Side::A, LegCommand::Suppress(self.suppression));
        }
    }

    /// Moves running media (the built-in echo) to a PCM endpoint (an agent stream
    /// started mid-call): the same leg (ports, SSRC, sequence, statistics) continues
    /// in a new engine job. Errors when media is not running or the leg is relayed.
    pub async fn switch_to_pcm(&mut self, tap: Option<Arc<dyn Tap>>, port: PcmPort) -> Result<(), String> {
        if self.relay.is_some() {
            return Err("the leg is bridged to another leg".into());
        }
        let task = self.task.take().ok_or("media is not running")?;
        let Some(Finished::One(leg)) = task.stop().await else {
            return Err("the media engine stopped".into());
        };
        self.spawn_pcm(leg, tap, port);
        Ok(())
    }

    fn spawn_pcm(&mut self, leg: Leg, tap: Option<Arc<dyn Tap>>, port: PcmPort) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        self.player = Some(port.control.clone());
        self.player_rate = port.sample_rate;
        let job = PcmJob::new(leg, Events::One(ev_tx), tap, port, std::time::Instant::now());
        self.task = Some(self.engine.spawn(Job::Pcm(Box::new(job))));
        self.apply_suppression();
        self.events = Some(ev_rx);
    }

    /// A PCM port that only plays the box's own audio (no endpoint: silence
    /// between playbacks), at the leg's rate: 16 kHz on a wideband leg (G.722,
    /// Opus), so that a clip with a 16 kHz version plays without passing through
    /// 8 kHz; 8 kHz otherwise.
    pub fn player_port(&self) -> PcmPort {
        let mut port = crate::media::pcm::pcm_pair(1, false, false).0;
        if self.audio.codec.is_wideband() {
            port.sample_rate = crate::media::clip::WIDE_RATE_HZ;
        }
        port
    }

    /// Plays `clip` from the box into the call (`playback_start`, `speak`,
    /// prompts), at the PCM bridge's rate: its 8 kHz version on an 8 kHz bridge;
    /// on a 16 kHz one its 16 kHz version, or the 8 kHz one upsampled (on a
    /// blocking thread, never on a media worker) when it has none. A call on the
    /// built-in echo moves to a [`Self::player_port`] first (the echo stops).
    /// Ends with `LegEvent::PlaybackDone { id, .. }`.
    ///
    /// # Errors
    /// The leg is relayed, or its media is not running.
    pub async fn play(
        &mut self,
        id: u64,
        clip: &Arc<crate::media::clip::Clip>,
        overlay: bool,
        tap: Option<Arc<dyn Tap>>,
    ) -> Result<(), String> {
        if self.relay.is_some() {
            return Err("the leg is bridged to another leg".into());
        }
        if self.player.is_none() {
            let port = self.player_port();
            self.switch_to_pcm(tap, port).await?;
        }
        let pcm = match (self.player_rate == crate::media::clip::WIDE_RATE_HZ, &clip.wide) {
            (false, _) => clip.narrow.clone(),
            (true, Some(wide)) => wide.clone(),
            (true, None) => {
                let clip = Arc::clone(clip);
                tokio::task::spawn_blocking(move || {
                    crate::media::transcode::RateConverter::up().map(|up| up.convert_clip(&clip.narrow))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
            }
        };
        let tx = self.player.as_ref().ok_or("media is not running")?;
        tx.send(Playback::Play { id, pcm, overlay }).await.map_err(|_| "media is not running".to_string())
    }

    /// Stops every playback (`playback_stop`).
    pub async fn stop_playback(&self) -> Result<(), String> {
        let tx = self.player.as_ref().ok_or("nothing is playing")?;
        tx.send(Playback::StopPlay).await.map_err(|_| "media is not running".to_string())
    }

    /// Sets `[rtp].timeout` for this leg (the config in force when the call began).
    pub fn set_rtp_timeout(&mut self, timeout: Duration) {
        self.rtp_timeout = timeout;
    }

    /// Sets the `[rtp]` latching settings for this leg (the config in force when
    /// the call began; defaults until then: 3 s window, 2 s silence, not strict).
    pub fn set_latch(&mut self, latch: LatchConfig) {
        self.latch = latch;
    }

    /// The negotiated stream.
    pub fn audio(&self) -> &NegotiatedAudio {
        &self.audio
    }

    /// Starts the media task (after the call is answered); `tap` hears the audio
    /// both ways (the recorder).
    pub fn start(&mut self, tap: Option<Arc<dyn Tap>>) {
        let Some(ports) = self.ports.take() else { return };
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let leg = self.leg(ports);
        self.task = Some(self.engine.spawn(Job::Echo(Box::new(EchoJob::new(leg, Events::One(ev_tx), tap)))));
        self.apply_suppression();
        self.events = Some(ev_rx);
    }

    /// Starts the media task bridging the leg to a PCM endpoint (a voice agent's
    /// stream) instead of the built-in echo; `tap` hears the audio both ways.
    pub fn start_pcm(&mut self, tap: Option<Arc<dyn Tap>>, port: PcmPort) {
        let Some(ports) = self.ports.take() else { return };
        let leg = self.leg(ports);
        self.spawn_pcm(leg, tap, port);
    }

    /// The next event of the media task (DTMF, timeout, quality sample);
    /// pending forever before `start` or after the task ended.
    pub async fn next_event(&mut self) -> LegEvent {
        match self.events.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(e) => e,
                None => {
                    self.events = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }

    /// Takes the media task's event receiver (for a caller that must select on it
    /// while the session is borrowed elsewhere); `None` if not started or already
    /// taken. Starting or switching media makes a new one to take.
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<LegEvent>> {
        self.events.take()
    }

    /// Our current description (for a re-INVITE without an offer).
    pub fn current_sdp(&self) -> Vec<u8> {
        self.last_answer.clone()
    }

    /// Answers a new offer in the dialog (re-INVITE/UPDATE): hold, resume, new
    /// address. On failure the previous media stays in force.
    pub fn reoffer(&mut self, offer: &[u8]) -> Result<Vec<u8>, Reject> {
        let offer = SessionDescription::parse(offer).map_err(|e| Reject::NotAcceptable(e.to_string()))?;
        let answer =
            answer_offer(&offer, &self.local, &mut self.session).map_err(|e| Reject::NotAcceptable(e.to_string()))?;
        self.audio = answer.audio;
        self.send_update();
        self.last_answer = answer.body.into_bytes();
        Ok(self.last_answer.clone())
    }

    /// Stops the media task; returns its report when media ran.
    pub async fn stop(&mut self) -> Option<LegReport> {
        match self.task.take()?.stop().await? {
            Finished::One(leg) => Some(LegReport::of(&leg.session)),
            Finished::Two(..) | Finished::Timer => None,
        }
    }
}
