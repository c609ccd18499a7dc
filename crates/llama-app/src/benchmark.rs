//! `--benchmark`: one warm-up, then `--iterations` runs of prefill P + decode G tokens, each
//! token brought back to the host before its clock stops (what a streaming chat pays). Each run
//! is one request of a one-slot scheduler, as a one-shot reply is.

use anyhow::bail;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::json;

use crate::cli::Args;
use crate::framework::{Framework, FrameworkLlama, HostWork, Opened};
use crate::metrics::{self, LatencyStats};
use crate::terminal::Progress;
use llama_core::checkpoint::Checkpoint;
use llama_core::config::ModelSize;
use llama_core::kernels::Kernels;
use llama_core::model::Llama;
use llama_core::random::WeightType;
use llama_core::sampling::{Rng, Sampler};
use llama_core::scheduler::Scheduler;
use llama_core::sequence::{Finished, Request, rate};

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunMetrics {
    pub time_to_first_token_s: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub decode_latency: LatencyStats,
    /// Weight bytes one decoded token reads ÷ median time per token.
    pub weight_gb_s: f64,
}

impl RunMetrics {
    fn of(finished: &Finished, prompt_tokens: usize, weight_bytes_per_token: f64) -> Self {
        let t = &finished.timings;
        let latency = LatencyStats::from_seconds(&t.decode_step_s);
        let weight_gb_s =
            if latency.median_ms > 0.0 { weight_bytes_per_token / (latency.median_ms * 1e-3) / 1e9 } else { 0.0 };
        RunMetrics {
            time_to_first_token_s: t.time_to_first_token_s,
            prefill_tok_s: rate(prompt_tokens, t.prefill_s),
            decode_tok_s: rate(t.decode_step_s.len(), t.decode_s),
            decode_latency: latency,
            weight_gb_s,
        }
    }

    /// Each figure's median over `runs`.
    fn median_of(runs: &[RunMetrics]) -> Self {
        let median = |f: fn(&RunMetrics) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            metrics::percentile(&v, 50.0)
        };
        RunMetrics {
            time_to_first_token_s: median(|r| r.time_to_first_token_s),
            prefill_tok_s: median(|r| r.prefill_tok_s),
            decode_tok_s: median(|r| r.decode_tok_s),
            decode_latency: LatencyStats {
                mean_ms: median(|r| r.decode_latency.mean_ms),
                median_ms: median(|r| r.decode_latency.median_ms),
                p10_ms: median(|r| r.decode_latency.p10_ms),
                p90_ms: median(|r| r.decode_latency.p90_ms),
            },
            weight_gb_s: median(|r| r.weight_gb_s),
        }
    }
}

