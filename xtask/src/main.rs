//! Project tasks: `cargo xtask setup`, `cargo xtask test`, `cargo xtask compare`,
//! `cargo xtask serve-bench`, `cargo xtask synth-model`, `cargo xtask gpu-bundle`,
//! `cargo xtask fuzz`.

mod compare;
mod fuzz;
mod gpu_bundle;
mod gpu_torch;
mod process;
mod serve_bench;
mod setup;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use process::{run_status, workspace_root};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "llama-burn-bench project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (software Vulkan, libtorch in .venv) and fetch the default models.
    /// Safe to run again: finished steps are skipped.
    Setup,
    /// Write a GGUF with a real Llama 3.x shape, random weights and the Llama 3 tokenizer.
    SynthModel {
        #[arg(long, value_parser = llama_app::cli::one_of(&llama_core::config::ModelSize::ALL), default_value = "1B")]
        size: llama_core::config::ModelSize,
        /// Weight storage type
        #[arg(long, value_parser = llama_app::cli::one_of(&llama_core::random::WeightType::ALL), default_value = "f16")]
        dtype: llama_core::random::WeightType,
        /// Output file (never overwritten)
        #[arg(long)]
        out: PathBuf,
        /// tokenizer.json, or Llama 3's tiktoken tokenizer.model, whose vocabulary goes into the metadata
        #[arg(long, default_value = "models/llama-3.2/tokenizer.json")]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep only the first N layers (small files for tests)
        #[arg(long)]
        layers: Option<usize>,
    },
    /// Build both binaries in release, check they agree, and benchmark them side by side.
    Compare(compare::CompareArgs),
    /// Our two servers and llama.cpp's llama-server under 1, 4 and 8 concurrent clients, on the
    /// same model, threads and prompts (docs/serve.md); reports to target/serve-bench/.
    ServeBench(serve_bench::ServeBenchArgs),
    /// Build what one call on a lent GPU machine needs into .gpubundle/ (both release binaries,
    /// pytorch-only against libtorch 2.11 with CUDA graphs; Vulkan loader packages; the PyTorch
    /// anchor script); scripts/gpu_measure.sh runs it there.
    GpuBundle,
    /// Fuzz the file readers (GGUF, dequantization, safetensors, shard index, config.json,
    /// tokenizer.json, tokenizer.model, chat templates) with cargo-fuzz on nightly, seeded from the
    /// real model files; prints executions and findings per target.
    Fuzz(fuzz::FuzzArgs),
    /// Set up, then run every test of the workspace (both binaries included), then a short fuzz
    /// pass over every reader.
    Test {
        /// Extra arguments for `cargo test`, after `--`
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {}", llama_app::run::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root();
    match cli.task {
        Task::Setup => setup::run(&root),
        Task::Compare(args) => compare::run(&root, &args),
        Task::ServeBench(args) => serve_bench::run(&root, &args),
        Task::GpuBundle => gpu_bundle::run(&root),
        Task::Fuzz(args) => fuzz::run(&root, &args),
        Task::SynthModel { size, dtype, out, tokenizer, seed, layers } => {
            use llama_testkit::synth;
            synth::write(&root, &synth::SynthOptions { size, weights: dtype, out, tokenizer, seed, layers })
        }
        Task::Test { cargo_args } => {
            setup::run(&root)?;
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(&root).args(["test", "--workspace"]).args(&cargo_args);
            run_status(&mut cmd)?;
            fuzz::run(&root, &fuzz::FuzzArgs::short_pass())
        }
    }
}
