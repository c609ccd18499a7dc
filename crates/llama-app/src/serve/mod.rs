//! `--serve [ADDR]`: the OpenAI-compatible HTTP server (docs/serve.md).
//!
//! Two threads: the HTTP side ([`http`], on a tokio runtime of its own) parses and checks
//! requests, tokenizes them and answers; the calling thread loads the model and then runs the
//! [`engine`], which alone touches the model and batches every running request's next token
//! into one forward pass ([`llama_core::slots`]). The listener is bound before the model loads,
//! so `GET /health` says 503 until it is ready.

mod api;
mod engine;
mod http;
mod metrics;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use anyhow::{Context, bail};
use llama_core::chat_template::ChatTemplate;
use llama_core::model::DecodeStep;
use llama_core::slots::Slots;

use crate::cli::Args;
use crate::framework::Framework;
use crate::setup;
use api::{ApiError, Defaults};
use engine::Message;
use metrics::Metrics;

/// Most prompt tokens one step prefills: a long prompt is spread over several steps, so the
/// streams already decoding keep getting a token every step.
const PREFILL_CHUNK: usize = 256;

/// What the HTTP side knows and shares between its requests.
pub struct Shared {
    model_id: String,
    /// When the server started (seconds since 1970), for `/v1/models`.
    started: u64,
    tokenizer: Arc<llama_core::tokenizer::Tokenizer>,
    template: ChatTemplate,
    /// Tokens each slot holds.
    context: usize,
    defaults: Defaults,
    api_key: Option<String>,
    /// Requests the server holds at once, running or queued: slots + queue.
    capacity: usize,
    held: AtomicUsize,
    ready: AtomicBool,
    next_id: AtomicU64,
    metrics: Metrics,
    engine: mpsc::Sender<Message>,
}

/// A place among the requests the server holds, given back when dropped (the reply has ended or
/// its client has gone).
pub struct Ticket(Arc<Shared>);

impl Ticket {
    fn take(s: &Arc<Shared>) -> Result<Self, ApiError> {
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

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serves the model on `addr` until SIGINT or SIGTERM.
pub fn run<F: Framework>(fw: &F, args: &Args, addr: &str) -> anyhow::Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let file = setup::open_model_file(args)?;
    let template = setup::chat_template(args, &file)?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/", listener.local_addr()?);
    let (path, context) = (file.path.clone(), file.context);
    let model_id = path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let (engine_tx, engine_rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        model_id: model_id.clone(),
        started: unix_time(),
        tokenizer: file.tokenizer.clone(),
        template,
        context,
        defaults: Defaults {
            sampling: args.sampling(),
            max_tokens: args.max_tokens,
            seed: args.seed,
            system: args.system.clone(),
        },
        api_key: args.api_key.clone(),
        capacity: args.parallel + args.queue,
        held: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        metrics: Metrics::default(),
        engine: engine_tx,
    });
    Metrics::set(&shared.metrics.slots, args.parallel as u64);
    let http = {
        let shared = shared.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        std::thread::Builder::new().name("http".into()).spawn(move || runtime.block_on(serve_http(listener, shared)))?
    };
    eprintln!("{}: listening on {url}; loading {}", fw.name(), path.display());

    let (device, _dtype, device_info) = setup::prepare_device(fw, args)?;
    let (model, load_s) = setup::timed_load::<F>(&device, || setup::load_model(fw, &file, &device))?;
    drop(file);
    let lone_decode = model.decode_step(args.compile);
    let tokenizer = shared.tokenizer.clone();
    let mut slots = Slots::new(&model, &tokenizer, args.parallel, context, lone_decode, PREFILL_CHUNK);
    shared.ready.store(true, Ordering::Release);
    eprintln!("{}: {} on {device_info}, loaded in {load_s:.1}s", fw.name(), fw.stack());
    eprintln!("{}: {}", fw.name(), batch_paths(lone_decode));
    println!("{}: serving {model_id} at {url} ({} slots, {context}-token context each)", fw.name(), args.parallel);

    engine::run(&mut slots, &engine_rx, &shared.metrics);
    drop(slots);
    http.join().map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
    fw.cleanup(&device);
    Ok(())
}

/// Which path serves which step, said once at start-up.
fn batch_paths(lone_decode: DecodeStep) -> String {
    let lone = match lone_decode {
        DecodeStep::Dynamic => "the dynamic decode step",
        DecodeStep::Static => "the static-shape decode step",
        DecodeStep::Captured => "the captured static-shape step (--compile)",
    };
    format!(
        "a sequence decoding alone runs {lone}; a step of several runs one batched pass (the products at M = its rows, the composed RoPE and cache writes per row, the provider's attention per sequence)"
    )
}

/// Runs the HTTP side until SIGINT or SIGTERM, then tells the engine to cancel what runs and
/// waits for the open responses to end.
async fn serve_http(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let engine = shared.engine.clone();
    let shutdown = async move {
        wait_for_signal().await;
        eprintln!("shutting down: cancelling running requests");
        let _ = engine.send(Message::Shutdown);
    };
    axum::serve(listener, http::router(shared)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}
