//! The server (`--serve`) as its users reach it: the official `openai` Python client
//! (tests/serve/check_server.py) and a headless Chromium on the web chat (tests/serve/web_chat.py).
//! Each check starts a real server on a free port, runs the script against it, and stops it
//! with SIGTERM, which must end it with exit status 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{default_model, run};

/// The context the conformance server runs with: small, so a prompt over it is quick to make.
const CONTEXT: usize = 512;
/// Tokens per reply where the CLI and the server are compared.
const MAX_TOKENS: usize = 24;

/// A server on a free loopback port, stopped (SIGTERM) when dropped if not before.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts `binary --serve 127.0.0.1:0 …` on the default model and waits for the line that
    /// says it is serving (the model loaded), which carries the port.
    pub fn start(binary: &str, extra: &[&str]) -> Server {
        let model = default_model();
        let mut child = Command::new(binary)
            .args(["--serve", "127.0.0.1:0", "--model", model.to_str().expect("utf-8 path")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut lines = stdout.lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().expect("the server's status");
                panic!("{binary} --serve ended ({status}) before saying where it serves");
            };
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                break url.trim_end_matches('/').to_string();
            }
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, url }
    }

    /// SIGTERM, then waits (at most 60 s) for the exit: returns whether it exited with status 0.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        // Our own child keeps its pid until it is waited for.
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the server's status") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs one of tests/serve's scripts with the project's Python (set-up installs what they need
/// into `.venv`) and fails the test with its output unless it passes.
fn run_script(script: &str, args: &[&str]) {
    let python = workspace().join(".venv/bin/python");
    let script = workspace().join("tests/serve").join(script);
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (run `cargo xtask setup`)", python.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "{} {args:?} failed:\n{stdout}\n{stderr}", script.display());
}

/// The one-shot CLI's greedy replies, which the server must give too: chat-templated prompts and
/// raw ones.
fn cli_replies(binary: &str) -> serde_json::Value {
    let model = default_model();
    let reply = |prompt: &str, raw: bool| {
        let max = MAX_TOKENS.to_string();
        let mut args = vec!["--model", model.to_str().expect("utf-8 path"), "--temperature", "0", "--json"];
        args.extend(["--max-tokens", &max, "--prompt", prompt]);
        if raw {
            args.push("--raw");
        }
        let out = run(binary, &args);
        assert!(out.status.success(), "{binary} --prompt {prompt:?}: {}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json output");
        json["text"].as_str().expect("a text field").to_string()
    };
    let chat = ["What is the capital of France?", "Name three colours."].map(
        |p| json!({"messages": [{"role": "user", "content": p}], "max_tokens": MAX_TOKENS, "text": reply(p, false)}),
    );
    let completions = ["The capital of France is", "Once upon a time"]
        .map(|p| json!({"prompt": p, "max_tokens": MAX_TOKENS, "text": reply(p, true)}));
    json!({"chat": chat, "completions": completions})
}

/// Chat and completions (streamed or not) equal the CLI's greedy replies; seeds repeat; stop
/// strings are cut; eight concurrent streams each give what they give alone; every bad input has
/// its status; a client that disconnects frees its slot; SIGTERM exits 0.
pub fn check_openai_client(binary: &str, scratch: &Path) {
    std::fs::create_dir_all(scratch).expect("scratch folder");
    let expected = scratch.join("expected.json");
    std::fs::write(&expected, cli_replies(binary).to_string()).expect("expected replies");
    let context = CONTEXT.to_string();
    let server = Server::start(binary, &["--ctx-size", &context, "--parallel", "4"]);
    let checks = "basic,concurrency,errors,disconnect";
    let expected = expected.to_str().expect("utf-8 path");
    run_script(
        "check_server.py",
        &["--url", &server.url, "--checks", checks, "--expected", expected, "--context", &context],
    );
    assert!(server.stop(), "{binary} --serve did not exit 0 on SIGTERM");
}

/// With one slot and a queue of one, the third request at once gets 503 with Retry-After.
pub fn check_full_queue(binary: &str) {
    let server = Server::start(binary, &["--parallel", "1", "--queue", "1"]);
    run_script("check_server.py", &["--url", &server.url, "--checks", "queue"]);
    assert!(server.stop(), "{binary} --serve did not exit 0 on SIGTERM");
}

/// With `--api-key`, requests without it get 401 and the client with it is served.
pub fn check_api_key(binary: &str) {
    let server = Server::start(binary, &["--api-key", "conformance-key"]);
    run_script("check_server.py", &["--url", &server.url, "--checks", "auth", "--api-key", "conformance-key"]);
    assert!(server.stop(), "{binary} --serve did not exit 0 on SIGTERM");
}

/// The web chat in headless Chromium: a streamed reply, then a second turn sent with the first.
pub fn check_web_chat(binary: &str, scratch: &Path) {
    std::fs::create_dir_all(scratch).expect("scratch folder");
    let server = Server::start(binary, &[]);
    let screenshot = scratch.join("web-chat.png");
    let url = format!("{}/", server.url);
    run_script("web_chat.py", &["--url", &url, "--screenshot", screenshot.to_str().expect("utf-8 path")]);
    assert!(server.stop(), "{binary} --serve did not exit 0 on SIGTERM");
}
