//! The OpenAI request and error shapes: parsing a body into a checked [`Completion`], and the
//! error object every refusal carries.

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use llama_core::chat_template::Message;
use llama_core::sampling::SamplingParams;

/// A refusal as OpenAI words it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, where one is.
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (503 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None, retry_after: None }
    }

    /// 400 naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    /// 500: the server's own failure (the model or a step), not the request's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The error object itself (also sent inside a stream that has already begun).
    pub fn body(&self) -> serde_json::Value {
        let code = self.status.canonical_reason().map(|r| r.to_lowercase().replace(' ', "_"));
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        // Refused before its body was read (whole), the request leaves the rest of the body on
        // the connection, which is then closed after this answer: saying so keeps a client
        // from sending its next request down a connection about to close.
        if matches!(self.status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNAUTHORIZED) {
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        response
    }
}

/// `POST /v1/chat/completions` and `/v1/completions` bodies: the fields read (others are
/// ignored, as OpenAI's own server ignores what it does not know).
#[derive(Debug, Default, Deserialize)]
pub struct CompletionBody {
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<PromptText>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<StopField>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub n: Option<i64>,
    /// llama-server's: keep generating past end-of-generation tokens (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
}

/// A message's content: text, or OpenAI's list of typed parts (only text parts are read).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `prompt`: a string, or a list holding one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptText {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// What the server falls back to for fields a request leaves out: the command line's flags.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub seed: Option<u64>,
    pub system: Option<String>,
}

/// A checked request, ready to tokenize.
#[derive(Debug)]
pub struct Completion {
    pub input: Input,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

#[derive(Debug)]
pub enum Input {
    Chat(Vec<Message>),
    Raw(String),
}

/// Parses a JSON body into `T`, naming the field at fault when its shape is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::new(StatusCode::BAD_REQUEST, format!("the body has the wrong shape: {inner}"))
        } else {
            ApiError::invalid(&path, format!("`{path}`: {inner}"))
        }
    })
}

impl CompletionBody {
    /// Checks every field against its range and fills the gaps from `defaults`; `chat` says
    /// which endpoint the body came to.
    pub fn check(self, chat: bool, defaults: &Defaults) -> Result<Completion, ApiError> {
        let input = if chat { Input::Chat(chat_messages(self.messages, defaults)?) } else { raw_prompt(self.prompt)? };
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid("n", format!("`n` must be 1 (one choice per request), got {n}")));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => defaults.max_tokens,
            Some(n) if n >= 1 => n as usize,
            Some(n) => {
                let field = if self.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
                return Err(ApiError::invalid(field, format!("`{field}` must be at least 1, got {n}")));
            }
        };
        let d = &defaults.sampling;
        let sampling = SamplingParams {
            temperature: in_range("temperature", self.temperature, d.temperature, Included(0.0), Some(2.0))?,
            top_p: in_range("top_p", self.top_p, d.top_p, Excluded(0.0), Some(1.0))?,
            min_p: in_range("min_p", self.min_p, d.min_p, Included(0.0), Some(1.0))?,
            top_k: match self.top_k {
                None => d.top_k,
                Some(k) if k >= 0 => k as usize,
                Some(k) => return Err(ApiError::invalid("top_k", format!("`top_k` must be 0 or more, got {k}"))),
            },
            frequency_penalty: in_range(
                "frequency_penalty",
                self.frequency_penalty,
                d.frequency_penalty,
                Included(-2.0),
                Some(2.0),
            )?,
            presence_penalty: in_range(
                "presence_penalty",
                self.presence_penalty,
                d.presence_penalty,
                Included(-2.0),
                Some(2.0),
            )?,
            repeat_penalty: in_range("repeat_penalty", self.repeat_penalty, d.repeat_penalty, Excluded(0.0), None)?,
            repeat_last_n: d.repeat_last_n,
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s],
            Some(StopField::List(list)) if list.len() <= 4 => list,
            Some(StopField::List(list)) => {
                return Err(ApiError::invalid("stop", format!("`stop` takes at most 4 strings, got {}", list.len())));
            }
        };
        Ok(Completion {
            input,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            max_tokens,
            sampling,
            seed: self.seed.or(defaults.seed),
            stop,
            ignore_eos: self.ignore_eos,
        })
    }
}

