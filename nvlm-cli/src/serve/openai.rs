//! The OpenAI chat-completions schema as NVLM-D needs it: messages (text or text + `image_url` parts) to the model's
//! prompt and images, and the response and error bodies.

use base64::Engine as _;
use nvlm_qwen2::SystemPrompt;
use serde_json::{json, Value};

/// An error answered with an HTTP status and an OpenAI-style body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Human-readable reason.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, ...).
    pub kind: &'static str,
}

impl ApiError {
    /// A 400 for a request the server cannot use.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": null}})
    }
}

/// One chat request, parsed.
pub struct ChatRequest {
    /// The system message (the model's default when the request has none).
    pub system: SystemPrompt,
    /// Earlier (user, assistant) turns.
    pub history: Vec<(String, String)>,
    /// The last user message's text.
    pub question: String,
    /// Image bytes of the last user message, in order.
    pub images: Vec<Vec<u8>>,
    /// Generation settings.
    pub options: Options,
}

/// Generation settings shared by both endpoints.
pub struct Options {
    /// The model the client asked for, if it named one.
    pub model: Option<String>,
    /// Most new tokens.
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus threshold.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream server-sent events.
    pub stream: bool,
    /// Per-request tile limit (extension field `max_tiles`).
    pub max_tiles: Option<usize>,
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    if !request.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    Ok(request)
}

/// The generation settings of a request body.
fn options(request: &Value) -> Options {
    let number = |key: &str| request[key].as_f64();
    let stop = match &request["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    };
    Options {
        model: request["model"].as_str().map(String::from),
        max_tokens: request["max_tokens"]
            .as_u64()
            .or_else(|| request["max_completion_tokens"].as_u64())
            .map(|n| n as usize),
        temperature: number("temperature").unwrap_or(0.0) as f32,
        top_p: number("top_p").unwrap_or(1.0) as f32,
        seed: request["seed"].as_u64().unwrap_or(0),
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream: request["stream"].as_bool().unwrap_or(false),
        max_tiles: request["max_tiles"].as_u64().map(|n| n as usize),
    }
}

/// Parses a `/v1/completions` body: the raw prompt text (no chat template) and the settings.
pub fn parse_text(body: &[u8]) -> Result<(String, Options), ApiError> {
    let request = parse_json(body)?;
    let prompt = match &request["prompt"] {
        Value::String(text) => text.clone(),
        Value::Array(list) if list.len() == 1 && list[0].is_string() => {
            list[0].as_str().unwrap_or_default().into()
        }
        _ => {
            return Err(ApiError::invalid(
                "`prompt` must be a string (one prompt per request)",
            ))
        }
    };
    Ok((prompt, options(&request)))
}

/// Text and images of a message's `content` (a string, or a list of `text` / `image_url` parts).
fn content(value: &Value, allow_local_images: bool) -> Result<(String, Vec<Vec<u8>>), ApiError> {
    match value {
        Value::String(text) => Ok((text.clone(), Vec::new())),
        Value::Array(parts) => {
            let (mut text, mut images) = (String::new(), Vec::new());
            for part in parts {
                match part["type"].as_str() {
                    Some("text") => text.push_str(part["text"].as_str().unwrap_or_default()),
                    Some("image_url") => {
                        let url = part["image_url"]["url"]
                            .as_str()
                            .or_else(|| part["image_url"].as_str())
                            .ok_or_else(|| ApiError::invalid("an image_url part needs image_url.url"))?;
                        images.push(image_bytes(url, allow_local_images)?);
                    }
                    other => {
                        return Err(ApiError::invalid(format!(
                            "unsupported content part type {other:?}"
                        )))
                    }
                }
            }
            Ok((text, images))
        }
        Value::Null => Ok((String::new(), Vec::new())),
        _ => Err(ApiError::invalid(
            "message content must be a string or a list of parts",
        )),
    }
}

/// The bytes of a `data:` URL, or of a local file when allowed; never a network fetch.
fn image_bytes(url: &str, allow_local_images: bool) -> Result<Vec<u8>, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (_, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| ApiError::invalid("image data URLs must be base64 (data:image/...;base64,...)"))?;
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| ApiError::invalid(format!("the image data URL is not valid base64: {e}")));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(ApiError::invalid(
            "this server does not fetch images from the network; send them as data: URLs",
        ));
    }
    if !allow_local_images {
        return Err(ApiError::invalid(
            "local image paths are refused unless the server runs with --allow-local-images",
        ));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    std::fs::read(path).map_err(|e| ApiError::invalid(format!("cannot read image {path}: {e}")))
}

/// Parses a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8], allow_local_images: bool) -> Result<ChatRequest, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let messages = request["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("`messages` must be a non-empty list"))?;
    let mut system = SystemPrompt::Default;
    let mut turns: Vec<(String, String, Vec<Vec<u8>>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let (text, images) = content(&message["content"], allow_local_images)?;
        match message["role"].as_str() {
            Some("system") if i == 0 => system = SystemPrompt::Custom(text),
            Some("user") => turns.push(("user".into(), text, images)),
            Some("assistant") => turns.push(("assistant".into(), text, images)),
            other => {
                return Err(ApiError::invalid(format!(
                    "message {i}: unexpected role {other:?}"
                )))
            }
        }
    }
    let Some((role, question, images)) = turns.pop() else {
        return Err(ApiError::invalid("the conversation has no user message"));
    };
    if role != "user" {
        return Err(ApiError::invalid("the last message must be from the user"));
    }
    if !turns.len().is_multiple_of(2)
        || turns
            .chunks(2)
            .any(|pair| pair[0].0 != "user" || pair[1].0 != "assistant")
    {
        return Err(ApiError::invalid(
            "earlier messages must alternate user, assistant",
        ));
    }
    if turns.iter().any(|turn| !turn.2.is_empty()) {
        return Err(ApiError::invalid(
            "images are supported in the last user message only (send the image again with the new question)",
        ));
    }
    let history = turns
        .chunks(2)
        .map(|pair| (pair[0].1.clone(), pair[1].1.clone()))
        .collect();
    Ok(ChatRequest {
        system,
        history,
        question,
        images,
        options: options(&request),
    })
}

/// Which endpoint's response shapes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

fn usage_json(usage: [usize; 2]) -> Value {
    json!({"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]})
}

impl Api {
    /// A whole response body.
    pub fn completion(
        self,
        id: &str,
        model: &str,
        created: u64,
        text: &str,
        finish: &str,
        usage: [usize; 2],
    ) -> Value {
        let (object, choice) = match self {
            Api::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}),
            ),
            Api::Text => (
                "text_completion",
                json!({"index": 0, "text": text, "finish_reason": finish}),
            ),
        };
        json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice], "usage": usage_json(usage)})
    }

    /// One streamed chunk: a text delta, or the final chunk with its finish reason and usage.
    pub fn chunk(
        self,
        id: &str,
        model: &str,
        created: u64,
        delta: Option<&str>,
        finish: Option<(&str, [usize; 2])>,
    ) -> Value {
        let reason = finish.map(|(reason, _)| reason);
        let (object, choice) = match self {
            Api::Chat => (
                "chat.completion.chunk",
                json!({
                    "index": 0,
                    "delta": delta.map_or(json!({}), |text| json!({"role": "assistant", "content": text})),
                    "finish_reason": reason,
                }),
            ),
            Api::Text => (
                "text_completion",
                json!({"index": 0, "text": delta.unwrap_or_default(), "finish_reason": reason}),
            ),
        };
        let mut body =
            json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
        if let Some((_, usage)) = finish {
            body["usage"] = usage_json(usage);
        }
        body
    }
}
