//! `cargo xtask serve-bench`: our two servers (`--serve`) and llama.cpp's `llama-server`, built
//! from the llama.cpp that the reference uses, on the same model, threads and prompts, under 1, 4
//! and 8 concurrent clients. scripts/serve_bench.py measures them one after another; this task
//! builds, starts and stops them, and checks the targets: batching gives tinygrad-only at least
//! 2× its single-client aggregate at 8 clients, and pytorch-only at least 0.85× llama-server's
//! aggregate there. Reports go to target/serve-bench/.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::process::run_status;

const OURS: [&str; 2] = ["tinygrad-only", "pytorch-only"];

#[derive(clap::Args)]
pub struct ServeBenchArgs {
    /// GGUF model [default: an F32 copy of the default model, written once to target/serve-bench/]
    #[arg(long)]
    model: Option<PathBuf>,
    /// Concurrent client counts
    #[arg(long, default_value = "1,4,8")]
    clients: String,
    /// Requests each client sends, one after another
    #[arg(long, default_value_t = 4)]
    requests_per_client: usize,
    /// Tokens per reply (end-of-generation is ignored where the server allows)
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Slots of every server (`--parallel`, llama-server's `-np`)
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Context per slot
    #[arg(long, default_value_t = 1024)]
    ctx_size: usize,
    /// Leave llama-server out (nothing is built for it)
    #[arg(long)]
    no_llama_server: bool,
}

/// A server process, stopped with SIGTERM when dropped.
struct Running {
    name: String,
    url: String,
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(root: &Path, args: &ServeBenchArgs) -> anyhow::Result<()> {
    let out_dir = root.join("target/serve-bench");
    std::fs::create_dir_all(&out_dir)?;
    let python = root.join(".venv/bin/python");
    let model = match &args.model {
        Some(path) => path.clone(),
        None => f32_copy(root, &python, &out_dir)?,
    };
    let model_arg = model.to_str().context("model path is not UTF-8")?.to_string();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    eprintln!("serve-bench: building both binaries in release ...");
    run_status(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        OURS[0],
        "-p",
        OURS[1],
    ]))?;
    let llama_server = if args.no_llama_server { None } else { Some(build_llama_server(root)?) };

    let (parallel, ctx) = (args.parallel.to_string(), args.ctx_size.to_string());
    let mut servers = Vec::new();
    for name in OURS {
        let binary = root.join("target/release").join(name);
        let flags = ["--model", &model_arg, "--parallel", &parallel, "--ctx-size", &ctx, "--serve", "127.0.0.1:0"];
        servers.push(start_ours(name, Command::new(binary).args(flags))?);
    }
    if let Some(binary) = &llama_server {
        let port = free_port()?;
        let total_ctx = (args.parallel * args.ctx_size).to_string();
        let mut cmd = Command::new(binary);
        cmd.args(["-m", &model_arg, "--host", "127.0.0.1", "--port", &port.to_string(), "-np", &parallel]).args([
            "-c",
            &total_ctx,
            "-t",
            &threads.to_string(),
            "-tb",
            &threads.to_string(),
        ]);
        servers.push(start_llama_server(&mut cmd, port)?);
    }

    let report = out_dir.join("serve-bench.json");
    let mut bench = Command::new(&python);
    bench.current_dir(root).arg("scripts/serve_bench.py");
    for s in &servers {
        bench.args(["--server", &format!("{}={}", s.name, s.url)]);
    }
    bench.args(["--clients", &args.clients, "--requests-per-client", &args.requests_per_client.to_string()]);
    bench.args(["--max-tokens", &args.max_tokens.to_string(), "--json"]).arg(&report);
    let measured = bench.status().context("cannot run scripts/serve_bench.py")?;
    drop(servers);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report)?).context("scripts/serve_bench.py's JSON")?;
    let verdicts = check_targets(&report);
    println!("\nmodel: {} ({threads} threads, {} slots of {} tokens)", model.display(), args.parallel, args.ctx_size);
    for line in &verdicts {
        println!("{line}");
    }
    std::fs::write(out_dir.join("targets.txt"), verdicts.join("\n") + "\n")?;
    if !measured.success() {
        bail!("scripts/serve_bench.py reported failed requests ({measured})");
    }
    Ok(())
}