/// Pseudo-random prompt ids (fixed seed, so every framework sees the same prompt).
fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = Rng::new(0x5eed);
    (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

pub fn run<F: Framework>(fw: &F, args: &Args) -> anyhow::Result<()> {
    let (p, g, n) = (args.prompt_tokens, args.gen_tokens, args.iterations);
    if p == 0 || g < 2 || n == 0 {
        bail!("--benchmark needs --prompt-tokens ≥ 1, --gen-tokens ≥ 2 and --iterations ≥ 1 (got {p}, {g}, {n})");
    }
    let mut opened = crate::setup::open_backend(fw, args)?;
    let (model, source, load_s) = load(&opened, args, p + g)?;
    let prompt = prompt_ids(p, model.config.vocab_size);
    let weight_bytes_per_token = model.weight_bytes_per_token() as f64;
    let mut scheduler = Scheduler::new(&model, None, opened.take_runner(), args.single_slot(p + g));
    let mut generate = |max_tokens: usize| -> anyhow::Result<Finished> {
        scheduler.forget(0);
        let request = Request { ignore_eos: true, ..Request::new(prompt.clone(), max_tokens, Sampler::greedy()) };
        Ok(scheduler.generate(request, |_| {}, &|| false)?)
    };
    if opened.runs_no_kernels {
        eprintln!(
            "{}: this device runs no kernels: the generated tokens are meaningless, and decode time is the host's share alone",
            fw.name()
        );
    }
    eprintln!("{}: warm-up run (prefill {p} + decode {g} tokens) ...", fw.name());
    generate(g)?;
    let progress = Progress::start(fw.name(), n);
    let table = Table { args, source: &source, load_s, decode_step: decode_step::<F>(args, &model) };
    let (mut runs, mut last) = (Vec::with_capacity(n), None);
    for i in 0..n {
        let finished = generate(g)?;
        let m = RunMetrics::of(&finished, p, weight_bytes_per_token);
        progress.run_done(i + 1, m.decode_tok_s, m.prefill_tok_s);
        if !args.json {
            if i == 0 {
                table.header(fw, &opened);
            }
            print_row(&format!("{}", i + 1), &m);
        }
        runs.push(m);
        last = Some(finished);
    }
    progress.finish();
    let summary = RunMetrics::median_of(&runs);
    let step = match args.verbose || args.json {
        true => decode_step_work(fw, &mut generate, g)?,
        false => DecodeStepWork::default(),
    };
    let report = Report { opened: &opened, model: &model, table, runs, summary, step, last: last.expect("n ≥ 1") };
    let device_memory = (opened.memory)(&opened.device);
    crate::setup::finish(&opened);
    report.print(fw, device_memory);
    Ok(())
}

/// The model to measure: `--model`'s, else a random-weight model of the `--size` shape; with
/// a line saying which, and the seconds loading took.
fn load<F: Framework>(
    opened: &Opened<F>,
    args: &Args,
    context: usize,
) -> anyhow::Result<(FrameworkLlama<F>, String, f64)> {
    let device = &opened.device;
    let kernels = opened.kernels.clone();
    let mut source = String::new();
    let (model, load_s) = crate::setup::timed_load::<F>(device, || match &args.model {
        Some(path) => {
            let checkpoint = Checkpoint::open(path)?;
            let config = checkpoint.config()?;
            if let Some(size) = args.size {
                config.check_size(size, &path.display().to_string())?;
            }
            if context > config.context_length {
                bail!(
                    "--prompt-tokens + --gen-tokens = {context} exceeds the model's context length of {}",
                    config.context_length
                );
            }
            source = path.display().to_string();
            Ok(Llama::from_tensors(checkpoint.tensors(), config, kernels, context, device)?)
        }
        None => {
            let size = args.size.unwrap_or(ModelSize::B1);
            let (config, tied) = (size.config(), size.tied_embeddings());
            // --quantize works on weights read from a file: draw f16 ones on the host to quantize.
            let weights = args.weights.or(args.quantize.map(|_| WeightType::F16));
            // A fixed seed: the same binary draws the same model each run, so runs with different
            // flags (eager and --compile) can compare their greedy tokens.
            F::Backend::seed(device, 0);
            let Some(weights) = weights else {
                source = format!(
                    "random-weight Llama 3.x {size} shape (no --model: N(0, 0.02) weights generated on the device)"
                );
                return Ok(Llama::random(config, tied, kernels, context, device));
            };
            source = format!("random-weight Llama 3.x {size} shape, N(0, 0.02) weights stored as {weights:?}");
            Ok(Llama::random_encoded(config, tied, kernels, context, device, weights)?)
        }
    })?;
    Ok((model, source, load_s))
}

/// How a sequence decoding alone steps here, in words.
fn decode_step<F: Framework>(args: &Args, model: &FrameworkLlama<F>) -> &'static str {
    match (args.compile, model.kernels().capabilities(model.device()).static_decode) {
        (true, _) => "captured",
        (false, true) => "static",
        (false, false) => "dynamic",
    }
}

/// What a decoded token asks of the device, as far as the framework counts it.
#[derive(Debug, Default)]
struct DecodeStepWork {
    /// Everything, where the framework counts at the device API.
    work: Option<HostWork<f64>>,
    /// The framework's own kernels, where it counts them.
    our_launches: Option<f64>,
    /// Whether greedy decoding ran one step ahead (each id read while the next step was queued).
    pipelined: bool,
}

impl DecodeStepWork {
    fn describe(&self) -> String {
        let ours = self.our_launches.map(|n| format!(" (ours {n:.0})")).unwrap_or_default();
        let behind = match self.pipelined {
            true => "one step behind, the next step already queued",
            false => "before the next step is queued",
        };
        match self.work {
            Some(w) => format!(
                "kernel launches {:.0}{ours}, queue submits {:.2}, device reads {:.2} (each a host wait, {behind}), staging writes {:.0}, buffers created {:.2}",
                w.kernel_launches, w.queue_submits, w.device_reads, w.staging_writes, w.buffers_created
            ),
            None => format!(
                "kernel launches {}, host syncs 1 (the token's readback, {behind})",
                self.our_launches
                    .map_or("not counted by this framework".to_string(), |n| format!("{n:.0} (ours only)"))
            ),
        }
    }
}

