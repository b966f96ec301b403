//! A real softphone as a test peer: baresip 1.0 (Debian 12's `baresip-core`),
//! headless, with a config directory of its own in the test's tempdir.
//!
//! - Audio source: `aufile` playing a WAV (mono 16-bit, 8 or 16 kHz). baresip 1.0
//!   ends the call when the file ends ("audio error (0,end of file)"), so the WAV's
//!   length is the call's length unless someone hangs up first.
//! - Audio player: `aubridge` on a device nothing reads (a null sink); the
//!   `sndfile` filter still dumps what baresip sent (`dump-*-enc.wav`) and what it
//!   received and decoded (`dump-*-dec.wav`) into `snd/`.
//! - Codecs ([`Codec`], [`Baresip::start_with`]): only the modules of the codecs
//!   asked for are loaded, and the account's `audio_codecs` lists them in that
//!   order, so baresip offers and accepts exactly those (plus telephone-event).
//!   [`Baresip::start`] keeps the G.711 default: `g711.so`, PCMU then PCMA.
//! - Control: `ctrl_tcp` (JSON in netstrings) on 127.0.0.1: `dial`, `accept`,
//!   `sndcode` (RFC 4733 key presses), `hangup`; its events (`CALL_ESTABLISHED`,
//!   `CALL_CLOSED`, ...) are collected by a reader thread.
//! - Bound to one loopback address (`sip_listen` and `net_interface`), so SIP and
//!   RTP come from e.g. 127.0.0.2, as they would from a carrier's proxy.
//! - Bounded: `-t` makes baresip quit by itself; the test stops it by pid.
//! - The SIP trace (`-s`) is in its log: [`Baresip::sip_trace`], [`sdp_rtpmaps`].
//!
//! baresip 1.0's quirks (found on baresip ↔ baresip calls, tests/wideband.rs):
//! - `aufile` refuses a WAV whose rate differs from `ausrc_srate` ("input file
//!   must have sample-rate 16000 Hz") and the call then closes at once ("No such
//!   device"). So `ausrc_srate` and `auplay_srate` are taken from the WAV's header
//!   here; baresip resamples between that rate and the codec's own.
//! - The `sndfile` dumps are at the *codec's* rate, not the device's: 8000 Hz for
//!   PCMU/PCMA, 16000 Hz for G.722, 48000 Hz for Opus (whatever `ausrc_srate`).
//!   The `-enc` dump is the source after baresip's resampler.
//! - Codec names in `audio_codecs` are the module's: `PCMU`, `PCMA`, `G722`,
//!   `opus` (an optional `/rate/channels` must match the module's, e.g.
//!   `G722/16000/1`, not the SDP's `G722/8000`).
//! - G.722 is offered as `9 G722/8000` (RFC 3551's clock erratum); the log says
//!   "Set audio encoder: G722 16000Hz".
//! - Opus is offered on dynamic payload type 96 as `opus/48000/2` with fmtp from
//!   its `opus_*` settings: `opus_stereo no` and `opus_sprop_stereo no` give
//!   `stereo=0;sprop-stereo=0`, `opus_bitrate N` gives `maxaveragebitrate=N`.
//!   telephone-event stays at 8000 Hz beside it (not 48000, RFC 4733 §2.1).
//! - An answer lists one codec only (the answerer's first in `audio_codecs`
//!   that the offer has), plus telephone-event.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How a baresip instance is set up.
pub struct Phone<'a> {
    /// Loopback address it binds (SIP and RTP), e.g. `"127.0.0.2"`.
    pub ip: &'a str,
    /// User part of its account (its number), e.g. `"+14155550123"`.
    pub user: &'a str,
    /// Answer incoming calls by itself.
    pub auto_answer: bool,
    /// WAV it plays into every call (mono 16-bit, 8 or 16 kHz: its rate becomes
    /// baresip's `ausrc_srate` and `auplay_srate`).
    pub source: &'a Path,
    /// It quits by itself after this long.
    pub max: Duration,
}

/// An audio codec baresip offers and accepts: a module of Debian's
/// `baresip-core` and its name in the account's `audio_codecs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law, `PCMU/8000` (module `g711`).
    Pcmu,
    /// G.711 A-law, `PCMA/8000` (module `g711`).
    Pcma,
    /// G.722, `G722/8000` on the wire, 16 kHz audio (module `g722`).
    G722,
    /// Opus, `opus/48000/2`, mono (module `opus`; settings in [`OPUS_CONFIG`]).
    Opus,
}

