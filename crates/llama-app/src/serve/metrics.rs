//! The server's counters and gauges, rendered as Prometheus text for `GET /metrics`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far back `llama_decode_tokens_per_second` looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub disconnects: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub queue_depth: AtomicU64,
    pub active_slots: AtomicU64,
    pub slots: AtomicU64,
    /// Recent decode steps: when each ended, the tokens it decoded, how long it took.
    steps: Mutex<VecDeque<(Instant, u64, Duration)>>,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Records a step that decoded `tokens` tokens in `took`.
    pub fn record_step(&self, tokens: u64, took: Duration) {
        let now = Instant::now();
        let mut steps = self.steps.lock().expect("metrics lock");
        steps.push_back((now, tokens, took));
        while steps.front().is_some_and(|(at, ..)| now.duration_since(*at) > RATE_WINDOW) {
            steps.pop_front();
        }
    }

    /// Tokens decoded per second of step time over the window (0 when idle).
    fn decode_rate(&self) -> f64 {
        let now = Instant::now();
        let steps = self.steps.lock().expect("metrics lock");
        let recent = steps.iter().filter(|(at, ..)| now.duration_since(*at) <= RATE_WINDOW);
        let (tokens, time) = recent.fold((0, Duration::ZERO), |(n, t), (_, k, d)| (n + k, t + *d));
        llama_core::sequence::rate(tokens as usize, time.as_secs_f64())
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, f64); 9] = [
            ("llama_requests_total", "counter", "completion requests accepted", get(&self.requests) as f64),
            (
                "llama_requests_rejected_total",
                "counter",
                "completion requests refused with 503: queue full",
                get(&self.rejected) as f64,
            ),
            (
                "llama_client_disconnects_total",
                "counter",
                "generations stopped because the client went away",
                get(&self.disconnects) as f64,
            ),
            (
                "llama_prompt_tokens_total",
                "counter",
                "prompt tokens prefilled (cache reuse not counted)",
                get(&self.prompt_tokens) as f64,
            ),
            ("llama_generated_tokens_total", "counter", "tokens generated", get(&self.generated_tokens) as f64),
            ("llama_queue_depth", "gauge", "requests waiting for a slot", get(&self.queue_depth) as f64),
            ("llama_active_slots", "gauge", "slots running a request", get(&self.active_slots) as f64),
            ("llama_slots", "gauge", "slots (--parallel)", get(&self.slots) as f64),
            (
                "llama_decode_tokens_per_second",
                "gauge",
                "tokens decoded per second of step time, last 10 s",
                self.decode_rate(),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let m = Metrics::default();
        Metrics::add(&m.generated_tokens, 5);
        m.record_step(4, Duration::from_millis(100));
        let text = m.render();
        assert!(
            text.contains("# TYPE llama_generated_tokens_total counter\nllama_generated_tokens_total 5\n"),
            "{text}"
        );
        assert!(text.contains("llama_decode_tokens_per_second 40\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 9);
    }
}
