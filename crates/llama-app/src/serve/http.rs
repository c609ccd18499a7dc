//! The HTTP side: axum routes, the API key check, admission (503 when the queue is full), and
//! turning the engine's replies into OpenAI's JSON and server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use llama_core::sampling::Sampler;
use llama_core::sequence::{Event, Finished, Request as Generation};
use llama_core::stop::StopStrings;

use super::api::{ApiError, Completion, CompletionBody, Input, parse_json};
use super::engine::{Job, Message, Reply};
use super::shared::{Shared, Ticket, unix_time};

/// Largest request body accepted (413 past it).
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub fn router(shared: Arc<Shared>) -> Router {
    let guarded = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_api_key));
    Router::new()
        .route("/", get(|| async { Html(include_str!("chat.html")) }))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(shared)
}

/// With `--api-key`, every guarded route wants `Authorization: Bearer KEY`.
async fn require_api_key(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let matches = given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|k| same_key(k, key));
        if !matches {
            let e = ApiError::new(StatusCode::UNAUTHORIZED, "a valid API key is required: Authorization: Bearer KEY");
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Compares keys in time that does not depend on where they differ.
fn same_key(given: &str, key: &str) -> bool {
    given.len() == key.len() && given.bytes().zip(key.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "loading"}))).into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let model = json!({"id": s.model_id, "object": "model", "created": s.started, "owned_by": "llama-burn-bench"});
    axum::Json(json!({"object": "list", "data": [model]})).into_response()
}

#[derive(Deserialize)]
struct TokenizeBody {
    content: String,
    #[serde(default)]
    add_special: bool,
}

async fn tokenize(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body: TokenizeBody = parse_json(&read_body(body)?)?;
    let tokens = s
        .tokenizer
        .tokenize(&body.content, body.add_special, true)
        .map_err(|e| ApiError::invalid("content", e.to_string()))?;
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}

#[derive(Deserialize)]
struct DetokenizeBody {
    tokens: Vec<u32>,
}

async fn detokenize(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body: DetokenizeBody = parse_json(&read_body(body)?)?;
    let vocab = s.tokenizer.vocab_size();
    if let Some(bad) = body.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid("tokens", format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    Ok(axum::Json(json!({"content": s.tokenizer.decode(&body.tokens)})).into_response())
}

async fn chat_completions(
    State(s): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    complete(s, body, true).await
}

async fn completions(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    complete(s, body, false).await
}

/// A body that could not be read: over the limit (413) or cut off.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {MAX_BODY_BYTES} bytes"),
        ),
        status => ApiError::new(status, format!("the body could not be read: {e}")),
    })
}

/// Both completion endpoints: check, tokenize, take a place, hand the job to the engine, answer.
async fn complete(s: Arc<Shared>, body: Result<Bytes, BytesRejection>, chat: bool) -> Result<Response, ApiError> {
    let completion = parse_json::<CompletionBody>(&read_body(body)?)?.check(chat, &s.defaults)?;
    if !s.ready.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the model is still loading"));
    }
    let prompt = encode(&s, &completion.input)?;
    let ticket = Ticket::take(&s)?;
    let (replies, mut receiver) = mpsc::unbounded_channel();
    let request = Generation {
        stop: StopStrings::new(completion.stop.clone()),
        ignore_eos: completion.ignore_eos,
        ..Generation::new(
            prompt.clone(),
            completion.max_tokens,
            Sampler::new(completion.sampling.clone(), completion.seed.unwrap_or_else(crate::setup::fresh_seed)),
        )
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    if s.engine.send(Message::Generate(Job { id, request, replies })).is_err() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let shape = Shape::new(&s, chat, id, prompt.len());
    if completion.stream {
        return Ok(stream(shape, &completion, receiver, ticket));
    }
    let mut text = String::new();
    while let Some(reply) = receiver.recv().await {
        match reply {
            Reply::Event(Event::Text(piece)) => text.push_str(&piece),
            Reply::Event(Event::Finished(finished)) => {
                return Ok(axum::Json(shape.whole(&text, &finished)).into_response());
            }
            Reply::Failed(error) => return Err(error),
        }
    }
    Err(ApiError::internal("the engine stopped before the reply ended"))
}

