//! `nvlm serve`: an OpenAI-compatible HTTP server (chat completions with images, streaming or not).
//!
//! Requests are parsed and their images tiled on tokio's blocking pool, then queued (bounded: 429 when full) for the
//! generation worker, which runs one request at a time and streams text back; a client that disconnects cancels its
//! request at the next token.

mod batch;
mod image_cache;
mod metrics;
mod openai;
mod text_stream;
mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use nvlm_kernels::SamplingParams;
use nvlm_qwen2::SamplerConfig;
use nvlm_tensor::Device;
use nvlm_tiling::prompt::with_image_placeholder;
use nvlm_tiling::tiles_from_bytes;
use serde_json::json;
use tokio::sync::mpsc::unbounded_channel;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::engine::Engine;
use crate::sampling_args::{ModelArgs, DEMO_NOTICE};
use metrics::Metrics;
use openai::{parse_chat, parse_text, Api, ApiError, Options};
use worker::{Event, Job};

/// Arguments of `nvlm serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Requests that may wait for the model; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Require `Authorization: Bearer KEY` on API requests.
    #[arg(long)]
    api_key: Option<String>,
    /// Accept local file paths (and file:// URLs) as image URLs; without it only data: URLs are read.
    #[arg(long)]
    allow_local_images: bool,
    /// Most requests decoded together (continuous batching; 1 runs requests one at a time).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// KV cache capacity in tokens, shared by the running requests (a request waits until its prompt plus
    /// max_tokens fit).
    #[arg(long, default_value_t = 65536)]
    kv_cache_tokens: usize,
    /// Most prompt tokens prefilled per batch step (long prompts go in chunks, beside the running decodes).
    #[arg(long, default_value_t = 512)]
    prefill_chunk: usize,
    /// Megabytes of image embeddings kept for images sent again (0 disables the cache).
    #[arg(long, default_value_t = 1024)]
    image_cache_mb: usize,
    /// The model name clients pass and `/v1/models` lists.
    #[arg(long, default_value = "nvlm-d")]
    served_model_name: String,
}

struct AppState {
    engine: Arc<Engine>,
    /// The batch scheduler's KV capacity in positions (`None` when requests run one at a time).
    kv_positions: Option<usize>,
    metrics: Arc<Metrics>,
    queue: SyncSender<Job>,
    name: String,
    api_key: Option<String>,
    allow_local_images: bool,
    defaults: ModelArgs,
}

fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error.body())).into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the server until Ctrl-C.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let device = Device::parse(&args.model.device).context("choosing the device")?;
    crate::launched::refuse("serve")?;
    let engine = Arc::new(Engine::load(&args.model.source(), device)?);
    if engine.demo {
        eprintln!("{DEMO_NOTICE}");
    }
    let metrics = Arc::new(Metrics::default());
    let queue = worker::spawn(
        engine.clone(),
        args.max_queue,
        metrics.clone(),
        args.image_cache_mb << 20,
        batch::BatchLimits {
            max_batch: args.max_batch,
            kv_positions: args.kv_cache_tokens,
            prefill_chunk: args.prefill_chunk,
        },
    )
    .context("starting the model worker")?;
    let batching = engine.language_model().is_some() && args.max_batch > 1;
    let state = Arc::new(AppState {
        kv_positions: batching.then_some(args.kv_cache_tokens / 16 * 16),
        engine,
        metrics,
        queue,
        name: args.served_model_name.clone(),
        api_key: args.api_key.clone(),
        allow_local_images: args.allow_local_images,
        defaults: args.model.clone(),
    });
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move { state.metrics.render() }),
        )
        .with_state(state.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (is the port in use? pass --port)",
                    args.host, args.port
                )
            })?;
        let address: SocketAddr = listener.local_addr()?;
        eprintln!(
            "nvlm serve: listening on http://{address} (model \"{}\")",
            state.name
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")
    })
}

fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: 401,
            message: "missing or wrong API key (send Authorization: Bearer KEY)".into(),
            kind: "authentication_error",
        })
    }
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorized(&state, &headers) {
        return error_response(error);
    }
    Json(json!({"object": "list", "data": [{"id": state.name, "object": "model", "created": 0, "owned_by": "nvlm-rs"}]}))
        .into_response()
}

/// A request made ready for the worker: prompt ids, tiles, settings.
struct Prepared {
    api: Api,
    ids: Vec<u32>,
    images: Vec<Vec<u8>>,
    sampler: SamplerConfig,
    max_tokens: usize,
    stop: Vec<String>,
    stream: bool,
}

/// Checks the model name and the context, and fixes the sampler: what both endpoints share.
fn ready(
    state: &AppState,
    api: Api,
    ids: Vec<u32>,
    images: Vec<Vec<u8>>,
    options: Options,
) -> Result<Prepared, ApiError> {
    if let Some(model) = options.model.as_deref().filter(|m| *m != state.name) {
        return Err(ApiError {
            status: 404,
            message: format!(
                "the model `{model}` does not exist; this server serves `{}`",
                state.name
            ),
            kind: "invalid_request_error",
        });
    }
    let max_tokens = options.max_tokens.unwrap_or(state.defaults.max_new_tokens);
    let context = state.engine.context_length();
    if ids.len() + max_tokens > context {
        return Err(ApiError::invalid(format!(
            "the prompt has {} tokens and asks for {max_tokens} more: over the context of {context}",
            ids.len()
        )));
    }
    if let Some(capacity) = state
        .kv_positions
        .filter(|&c| (ids.len() + max_tokens).div_ceil(16) * 16 > c)
    {
        return Err(ApiError::invalid(format!(
            "the prompt has {} tokens and asks for {max_tokens} more: over the server's KV cache of {capacity} \
             positions (start it with a larger --kv-cache-tokens, or ask for fewer tokens)",
            ids.len()
        )));
    }
    Ok(Prepared {
        api,
        ids,
        images,
        sampler: SamplerConfig {
            params: SamplingParams {
                temperature: options.temperature,
                top_k: state.defaults.top_k,
                top_p: options.top_p,
                seed: options.seed,
            },
            repetition_penalty: state.defaults.repetition_penalty,
        },
        max_tokens,
        stop: options.stop,
        stream: options.stream,
    })
}

