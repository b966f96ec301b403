//! Key and certificate files the box loads: the API's TLS certificate and key
//! ([`tls_server`]) and the webhook signing key ([`signing_key`]). Loading and
//! checking only, shared by config validation (which must not import the API or
//! the webhook sender) and the parts that use them.

pub mod signing_key;
pub mod tls_server;
