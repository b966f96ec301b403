//! The dependency budget's guard (issue 18, docs/dependencies.md): no crate in the
//! resolved tree, for any target and any kind of dependency (normal, build, dev), may
//! link OpenSSL, BoringSSL or aws-lc, or need cmake. rustls runs on ring only
//! (ARCHITECTURE.md), and the arm64/armhf builds need nothing but Debian's cross gcc.
//!
//! The tree comes from `cargo metadata --locked` without a platform filter: every
//! target's dependencies, so a crate that only enters for Windows or macOS, or only
//! for one of our cross targets, is still seen.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crates that are, or build, a C TLS/crypto library, or the cmake driver.
const FORBIDDEN: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "openssl",
    "openssl-sys",
    "openssl-src",
    "native-tls",
    "boring",
    "boring-sys",
    "cmake",
];

/// `links = "..."` values of native libraries we refuse (a crate we do not know by
/// name that links one of them is caught too).
fn forbidden_link(links: &str) -> bool {
    let l = links.to_ascii_lowercase();
    l.contains("ssl") || l.contains("aws_lc") || l.contains("aws-lc") || l == "crypto"
}

/// Every finding as "crate version: why (pulled in by: parents)", sorted.
fn findings(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().expect("packages");
    let by_id: HashMap<&str, &Value> = packages.iter().map(|p| (p["id"].as_str().unwrap(), p)).collect();
    let nodes = metadata["resolve"]["nodes"].as_array().expect("resolve.nodes");
    // Parents of each package id, to say where an offender comes from.
    let mut parents: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for node in nodes {
        let parent = &by_id[node["id"].as_str().unwrap()];
        for dep in node["deps"].as_array().unwrap() {
            parents
                .entry(dep["pkg"].as_str().unwrap())
                .or_default()
                .insert(parent["name"].as_str().unwrap().to_string());
        }
    }
    let mut out = Vec::new();
    for node in nodes {
        let id = node["id"].as_str().unwrap();
        let p = by_id[id];
        let name = p["name"].as_str().unwrap();
        let mut why = Vec::new();
        if FORBIDDEN.contains(&name) {
            why.push("forbidden crate".to_string());
        }
        if let Some(links) = p["links"].as_str().filter(|l| forbidden_link(l)) {
            why.push(format!("links native library {links:?}"));
        }
        if !why.is_empty() {
            let from: Vec<String> = parents.get(id).into_iter().flatten().cloned().collect();
            out.push(format!(
                "{name} {}: {} (pulled in by: {})",
                p["version"].as_str().unwrap_or("?"),
                why.join(", "),
                if from.is_empty() { "the workspace".into() } else { from.join(", ") }
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn no_crate_links_openssl_or_aws_lc_or_needs_cmake() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let nodes = metadata["resolve"]["nodes"].as_array().map_or(0, Vec::len);
    // The whole tree, not a filtered slice of it: rustls, ring and the cross-target
    // crates of tokio and socket2 (windows-sys) are all in it.
    let names: BTreeSet<&str> =
        metadata["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for must in ["rustls", "ring", "tokio", "windows-sys"] {
        assert!(names.contains(must), "cargo metadata's tree ({nodes} nodes) lacks {must}: not the whole tree");
    }
    let found = findings(&metadata);
    assert!(found.is_empty(), "crates outside the dependency budget (docs/dependencies.md):\n{}", found.join("\n"));
}

/// The check itself, on a made-up tree: each kind of offender is named with the
/// crate that pulled it in; ring (which links its own "ring_core_*") is not one.
#[test]
fn the_guard_names_each_kind_of_offender() {
    let pkg = |name: &str, links: Option<&str>| serde_json::json!({ "id": format!("{name}-id"), "name": name, "version": "1.0.0", "links": links });
    let node = |name: &str, deps: &[&str]| {
        let deps: Vec<Value> = deps.iter().map(|d| serde_json::json!({ "pkg": format!("{d}-id") })).collect();
        serde_json::json!({ "id": format!("{name}-id"), "deps": deps })
    };
    let metadata = serde_json::json!({
        "packages": [
            pkg("sipbridge", None), pkg("reqwest", None), pkg("native-tls", None),
            pkg("openssl-sys", Some("openssl")), pkg("odd-tls-sys", Some("aws_lc_0_29_0")),
            pkg("prost-build", None), pkg("cmake", None), pkg("ring", Some("ring_core_0_17_14_")),
        ],
        "resolve": { "nodes": [
            node("sipbridge", &["reqwest", "odd-tls-sys", "prost-build", "ring"]),
            node("reqwest", &["native-tls"]), node("native-tls", &["openssl-sys"]),
            node("openssl-sys", &[]), node("odd-tls-sys", &[]), node("prost-build", &["cmake"]),
            node("cmake", &[]), node("ring", &[]),
        ]},
    });
    assert_eq!(
        findings(&metadata),
        [
            "cmake 1.0.0: forbidden crate (pulled in by: prost-build)",
            "native-tls 1.0.0: forbidden crate (pulled in by: reqwest)",
            "odd-tls-sys 1.0.0: links native library \"aws_lc_0_29_0\" (pulled in by: sipbridge)",
            "openssl-sys 1.0.0: forbidden crate, links native library \"openssl\" (pulled in by: native-tls)",
        ]
    );
}