fn encode(state: &AppState, text: &str) -> Result<Vec<u32>, ApiError> {
    state
        .engine
        .tokenizer
        .encode(text)
        .map_err(|e| ApiError::invalid(format!("tokenizing the prompt: {e}")))
}

/// A chat request: tiles its images and builds the NVLM-D prompt (CPU work, run off the async threads).
fn prepare_chat(state: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let request = parse_chat(body, state.allow_local_images)?;
    let mut tiling = state.engine.tiling;
    if let Some(max_tiles) = request.options.max_tiles {
        tiling.max_tiles = max_tiles.clamp(1, tiling.max_tiles.max(1));
    }
    let (mut images, mut counts) = (Vec::new(), Vec::new());
    for (i, image) in request.images.iter().enumerate() {
        let image_tiles = tiles_from_bytes(image, &tiling)
            .map_err(|e| ApiError::invalid(format!("image {}: {e}", i + 1)))?;
        counts.push(image_tiles.len());
        images.push(image_tiles.pixels);
    }
    let question = with_image_placeholder(&request.question, counts.len(), !request.history.is_empty());
    let ids = encode(
        state,
        &state
            .engine
            .chat_prompt(&request.system, &request.history, &question, &counts),
    )?;
    ready(state, Api::Chat, ids, images, request.options)
}

/// A plain completion request: the prompt text as is.
fn prepare_text(state: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let (prompt, options) = parse_text(body)?;
    if prompt.is_empty() {
        return Err(ApiError::invalid("`prompt` is empty"));
    }
    let ids = encode(state, &prompt)?;
    ready(state, Api::Text, ids, Vec::new(), options)
}

async fn chat_completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = complete(state.clone(), headers, body, prepare_chat).await;
    state
        .metrics
        .request("/v1/chat/completions", response.status().as_u16());
    response
}

async fn completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = complete(state.clone(), headers, body, prepare_text).await;
    state
        .metrics
        .request("/v1/completions", response.status().as_u16());
    response
}

fn server_error(message: impl Into<String>) -> Response {
    error_response(ApiError {
        status: 500,
        message: message.into(),
        kind: "server_error",
    })
}

/// Authorises, prepares on the blocking pool, queues for the worker, and answers whole or streamed.
async fn complete(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    prepare: fn(&AppState, &[u8]) -> Result<Prepared, ApiError>,
) -> Response {
    if let Err(error) = authorized(&state, &headers) {
        return error_response(error);
    }
    let prepared = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || prepare(&state, &body)).await
    };
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(error)) => return error_response(error),
        Err(_) => return server_error("request preparation failed"),
    };
    let (events, mut replies) = unbounded_channel();
    let job = Job {
        ids: prepared.ids,
        images: prepared.images,
        sampler: prepared.sampler,
        max_tokens: prepared.max_tokens,
        stop: prepared.stop,
        events,
        queued: Instant::now(),
    };
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    match state.queue.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            let mut response = error_response(ApiError {
                status: 429,
                message: "the request queue is full; retry shortly".into(),
                kind: "rate_limit_error",
            });
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
        Err(TrySendError::Disconnected(_)) => {
            state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return error_response(ApiError {
                status: 503,
                message: "the model worker stopped".into(),
                kind: "server_error",
            });
        }
    }
    let api = prepared.api;
    let id = format!(
        "{}-{:x}",
        if api == Api::Chat { "chatcmpl" } else { "cmpl" },
        request_id()
    );
    let created = now();
    if prepared.stream {
        let (name, stream_id) = (state.name.clone(), id.clone());
        let events = UnboundedReceiverStream::new(replies).map(move |event| {
            let body = match event {
                Event::Delta(text) => api.chunk(&stream_id, &name, created, Some(&text), None),
                Event::Done { finish, usage } => {
                    api.chunk(&stream_id, &name, created, None, Some((finish, usage)))
                }
                Event::Failed(message) => ApiError {
                    status: 500,
                    message,
                    kind: "server_error",
                }
                .body(),
            };
            Ok::<_, Infallible>(SseEvent::default().data(body.to_string()))
        });
        let done = tokio_stream::once(Ok::<_, Infallible>(SseEvent::default().data("[DONE]")));
        return Sse::new(events.chain(done)).into_response();
    }
    let mut text = String::new();
    while let Some(event) = replies.recv().await {
        match event {
            Event::Delta(delta) => text.push_str(&delta),
            Event::Done { finish, usage } => {
                return Json(api.completion(&id, &state.name, created, &text, finish, usage)).into_response()
            }
            Event::Failed(message) => return server_error(message),
        }
    }
    server_error("the request ended without an answer")
}

/// A request id: time and a process-wide counter, unique within a run.
fn request_id() -> u128 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (u128::from(now()) << 64) | u128::from(n)
}
