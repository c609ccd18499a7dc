//! The engine: the one thread that owns the model. It takes requests from the HTTP side through
//! a channel, queues them for the slots, runs [`Scheduler::step`] while any slot is busy, and sends
//! each request's text back through that request's own channel. A request whose channel has
//! closed (its client went away) is stopped before the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use burn::tensor::backend::Backend;
use llama_core::kernels::Kernels;
use llama_core::scheduler::Scheduler;
use llama_core::sequence::{Event, Request};
use tokio::sync::mpsc::UnboundedSender;

use super::api::ApiError;
use super::metrics::Metrics;

pub enum Message {
    Generate(Job),
    /// Cancel what runs and waits, then return.
    Shutdown,
}

pub struct Job {
    pub id: u64,
    pub request: Request,
    pub replies: UnboundedSender<Reply>,
}

#[derive(Debug)]
pub enum Reply {
    Event(Event),
    /// The request could not be served (the error says why, with its status); nothing more follows.
    Failed(ApiError),
}

/// Serves `messages` until [`Message::Shutdown`] or until every sender is gone.
pub fn run<B: Backend, K: Kernels<B>>(
    scheduler: &mut Scheduler<'_, B, K>,
    messages: &Receiver<Message>,
    metrics: &Metrics,
) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut running: HashMap<u64, UnboundedSender<Reply>> = HashMap::new();
    loop {
        // Wait while there is nothing to do; otherwise take whatever has arrived and step.
        let waited = if running.is_empty() && queue.is_empty() {
            match messages.recv() {
                Ok(message) => Some(message),
                Err(_) => return,
            }
        } else {
            None
        };
        for message in waited.into_iter().chain(messages.try_iter()) {
            match message {
                Message::Generate(job) => queue.push_back(job),
                Message::Shutdown => {
                    let all = running.into_values().chain(queue.into_iter().map(|job| job.replies));
                    for replies in all {
                        let _ = replies.send(Reply::Failed(ApiError::unavailable("the server is shutting down")));
                    }
                    return;
                }
            }
        }
        drop_departed(scheduler, &mut running, &mut queue, metrics);
        while scheduler.has_free_slot()
            && let Some(job) = queue.pop_front()
        {
            let prompt_tokens = job.request.prompt.len();
            match scheduler.admit(job.id, job.request) {
                Ok(reused) => {
                    Metrics::add(&metrics.prompt_tokens, (prompt_tokens - reused) as u64);
                    running.insert(job.id, job.replies);
                }
                Err(e) => {
                    let _ = job.replies.send(Reply::Failed(ApiError::internal(e.to_string())));
                }
            }
        }
        Metrics::set(&metrics.queue_depth, queue.len() as u64);
        Metrics::set(&metrics.active_slots, scheduler.active() as u64);
        if running.is_empty() {
            continue;
        }
        let start = Instant::now();
        match scheduler.step() {
            Ok(report) => {
                let (events, stats) = (report.events, report.stats);
                let took = start.elapsed();
                tracing::debug!(
                    decoded = stats.decoded,
                    prefilled = stats.prefilled,
                    ms = took.as_secs_f64() * 1e3,
                    "step"
                );
                metrics.record_step(stats.generated as u64, took);
                Metrics::add(&metrics.generated_tokens, stats.generated as u64);
                for (id, event) in events {
                    let finished = matches!(event, Event::Finished(_));
                    let replies = if finished { running.remove(&id) } else { running.get(&id).cloned() };
                    // A send fails only when the client has gone: noticed before the next step.
                    let _ = replies.map(|r| r.send(Reply::Event(event)));
                }
            }
            Err(e) => {
                tracing::error!("a step failed: {e}");
                for (id, replies) in running.drain() {
                    scheduler.cancel(id);
                    let _ = replies.send(Reply::Failed(ApiError::internal(format!("generation failed: {e}"))));
                }
            }
        }
        Metrics::set(&metrics.active_slots, scheduler.active() as u64);
    }
}

/// Stops the requests whose clients went away, running or waiting.
fn drop_departed<B: Backend, K: Kernels<B>>(
    scheduler: &mut Scheduler<'_, B, K>,
    running: &mut HashMap<u64, UnboundedSender<Reply>>,
    queue: &mut VecDeque<Job>,
    metrics: &Metrics,
) {
    running.retain(|&id, replies| {
        let gone = replies.is_closed();
        if gone {
            scheduler.cancel(id);
            Metrics::add(&metrics.disconnects, 1);
        }
        !gone
    });
    queue.retain(|job| {
        let gone = job.replies.is_closed();
        if gone {
            Metrics::add(&metrics.disconnects, 1);
        }
        !gone
    });
}