fn chat_messages(messages: Option<Vec<ChatMessage>>, defaults: &Defaults) -> Result<Vec<Message>, ApiError> {
    let messages = messages.ok_or_else(|| ApiError::invalid("messages", "`messages` is required"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must hold at least one message"));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = defaults.system.as_ref().filter(|_| messages[0].role != "system") {
        out.push(Message::new("system", system));
    }
    for (i, m) in messages.into_iter().enumerate() {
        if !["system", "user", "assistant"].contains(&m.role.as_str()) {
            let param = format!("messages[{i}].role");
            return Err(ApiError::invalid(
                &param,
                format!("`{param}` must be system, user or assistant, got `{}`", m.role),
            ));
        }
        let content = match m.content {
            Content::Text(text) => text,
            Content::Parts(parts) => parts.into_iter().filter(|p| p.kind == "text").filter_map(|p| p.text).collect(),
        };
        out.push(Message::new(&m.role, &content));
    }
    Ok(out)
}

fn raw_prompt(prompt: Option<PromptText>) -> Result<Input, ApiError> {
    match prompt {
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(PromptText::One(text)) => Ok(Input::Raw(text)),
        Some(PromptText::List(mut list)) if list.len() == 1 => Ok(Input::Raw(list.remove(0))),
        Some(PromptText::List(list)) => Err(ApiError::invalid(
            "prompt",
            format!("`prompt` must be one string (one choice per request), got {}", list.len()),
        )),
    }
}

/// `value` (else `default`) if it is finite, above `low` and at most `high` (no limit: `None`).
fn in_range(
    field: &str,
    value: Option<f32>,
    default: f32,
    low: Bound<f32>,
    high: Option<f32>,
) -> Result<f32, ApiError> {
    let Some(v) = value else { return Ok(default) };
    let above_low = match low {
        Included(l) => v >= l,
        Excluded(l) => v > l,
        Unbounded => true,
    };
    if v.is_finite() && above_low && high.is_none_or(|h| v <= h) {
        return Ok(v);
    }
    let low = match low {
        Included(l) => format!("{l}"),
        Excluded(l) => format!("{l} (exclusive)"),
        Unbounded => "any value".into(),
    };
    let range = match high {
        Some(h) => format!("between {low} and {h}"),
        None => format!("above {low}"),
    };
    Err(ApiError::invalid(field, format!("`{field}` must be {range}, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults { sampling: SamplingParams::default(), max_tokens: 16, seed: None, system: None }
    }

    fn check(body: &str, chat: bool) -> Result<Completion, ApiError> {
        parse_json::<CompletionBody>(body.as_bytes())?.check(chat, &defaults())
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let e = check(r#"{"messages": "hi"}"#, true).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (StatusCode::BAD_REQUEST, Some("messages")));
        let e = check(r#"{"messages": [{"role": "user", "content": 3}]}"#, true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        for (body, field) in [
            (r#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (r#"{"prompt": "a", "temperature": 5}"#, "temperature"),
            (r#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (r#"{"prompt": "a", "min_p": 2}"#, "min_p"),
            (r#"{"prompt": "a", "n": 2}"#, "n"),
            (r#"{"prompt": "a", "stop": ["1","2","3","4","5"]}"#, "stop"),
            (r#"{"max_tokens": 3}"#, "prompt"),
        ] {
            let e = check(body, false).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {}", e.message);
        }
        let e = check(r#"{"messages": []}"#, true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = check(r#"{"prompt": "a", "top_p": 0}"#, false).unwrap_err();
        assert_eq!(e.message, "`top_p` must be between 0 (exclusive) and 1, got 0");
        let e = check(r#"{"prompt": "a", "repeat_penalty": -1}"#, false).unwrap_err();
        assert_eq!(e.message, "`repeat_penalty` must be above 0 (exclusive), got -1");
        assert!(check(r#"{"prompt": "a", "repeat_penalty": 1e30}"#, false).is_ok());
    }

    #[test]
    fn not_json_is_a_400_without_a_field() {
        let e = check("{nope", true).unwrap_err();
        assert_eq!((e.status, e.param), (StatusCode::BAD_REQUEST, None));
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let c = check(
            r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop": "x"}"#,
            true,
        )
        .unwrap();
        assert_eq!((c.max_tokens, c.stop, c.sampling), (16, vec!["x".to_string()], SamplingParams::default()));
        assert!(matches!(c.input, Input::Chat(m) if m[0].content == "hi"));
    }
}
