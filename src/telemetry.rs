//! Logs, traces and metrics. Logs go to stderr (text or JSON), filtered by
//! `RUST_LOG`. With an OTLP endpoint, spans (one trace per kernel request,
//! with children for actor hops and Hub/CAS calls) and metrics are exported
//! over gRPC from background batches: exporting never blocks or fails a
//! filesystem operation, and an unreachable collector costs a warning.

use std::time::Duration;

use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How often metrics are pushed.
const METRICS_EXPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Deadline of one export; a slow collector delays nothing but its own batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on flushing at shutdown.
const SHUTDOWN_FLUSH_WAIT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint (`http://host:4317`); `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Fraction of traces kept (0..=1).
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Text, otlp_endpoint: None, service_name: "hf-mount".into(), sample_ratio: 1.0 }
    }
}

/// Keeps the exporters alive; flushes (bounded) when shut down or dropped.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    pub fn shutdown(&mut self) {
        let (tracer, meter) = (self.tracer.take(), self.meter.take());
        if tracer.is_none() && meter.is_none() {
            return;
        }
        // Flush on a thread of its own so a stuck collector cannot hold the exit.
        let done = std::thread::spawn(move || {
            if let Some(t) = tracer {
                let _ = t.force_flush();
                let _ = t.shutdown();
            }
            if let Some(m) = meter {
                let _ = m.force_flush();
                let _ = m.shutdown();
            }
        });
        let start = std::time::Instant::now();
        while !done.is_finished() && start.elapsed() < SHUTDOWN_FLUSH_WAIT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,hf_mount=info,fuser=error".into())
}

/// Installs the global subscriber (once per process) and, with an endpoint, the OTLP exporters.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let fmt: Box<dyn Layer<_> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(default_filter()).boxed()
        }
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(default_filter()).boxed()
        }
    };
    let Some(endpoint) = cfg.otlp_endpoint.clone() else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry { tracer: None, meter: None, _runtime: None });
    };
    // The gRPC exporters need a tokio runtime of their own (the mount's may not exist yet).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hf-mount-otlp")
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let resource = Resource::builder().with_service_name(cfg.service_name.clone()).build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio.clamp(0.0, 1.0)))))
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let reader =
        opentelemetry_sdk::metrics::PeriodicReader::builder(metrics).with_interval(METRICS_EXPORT_INTERVAL).build();
    let meter = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    opentelemetry::global::set_meter_provider(meter.clone());
    // Spans of hf-mount itself (debug and up) go to the collector, whatever RUST_LOG says for logs.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("hf-mount"))
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("hf_mount", tracing::Level::DEBUG));
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    Ok(Telemetry { tracer: Some(tracer), meter: Some(meter), _runtime: Some(runtime) })
}
