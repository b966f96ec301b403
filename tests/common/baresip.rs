//! A real softphone as a test peer: baresip 1.0 (Debian 12's `baresip-core`),
//! headless, with a config directory of its own in the test's tempdir.
//!
//! - Audio source: `aufile` playing a WAV (8 kHz mono 16-bit). baresip 1.0 ends
//!   the call when the file ends ("audio error (0,end of file)"), so the WAV's
//!   length is the call's length unless someone hangs up first.
//! - Audio player: `aubridge` on a device nothing reads (a null sink); the
//!   `sndfile` filter still dumps what baresip sent (`dump-*-enc.wav`) and what it
//!   received and decoded (`dump-*-dec.wav`) into `snd/`.
//! - Control: `ctrl_tcp` (JSON in netstrings) on 127.0.0.1: `dial`, `accept`,
//!   `sndcode` (RFC 4733 key presses), `hangup`; its events (`CALL_ESTABLISHED`,
//!   `CALL_CLOSED`, ...) are collected by a reader thread.
//! - Bound to one loopback address (`sip_listen` and `net_interface`), so SIP and
//!   RTP come from e.g. 127.0.0.2, as they would from a carrier's proxy.
//! - Bounded: `-t` makes baresip quit by itself; the test stops it by pid.

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
    /// WAV it plays into every call (8 kHz mono 16-bit).
    pub source: &'a Path,
    /// It quits by itself after this long.
    pub max: Duration,
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
    /// Writes the config into `parent/<name>/` and starts baresip; returns once its
    /// control socket answers.
    pub fn start(parent: &Path, name: &str, phone: Phone) -> Self {
        let dir = parent.join(name);
        let snd = dir.join("snd");
        std::fs::create_dir_all(&snd).unwrap();
        let sip_port = free_udp_port(phone.ip);
        let ctrl_port = super::free_port();
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t{ip}:{sip_port}\n\
             sip_transports\tudp\n\
             net_interface\t{ip}\n\
             audio_player\taubridge,{name}-null\n\
             audio_alert\taubridge,{name}-null-alert\n\
             audio_source\taufile,{source}\n\
             ausrc_srate\t8000\nauplay_srate\t8000\nausrc_channels\t1\nauplay_channels\t1\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\nmodule\taufile.so\nmodule\taubridge.so\nmodule\tsndfile.so\n\
             module_app\taccount.so\nmodule_app\tmenu.so\nmodule_app\tctrl_tcp.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n\
             snd_path\t{snd}\n",
            ip = phone.ip,
            source = phone.source.display(),
            snd = snd.display(),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let answer = if phone.auto_answer { "auto" } else { "manual" };
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{}@{}>;regint=0;answermode={answer}\n", phone.user, phone.ip),
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
                break s;
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

    /// What baresip heard (decoded, after its jitter buffer), dumped by `sndfile`.
    pub fn heard(&self) -> Option<PathBuf> {
        self.dump("-dec.wav")
    }

    /// What baresip sent (its source, before encoding), dumped by `sndfile`.
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
