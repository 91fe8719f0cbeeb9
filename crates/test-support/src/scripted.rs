//! An HTTP server that answers from a script and counts calls.
//!
//! Each path has a queue of replies; the last one repeats once the queue is
//! down to it. A reply can be delayed (to trip a step timeout, or to keep a
//! call in flight while a test kills opsgate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Default)]
struct Script {
    replies: HashMap<String, Vec<Reply>>,
    /// Per "METHOD path": when each call arrived.
    calls: HashMap<String, Vec<std::time::Instant>>,
    /// Every call's query string, per "METHOD path", in arrival order.
    queries: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Scripted {
    script: Arc<Mutex<Script>>,
}

impl Scripted {
    /// Replies for `METHOD path`, in order; the last one repeats.
    pub fn on(&self, method_and_path: &str, replies: Vec<Reply>) -> &Self {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        self.script
            .lock()
            .expect("script lock")
            .replies
            .insert(method_and_path.to_owned(), replies);
        self
    }

    pub fn calls(&self, method_and_path: &str) -> usize {
        self.script
            .lock()
            .expect("script lock")
            .calls
            .get(method_and_path)
            .map_or(0, Vec::len)
    }

    /// The query string of each call of `METHOD path`, in arrival order.
    pub fn queries(&self, method_and_path: &str) -> Vec<String> {
        self.script
            .lock()
            .expect("script lock")
            .queries
            .get(method_and_path)
            .cloned()
            .unwrap_or_default()
    }

    /// When each call of `METHOD path` arrived.
    pub fn call_times(&self, method_and_path: &str) -> Vec<std::time::Instant> {
        self.script
            .lock()
            .expect("script lock")
            .calls
            .get(method_and_path)
            .cloned()
            .unwrap_or_default()
    }

    pub async fn start(&self) -> std::io::Result<crate::Running> {
        let scripted = self.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let scripted = scripted.clone();
            async move { scripted.answer(request).await }
        });
        crate::serve(app).await
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let key = format!("{} {}", request.method(), request.uri().path());
        let reply = {
            let mut script = self.script.lock().expect("script lock");
            script
                .calls
                .entry(key.clone())
                .or_default()
                .push(std::time::Instant::now());
            let query = request.uri().query().unwrap_or_default().to_owned();
            script.queries.entry(key.clone()).or_default().push(query);
            match script.replies.get_mut(&key) {
                Some(queue) if queue.len() > 1 => Some(queue.remove(0)),
                Some(queue) => queue.first().cloned(),
                None => None,
            }
        };
        let Some(reply) = reply else {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Body::from(format!("no script for {key}")))
                .expect("a static response builds");
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut response = Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(name, value);
        }
        response
            .body(Body::from(reply.body))
            .expect("scripted replies are valid")
    }
}