impl Codec {
    /// The module that implements it.
    pub fn module(self) -> &'static str {
        match self {
            Codec::Pcmu | Codec::Pcma => "g711",
            Codec::G722 => "g722",
            Codec::Opus => "opus",
        }
    }

    /// Its name in `audio_codecs` and in baresip's "Set audio encoder" log line.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// Its `a=rtpmap` encoding as an SDP carries it (`G722/8000`, `opus/48000/2`).
    pub fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }

    /// The rate of its PCM, and so of baresip's `snd/` dumps, in Hz.
    pub fn pcm_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16_000,
            Codec::Opus => 48_000,
        }
    }
}

/// The `opus` module's settings whenever it is loaded: mono both ways
/// (`stereo=0;sprop-stereo=0` in its fmtp) at 32 kbit/s (`maxaveragebitrate`),
/// which Opus codes as wideband or better.
pub const OPUS_CONFIG: &str = "opus_stereo\tno\nopus_sprop_stereo\tno\nopus_bitrate\t32000\n";

/// One message of baresip's SIP trace (`-s`).
#[derive(Clone, Debug)]
pub struct Traced {
    /// `ip:port` it came from.
    pub from: String,
    /// `ip:port` it went to.
    pub to: String,
    /// The message: start line, headers, blank line, body.
    pub text: String,
}

impl Traced {
    /// Its SDP body, if it has one.
    pub fn sdp(&self) -> Option<&str> {
        let at = self.text.find("\nv=0")?;
        Some(&self.text[at + 1..])
    }
}

/// The audio formats of the first `m=audio` of `sdp`, in the line's order: (payload
/// type, `encoding/clock[/channels]` from its `a=rtpmap`, or RFC 3551's for the
/// static types 0, 8 and 9 when there is none, `a=fmtp` text or "").
pub fn sdp_rtpmaps(sdp: &str) -> Vec<(u8, String, String)> {
    let lines: Vec<&str> = sdp.lines().map(str::trim).collect();
    let Some(m) = lines.iter().find_map(|l| l.strip_prefix("m=audio ")) else { return Vec::new() };
    let attr = |name: &str, pt: u8| {
        lines.iter().find_map(|l| l.strip_prefix(&format!("a={name}:{pt} ")).map(|v| v.trim().to_string()))
    };
    m.split_whitespace()
        .skip(2)
        .filter_map(|p| p.parse::<u8>().ok())
        .map(|pt| {
            let fallback = match pt {
                0 => "PCMU/8000",
                8 => "PCMA/8000",
                9 => "G722/8000",
                _ => "?",
            };
            (pt, attr("rtpmap", pt).unwrap_or_else(|| fallback.to_string()), attr("fmtp", pt).unwrap_or_default())
        })
        .collect()
}

/// A running baresip.
pub struct Baresip {
    child: Child,
    /// Its config directory (also holds its logs and `snd/` dumps).
    pub dir: PathBuf,
    /// Its SIP port on `ip`.
    pub sip_port: u16,
    ip: String,
    user: String,
    ctrl: TcpStream,
    inbox: Arc<Mutex<Vec<Value>>>,
    token: u64,
}

/// A UDP port free on `ip` right now (the kernel picks it).
fn free_udp_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free UDP port")
}

impl Baresip {
    /// Writes the config into `parent/<name>/` and starts baresip with G.711 (PCMU,
    /// then PCMA); returns once its control socket answers.
    pub fn start(parent: &Path, name: &str, phone: Phone) -> Self {
        Self::start_with(parent, name, phone, &[])
    }

    /// [`Baresip::start`] offering and accepting only `codecs`, in that order
    /// (empty: `g711.so`'s PCMU and PCMA, baresip's default order).
    ///
    /// Its ports are picked free, but another process may take one before
    /// baresip binds it (they come from the kernel's ephemeral range, as every
    /// outgoing connection's do), and the connect loop below could meet
    /// itself (a TCP self-connect on 127.0.0.1). So the control connection
    /// must answer a command with its token before baresip counts as started;
    /// otherwise it is stopped and started again on new ports (3 tries).
    pub fn start_with(parent: &Path, name: &str, phone: Phone, codecs: &[Codec]) -> Self {
        let dir = parent.join(name);
        for attempt in 1..=3 {
            let mut b = Self::spawn(&dir, name, &phone, codecs);
            if b.answers() {
                return b;
            }
            eprintln!("baresip {name}: try {attempt}: its control port was not its own, starting it again");
        }
        panic!("baresip {name} did not start with a control connection of its own: {}", log_of(&dir));
    }