/// The default model with every tensor dequantized to F32 (the form the targets name),
/// written once with llama.cpp's own `gguf` package, as the llama.cpp reference does.
fn f32_copy(root: &Path, python: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let source = llama_app::cli::models_dir().join(llama_app::cli::DEFAULT_MODEL_FILE);
    let target = out_dir.join("SmolLM2-135M-Instruct.F32.gguf");
    if target.exists() {
        return Ok(target);
    }
    if !source.exists() {
        bail!("{} is missing: run `cargo xtask setup`", source.display());
    }
    let code = "import sys; from pathlib import Path; sys.path.insert(0, 'scripts'); \
                from make_llamacpp_reference import make_f32_copy; make_f32_copy(Path(sys.argv[1]), Path(sys.argv[2]))";
    run_status(Command::new(python).current_dir(root).args(["-c", code]).arg(&source).arg(&target))?;
    Ok(target)
}

/// scripts/build_llama_server.sh into target/llama-server (skipped when already built); the
/// binary's path is its last line.
fn build_llama_server(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("serve-bench: building llama-server from llama-cpp-python's vendored llama.cpp (once) ...");
    let out = Command::new("bash")
        .current_dir(root)
        .args(["scripts/build_llama_server.sh", "target/llama-server"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run scripts/build_llama_server.sh")?;
    if !out.status.success() {
        bail!("scripts/build_llama_server.sh failed ({})", out.status);
    }
    let stdout = String::from_utf8(out.stdout)?;
    let path = stdout.lines().last().context("scripts/build_llama_server.sh printed no path")?;
    Ok(PathBuf::from(path.trim()))
}

/// Starts one of our binaries and waits for the line that says where it serves.
fn start_ours(name: &str, cmd: &mut Command) -> anyhow::Result<Running> {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().with_context(|| format!("cannot start {name}"))?;
    let mut lines = BufReader::new(child.stdout.take().context("piped stdout")?).lines();
    let url = loop {
        let Some(line) = lines.next().transpose()? else { bail!("{name} --serve ended before it served") };
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            break url.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Running { name: name.to_string(), url, child })
}

fn start_llama_server(cmd: &mut Command, port: u16) -> anyhow::Result<Running> {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("cannot start llama-server")?;
    // scripts/serve_bench.py waits for /health before it measures.
    Ok(Running { name: "llama-server".into(), url: format!("http://127.0.0.1:{port}"), child })
}

/// A loopback port free at the moment of asking (llama-server takes no port 0).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The targets, each as one line saying the numbers and whether it is met: batching gives
/// tinygrad-only at least 2× its single-client aggregate at 8 clients, and pytorch-only at least
/// 0.85× llama-server's aggregate there (pytorch-only's own scaling is printed beside them).
fn check_targets(report: &Value) -> Vec<String> {
    let aggregate = |server: &str, clients: u64| {
        let servers = report["servers"].as_array()?;
        let runs = servers.iter().find(|s| s["name"] == server)?["runs"].as_array()?;
        runs.iter().find(|r| r["clients"] == clients)?["aggregate_tok_s"].as_f64()
    };
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let mut lines = Vec::new();
    for (name, target) in [("tinygrad-only", Some(2.0)), ("pytorch-only", None)] {
        if let (Some(one), Some(eight)) = (aggregate(name, 1), aggregate(name, 8)) {
            let ratio = eight / one;
            let said = target.map_or("(no target)".to_string(), |t: f64| format!("≥ {t}×: {}", verdict(ratio >= t)));
            lines.push(format!(
                "{name} at 8 clients vs its 1-client aggregate: {eight:.1} / {one:.1} tok/s = {ratio:.2}× {said}"
            ));
        }
    }
    if let (Some(ours), Some(theirs)) = (aggregate("pytorch-only", 8), aggregate("llama-server", 8)) {
        let ratio = ours / theirs;
        lines.push(format!(
            "pytorch-only vs llama-server at 8 clients: {ours:.1} / {theirs:.1} tok/s = {ratio:.2}× ≥ 0.85×: {}",
            verdict(ratio >= 0.85)
        ));
    }
    lines
}
