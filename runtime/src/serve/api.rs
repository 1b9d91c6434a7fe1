//! The HTTP side: routes, TorchServe's JSON and errors (the connections themselves: `connections.rs`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;
use tokio::sync::oneshot;

use super::workers::{Job, Refused};
use super::{App, Outcome};
use crate::Prediction;

/// The most a rejected oversized body is read (and discarded) so the client sees the 413 instead of a
/// reset connection.
const MAX_DRAIN: usize = 64 << 20;

/// An error answer: TorchServe's `{"code", "type", "message"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }
    fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.status.as_u16(), "type": self.kind, "message": self.message });
        let mut response = (self.status, pretty_json(&body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE || self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body was not read: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn pretty_json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let mut response = (status, pretty_json(value)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Class name to probability, most probable first, as TorchServe's image classifier answers. A class
/// without a label is named by its index, as TorchServe does without `index_to_name.json`.
struct Ranked<'a>(&'a [Prediction], bool);

impl Serialize for Ranked<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            if self.1 {
                map.serialize_entry(&p.label, &p.probability)?;
            } else {
                map.serialize_entry(&p.class.to_string(), &p.probability)?;
            }
        }
        map.end()
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/predictions/{model}", post(predict).put(predict))
        .route("/models", get(list_models))
        .route("/models/{model}", get(describe_model))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "Requested resource is not found: see /ping, /predictions/{model}, /models, /models/{model}, /metrics",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                "Requested method is not allowed: predictions take POST or PUT (curl -T IMAGE URL), the rest GET",
            )
        })
        .with_state(app)
}

async fn ping() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "Healthy" }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

async fn list_models(State(app): State<Arc<App>>) -> Response {
    let models: Vec<_> = app
        .models
        .iter()
        .map(|m| json!({ "modelName": m.name, "modelUrl": m.path.file_name().map(|f| f.to_string_lossy()) }))
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

async fn describe_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let Some(m) = app.models.iter().find(|m| m.name == name) else {
        return model_not_found(&name).into_response();
    };
    let manifest = m.classifier.manifest();
    let start = iso8601(app.started);
    let workers: Vec<_> = (0..app.config.workers)
        .map(|i| json!({ "id": (9000 + i).to_string(), "startTime": start, "status": "READY", "gpu": false }))
        .collect();
    let description = json!([{
        "modelName": m.name,
        "modelVersion": "1.0",
        "modelUrl": m.path.file_name().map(|f| f.to_string_lossy()),
        "runtime": format!("perch {} (tract {})", env!("CARGO_PKG_VERSION"), crate::plan::TRACT_VERSION),
        "minWorkers": app.config.workers,
        "maxWorkers": app.config.workers,
        "batchSize": 1,
        "maxBatchDelay": 0,
        "loadedAtStartup": true,
        "workers": workers,
        "perch": {
            "checksum": format!("sha256:{}", m.classifier.checksum()),
            "source": manifest.source.file_name,
            "input": manifest.input,
            "preprocess": manifest.preprocess,
            "labels": manifest.labels,
            "quantization": manifest.quantization.scheme,
            "accuracy": manifest.accuracy,
            "queueCapacity": app.config.queue,
            "maxRequestBytes": app.config.max_body,
        },
    }]);
    json_response(StatusCode::OK, &description)
}

fn model_not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ModelNotFoundException", format!("Model not found: {name} (GET /models lists the models served)"))
}

async fn predict(State(app): State<Arc<App>>, Path(name): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = app.metrics.in_flight();
    let Some(index) = app.models.iter().position(|m| m.name == name) else {
        let e = model_not_found(&name);
        app.metrics.request("", e.status.as_u16(), Some(e.kind), started.elapsed());
        return e.into_response();
    };
    match classify(&app, index, request, started).await {
        Ok(predictions) => {
            app.metrics.request(&name, 200, None, started.elapsed());
            let labelled = !app.models[index].classifier.manifest().labels.is_empty();
            json_response(StatusCode::OK, &Ranked(&predictions, labelled))
        }
        Err(e) => {
            app.metrics.request(&name, e.status.as_u16(), Some(e.kind), started.elapsed());
            e.into_response()
        }
    }
}

