//! A real OpenTelemetry sender: emits agent workflows the way an
//! instrumented application does, with the OpenTelemetry SDK and the OTLP
//! gRPC exporter.
//!
//! Each workflow is an application root span that carries the origin, task
//! and credential, an `invoke_agent` span, and alternating `chat` and
//! `execute_tool` spans that follow the OpenTelemetry GenAI conventions: the
//! model call's output messages name the tool calls it requested, and the
//! next model call's input carries their results. The last workflow's root
//! lacks the credential scopes, so agent-ledger rejects it.
//!
//! ```text
//! cargo run --example agent_sender -- --endpoint http://127.0.0.1:4317 --workflows 3
//! ```

use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Debug, Parser)]
struct Args {
    /// OTLP gRPC endpoint of agent-ledger.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Valid workflows to send; one rejected workflow is sent after them.
    #[arg(long, default_value_t = 3)]
    workflows: usize,
    /// Tool calls per workflow; each adds an execute_tool and a chat span.
    #[arg(long, default_value_t = 2)]
    tool_calls: usize,
    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,
}

/// Times are laid out explicitly so that every run has the same step order.
struct Clock {
    next: SystemTime,
}

impl Clock {
    fn advance(&mut self, millis: u64) -> SystemTime {
        self.next += Duration::from_millis(millis);
        self.next
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&args.endpoint)
        .with_timeout(Duration::from_secs(10));
    if args.gzip {
        exporter = exporter.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(
            Resource::builder()
                .with_service_name("support-agent")
                .build(),
        )
        .build();
    let tracer = provider.tracer("agent-ledger-example");

    let started = Instant::now();
    let mut spans = 0;
    for index in 0..args.workflows {
        let (trace_id, count) = send_workflow(&tracer, index, args.tool_calls, true);
        spans += count;
        println!("valid workflow trace_id={trace_id}");
    }
    let (trace_id, count) = send_workflow(&tracer, args.workflows, args.tool_calls, false);
    spans += count;
    println!("rejected workflow trace_id={trace_id}");

    let flushed = tokio::task::spawn_blocking(move || {
        let result = provider.force_flush();
        let _ = provider.shutdown();
        result
    })
    .await?;
    flushed?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "sent spans={spans} workflows={} seconds={seconds:.3} spans_per_s={:.0}",
        args.workflows + 1,
        spans as f64 / seconds
    );
    Ok(())
}

/// Emits one workflow; returns its trace id and span count.
fn send_workflow(
    tracer: &impl Tracer<Span = impl Span + Send + Sync + 'static>,
    index: usize,
    tool_calls: usize,
    valid: bool,
) -> (String, usize) {
    let mut clock = Clock {
        next: SystemTime::now() - Duration::from_secs(30),
    };
    let root_start = clock.advance(0);
    let root = tracer
        .span_builder("handle support ticket")
        .with_kind(SpanKind::Server)
        .with_start_time(root_start)
        .with_attributes(root_attributes(index, valid))
        .start(tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let root_context = Context::current_with_span(root);

    let agent_start = clock.advance(2);
    let mut agent = tracer
        .span_builder("invoke_agent support-bot")
        .with_kind(SpanKind::Internal)
        .with_start_time(agent_start)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", "support-bot"),
            KeyValue::new("gen_ai.agent.id", "agent-7f3a"),
            KeyValue::new("gen_ai.agent.version", "1.4.2"),
        ])
        .start_with_context(tracer, &root_context);
    agent.set_attribute(KeyValue::new("gen_ai.provider.name", "openai"));
    let agent_context = root_context.with_span(agent);

    let mut spans = 2;
    let mut input = vec![
        serde_json::json!({"role": "user", "parts": [{"type": "text", "content": "Where is order 1042?"}]}),
    ];
    for call in 0..=tool_calls {
        let call_id = format!("call_{index}_{call}");
        let requests_tool = call < tool_calls;
        chat(
            tracer,
            &agent_context,
            &mut clock,
            &input,
            requests_tool.then_some(call_id.as_str()),
        );
        spans += 1;
        if requests_tool {
            tool(tracer, &agent_context, &mut clock, &call_id);
            spans += 1;
            input.push(serde_json::json!({"role": "assistant", "parts": [{"type": "tool_call", "id": call_id, "name": "lookup_order", "arguments": {"order": 1042}}]}));
            input.push(serde_json::json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id, "response": {"status": "shipped"}}]}));
        }
    }
    let end = clock.advance(3);
    agent_context.span().end_with_timestamp(end);
    root_context.span().end_with_timestamp(clock.advance(1));
    (trace_id, spans)
}

fn root_attributes(index: usize, valid: bool) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("agent_ledger.origin.type", "user_request"),
        KeyValue::new("agent_ledger.origin.source", "support-portal"),
        KeyValue::new(
            "agent_ledger.origin.authorized_by",
            format!("user-{}", 100 + index),
        ),
        KeyValue::new(
            "agent_ledger.task.spec",
            "Answer the customer's question about the status of order 1042.",
        ),
        KeyValue::new("agent_ledger.credential.id", "cred-support-bot-2026-12"),
        KeyValue::new("agent_ledger.credential.issuer", "vault.internal"),
        KeyValue::new("agent_ledger.credential.issued_at", "2026-12-01T00:00:00Z"),
        KeyValue::new("agent_ledger.credential.expires_at", "2027-01-01T00:00:00Z"),
    ];
    if valid {
        let scopes: Vec<StringValue> = vec!["orders:read".into(), "tickets:write".into()];
        attributes.push(KeyValue::new(
            "agent_ledger.credential.scopes",
            Value::Array(Array::String(scopes)),
        ));
    }
    attributes
}

fn chat(
    tracer: &impl Tracer<Span = impl Span + Send + Sync + 'static>,
    parent: &Context,
    clock: &mut Clock,
    input: &[serde_json::Value],
    tool_call: Option<&str>,
) {
    let start = clock.advance(5);
    let output = match tool_call {
        Some(call_id) => {
            serde_json::json!([{"role": "assistant", "parts": [{"type": "tool_call", "id": call_id, "name": "lookup_order", "arguments": {"order": 1042}}], "finish_reason": "tool_call"}])
        }
        None => {
            serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "Order 1042 has shipped."}], "finish_reason": "stop"}])
        }
    };
    let mut span = tracer
        .span_builder("chat gpt-4o")
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
            KeyValue::new("gen_ai.usage.input_tokens", 412),
            KeyValue::new("gen_ai.usage.output_tokens", 36),
            KeyValue::new(
                "gen_ai.input.messages",
                serde_json::Value::from(input.to_vec()).to_string(),
            ),
            KeyValue::new("gen_ai.output.messages", output.to_string()),
        ])
        .start_with_context(tracer, parent);
    span.end_with_timestamp(clock.advance(120));
}

fn tool(
    tracer: &impl Tracer<Span = impl Span + Send + Sync + 'static>,
    parent: &Context,
    clock: &mut Clock,
    call_id: &str,
) {
    let start = clock.advance(2);
    let mut span = tracer
        .span_builder("execute_tool lookup_order")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", "lookup_order"),
            KeyValue::new("gen_ai.tool.call.id", call_id.to_owned()),
            KeyValue::new("gen_ai.tool.call.arguments", r#"{"order": 1042}"#),
            KeyValue::new("gen_ai.tool.call.result", r#"{"status": "shipped"}"#),
        ])
        .start_with_context(tracer, parent);
    span.end_with_timestamp(clock.advance(40));
}
