//! Webhooks: Telnyx's event envelope, Ed25519 signatures, the durable outbox and
//! its delivery worker. So far: the signing key (`sipbridge keygen`).

pub mod key;