async fn classify(app: &App, model: usize, request: Request, started: Instant) -> Result<Vec<Prediction>, ApiError> {
    let deadline = tokio::time::Instant::from_std(started + app.config.timeout);
    let body_deadline = deadline.min(tokio::time::Instant::from_std(started + app.config.body_timeout));
    let body = read_body(app, request, body_deadline).await?;
    let (reply, answer) = oneshot::channel();
    app.pool.submit(Job { model, body, reply }).map_err(|refused| match refused {
        Refused::Full => ApiError::unavailable(format!(
            "all {} workers are busy and {} requests are waiting: retry later, or start the server with more --workers or a longer --queue",
            app.config.workers, app.config.queue
        )),
        Refused::Closed => ApiError::unavailable("the server is shutting down"),
    })?;
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(Outcome::Classified(predictions))) => Ok(predictions),
        Ok(Ok(Outcome::BadImage(why))) => Err(ApiError::bad_request(why)),
        Ok(Ok(Outcome::Failed(why))) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", why)),
        Ok(Err(_)) => Err(ApiError::unavailable("the worker stopped before answering: the server is shutting down")),
        Err(_) => Err(ApiError::unavailable(format!(
            "no answer within {} s: the server is overloaded (see perch_queue_depth in /metrics)",
            app.config.timeout.as_secs_f64()
        ))),
    }
}

async fn read_body(app: &App, request: Request, deadline: tokio::time::Instant) -> Result<Bytes, ApiError> {
    let max = app.config.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            format!("the request body is larger than {max} bytes (perch-run serve --max-body sets the limit)"),
        )
    };
    let headers = request.headers();
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaTypeException",
            "send the image itself as the body (curl -T image.jpg URL, or --data-binary @image.jpg), not a multipart form",
        ));
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects_continue = headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = request.into_body();
    if declared.is_some_and(|n| n > max as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer now. Others are sending:
        // read what they send (up to a bound) so that they see the answer.
        if !expects_continue && declared.is_some_and(|n| n <= MAX_DRAIN as u64) {
            let _ = tokio::time::timeout_at(deadline, drain(&mut body, MAX_DRAIN)).await;
        }
        return Err(too_large());
    }
    let collected = tokio::time::timeout_at(deadline, Limited::new(&mut body, max).collect()).await;
    let bytes = match collected {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                format!(
                    "the request body did not arrive within {} s (perch-run serve --body-timeout sets the limit)",
                    app.config.body_timeout.min(app.config.timeout).as_secs_f64()
                ),
            ));
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let _ = tokio::time::timeout_at(deadline, drain(&mut body, MAX_DRAIN)).await;
            return Err(too_large());
        }
        // The client went away or broke the framing; it will likely never read this.
        Ok(Err(e)) => return Err(ApiError::bad_request(format!("the request body could not be read: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request has no body: send the image as the body (curl -T image.jpg http://HOST:PORT/predictions/MODEL)",
        ));
    }
    Ok(bytes)
}

/// Reads and discards up to `limit` more bytes of a body.
async fn drain(body: &mut Body, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > limit {
            break;
        }
    }
}

/// The whole answer to a connection refused because `max_connections` are open, written by hand: the
/// connection never reaches hyper.
pub(crate) fn too_many_connections() -> Bytes {
    let body = pretty_json(&json!({
        "code": 503,
        "type": "ServiceUnavailableException",
        "message": "too many open connections: retry later (perch-run serve --max-connections sets the limit)",
    }));
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into()
}

/// `2026-11-27T13:44:53Z`, TorchServe's `startTime` form.
fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_secs(1_795_786_493)), "2026-11-27T13:34:53Z");
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_refusal_is_complete_http() {
        let answer = too_many_connections();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        // Content-Length is the last header: the split took its line end.
        assert!(head.split("\r\n").any(|line| line == format!("Content-Length: {}", body.len())), "{head}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(body).unwrap()["code"], 503);
    }

    #[test]
    fn ranked_keeps_order() {
        let p = |class, label: &str, probability| Prediction { class, label: label.into(), probability };
        let ranked = [p(3, "Dress", 0.75), p(0, "T-shirt/top", 0.25)];
        let text = serde_json::to_string(&Ranked(&ranked, true)).unwrap();
        assert_eq!(text, r#"{"Dress":0.75,"T-shirt/top":0.25}"#);
        assert_eq!(serde_json::to_string(&Ranked(&ranked, false)).unwrap(), r#"{"3":0.75,"0":0.25}"#);
    }
}
