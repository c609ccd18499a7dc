//! `cargo xtask compare`: both binaries, built in release, run as separate processes on the same
//! model, prompt, seed and token counts. Agreement first (greedy ids, |Δlogit|), then speed, side
//! by side; reports to target/compare/.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use llama_app::cli::one_of;
use llama_core::config::ModelSize;
use llama_core::random::WeightType;
use llama_testkit::conformance::{RunOutput, max_logit_delta};
use llama_testkit::synth::{self, SynthOptions};
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::process::run_status;

const FRAMEWORKS: [&str; 2] = ["tinygrad-only", "pytorch-only"];
const AGREEMENT_PROMPT: &str = "The capital of France is";
const AGREEMENT_TOKENS: usize = 16;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// GGUF file, or Hugging Face model directory [default: the SmolLM2 model from set-up]
    #[arg(long, conflicts_with = "size")]
    model: Option<PathBuf>,
    /// Use a synthetic model of this Llama 3.x shape instead (written once to target/compare/)
    #[arg(long, value_parser = one_of(&ModelSize::ALL))]
    size: Option<ModelSize>,
    /// Weight type of the synthetic model
    #[arg(long, value_parser = one_of(&WeightType::ALL), default_value = "f16")]
    dtype: WeightType,
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Largest |Δlogit| at the first generated position that still counts as agreement
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
}

/// One table row: label, unit, where it sits in a `--benchmark --json` report, whether more is better.
const ROWS: &[(&str, &str, &[&str], bool)] = &[
    ("load", "s", &["load_s"], false),
    ("TTFT", "ms", &["summary", "time_to_first_token_s"], false),
    ("prefill", "tok/s", &["summary", "prefill_tok_s"], true),
    ("decode", "tok/s", &["summary", "decode_tok_s"], true),
    ("p90 per token", "ms", &["summary", "decode_latency", "p90_ms"], false),
    ("weight bandwidth", "GB/s", &["summary", "weight_gb_s"], true),
    ("peak host memory", "MiB", &["peak_host_rss_bytes"], false),
];

fn figure(report: &Value, path: &[&str], unit: &str) -> Option<f64> {
    let v = path.iter().try_fold(report, |v, key| v.get(key))?.as_f64()?;
    Some(match unit {
        "ms" if path.last() == Some(&"time_to_first_token_s") => v * 1e3,
        "MiB" => v / 1048576.0,
        _ => v,
    })
}

pub fn run(root: &Path, args: &CompareArgs) -> anyhow::Result<()> {
    let out_dir = root.join("target/compare");
    std::fs::create_dir_all(&out_dir)?;
    let model = match (&args.model, args.size) {
        (Some(path), _) => path.clone(),
        (None, Some(size)) => {
            let path = out_dir.join(format!("synthetic-{size}-{:?}.gguf", args.dtype).to_lowercase());
            if !path.exists() {
                let tokenizer = "models/llama-3.2/tokenizer.json".into();
                let opts =
                    SynthOptions { size, weights: args.dtype, out: path.clone(), tokenizer, seed: 0, layers: None };
                synth::write(root, &opts)?;
            }
            path
        }
        (None, None) => llama_app::cli::models_dir().join(llama_app::cli::DEFAULT_MODEL_FILE),
    };
    if !model.exists() {
        bail!("{} is missing: run `cargo xtask setup`, or pass --model", model.display());
    }
    eprintln!("compare: building both binaries in release ...");
    run_status(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        FRAMEWORKS[0],
        "-p",
        FRAMEWORKS[1],
    ]))?;
    let binary = |name: &str| root.join("target/release").join(name);
    let model_arg = model.to_str().context("model path is not UTF-8")?;

    // Agreement: greedy ids and the logits of the first generated position.
    let mut greedy = Vec::new();
    for name in FRAMEWORKS {
        eprintln!("compare: {name}: greedy agreement run ...");
        let max = AGREEMENT_TOKENS.to_string();
        let args = ["--model", model_arg, "--raw", "--temperature", "0", "--seed", "0", "--ignore-eos", "--json"];
        let out =
            json_run(&binary(name), &[&args[..], &["--max-tokens", &max, "--prompt", AGREEMENT_PROMPT]].concat())?;
        greedy.push(serde_json::from_value::<RunOutput>(out).with_context(|| format!("{name}: --json output"))?);
    }
    let (a, b) = (&greedy[0], &greedy[1]);
    let first_divergence = a.generated_tokens.iter().zip(&b.generated_tokens).position(|(x, y)| x != y);
    let first_delta = max_logit_delta(&a.top_logits[0], &b.top_logits[0]);
    let agree = a.prompt_tokens == b.prompt_tokens && first_divergence.is_none() && first_delta <= args.tolerance;

    // Speed: the same benchmark in each process.
    let mut reports = Vec::new();
    for name in FRAMEWORKS {
        eprintln!("compare: {name}: --benchmark ({} runs) ...", args.iterations);
        let (n, p, g) = (args.iterations.to_string(), args.prompt_tokens.to_string(), args.gen_tokens.to_string());
        let bench = [
            "--benchmark",
            "--model",
            model_arg,
            "--json",
            "--iterations",
            &n,
            "--prompt-tokens",
            &p,
            "--gen-tokens",
            &g,
        ];
        reports.push(json_run(&binary(name), &bench)?);
    }

    let rows: Vec<(String, Option<f64>, Option<f64>, bool)> = ROWS
        .iter()
        .map(|(label, unit, path, higher_better)| {
            (
                format!("{label} ({unit})"),
                figure(&reports[0], path, unit),
                figure(&reports[1], path, unit),
                *higher_better,
            )
        })
        .collect();
    let markdown = render_markdown(&model, args, &reports, &rows, first_divergence, first_delta, agree);
    print!("{markdown}");
    std::fs::write(out_dir.join("report.md"), &markdown)?;
    let report = json!({
        "model": model.display().to_string(),
        "agreement": {
            "prompt": AGREEMENT_PROMPT,
            "tokens": AGREEMENT_TOKENS,
            "agree": agree,
            "first_divergence": first_divergence,
            "max_abs_logit_delta_first_position": first_delta,
            "tolerance": args.tolerance,
            "generated_tokens": { "tinygrad-only": a.generated_tokens, "pytorch-only": b.generated_tokens },
        },
        "benchmarks": { "tinygrad-only": reports[0], "pytorch-only": reports[1] },
    });
    std::fs::write(out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    draw_chart(&out_dir.join("chart.svg"), &rows)?;
    eprintln!("compare: wrote {}/report.md, report.json, chart.svg", out_dir.display());
    if !agree {
        bail!(
            "the frameworks disagree (first divergence {first_divergence:?}, |Δlogit| {first_delta:.2e} > {})",
            args.tolerance
        );
    }
    Ok(())
}

