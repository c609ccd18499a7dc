//! `--benchmark`: one warm-up, then `--iterations` runs of prefill P + decode G tokens, each
//! token brought back to the host before its clock stops (what a streaming chat pays).

use anyhow::bail;
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::json;

use crate::cli::Args;
use crate::config::{LlamaConfig, ModelSize};
use crate::framework::Framework;
use crate::generation::{self, GenerationParams};
use crate::gguf::GgufFile;
use crate::kernels::Kernels;
use crate::metrics::{self, LatencyStats};
use crate::model::{DecodeStep, Llama};
use crate::sampling::{Rng, Sampler};

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
    let (device, dtype, device_info) = crate::framework::prepare_device(fw, args)?;
    let mut source = String::new();
    let (model, load_s) = crate::framework::timed_load::<F>(&device, || match &args.model {
        Some(path) => {
            let gguf = GgufFile::open(path)?;
            let config = LlamaConfig::from_gguf(&gguf)?;
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
            fw.load_model(&gguf, config, context, &device)
        }
        None => {
            let size = args.size.unwrap_or(ModelSize::B1);
            source = format!(
                "random-weight Llama 3.x {size} shape (no --model: N(0, 0.02) weights generated on the device)"
            );
            let (config, tied) = (size.config(), size.tied_embeddings());
            // --quantize works on weights read from a file: draw f16 ones on the host to quantize.
            let weights = args.weights.or(args.quantize.map(|_| crate::synth::WeightType::F16));
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
    let params =
        GenerationParams { ignore_eos: true, decode: model.decode_step(args.compile), ..GenerationParams::new(g) };
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
    eprintln!("{}: warm-up run (prefill {p} + decode {g} tokens) ...", fw.name());
    measure()?;
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let m = measure()?;
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
    let launches =
        if args.verbose { launches_per_token(fw, &model, &mut cache, &prompt, params.decode)? } else { None };
    let peak_rss = metrics::peak_rss_bytes();
    let device_memory = fw.device_memory_bytes(&device);
    fw.cleanup(&device);
    if args.json {
        let out = json!({
            "framework": fw.name(),
            "stack": fw.stack(),
            "kernels": model.kernels().name(),
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
            "kernel_launches_per_token": launches,
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
            let launches = launches.map_or("not counted by this framework".to_string(), |n| n.to_string());
            // generation::read_step is the decode loop's only device read (greedy: the argmax).
            println!("per decoded token: kernel launches {launches}, host syncs 1 (the token's readback)");
        }
    }
    Ok(())
}

/// Kernel launches of one decode step after a prefill of `prompt`, where the framework counts them.
fn launches_per_token<F: Framework>(
    fw: &F,
    model: &Llama<F::Backend, F::Kernels>,
    cache: &mut crate::kv_cache::KvCache<F::Backend>,
    prompt: &[u32],
    decode: DecodeStep,
) -> anyhow::Result<Option<u64>> {
    cache.clear();
    generation::logits_to_host(model.forward(prompt, cache)?);
    let Some(before) = fw.kernel_launches() else { return Ok(None) };
    generation::logits_to_host(model.decode(prompt[0], cache, decode)?);
    Ok(fw.kernel_launches().map(|after| after - before))
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
