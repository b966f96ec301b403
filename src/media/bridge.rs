//! The relay between two SIP legs (forward routes, B2BUA): RTP from one leg goes
//! out on the other without decoding when both use the same codec — only the
//! payload type is rewritten when the legs numbered it differently; PCMU↔PCMA is
//! transcoded in place by table (`g711::transcode_in_place`). RFC 4733 events are
//! relayed with their payload type mapped (dropped when the far leg did not
//! negotiate telephone-event) and reported as digits.
//!
//! SSRC, sequence numbers and timestamps pass through unchanged, as a media relay
//! does (the far end sees the source's stream; a source change is a normal RTP
//! SSRC change to it). Each leg takes media only from its latched source
//! (`latch`): a third party's packets are neither relayed nor answered. Per packet:
//! one `recv_from`, an in-place rewrite in a stack buffer, one `send_to`; no
//! allocation, no lock, no log above trace. RTCP is
//! terminated on each leg (reports about that leg's own stream, RFC 3550 §6.4);
//! either direction can be muted (`LegCommand::MuteInbound` on a side: what it
//! says is no longer sent to the other).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::g711::transcode_in_place;
use super::leg::{Kind, LegCommand, LegEvent, MAX_DATAGRAM, RtpLeg};
use super::rtp::RtpPacketMut;

/// How often the relay checks RTP timeouts and RTCP report times.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Which leg an event or command concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The leg that received the call (caller side).
    A,
    /// The leg the box dialled.
    B,
}

/// Rewrites `pkt` (from `from`) for sending on `to`; returns false to drop it.
fn rewrite(pkt: &mut [u8], kind: Kind, from: &RtpLeg, to: &RtpLeg) -> bool {
    let Ok(mut p) = RtpPacketMut::parse(pkt) else { return false };
    match kind {
        Kind::Audio { .. } => {
            let (src, dst) = (from.audio().codec, to.audio().codec);
            if src != dst {
                transcode_in_place(src, dst, p.payload_mut());
            }
            p.set_payload_type(to.audio().payload_type);
            true
        }
        Kind::Event(_) => match to.audio().telephone_event {
            Some(pt) => {
                p.set_payload_type(pt);
                true
            }
            None => false,
        },
        Kind::Nothing => false,
    }
}

/// Relays between `a` and `b` until stopped; returns both legs (for their
/// statistics).
pub async fn run_relay(
    mut a: RtpLeg,
    mut b: RtpLeg,
    mut commands: mpsc::Receiver<(Side, LegCommand)>,
    events: mpsc::UnboundedSender<(Side, LegEvent)>,
    rtp_timeout: Duration,
    mut tap: Option<std::sync::Arc<dyn super::leg::Tap>>,
) -> (RtpLeg, RtpLeg) {
    let mut buf_a = [0u8; MAX_DATAGRAM];
    let mut buf_b = [0u8; MAX_DATAGRAM];
    let (mut rtcp_a, mut rtcp_b) = ([0u8; 512], [0u8; 512]);
    let (mut timed_out_a, mut timed_out_b) = (false, false);
    // One housekeeping tick (RTP timeouts, RTCP reports) instead of per-packet
    // timers: the packet path registers nothing with the timer wheel.
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = a.recv(&mut buf_a) => {
                let Ok((n, src)) = r else { continue };
                let kind = a.classify(&buf_a[..n], src, Instant::now());
                if let Kind::Event(Some(d)) = kind {
                    let _ = events.send((Side::A, LegEvent::Dtmf(d)));
                }
                if let (Some(t), Kind::Audio { payload_len }) = (&tap, kind) {
                    t.heard(a.audio().codec, &buf_a[n - payload_len..n]);
                }
                if rewrite(&mut buf_a[..n], kind, &a, &b) {
                    let len = match kind { Kind::Audio { payload_len } => payload_len, _ => 0 };
                    b.send_packet(&buf_a[..n], len).await;
                }
            }
            r = b.recv(&mut buf_b) => {
                let Ok((n, src)) = r else { continue };
                let kind = b.classify(&buf_b[..n], src, Instant::now());
                if let Kind::Event(Some(d)) = kind {
                    let _ = events.send((Side::B, LegEvent::Dtmf(d)));
                }
                if let (Some(t), Kind::Audio { payload_len }) = (&tap, kind) {
                    t.said(b.audio().codec, &buf_b[n - payload_len..n]);
                }
                if rewrite(&mut buf_b[..n], kind, &b, &a) {
                    let len = match kind { Kind::Audio { payload_len } => payload_len, _ => 0 };
                    a.send_packet(&buf_b[..n], len).await;
                }
            }
            now = tick.tick() => {
                if !timed_out_a && a.expects_media() && now >= a.timeout_deadline(rtp_timeout) {
                    timed_out_a = true;
                    let _ = events.send((Side::A, LegEvent::Timeout(rtp_timeout)));
                }
                if !timed_out_b && b.expects_media() && now >= b.timeout_deadline(rtp_timeout) {
                    timed_out_b = true;
                    let _ = events.send((Side::B, LegEvent::Timeout(rtp_timeout)));
                }
                if now >= a.rtcp_deadline() {
                    a.send_rtcp().await;
                }
                if now >= b.rtcp_deadline() {
                    b.send_rtcp().await;
                }
            }
            // RTCP is terminated per leg (each side gets reports about its own stream).
            r = a.recv_rtcp(&mut rtcp_a) => if let Ok((n, from)) = r { a.on_rtcp(&rtcp_a[..n], from) },
            r = b.recv_rtcp(&mut rtcp_b) => if let Ok((n, from)) = r { b.on_rtcp(&rtcp_b[..n], from) },
            c = commands.recv() => match c {
                Some((Side::A, LegCommand::Update(audio))) => { a.update(audio); timed_out_a = false; }
                Some((Side::B, LegCommand::Update(audio))) => { b.update(audio); timed_out_b = false; }
                Some((_, LegCommand::Tap(t))) => tap = t,
                // Side A's peer muted: nothing more of it reaches B (and vice versa).
                Some((Side::A, LegCommand::MuteInbound(m))) => b.set_muted(m),
                Some((Side::B, LegCommand::MuteInbound(m))) => a.set_muted(m),
                // Relayed streams keep the peers' own numbering: nothing is injected
                // (MediaSession::send_dtmf refuses relayed legs).
                Some((_, LegCommand::SendDtmf(..))) => {}
                Some((_, LegCommand::Stop)) | None => break,
            }
        }
    }
    (a, b)
}