/// The prompt's ids: the chat template around the messages, or the raw text (as `--raw`
/// tokenizes it). Refused when it leaves no room in a slot's context.
fn encode(s: &Shared, input: &Input) -> Result<Vec<u32>, ApiError> {
    let (param, ids) = match input {
        Input::Chat(messages) => {
            ("messages", s.template.encode(&s.tokenizer, messages, true).map_err(|e| e.to_string()))
        }
        Input::Raw(text) => ("prompt", s.tokenizer.encode(text, true).map_err(|e| e.to_string())),
    };
    let ids = ids.map_err(|e| ApiError::invalid(param, format!("the prompt could not be encoded: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::invalid(param, "the prompt is empty after tokenization"));
    }
    if ids.len() >= s.context {
        let (tokens, context) = (ids.len(), s.context);
        let message = format!(
            "the prompt has {tokens} tokens, which leaves no room for a reply in the {context}-token context: shorten it (or start the server with a larger --ctx-size)"
        );
        return Err(ApiError::invalid(param, message));
    }
    Ok(ids)
}

/// Streams the replies as server-sent events. Events go through a bounded channel that the
/// response body drains: when the client goes away the body is dropped, the next send (or the
/// wait for one) fails, and the engine's channel closes with it, which stops the generation.
fn stream(
    shape: Shape,
    completion: &Completion,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    ticket: Ticket,
) -> Response {
    let (events, body) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let include_usage = completion.include_usage;
    tokio::spawn(async move {
        let _ticket = ticket;
        let send = |value: Value| events.send(Ok(SseEvent::default().data(value.to_string())));
        if shape.chat && send(shape.chunk(Some(""), None)).await.is_err() {
            return;
        }
        loop {
            let reply = tokio::select! {
                reply = replies.recv() => reply,
                _ = events.closed() => return,
            };
            let sent = match reply {
                Some(Reply::Event(Event::Text(piece))) => send(shape.chunk(Some(&piece), None)).await,
                Some(Reply::Event(Event::Finished(finished))) => {
                    let mut sent = send(shape.chunk(None, Some(&finished))).await;
                    if include_usage && sent.is_ok() {
                        sent = send(shape.usage_chunk(&finished)).await;
                    }
                    let _ = sent;
                    break;
                }
                Some(Reply::Failed(error)) => {
                    let _ = send(error.body()).await;
                    break;
                }
                None => break,
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = events.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(body)).into_response()
}

/// What every answer to one request shares: its id, its kind (chat or text), the model.
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl Shape {
    fn new(s: &Shared, chat: bool, id: u64, prompt_tokens: usize) -> Self {
        let id = if chat { format!("chatcmpl-{id}") } else { format!("cmpl-{id}") };
        Self { chat, id, created: unix_time(), model: s.model_id.clone(), prompt_tokens }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }

    fn usage(&self, finished: &Finished) -> Value {
        let (prompt, completion) = (self.prompt_tokens, finished.tokens.len());
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// The whole reply, not streamed.
    fn whole(&self, text: &str, finished: &Finished) -> Value {
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finished.reason.openai(), "logprobs": null})
        } else {
            json!({"index": 0, "text": text, "finish_reason": finished.reason.openai(), "logprobs": null})
        };
        let mut whole = self.envelope(false, json!([choice]));
        whole["usage"] = self.usage(finished);
        whole
    }

    /// One streamed piece (`text`), or the last chunk, which carries the finish reason. A chat's
    /// first chunk (`Some("")`) opens the assistant's message.
    fn chunk(&self, text: Option<&str>, finished: Option<&Finished>) -> Value {
        let reason = finished.map(|f| f.reason.openai());
        let choice = if self.chat {
            let delta = match text {
                Some("") => json!({"role": "assistant", "content": ""}),
                Some(piece) => json!({"content": piece}),
                None => json!({}),
            };
            json!({"index": 0, "delta": delta, "finish_reason": reason, "logprobs": null})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": reason, "logprobs": null})
        };
        self.envelope(true, json!([choice]))
    }

    /// `stream_options.include_usage`'s extra chunk: no choices, the usage.
    fn usage_chunk(&self, finished: &Finished) -> Value {
        let mut chunk = self.envelope(true, json!([]));
        chunk["usage"] = self.usage(finished);
        chunk
    }
}
