//! The interactive chat, driven through a pipe as a script would drive it.
//!
//! stdout and stderr go into one pipe, so replies and the `[turn N: …]` line after each come back
//! in the order they were written: the text between two such lines is one reply.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::harness::default_model;

/// One `[turn N: prefilled P new prompt tokens (R reused from the cache), G tokens generated; …]`.
#[derive(Debug, Clone)]
pub struct TurnLine {
    pub prefilled: usize,
    pub reused: usize,
    pub generated: usize,
    pub line: String,
}

#[derive(Debug)]
pub struct Transcript {
    /// Everything the program wrote, stdout and stderr interleaved.
    pub output: String,
    /// The text before each turn line (the reply, and any log lines written during it).
    pub replies: Vec<String>,
    pub turns: Vec<TurnLine>,
}

/// Splits combined output into replies and their turn lines.
pub fn parse_transcript(output: &str) -> Transcript {
    let mut replies = Vec::new();
    let mut turns = Vec::new();
    let mut reply = String::new();
    for line in output.split_inclusive('\n') {
        match parse_turn_line(line.trim_end()) {
            Some(turn) => {
                replies.push(std::mem::take(&mut reply));
                turns.push(turn);
            }
            None => reply.push_str(line),
        }
    }
    Transcript { output: output.to_string(), replies, turns }
}

