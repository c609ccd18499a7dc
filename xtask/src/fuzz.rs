//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/ (llama-testkit's `fuzz` bodies), seeded
//! from the real model files, for a time or a number of runs each, then a table of executions
//! and findings. A crash, a timeout or running out of memory fails the task and leaves the
//! input under fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ once fixed
//! (llama-testkit's tests/fuzz_regressions.rs replays those).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::process::run_status;

/// cargo-fuzz's version, installed from crates.io when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// libFuzzer's memory ceiling per target (the limit).
const RSS_LIMIT_MB: u32 = 2048;
/// Seconds one input may take before it counts as a hang.
const TIMEOUT_S: u32 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target (the run stops earlier if --runs is reached)
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Executions per target at most
    #[arg(long)]
    runs: Option<u64>,
    /// Only these targets (repeatable) [default: all]
    #[arg(long)]
    target: Vec<String>,
}

impl FuzzArgs {
    /// The short pass `cargo xtask test` ends with: a few seconds per target from the seeds and
    /// the corpus so far, enough to catch a reader change that breaks on its own seeds' mutations.
    pub fn short_pass() -> Self {
        Self { seconds: 5, runs: None, target: Vec::new() }
    }
}

/// What one target's run did.
struct Outcome {
    target: &'static str,
    executions: u64,
    seconds: f64,
    peak_rss_mb: u64,
    corpus: usize,
    /// `None` when clean; else libFuzzer's own word for it (crash, timeout, out-of-memory).
    finding: Option<String>,
}

pub fn run(root: &Path, args: &FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&'static str> = llama_testkit::fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
    if let Some(unknown) = args.target.iter().find(|t| !targets.contains(&t.as_str())) {
        bail!("unknown fuzz target `{unknown}` (targets: {})", targets.join(", "));
    }
    let chosen: Vec<&'static str> =
        targets.into_iter().filter(|t| args.target.is_empty() || args.target.iter().any(|a| a == t)).collect();
    ensure_cargo_fuzz()?;
    let seeds_dir = root.join("target/fuzz-seeds");
    write_seeds(root, &seeds_dir)?;
    eprintln!("fuzz: building the targets (nightly, coverage-instrumented, no sanitizer) ...");
    // Its own target folder, whatever CARGO_TARGET_DIR says: the instrumented build shares
    // nothing with the workspace's, and the binaries are then where this task looks.
    let target_dir = root.join("fuzz/target");
    run_status(
        Command::new("cargo")
            .current_dir(root)
            .args(["+nightly", "fuzz", "build", "-O", "-s", "none", "--target-dir"])
            .arg(&target_dir),
    )?;
    let bin_dir = target_dir.join("x86_64-unknown-linux-gnu/release");
    let mut outcomes = Vec::new();
    for target in chosen {
        outcomes.push(fuzz_one(root, &bin_dir, &seeds_dir, target, args)?);
    }
    let table = render(&outcomes, args);
    println!("{table}");
    let report = root.join("target/fuzz-report.md");
    fs::write(&report, &table).with_context(|| format!("writing {}", report.display()))?;
    let found: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.finding.as_ref().map(|f| format!("{} ({f}, input under fuzz/artifacts/{}/)", o.target, o.target))
        })
        .collect();
    if !found.is_empty() {
        bail!("the fuzzers found: {}", found.join("; "));
    }
    Ok(())
}

/// cargo-fuzz on the nightly toolchain (cargo-fuzz needs nightly's `-Z` flags).
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let nightly = Command::new("rustup").args(["run", "nightly", "rustc", "--version"]).output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!("fuzzing needs Rust nightly: `rustup toolchain install nightly`");
    }
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output();
    if installed.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io ...");
    run_status(Command::new("cargo").args([
        "+nightly",
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// Writes every target's seeds, fresh each run, under `dir/<target>/`.
fn write_seeds(root: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let seeds = llama_testkit::fuzz::seeds(&root.join("models"))
        .context("the fuzz seeds come from the models `cargo xtask setup` fetches")?;
    for (target, name, bytes) in seeds {
        fs::create_dir_all(dir.join(target))?;
        fs::write(dir.join(target).join(name), bytes)?;
    }
    Ok(())
}

fn fuzz_one(
    root: &Path,
    bin_dir: &Path,
    seeds: &Path,
    target: &'static str,
    args: &FuzzArgs,
) -> anyhow::Result<Outcome> {
    // The corpus grows across runs (kept out of git); the seeds are read but never written.
    let corpus = root.join("fuzz/corpus").join(target);
    let artifacts = root.join("fuzz/artifacts").join(target);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(bin_dir.join(target));
    cmd.arg(&corpus).arg(seeds.join(target));
    cmd.arg(format!("-max_total_time={}", args.seconds));
    cmd.arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"));
    cmd.arg(format!("-timeout={TIMEOUT_S}"));
    cmd.arg(format!("-artifact_prefix={}/", artifacts.display()));
    cmd.args(["-print_final_stats=1", "-max_len=1048576"]);
    if let Some(runs) = args.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    eprintln!("fuzz: {target} ...");
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot start the {target} fuzzer ({:?})", bin_dir.join(target)))?;
    let seconds = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = root.join(format!("target/fuzz-{target}.log"));
    fs::write(&log_path, log.as_bytes())?;
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let finding = (!out.status.success()).then(|| {
        let kinds = [
            ("deadly signal", "crash"),
            ("panicked", "panic"),
            ("timeout", "timeout"),
            ("out-of-memory", "out of memory"),
        ];
        let kind = kinds.iter().find(|(needle, _)| log.contains(needle)).map_or("failure", |(_, kind)| kind);
        format!("{kind}, log {}", log_path.display())
    });
    let corpus_size = fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    Ok(Outcome {
        target,
        executions: stat("number_of_executed_units"),
        seconds,
        peak_rss_mb: stat("peak_rss_mb"),
        corpus: corpus_size,
        finding,
    })
}

fn render(outcomes: &[Outcome], args: &FuzzArgs) -> String {
    let limit = match args.runs {
        Some(runs) => format!("up to {runs} runs or {} s each", args.seconds),
        None => format!("{} s each", args.seconds),
    };
    let mut md = String::from(
        "| target | executions | seconds | exec/s | peak RSS MB | corpus | result |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        let rate = o.executions as f64 / o.seconds.max(1e-9);
        let result = o.finding.clone().unwrap_or_else(|| "no crash, hang or OOM".into());
        md += &format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {result} |\n",
            o.target, o.executions, o.seconds, rate, o.peak_rss_mb, o.corpus
        );
    }
    md + &format!("\n({limit}; rss limit {RSS_LIMIT_MB} MB, timeout {TIMEOUT_S} s per input)\n")
}
