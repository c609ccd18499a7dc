//! `--benchmark`: one warm-up, then `--iterations` runs of prefill P + decode G tokens, each
//! token brought back to the host before its clock stops (what a streaming chat pays).

use anyhow::bail;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::json;

use crate::cli::Args;
use crate::framework::{Framework, HostWork};
use crate::terminal::Progress;
use llama_core::checkpoint::Checkpoint;
use llama_core::config::ModelSize;
use llama_core::generation::{self, GenerationParams};
use llama_core::kernels::Kernels;
use llama_core::metrics::{self, LatencyStats};
use llama_core::model::Llama;
use llama_core::sampling::{Rng, Sampler};

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

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    metrics::percentile(&v, 50.0)
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
    let context = p + g;
    let (device, dtype, device_info) = crate::setup::prepare_device(fw, args)?;
    let mut source = String::new();
    let (model, load_s) = crate::setup::timed_load::<F>(&device, || match &args.model {
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
            Ok(Llama::from_tensors(checkpoint.tensors(), config, fw.kernels(), context, &device)?)
        }
        None => {
            let size = args.size.unwrap_or(ModelSize::B1);
            source = format!(
                "random-weight Llama 3.x {size} shape (no --model: N(0, 0.02) weights generated on the device)"
            );
            let (config, tied) = (size.config(), size.tied_embeddings());
            // --quantize works on weights read from a file: draw f16 ones on the host to quantize.
            let weights = args.weights.or(args.quantize.map(|_| llama_core::load::WeightType::F16));
            // A fixed seed: the same binary draws the same model each run, so runs with different
            // flags (eager and --compile) can compare their greedy tokens.
            F::Backend::seed(&device, 0);
            match weights {
                None => Ok(Llama::random(config, tied, fw.kernels(), context, &device)),
                Some(weights) => {
                    source = format!("random-weight Llama 3.x {size} shape, N(0, 0.02) weights stored as {weights:?}");
                    Ok(Llama::random_encoded(config, tied, fw.kernels(), context, &device, weights)?)
                }
            }
        }
    })?;

    let config = model.config.clone();
    // As the provider stores them: dense in the compute dtype, or still quantized.
    let weight_bytes_per_token = model.weight_bytes_per_token() as f64;
    let prompt = prompt_ids(p, config.vocab_size);
    let params = GenerationParams {
        ignore_eos: true,
        decode: model.decode_step(args.compile),
        pipeline: !args.no_pipeline,
        ..GenerationParams::new(g)
    };
    let mut cache = model.new_cache(context);
    let mut generated_tokens = Vec::new();
    let mut measure = || -> anyhow::Result<RunMetrics> {
        cache.clear();
        let run = generation::generate(&model, &mut cache, None, &prompt, &params, &mut Sampler::greedy(), |_| {})?;
        generated_tokens = run.generated_tokens.clone();
        let t = &run.timings;
        let latency = LatencyStats::from_seconds(&t.decode_step_s);
        Ok(RunMetrics {
            time_to_first_token_s: t.time_to_first_token_s,
            prefill_tok_s: generation::rate(p, t.prefill_s),
            decode_tok_s: generation::rate(t.decode_step_s.len(), t.decode_s),
            weight_gb_s: if latency.median_ms > 0.0 {
                weight_bytes_per_token / (latency.median_ms * 1e-3) / 1e9
            } else {
                0.0
            },
            decode_latency: latency,
        })
    };
    if fw.runs_no_kernels() {
        eprintln!(
            "{}: this device runs no kernels: the generated tokens are meaningless, and decode time is the host's share alone",
            fw.name()
        );
    }
    eprintln!("{}: warm-up run (prefill {p} + decode {g} tokens) ...", fw.name());
    measure()?;
    let progress = Progress::start(fw.name(), n);
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let m = measure()?;
        progress.run_done(i + 1, m.decode_tok_s, m.prefill_tok_s);
        if !args.json {
            if i == 0 {
                let decode = format!("{:?}", params.decode).to_lowercase();
                print_header(
                    fw,
                    &format!("{device_info} · {dtype:?} · {decode} decode step"),
                    &source,
                    p,
                    g,
                    n,
                    load_s,
                );
            }
            print_row(&format!("{}", i + 1), &m);
        }
        runs.push(m);
    }
    progress.finish();
    let summary = RunMetrics {
        time_to_first_token_s: median(runs.iter().map(|r| r.time_to_first_token_s)),
        prefill_tok_s: median(runs.iter().map(|r| r.prefill_tok_s)),
        decode_tok_s: median(runs.iter().map(|r| r.decode_tok_s)),
        decode_latency: LatencyStats {
            mean_ms: median(runs.iter().map(|r| r.decode_latency.mean_ms)),
            median_ms: median(runs.iter().map(|r| r.decode_latency.median_ms)),
            p10_ms: median(runs.iter().map(|r| r.decode_latency.p10_ms)),
            p90_ms: median(runs.iter().map(|r| r.decode_latency.p90_ms)),
        },
        weight_gb_s: median(runs.iter().map(|r| r.weight_gb_s)),
    };
    let step = if args.verbose || args.json {
        decode_step_work(fw, &model, &mut cache, &prompt, &params)?
    } else {
        DecodeStepWork::default()
    };
    // On a device that runs no kernels, a token's time is all host work.
    let host_ms_per_token = fw.runs_no_kernels().then_some(summary.decode_latency.median_ms);
    let peak_rss = metrics::peak_rss_bytes();
    let device_memory = fw.device_memory_bytes(&device);
    fw.cleanup(&device);
    if args.json {
        let out = json!({
            "framework": fw.name(),
            "stack": fw.stack(),
            "kernels": model.kernels().capabilities(model.device()).name,
            "dtype": dtype,
            "decode_step": params.decode,
            "device": device_info,
            "model": source,
            "shape": { "layers": config.n_layers, "dim": config.dim, "heads": config.n_heads, "kv_heads": config.n_kv_heads, "ffn_dim": config.ffn_dim, "vocab": config.vocab_size },
            "prompt_tokens": p,
            "gen_tokens": g,
            "iterations": n,
            "load_s": load_s,
            "matmul_params_per_token": metrics::matmul_params_per_token(&config),
            "weight_bytes_per_token": weight_bytes_per_token,
            "peak_host_rss_bytes": peak_rss,
            "device_memory_bytes": device_memory,
            "kernel_launches_per_token": step.work.map(|w| w.kernel_launches).or(step.our_launches),
            "our_kernel_launches_per_token": step.our_launches,
            "host_work_per_token": step.work,
            "host_ms_per_token": host_ms_per_token,
            "greedy_pipelined": step.pipelined,
            "runs": runs,
            "summary": summary,
            "generated_tokens": generated_tokens,
        });
        println!("{out}");
    } else {
        print_row("median", &summary);
        let mib = |b: Option<u64>| {
            b.map_or("n/a (the framework does not report it)".to_string(), |b| {
                format!("{:.0} MiB", b as f64 / 1048576.0)
            })
        };
        println!("peak host RSS {}, device memory {}", mib(peak_rss), mib(device_memory));
        if args.verbose {
            println!("per decoded token: {}", step.describe());
            if let Some(ms) = host_ms_per_token {
                println!(
                    "host issue {ms:.3} ms per decoded token (median; no kernel ran, so this is the host's share)"
                );
            }
        }
    }
    Ok(())
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
        let behind = if self.pipelined {
            "one step behind, the next step already queued"
        } else {
            "before the next step is queued"
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
/// them, one of `params.max_tokens` tokens and one of the first token alone (the prefill),
/// counted, and their difference shared over the decode steps.
fn decode_step_work<F: Framework>(
    fw: &F,
    model: &Llama<F::Backend, F::Kernels>,
    cache: &mut llama_core::kv_cache::KvCache<F::Backend>,
    prompt: &[u32],
    params: &GenerationParams,
) -> anyhow::Result<DecodeStepWork> {
    let mut count = |max_tokens: usize| -> anyhow::Result<(Option<HostWork>, Option<u64>, bool)> {
        cache.clear();
        let params = GenerationParams { max_tokens, ..params.clone() };
        let ours_before = fw.kernel_launches();
        let (run, work) = fw.count_host_work(|| {
            generation::generate(model, cache, None, prompt, &params, &mut Sampler::greedy(), |_| {})
        });
        let ours = ours_before.zip(fw.kernel_launches()).map(|(before, after)| after - before);
        Ok((work, ours, run?.pipelined))
    };
    let (whole, ours_whole, pipelined) = count(params.max_tokens)?;
    let (prefill, ours_prefill, _) = count(1)?;
    let steps = (params.max_tokens - 1) as f64;
    Ok(DecodeStepWork {
        work: whole.zip(prefill).map(|(whole, prefill)| whole.per_step(prefill, steps)),
        our_launches: ours_whole.zip(ours_prefill).map(|(whole, prefill)| (whole - prefill) as f64 / steps),
        pipelined,
    })
}

fn print_header<F: Framework>(fw: &F, device: &str, source: &str, p: usize, g: usize, n: usize, load_s: f64) {
    println!("{} · {} · {device}", fw.name(), fw.stack());
    println!("model: {source}");
    println!("prefill {p} + decode {g} tokens, {n} measured runs after 1 warm-up; load {load_s:.2} s");
    println!(
        "{:>6} {:>9} {:>13} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "run", "TTFT ms", "prefill tok/s", "decode tok/s", "mean ms", "p50 ms", "p10 ms", "p90 ms", "GB/s"
    );
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
