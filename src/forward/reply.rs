//! What one upstream exchange gives back, shared by both upstream clients
//! ([`super::h1`] for `http://`, [`super::client`] for `https://`): the
//! answer reduced to what the sender's answer needs, or why there was none.

/// Most bytes of an upstream answer that are read (for the error message).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// An upstream's answer, reduced to what the sender's answer needs.
pub(super) struct UpstreamReply {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// At most [`MAX_ANSWER_BYTES`] of the body.
    pub prefix: Vec<u8>,
    /// The remote write 2.0 written-count headers, if the upstream sent any.
    pub written: Option<crate::answer::Written>,
}

/// How an exchange failed without an answer (a timeout is the caller's).
pub(super) enum ExchangeFailure {
    Unreachable(String),
}
