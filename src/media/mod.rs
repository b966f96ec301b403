//! Media: RTP/RTCP legs, G.711, RFC 4733 DTMF, statistics (being built).