fn parse_turn_line(line: &str) -> Option<TurnLine> {
    let rest = line.strip_prefix("[turn ")?;
    let number_after = |key: &str| -> Option<usize> {
        let before = rest.split(key).next()?;
        before.rsplit(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
    };
    Some(TurnLine {
        prefilled: number_after(" new prompt tokens")?,
        reused: number_after(" reused from the cache")?,
        generated: number_after(" tokens generated")?,
        line: line.to_string(),
    })
}

/// Starts `binary` in chat mode on the default model with stdin piped and stdout+stderr merged.
fn spawn_chat(binary: &str, extra: &[&str]) -> (Child, std::io::PipeReader) {
    let model = default_model();
    let (reader, writer) = std::io::pipe().expect("pipe");
    let child = Command::new(binary)
        .args(["--model", model.to_str().expect("utf-8 path")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().expect("pipe clone"))
        .stderr(writer)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    (child, reader)
}

/// Pipes `lines` into a chat and returns what came back; the program must exit 0.
pub fn run_chat(binary: &str, extra: &[&str], lines: &[&str]) -> Transcript {
    let (mut child, mut reader) = spawn_chat(binary, extra);
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write to chat");
    }
    drop(stdin);
    let mut output = String::new();
    reader.read_to_string(&mut output).expect("read chat output");
    let status = child.wait().expect("wait for chat");
    assert!(status.success(), "{binary} chat exited with {status}: {output}");
    assert!(!output.contains("panicked"), "{binary} chat panicked: {output}");
    parse_transcript(&output)
}

/// Three turns on the default model, greedy: the second turn's question needs the first turn,
/// the answer shows the model saw it (asked alone, the model does not know), and each later turn
/// prefilled only its new tokens.
pub fn check_chat_session(binary: &str) {
    let args = ["--temperature", "0", "--max-tokens", "24"];
    let question = "What is the secret number?";
    let t = run_chat(binary, &args, &["The secret number is 42.", question, "Thank you!"]);
    assert_eq!(t.turns.len(), 3, "three turn lines expected: {}", t.output);
    assert!(t.replies[1].contains("42"), "the second reply does not use the first turn: {}", t.output);
    let alone = run_chat(binary, &args, &[question]);
    assert!(!alone.replies[0].contains("42"), "asked alone, the model still said 42: {}", alone.output);
    assert_eq!(t.turns[0].reused, 0, "{}", t.turns[0].line);
    for (i, turn) in t.turns.iter().enumerate().skip(1) {
        let previous = &t.turns[i - 1];
        // The previous prompt is reused whole. Its reply is too, unless the reply's text
        // tokenizes differently from the ids that were sampled (then from that point on).
        assert!(
            turn.reused >= previous.reused + previous.prefilled,
            "turn {} recomputed the previous prompt: {} after {}",
            i + 1,
            turn.line,
            previous.line
        );
        assert!(
            turn.prefilled <= previous.generated + 40,
            "turn {} prefilled more than its new message: {}",
            i + 1,
            turn.line
        );
    }
    eprintln!("{binary} chat:\n{}", t.output);
}

/// A small context: older turns are dropped (and the turn line says so) rather than silently
/// cut, and a message too long for the context is refused while the chat goes on.
pub fn check_context_overflow(binary: &str) {
    let long_message = "Please tell me more about this. ".repeat(20);
    let t = run_chat(
        binary,
        &["--temperature", "0", "--max-tokens", "8", "--ctx-size", "100"],
        &["Hello!", "What is the capital of France?", "And of Italy?", &long_message, "And of Spain?"],
    );
    assert_eq!(t.turns.len(), 4, "four replies expected (the long message refused): {}", t.output);
    assert!(
        t.turns.iter().any(|turn| turn.line.contains("oldest messages to fit the context")),
        "no turn dropped old messages in a 100-token context: {}",
        t.output
    );
    assert!(t.output.contains("leaves no room for a reply in the 100-token context"), "{}", t.output);
}

/// The same seed gives the same sampled reply.
pub fn check_seeded_chat_repeats(binary: &str) {
    let args = ["--seed", "7", "--temperature", "0.8", "--max-tokens", "16"];
    let first = run_chat(binary, &args, &["Tell me about cats."]);
    let second = run_chat(binary, &args, &["Tell me about cats."]);
    assert_eq!(first.replies.len(), 1, "{}", first.output);
    assert_eq!(first.replies, second.replies, "--seed 7 gave two different replies");
    assert!(first.turns[0].generated > 0, "{}", first.output);
}

/// Ctrl-C (SIGINT) during a long reply stops that reply, and the next turn still works.
pub fn check_ctrl_c_stops_only_the_reply(binary: &str) {
    let (mut child, mut reader) = spawn_chat(binary, &["--temperature", "0", "--max-tokens", "48"]);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "Count from 1 to 100, separated by commas.").expect("write to chat");
    // Read in a thread, so a reply that never comes fails the test instead of hanging it.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reading = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    // A few numbers into the reply (lavapipe's warning at start-up has no digits).
    while !String::from_utf8_lossy(&output).contains('3') {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => output.extend(chunk),
            Err(_) => {
                let _ = child.kill();
                panic!("{binary}: no reply within 600 s: {}", String::from_utf8_lossy(&output));
            }
        }
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().expect("run kill");
    assert!(killed.success(), "kill -INT {pid} failed");
    writeln!(stdin, "What is 2 + 2?").expect("write to chat");
    drop(stdin);
    let status = child.wait().expect("wait for chat");
    reading.join().expect("reader thread");
    output.extend(rx.try_iter().flatten());
    let output = String::from_utf8_lossy(&output).into_owned();
    assert!(status.success(), "{binary} exited with {status} after Ctrl-C: {output}");
    let t = parse_transcript(&output);
    assert_eq!(t.turns.len(), 2, "two turns expected after Ctrl-C: {output}");
    assert!(t.turns[0].line.contains("interrupted"), "{}", t.turns[0].line);
    assert!(t.turns[0].generated < 48, "the interrupted reply ran to --max-tokens: {}", t.turns[0].line);
    assert!(t.turns[1].generated > 0, "no reply after Ctrl-C: {output}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_splits_replies_at_turn_lines() {
        let out = "Hello Ada!\n[turn 1: prefilled 30 new prompt tokens (0 reused from the cache), 4 tokens generated; TTFT 5 ms, 9.0 tok/s]\nYour name\nis Ada.\n[turn 2: prefilled 12 new prompt tokens (33 reused from the cache), 5 tokens generated; TTFT 5 ms, 9.0 tok/s; interrupted]\n";
        let t = parse_transcript(out);
        assert_eq!(t.replies, ["Hello Ada!\n", "Your name\nis Ada.\n"]);
        assert_eq!((t.turns[1].prefilled, t.turns[1].reused, t.turns[1].generated), (12, 33, 5));
        assert!(t.turns[1].line.ends_with("interrupted]"));
    }
}