    /// Whether the control connection reaches this baresip: it answers a
    /// command (any, `reginfo`) with the token sent (within 3 s).
    fn answers(&mut self) -> bool {
        self.token += 1;
        let token = format!("t{}", self.token);
        let body = json!({"command": "reginfo", "params": "", "token": token}).to_string();
        if self.ctrl.write_all(format!("{}:{body},", body.len()).as_bytes()).is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.inbox.lock().unwrap().iter().any(|m| m["response"] == true && m["token"] == token) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// One start of baresip in `dir` on fresh ports, connected to its
    /// control socket (not yet known to be its own).
    fn spawn(dir: &Path, name: &str, phone: &Phone, codecs: &[Codec]) -> Self {
        let dir = dir.to_path_buf();
        let snd = dir.join("snd");
        std::fs::create_dir_all(&snd).unwrap();
        let sip_port = free_udp_port(phone.ip);
        let ctrl_port = super::free_port();
        let rate = hound::WavReader::open(phone.source)
            .unwrap_or_else(|e| panic!("baresip's source {}: {e}", phone.source.display()))
            .spec()
            .sample_rate;
        let mut modules: Vec<&str> = codecs.iter().map(|c| c.module()).collect();
        if modules.is_empty() {
            modules.push("g711");
        }
        modules.dedup();
        let mut codec_config: String = modules.iter().map(|m| format!("module\t{m}.so\n")).collect();
        if codecs.contains(&Codec::Opus) {
            codec_config.push_str(OPUS_CONFIG);
        }
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t{ip}:{sip_port}\n\
             sip_transports\tudp\n\
             net_interface\t{ip}\n\
             audio_player\taubridge,{name}-null\n\
             audio_alert\taubridge,{name}-null-alert\n\
             audio_source\taufile,{source}\n\
             ausrc_srate\t{rate}\nauplay_srate\t{rate}\nausrc_channels\t1\nauplay_channels\t1\n\
             module_path\t/usr/lib/baresip/modules\n\
             {codec_config}\
             module\taufile.so\nmodule\taubridge.so\nmodule\tsndfile.so\n\
             module_app\taccount.so\nmodule_app\tmenu.so\nmodule_app\tctrl_tcp.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n\
             snd_path\t{snd}\n",
            ip = phone.ip,
            source = phone.source.display(),
            snd = snd.display(),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let answer = if phone.auto_answer { "auto" } else { "manual" };
        let audio_codecs = if codecs.is_empty() {
            String::new()
        } else {
            format!(";audio_codecs={}", codecs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","))
        };
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{}@{}>;regint=0;answermode={answer}{audio_codecs}\n", phone.user, phone.ip),
        )
        .unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-s", "-t", &phone.max.as_secs().max(1).to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("baresip (Debian package baresip-core) must be installed: scripts/setup-tests");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                // A connection from the port to itself is no listener.
                if s.local_addr().is_ok_and(|a| a.port() != ctrl_port) {
                    break s;
                }
            }
            assert!(Instant::now() < deadline, "baresip's ctrl_tcp did not listen within 10 s: {}", log_of(&dir));
            std::thread::sleep(Duration::from_millis(20));
        };
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (ctrl.try_clone().unwrap(), inbox.clone());
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                // Netstrings: `<len>:<json>,`.
                while let Some(colon) = buf.iter().position(|&b| b == b':') {
                    let Some(len) = std::str::from_utf8(&buf[..colon]).ok().and_then(|s| s.parse::<usize>().ok())
                    else {
                        buf.clear();
                        break;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf[colon + 1..colon + 1 + len]) {
                        sink.lock().unwrap().push(v);
                    }
                    buf.drain(..colon + 1 + len + 1);
                }
            }
        });
        Self { child, dir, sip_port, ip: phone.ip.into(), user: phone.user.into(), ctrl, inbox, token: 0 }
    }

    /// Its own SIP URI, `sip:<user>@<ip>:<port>`.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}:{}", self.user, self.ip, self.sip_port)
    }

    /// Sends a ctrl_tcp command and waits (at most 10 s) for its response.
    pub fn command(&mut self, command: &str, params: &str) -> Value {
        self.token += 1;
        let token = format!("t{}", self.token);
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        self.ctrl.write_all(format!("{}:{body},", body.len()).as_bytes()).expect("write to baresip's ctrl_tcp");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.inbox.lock().unwrap().iter().find(|m| m["response"] == true && m["token"] == token) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "baresip did not answer {command}: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Dials `uri` (`sip:number@host:port`).
    pub fn dial(&mut self, uri: &str) {
        let r = self.command("dial", uri);
        assert_eq!(r["ok"], true, "baresip dial: {r}");
    }

    /// One key press as RFC 4733 events (baresip sends the start, then the end
    /// packets on the release that follows).
    pub fn press(&mut self, digit: char) {
        let r = self.command("sndcode", &digit.to_string());
        assert_eq!(r["ok"], true, "baresip sndcode: {r}");
    }

    /// Switches the current call's audio source to the WAV `source` (the `menu`
    /// module's `ausrc aufile,<path>`): it plays from its start, and its end
    /// ends the call as the first source's would. It must have the first
    /// source's rate (`ausrc_srate`, [`Phone::source`]). The `sndfile` dumps run
    /// on: `-enc` holds the first source, then this one.
    pub fn play(&mut self, source: &Path) {
        let r = self.command("ausrc", &format!("aufile,{}", source.display()));
        assert_eq!(r["ok"], true, "baresip ausrc: {r}\n{}", self.log());
    }

    /// Hangs up the current call.
    pub fn hangup(&mut self) {
        let _ = self.command("hangup", "");
    }

    /// Every ctrl_tcp event so far (`{"event": true, "type": ..}`), in order.
    pub fn events(&self) -> Vec<Value> {
        self.inbox.lock().unwrap().iter().filter(|m| m["event"] == true).cloned().collect()
    }

    /// Waits at most `limit` for an event of `kind`; returns it.
    pub fn wait_event(&self, kind: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| e["type"] == kind) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What baresip heard (decoded, after its jitter buffer), dumped by `sndfile`
    /// at the codec's rate ([`Codec::pcm_rate`]).
    pub fn heard(&self) -> Option<PathBuf> {
        self.dump("-dec.wav")
    }

    /// What baresip sent (its source after its resampler, before encoding), dumped
    /// by `sndfile` at the codec's rate ([`Codec::pcm_rate`]).
    pub fn sent(&self) -> Option<PathBuf> {
        self.dump("-enc.wav")
    }

    fn dump(&self, suffix: &str) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.join("snd"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
    }

    /// The codec baresip encodes with, from its log ("audio: Set audio encoder:
    /// G722 16000Hz 1ch"): (its name, as [`Codec::name`], the PCM rate in Hz).
    pub fn encoder(&self) -> Option<(String, u32)> {
        let log = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let line = log.lines().rev().find_map(|l| l.split("Set audio encoder: ").nth(1))?;
        let mut words = line.split_whitespace();
        let name = words.next()?.to_string();
        let rate = words.next()?.strip_suffix("Hz")?.parse().ok()?;
        Some((name, rate))
    }

    /// Every SIP message in its trace, in order.
    pub fn sip_trace(&self) -> Vec<Traced> {
        let log = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        // Each message: "\x1b[36;1m#\nUDP a -> b\n<message>\x1b[;m".
        log.split("\x1b[36;1m#\n")
            .skip(1)
            .filter_map(|block| {
                let block = block.split("\x1b[;m").next()?;
                let (head, text) = block.split_once('\n')?;
                let words: Vec<&str> = head.split_whitespace().collect();
                let [_transport, from, "->", to] = words[..] else { return None };
                Some(Traced { from: from.to_string(), to: to.to_string(), text: text.replace("\r\n", "\n") })
            })
            .collect()
    }

    /// SDP bodies baresip received (the box's offer or answer), in order.
    pub fn sdp_received(&self) -> Vec<String> {
        let me = format!("{}:{}", self.ip, self.sip_port);
        self.sip_trace().iter().filter(|m| m.to == me).filter_map(|m| m.sdp().map(str::to_string)).collect()
    }

    /// Its console output (with the SIP trace, `-s`), for assertion messages.
    pub fn log(&self) -> String {
        log_of(&self.dir)
    }

    /// Waits at most `limit` for it to exit; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn log_of(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    // The status line (`[0:00:01] audio=..`) repeats many times a second.
    let text: String = text.split("    ").filter(|s| !s.starts_with('[') || !s.contains("audio=")).collect();
    let tail: String = text.chars().rev().take(8000).collect::<Vec<_>>().into_iter().rev().collect();
    format!("--- baresip ({}) ---\n{tail}", dir.display())
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            if !self.wait_exit(Duration::from_secs(3)) {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}
