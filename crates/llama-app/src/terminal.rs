//! Terminal output: replies streamed to stdout as they are made, and the progress of a long
//! benchmark on stderr (a bar with an ETA on a terminal, one plain line per finished run in a
//! pipe or log; stdout, the table or `--json`, is never touched).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Writes a piece of generated text to stdout straight away: replies stream as they are made.
pub fn print_streamed(piece: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(piece.as_bytes());
    let _ = out.flush();
}

pub struct Progress {
    name: &'static str,
    total: usize,
    start: Instant,
    /// Present when stderr is a terminal.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts counting `total` measured runs of the binary `name`.
    pub fn start(name: &'static str, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            let style =
                ProgressStyle::with_template("{prefix}: run {pos}/{len} [{bar:30}] {elapsed} elapsed, ETA {eta} {msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name);
            bar
        });
        Self { name, total, start: Instant::now(), bar }
    }

    /// Run `done` of `total` has finished with these speeds.
    pub fn run_done(&self, done: usize, decode_tok_s: f64, prefill_tok_s: f64) {
        let speeds = format!("decode {decode_tok_s:.2} tok/s, prefill {prefill_tok_s:.1} tok/s");
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("(last: {speeds})"));
                bar.set_position(done as u64);
            }
            None => {
                let eta = self.start.elapsed().mul_f64((self.total - done) as f64 / done as f64);
                eprintln!("{}: run {done}/{}: {speeds}; ETA {}", self.name, self.total, clock(eta));
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1h 02m 03s`, `2m 03s` or `3s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec:02}s"),
        (h, min, sec) => format!("{h}h {min:02}m {sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_a_clock() {
        assert_eq!(clock(Duration::from_secs(3)), "3s");
        assert_eq!(clock(Duration::from_secs(123)), "2m 03s");
        assert_eq!(clock(Duration::from_secs(3723)), "1h 02m 03s");
    }
}
