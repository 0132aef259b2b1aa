//! Traces (`OTEL_*`, the OpenTelemetry SDK's standard variables): off unless an OTLP endpoint is
//! set.

use super::reader::Reader;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    Protobuf,
    /// `http/json`.
    Json,
}

/// Which traces are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSampling {
    /// Follow an incoming `traceparent`'s sampled flag (`parentbased_*`).
    pub parent_based: bool,
    /// The share of new traces kept (0–1); failed requests are kept regardless.
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP traces URL (`…/v1/traces`); `None`: tracing is off, at no cost.
    pub endpoint: Option<url::Url>,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` (`key=value,…`).
    pub resource_attributes: Vec<(String, String)>,
    pub sampling: TraceSampling,
    /// Resolvers slower than this get a span of their own (`TRACE_SLOW_RESOLVER`).
    pub slow_resolver: std::time::Duration,
}

impl TelemetrySettings {
    pub fn read(r: &mut Reader<'_>) -> Self {
        let disabled = r.boolean("OTEL_SDK_DISABLED", false);
        let base = r.optional("OTEL_EXPORTER_OTLP_ENDPOINT");
        let traces = r.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        // The signal-specific URL is used as is; the base one gets `/v1/traces` (the spec).
        let endpoint = match (traces, base) {
            (Some(url), _) => parse_url(r, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url),
            (None, Some(url)) => {
                let full = format!("{}/v1/traces", url.trim_end_matches('/'));
                parse_url(r, "OTEL_EXPORTER_OTLP_ENDPOINT", &full)
            }
            (None, None) => None,
        }
        .filter(|_| !disabled);
        let protocol = match r
            .string("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .as_str()
        {
            "http/json" => OtlpProtocol::Json,
            "http/protobuf" => OtlpProtocol::Protobuf,
            other => {
                r.fail(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!("{other:?}: use http/protobuf or http/json (gRPC is not built in)"),
                );
                OtlpProtocol::Protobuf
            }
        };
        let service_name = r.string("OTEL_SERVICE_NAME", "multipult");
        let resource_attributes = r
            .string("OTEL_RESOURCE_ATTRIBUTES", "")
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.trim().to_owned(), value.trim().to_owned()))
            })
            .filter(|(key, _)| !key.is_empty())
            .collect();
        let sampler = r.string("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        let ratio = match r.optional("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                _ => {
                    r.fail("OTEL_TRACES_SAMPLER_ARG", "must be a ratio from 0 to 1");
                    1.0
                }
            },
        };
        let sampling = match sampler.as_str() {
            "always_on" => TraceSampling {
                parent_based: false,
                ratio: 1.0,
            },
            "always_off" => TraceSampling {
                parent_based: false,
                ratio: 0.0,
            },
            "traceidratio" => TraceSampling {
                parent_based: false,
                ratio,
            },
            "parentbased_always_on" => TraceSampling {
                parent_based: true,
                ratio: 1.0,
            },
            "parentbased_always_off" => TraceSampling {
                parent_based: true,
                ratio: 0.0,
            },
            "parentbased_traceidratio" => TraceSampling {
                parent_based: true,
                ratio,
            },
            other => {
                r.fail(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "{other:?}: use always_on, always_off, traceidratio or their parentbased_ forms"
                    ),
                );
                TraceSampling {
                    parent_based: true,
                    ratio,
                }
            }
        };
        Self {
            endpoint,
            protocol,
            service_name,
            resource_attributes,
            sampling,
            slow_resolver: r.duration("TRACE_SLOW_RESOLVER", std::time::Duration::from_millis(100)),
        }
    }
}

fn parse_url(r: &mut Reader<'_>, name: &str, text: &str) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        _ => {
            r.fail(name, "must be an http(s) URL such as http://localhost:4318");
            None
        }
    }
}
