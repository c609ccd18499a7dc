//! Decoding one token at a time without ever emitting part of a character.

use super::Tokenizer;

/// Streams text one id at a time, holding back bytes until they complete a character.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, pending: Vec::new() }
    }

    /// The text that `id` completes; empty while a character is still partial.
    pub fn push(&mut self, id: u32) -> String {
        self.pending.extend_from_slice(self.tokenizer.piece(id).unwrap_or_default());
        self.drain(false)
    }

    /// Whatever is left; an incomplete character at the end becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Emits complete characters; a byte sequence that no continuation can make valid becomes
    /// U+FFFD at once (as `from_utf8_lossy` would), so the concatenated output equals `decode`.
    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(text) => {
                    out.push_str(text);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid_end = start + e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[start..valid_end]).expect("checked valid"));
                    start = valid_end;
                    match e.error_len() {
                        Some(invalid_len) => start += invalid_len,
                        None if at_end => start = self.pending.len(),
                        None => break,
                    }
                    out.push('\u{FFFD}');
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