/// What each decoded token asks of the device: two greedy generations as the measured runs make
/// them, one of `max_tokens` tokens and one of the first token alone (the prefill), counted, and
/// their difference shared over the decode steps.
fn decode_step_work<F: Framework>(
    fw: &F,
    generate: &mut impl FnMut(usize) -> anyhow::Result<Finished>,
    max_tokens: usize,
) -> anyhow::Result<DecodeStepWork> {
    let mut count = |max_tokens: usize| -> anyhow::Result<(Option<HostWork>, Option<u64>, bool)> {
        let ours_before = fw.kernel_launches();
        let (run, work) = fw.count_host_work(|| generate(max_tokens));
        let ours = ours_before.zip(fw.kernel_launches()).map(|(before, after)| after - before);
        Ok((work, ours, run?.pipelined))
    };
    let (whole, ours_whole, pipelined) = count(max_tokens)?;
    let (prefill, ours_prefill, _) = count(1)?;
    let steps = (max_tokens - 1) as f64;
    Ok(DecodeStepWork {
        work: whole.zip(prefill).map(|(whole, prefill)| whole.per_step(prefill, steps)),
        our_launches: ours_whole.zip(ours_prefill).map(|(whole, prefill)| (whole - prefill) as f64 / steps),
        pipelined,
    })
}

/// The table's heading figures.
struct Table<'a> {
    args: &'a Args,
    source: &'a str,
    load_s: f64,
    decode_step: &'static str,
}

impl Table<'_> {
    fn header<F: Framework>(&self, fw: &F, opened: &Opened<F>) {
        let a = self.args;
        let device = format!("{} · {:?} · {} decode step", opened.description, opened.dtype, self.decode_step);
        println!("{} · {} · {device}", fw.name(), fw.stack());
        println!("model: {}", self.source);
        println!(
            "prefill {} + decode {} tokens, {} measured runs after 1 warm-up; load {:.2} s",
            a.prompt_tokens, a.gen_tokens, a.iterations, self.load_s
        );
        println!(
            "{:>6} {:>9} {:>13} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "run", "TTFT ms", "prefill tok/s", "decode tok/s", "mean ms", "p50 ms", "p10 ms", "p90 ms", "GB/s"
        );
    }
}

fn print_row(label: &str, m: &RunMetrics) {
    let l = &m.decode_latency;
    println!(
        "{label:>6} {:>9.1} {:>13.1} {:>12.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2}",
        m.time_to_first_token_s * 1e3,
        m.prefill_tok_s,
        m.decode_tok_s,
        l.mean_ms,
        l.median_ms,
        l.p10_ms,
        l.p90_ms,
        m.weight_gb_s
    );
}

/// Everything measured, for the table's foot or `--json`.
struct Report<'a, F: Framework> {
    opened: &'a Opened<F>,
    model: &'a FrameworkLlama<F>,
    table: Table<'a>,
    runs: Vec<RunMetrics>,
    summary: RunMetrics,
    step: DecodeStepWork,
    last: Finished,
}

impl<F: Framework> Report<'_, F> {
    fn print(&self, fw: &F, device_memory: Option<u64>) {
        let (args, config) = (self.table.args, &self.model.config);
        // On a device that runs no kernels, a token's time is all host work.
        let host_ms_per_token = self.opened.runs_no_kernels.then_some(self.summary.decode_latency.median_ms);
        let peak_rss = metrics::peak_rss_bytes();
        if !args.json {
            print_row("median", &self.summary);
            let mib = |b: Option<u64>| {
                b.map_or("n/a (the framework does not report it)".to_string(), |b| {
                    format!("{:.0} MiB", b as f64 / 1048576.0)
                })
            };
            println!("peak host RSS {}, device memory {}", mib(peak_rss), mib(device_memory));
            if args.verbose {
                println!("per decoded token: {}", self.step.describe());
                if let Some(ms) = host_ms_per_token {
                    println!(
                        "host issue {ms:.3} ms per decoded token (median; no kernel ran, so this is the host's share)"
                    );
                }
            }
            return;
        }
        let step = &self.step;
        let out = json!({
            "framework": fw.name(),
            "stack": fw.stack(),
            "kernels": self.model.kernels().capabilities(self.model.device()).name,
            "dtype": self.opened.dtype,
            "decode_step": self.table.decode_step,
            "device": self.opened.description,
            "model": self.table.source,
            "shape": { "layers": config.n_layers, "dim": config.dim, "heads": config.n_heads, "kv_heads": config.n_kv_heads, "ffn_dim": config.ffn_dim, "vocab": config.vocab_size },
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "iterations": args.iterations,
            "load_s": self.table.load_s,
            "matmul_params_per_token": metrics::matmul_params_per_token(config),
            "weight_bytes_per_token": self.model.weight_bytes_per_token(),
            "peak_host_rss_bytes": peak_rss,
            "device_memory_bytes": device_memory,
            "kernel_launches_per_token": step.work.map(|w| w.kernel_launches).or(step.our_launches),
            "our_kernel_launches_per_token": step.our_launches,
            "host_work_per_token": step.work,
            "host_ms_per_token": host_ms_per_token,
            "greedy_pipelined": step.pipelined,
            "runs": self.runs,
            "summary": self.summary,
            "generated_tokens": self.last.tokens,
        });
        println!("{out}");
    }
}
