//! `/metrics`: request counts and latencies in the Prometheus text format, named as upstream's
//! (`apiserver_request_total`, `apiserver_request_duration_seconds`).

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    resource: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<VerbLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource.",
            durations.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            durations,
        }
    }

    pub fn observe(&self, method: &str, segs: &[&str], code: u16, took: Duration) {
        let resource = resource_of(segs);
        self.requests
            .get_or_create(&RequestLabels {
                verb: method.to_string(),
                resource: resource.clone(),
                code: code.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&VerbLabels {
                verb: method.to_string(),
                resource,
            })
            .observe(took.as_secs_f64());
    }

    pub fn render(&self) -> Response {
        let mut s = String::new();
        let reg = self.registry.lock().expect("metrics lock");
        let _ = prometheus_client::encoding::text::encode(&mut s, &reg);
        let mut r = Response::new(Body::from(s));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

/// The resource a path is about (`pods`), or the path's first segment for other endpoints.
fn resource_of(segs: &[&str]) -> String {
    let rest = match segs {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        [first, ..] => return first.to_string(),
        [] => return String::new(),
    };
    match rest {
        ["namespaces", _, r, ..] => r.to_string(),
        [r, ..] => r.to_string(),
        [] => "discovery".into(),
    }
}
