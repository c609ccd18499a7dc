//! `--serve [ADDR]`: the OpenAI-compatible HTTP server (docs/serve.md).
//!
//! Two threads: the HTTP side ([`http`], on a tokio runtime of its own) parses and checks
//! requests, tokenizes them and answers; the calling thread loads the model and then runs the
//! [`engine`], which alone touches the model and batches every running request's next token
//! into one step ([`llama_core::scheduler`]). The listener is bound before the model loads,
//! so `GET /health` says 503 until it is ready.

mod api;
mod engine;
mod http;
mod metrics;
mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use anyhow::{Context, bail};
use llama_core::chat_template::ChatTemplate;
use llama_core::scheduler::{Scheduler, SchedulerOptions};

use crate::cli::Args;
use crate::framework::Framework;
use crate::setup::{self, ModelFile};
use api::Defaults;
use engine::Message;
use metrics::Metrics;
use shared::{Shared, unix_time};

/// Most prompt tokens one step prefills: a long prompt is spread over several steps, so the
/// streams already decoding keep getting a token every step.
const PREFILL_CHUNK: usize = 256;

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
    let (engine_tx, engine_rx) = mpsc::channel();
    let shared = Arc::new(shared_state(args, &file, template, engine_tx));
    let http = {
        let shared = shared.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        std::thread::Builder::new().name("http".into()).spawn(move || runtime.block_on(serve_http(listener, shared)))?
    };
    eprintln!("{}: listening on {url}; loading {}", fw.name(), file.path.display());

    let mut opened = setup::open_backend(fw, args)?;
    let (model, load_s) = setup::load(&opened, &file)?;
    let context = file.context;
    drop(file);
    let options = SchedulerOptions {
        slots: args.parallel,
        context,
        prefill_chunk: PREFILL_CHUNK,
        pipeline: !args.no_pipeline,
        compile: args.compile,
    };
    let tokenizer = shared.tokenizer.clone();
    let mut scheduler = Scheduler::new(&model, Some(&tokenizer), opened.take_runner(), options);
    shared.ready.store(true, Ordering::Release);
    eprintln!("{}: {} on {}, loaded in {load_s:.1}s", fw.name(), fw.stack(), opened.description);
    eprintln!("{}: {}", fw.name(), step_paths(scheduler.static_decode(), args.compile));
    let model_id = &shared.model_id;
    println!("{}: serving {model_id} at {url} ({} slots, {context}-token context each)", fw.name(), args.parallel);

    engine::run(&mut scheduler, &engine_rx, &shared.metrics);
    drop(scheduler);
    http.join().map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))??;
    setup::finish(&opened);
    Ok(())
}

/// What the HTTP side starts with: the flags' defaults, the tokenizer and template, the limits.
fn shared_state(args: &Args, file: &ModelFile, template: ChatTemplate, engine: mpsc::Sender<Message>) -> Shared {
    let model_id = file.path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let metrics = Metrics::default();
    Metrics::set(&metrics.slots, args.parallel as u64);
    Shared {
        model_id,
        started: unix_time(),
        tokenizer: file.tokenizer.clone(),
        template,
        context: file.context,
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
        metrics,
        engine,
    }
}

/// Which path serves which step, said once at start-up.
fn step_paths(static_decode: bool, compile: bool) -> String {
    let lone = match (static_decode, compile) {
        (_, true) => "the static-shape step, captured where the framework can (--compile)",
        (true, false) => "the static-shape step",
        (false, false) => "the step whose shapes follow its cache",
    };
    format!(
        "a sequence decoding alone runs {lone}; a step of several runs one pass over all their rows, each at its own position in its own cache slot, through the provider's kernels"
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
