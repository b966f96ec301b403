//! TeXML/TwiML call flows from an answer URL (issue 23 point 1): a route with
//! `answer_url` parks the incoming call and hands it to a runner that fetches
//! documents from the app server and executes their verbs through the call's
//! own commands. What is supported, and how it differs from Telnyx, Twilio and
//! Exotel: `docs/texml.md`.
//!
//! - `document.rs`: the document model and its bounded parser (sans-IO);
//! - `params.rs`: the call's parameters in TwiML's form names;
//! - `fetch.rs`: the requests to the app server (http/https only, bounded);
//! - `run.rs`: the runner of one call's flow.

pub mod document;
pub mod fetch;
pub mod params;
pub mod run;

pub use run::spawn;
