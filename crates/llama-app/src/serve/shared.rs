//! What the HTTP side knows and shares between its requests, and the places a request holds.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use llama_core::chat_template::ChatTemplate;

use super::api::{ApiError, Defaults};
use super::engine::Message;
use super::metrics::Metrics;

/// What the HTTP side knows and shares between its requests.
pub struct Shared {
    pub model_id: String,
    /// When the server started (seconds since 1970), for `/v1/models`.
    pub started: u64,
    pub tokenizer: Arc<llama_core::tokenizer::Tokenizer>,
    pub template: ChatTemplate,
    /// Tokens each slot holds.
    pub context: usize,
    pub defaults: Defaults,
    pub api_key: Option<String>,
    /// Requests the server holds at once, running or queued: slots + queue.
    pub capacity: usize,
    pub held: AtomicUsize,
    pub ready: AtomicBool,
    pub next_id: AtomicU64,
    pub metrics: Metrics,
    pub engine: mpsc::Sender<Message>,
}

/// A place among the requests the server holds, given back when dropped (the reply has ended or
/// its client has gone).
pub struct Ticket(Arc<Shared>);

impl Ticket {
    pub fn take(s: &Arc<Shared>) -> Result<Self, ApiError> {
        if s.held.fetch_add(1, Ordering::AcqRel) >= s.capacity {
            s.held.fetch_sub(1, Ordering::AcqRel);
            Metrics::add(&s.metrics.rejected, 1);
            return Err(ApiError::unavailable("every slot is busy and the queue is full: retry later"));
        }
        Metrics::add(&s.metrics.requests, 1);
        Ok(Self(s.clone()))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
