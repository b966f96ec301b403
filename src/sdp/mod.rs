//! SDP offer/answer, RFC 3264 / RFC 4566 (being built).