fn json_run(binary: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(binary).args(args).output().with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!("{} {args:?} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{}: output is not one JSON object", binary.display()))
}

fn render_markdown(
    model: &Path,
    args: &CompareArgs,
    reports: &[Value],
    rows: &[(String, Option<f64>, Option<f64>, bool)],
    first_divergence: Option<usize>,
    first_delta: f32,
    agree: bool,
) -> String {
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let mut md = format!("# tinygrad-only vs pytorch-only\n\nmodel: `{}`\n\n", model.display());
    for (name, r) in FRAMEWORKS.iter().zip(reports) {
        md += &format!("- {name}: {} on {}\n", r["stack"].as_str().unwrap_or("?"), r["device"].as_str().unwrap_or("?"));
    }
    md += &format!(
        "\nAgreement ({AGREEMENT_TOKENS} greedy tokens of {AGREEMENT_PROMPT:?}): {}; first divergence: {}; max |Δlogit| at the first generated position: {first_delta:.2e} (tolerance {:.0e})\n\n",
        if agree { "**agree**" } else { "**DISAGREE**" },
        first_divergence.map_or("none".to_string(), |i| format!("token {i}")),
        args.tolerance
    );
    md += &format!(
        "Speed: prefill {} + decode {} tokens, median of {} runs after a warm-up; every token read back to the host.\n\n",
        args.prompt_tokens, args.gen_tokens, args.iterations
    );
    md += "| | tinygrad-only | pytorch-only | ratio (tinygrad / pytorch) |\n|---|---:|---:|---:|\n";
    for (label, t, p, _) in rows {
        let ratio = match (t, p) {
            (Some(t), Some(p)) if *p != 0.0 => format!("{:.2}×", t / p),
            _ => "n/a".into(),
        };
        md += &format!("| {label} | {} | {} | {ratio} |\n", cell(*t), cell(*p));
    }
    md
}

/// One small bar pair per row, since the rows have different units.
fn draw_chart(path: &Path, rows: &[(String, Option<f64>, Option<f64>, bool)]) -> anyhow::Result<()> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (260 * rows.len() as u32, 320)).into_drawing_area();
        root.fill(&WHITE)?;
        let colors = [RGBColor(0x2a, 0x7a, 0xb9), RGBColor(0xee, 0x4c, 0x2c)];
        for (area, (label, t, p, higher_better)) in root.split_evenly((1, rows.len())).iter().zip(rows) {
            let values = [t.unwrap_or(0.0), p.unwrap_or(0.0)];
            let top = values.iter().cloned().fold(0.0, f64::max).max(1e-9) * 1.15;
            let caption = format!("{label}{}", if *higher_better { " ↑" } else { " ↓" });
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 15))
                .margin(12)
                .x_label_area_size(24)
                .y_label_area_size(48)
                .build_cartesian_2d((0u32..2u32).into_segmented(), 0f64..top)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(0) => "tinygrad".into(),
                    SegmentValue::CenterOf(1) => "pytorch".into(),
                    _ => String::new(),
                })
                .draw()?;
            for (i, v) in values.iter().enumerate() {
                chart.draw_series(
                    Histogram::vertical(&chart).style(colors[i].filled()).margin(18).data([(i as u32, *v)]),
                )?;
            }
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}
