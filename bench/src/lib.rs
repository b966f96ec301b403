//! Shared pieces of sipbridge's media benchmark tools (`rtpload`, `wsecho`).
//!
//! [`stamp`] is the packet identity carried inside the G.711 payload of every RTP
//! packet `rtpload` sends: stream id, sequence number and send time, written with a
//! 16-symbol alphabet of G.711 codes that come through decode → PCM16 → encode and
//! through PCMU ↔ PCMA transcoding (table or via linear) unchanged. A relay or an
//! agent path may rewrite the RTP header (SSRC, sequence, timestamp, payload type)
//! and re-encode the audio; the stamp still identifies the packet.
//! [`hist`] is the latency histogram.

pub mod hist;
pub mod kstamp;
pub mod stamp;

/// This process's CPU time so far (user + system, `getrusage(RUSAGE_SELF)`), s.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A tool's `main`: `parse` the arguments (an error is the usage, exit 2), `run`
/// them and print its JSON result on stdout (exit 0), or `name: error` on stderr
/// (exit 1).
pub fn tool_main<O>(
    name: &str,
    parse: impl FnOnce() -> Result<O, String>,
    run: impl FnOnce(O) -> Result<String, String>,
) -> std::process::ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(o) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
