//! Counts what the host asks of the wgpu device: every kernel launch (burn's and ours), queue
//! submit, device-to-host read, staging write and buffer creation, whichever thread asks.
//!
//! wgpu-core marks each of its API calls with a `profiling` scope. This crate turns on
//! `profiling`'s tracing output, so each call is a tracing span named after it, and the layer
//! here counts the spans of a few names. cubecl 0.10 creates exactly one bind group per dispatch
//! (`register_pipeline` in its `compute/stream.rs`), so bind groups count launches, of every
//! kernel that reaches the device. The layer's filter says "never" to every other call site, so
//! those cost nothing after their first visit, and it lets the counted ones through only while a
//! [`count`] is running.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use llama_app::framework::HostWork;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The wgpu-core calls counted, in [`HostWork`]'s order.
const COUNTED: [&str; 5] =
    ["Device::create_bind_group", "Queue::submit", "Buffer::map_async", "Queue::write_buffer", "Device::create_buffer"];

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

fn counted_index(metadata: &Metadata<'_>) -> Option<usize> {
    if !metadata.is_span() || !metadata.target().starts_with("wgpu_core") {
        return None;
    }
    COUNTED.iter().position(|name| *name == metadata.name())
}

struct CountSpans;

impl<S: Subscriber> Layer<S> for CountSpans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
        if let Some(i) = counted_index(attrs.metadata()) {
            COUNTS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Lets the counted call sites through while a [`count`] runs; says "never" to every other.
struct WhileCounting;

impl<S: Subscriber> Filter<S> for WhileCounting {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        COUNTING.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if counted_index(metadata).is_some() { Interest::sometimes() } else { Interest::never() }
    }

    /// wgpu-core's scopes are info spans. Without this hint the subscriber's level would be
    /// trace, and every `log::trace!` in wgpu and cubecl would pass through tracing to be refused.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// The layer to install in the process's subscriber (before any wgpu call).
pub fn layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    CountSpans.with_filter(WhileCounting)
}

fn snapshot() -> [u64; 5] {
    COUNTS.each_ref().map(|c| c.load(Ordering::Relaxed))
}

/// Runs `work` and returns what it asked of the device. `work` must end with a read that waits
/// for the device (a token's readback), so that cubecl has encoded all of it by then.
pub fn count<R>(work: impl FnOnce() -> R) -> (R, HostWork) {
    let before = snapshot();
    COUNTING.store(true, Ordering::SeqCst);
    let result = work();
    COUNTING.store(false, Ordering::SeqCst);
    let after = snapshot();
    let [launches, submits, reads, staging_writes, buffers_created] = std::array::from_fn(|i| after[i] - before[i]);
    (
        result,
        HostWork {
            kernel_launches: launches,
            queue_submits: submits,
            device_reads: reads,
            staging_writes,
            buffers_created,
        },
    )
}
