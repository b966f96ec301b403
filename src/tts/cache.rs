//! Synthesized prompts on disk, so the same text in the same voice is
//! synthesized once: one file per (engine, voice, language, text), named by the
//! SHA-256 of those four, holding the speech as raw PCM16 LE mono 8 kHz
//! (`<key>.pcm`), and at 16 kHz beside it (`<key>.16k.pcm`) when the engine's
//! audio had that band, for wideband calls.
//!
//! Files are written to a temporary name and renamed into place (a crash leaves
//! no half prompt under a real name); a hit touches the file's modification time,
//! and after each write the least recently used files go until the directory is
//! within `[tts] cache_max_bytes` (LRU by mtime: "recently used" is "recently
//! written or read"). Blocking file I/O: callers run it on a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::media::clip::Clip;

/// The cache key of a text: hex SHA-256 of the engine, voice, language and text,
/// each followed by a 0 byte (no two different tuples make the same input).
pub fn key(engine: &str, voice: &str, language: &str, text: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [engine, voice, language, text] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.pcm"))
}

fn wide_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.16k.pcm"))
}

/// A file's PCM16 LE samples, marking it used; `None` when missing or odd-sized.
fn read_pcm(p: &Path) -> Option<Vec<i16>> {
    let bytes = std::fs::read(p).ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(SystemTime::now());
    }
    Some(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
}

/// The cached speech of `key` (8 kHz, with its 16 kHz version when one was
/// stored), marking it used; `None` on a miss or an unreadable 8 kHz file.
pub fn get(dir: &Path, key: &str) -> Option<Clip> {
    let narrow = read_pcm(&path(dir, key))?;
    let wide = read_pcm(&wide_path(dir, key));
    Some(Clip { narrow, wide })
}

/// Writes `pcm` to `to` through a temporary file renamed into place.
fn write_pcm(dir: &Path, key: &str, pcm: &[i16], to: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&tmp, to)
}

/// Stores `clip` under `key` (each file atomically; the 16 kHz one first, so an
/// 8 kHz hit never finds a half-written partner), then evicts the least recently
/// used files beyond `max_bytes`. A prompt larger than `max_bytes` is not kept.
///
/// # Errors
/// The directory or file could not be written (the caller logs it; speech goes on).
pub fn put(dir: &Path, key: &str, clip: &Clip, max_bytes: u64) -> std::io::Result<()> {
    let size = ((clip.narrow.len() + clip.wide.as_ref().map_or(0, Vec::len)) * 2) as u64;
    if size > max_bytes {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    if let Some(wide) = &clip.wide {
        write_pcm(dir, key, wide, &wide_path(dir, key))?;
    }
    write_pcm(dir, key, &clip.narrow, &path(dir, key))?;
    evict(dir, max_bytes)
}

/// Removes the least recently used `*.pcm` files until the rest fit `max_bytes`.
fn evict(dir: &Path, max_bytes: u64) -> std::io::Result<()> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "pcm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, p) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&p).is_ok() {
            total = total.saturating_sub(len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_differ_per_field_and_prompts_round_trip() {
        assert_ne!(key("espeak-ng", "en", "", "hi"), key("espeak-ng", "en", "hi", ""));
        assert_eq!(key("a", "b", "c", "d").len(), 64);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(dir.path(), "k"), None);
        put(dir.path(), "k", &Clip::narrowband(vec![1, -2, 300]), 1024).unwrap();
        assert_eq!(get(dir.path(), "k"), Some(Clip::narrowband(vec![1, -2, 300])));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["k.pcm"], "no temporary file left");
        let both = Clip { narrow: vec![1, 2], wide: Some(vec![1, 1, 2, 2]) };
        put(dir.path(), "w", &both, 1024).unwrap();
        assert_eq!(get(dir.path(), "w"), Some(both), "the 16 kHz version comes back with it");
        assert!(dir.path().join("w.16k.pcm").exists());
    }

    #[test]
    fn the_least_recently_used_go_beyond_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(100);
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            put(dir.path(), k, &Clip::narrowband(vec![0; 100]), 1000).unwrap();
            let f = std::fs::File::options().append(true).open(dir.path().join(format!("{k}.pcm"))).unwrap();
            f.set_modified(old + Duration::from_secs(i as u64)).unwrap();
        }
        assert!(get(dir.path(), "a").is_some(), "a is now the most recent");
        put(dir.path(), "d", &Clip::narrowband(vec![0; 300]), 1000).unwrap();
        // 200 + 200 + 200 + 600 bytes > 1000: the least recently used (b) goes.
        assert!(get(dir.path(), "b").is_none());
        for k in ["a", "c", "d"] {
            assert!(get(dir.path(), k).is_some(), "{k} kept");
        }
        put(dir.path(), "huge", &Clip { narrow: vec![0; 200], wide: Some(vec![0; 400]) }, 1000).unwrap();
        assert!(get(dir.path(), "huge").is_none(), "larger than the cap (both rates together): not kept");
    }
}
