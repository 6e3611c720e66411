//! Row types of the ClickHouse tables and their construction from sealed
//! workflows and quarantined spans.
//!
//! `LedgerInstanceId` and `LedgerSeq` on verdict, quarantine and credential
//! rows name the ledger entry that covers the row's batch; the sink fills
//! them when it writes the batch.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::columns::{Events, IdText, LinkColumns, Links, Pairs, SpanColumns};
use super::encode::EncodedSpan;
use crate::assembler::{Sealed, Storage};
use crate::link::StepLinks;
use crate::preset::StepKind;
use crate::quarantine::RejectedSpan;
use crate::seal::encoding::Header;
use crate::span::{Str, span_kind_name, status_code_name};
use crate::validate::{Credential, Status, StepCheck};
use crate::workflow::Step;

/// A `Map(String, String)` column of span and quarantine rows, whose texts
/// share the span's buffers.
type TextMap = Vec<(Str, Str)>;

/// A row of `agent_spans`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpanRow {
    pub timestamp: i64,
    pub trace_id: Str,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: Str,
    pub span_name: Str,
    pub span_kind: Str,
    pub service_name: Str,
    pub resource_attributes: TextMap,
    pub scope_name: Str,
    pub scope_version: Str,
    pub span_attributes: TextMap,
    pub duration: u64,
    pub status_code: Str,
    pub status_message: Str,
    #[serde(rename = "Events.Timestamp")]
    pub events_timestamp: Vec<i64>,
    #[serde(rename = "Events.Name")]
    pub events_name: Vec<Str>,
    #[serde(rename = "Events.Attributes")]
    pub events_attributes: Vec<TextMap>,
    #[serde(rename = "Links.TraceId")]
    pub links_trace_id: Vec<String>,
    #[serde(rename = "Links.SpanId")]
    pub links_span_id: Vec<String>,
    #[serde(rename = "Links.TraceState")]
    pub links_trace_state: Vec<Str>,
    #[serde(rename = "Links.Attributes")]
    pub links_attributes: Vec<TextMap>,
    pub workflow_root_span_id: Str,
    pub step_index: u32,
    pub step_kind: Str,
    pub agent_name: Str,
    pub agent_id: Str,
    pub agent_version: Str,
    pub model_name: Str,
    pub model_version: Str,
    pub provider: Str,
    pub origin_type: Str,
    pub origin_source: Str,
    pub task_spec: Str,
    pub authorized_by: Str,
    pub credential_id: String,
    pub credential_issuer: String,
    pub credential_scopes: Vec<String>,
    pub credential_issued_at: Option<i64>,
    pub credential_expires_at: Option<i64>,
    pub workflow_credential_id: Str,
    pub tool_name: Str,
    pub tool_call_id: Str,
    pub violations: Vec<String>,
    pub redacted_count: u32,
    /// One entry per redacted value, naming the kind of secret.
    pub redacted_kinds: Vec<String>,
    /// 1 when the step's tool is one the policy marks as a write action.
    pub write_action: u8,
    pub sender: Str,
    pub received_at: i64,
    pub late: u8,
    pub segment: u32,
    pub prev_hash: String,
    pub row_hash: String,
}

/// A row of `agent_workflows`: one verdict revision.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WorkflowRow {
    pub workflow_id: String,
    pub root_span_id: String,
    pub revision: u32,
    pub segment: u32,
    pub status: String,
    pub reasons: Vec<String>,
    pub timestamp: i64,
    pub duration: u64,
    pub origin_type: String,
    pub origin_source: String,
    pub task_spec: String,
    pub authorized_by: String,
    pub origin_received_at: i64,
    pub agent_name: String,
    pub agent_id: String,
    pub agent_version: String,
    pub agent_names: Vec<String>,
    pub model_names: Vec<String>,
    pub model_versions: Vec<String>,
    pub provider: String,
    pub credential_id: String,
    pub credential_issuer: String,
    pub credential_scopes: Vec<String>,
    pub credential_issued_at: Option<i64>,
    pub credential_expires_at: Option<i64>,
    pub step_count: u32,
    pub tools_used: Vec<String>,
    pub violation_count: u32,
    pub row_count: u32,
    pub header_hash: String,
    pub chain_head: String,
    pub sender: String,
    pub received_at: i64,
    pub written_at: i64,
    pub ledger_instance_id: String,
    pub ledger_seq: u64,
}

/// A row of `agent_rejected_spans`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RejectedRow {
    pub timestamp: i64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub span_name: String,
    pub span_kind: String,
    pub service_name: String,
    pub resource_attributes: TextMap,
    pub scope_name: String,
    pub scope_version: String,
    pub span_attributes: TextMap,
    pub duration: u64,
    pub status_code: String,
    pub status_message: String,
    pub reason: String,
    pub detail: String,
    pub sender: String,
    pub received_at: i64,
    /// Base64 of the protobuf `ResourceSpans` holding only this span.
    pub raw_span: String,
    pub ledger_instance_id: String,
    pub ledger_seq: u64,
}

/// A row of `agent_credentials`: one credential issuance record.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialRow {
    pub credential_id: String,
    pub workflow_id: String,
    /// The issuance span.
    pub span_id: String,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// `service.name` of the service that emitted the issuance span.
    pub issuer_service: String,
    pub sender: String,
    pub received_at: i64,
    pub ledger_instance_id: String,
    pub ledger_seq: u64,
}

/// A row of `agent_ledger_entries`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LedgerEntryRow {
    pub instance_id: String,
    pub seq: u64,
    /// `segment` for a sealed workflow segment, else the table whose batch
    /// the entry covers.
    pub kind: String,
    pub workflow_id: String,
    pub root_span_id: String,
    pub segment: u32,
    /// The chain head after the segment, or the batch hash.
    pub chain_head: String,
    /// Rows of the chain so far, or rows of the batch.
    pub row_count: u32,
    pub prev_entry_hash: String,
    pub entry_hash: String,
    pub received_at: i64,
}

/// A row of `agent_ledger_checkpoints`.
#[derive(Clone, Debug, PartialEq, Row, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckpointRow {
    pub instance_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_entry_hash: String,
    pub signed_at: i64,
    /// First 16 hex digits of the SHA-256 of the public key's DER; empty
    /// when unsigned.
    pub key_id: String,
    /// Base64 of the 64-byte Ed25519 signature; empty when unsigned.
    pub signature: String,
}

impl RejectedRow {
    /// The row of a quarantined span.
    pub fn new(span: RejectedSpan) -> Self {
        RejectedRow {
            timestamp: span.timestamp_unix_nano,
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            trace_state: span.trace_state,
            span_name: span.span_name,
            span_kind: span.span_kind,
            service_name: span.service_name,
            resource_attributes: span.resource_attributes,
            scope_name: span.scope_name,
            scope_version: span.scope_version,
            span_attributes: span.span_attributes,
            duration: span.duration_nanos,
            status_code: span.status_code,
            status_message: span.status_message,
            reason: span
                .reason
                .map(|reason| reason.code().to_owned())
                .unwrap_or_default(),
            detail: span.detail,
            sender: span.sender,
            received_at: span.received_at_unix_nano,
            raw_span: base64::engine::general_purpose::STANDARD.encode(&span.raw_span),
            ledger_instance_id: String::new(),
            ledger_seq: 0,
        }
    }

    /// The span as received, decoded from `RawSpan`.
    pub fn raw_bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.raw_span)
            .ok()
    }
}

/// The rows one sealed workflow produces.
#[derive(Default)]
pub struct WorkflowRows {
    pub spans: Vec<EncodedSpan>,
    pub rejected: Vec<RejectedRow>,
    pub workflow: Option<WorkflowRow>,
    pub credentials: Vec<CredentialRow>,
}

/// Builds the rows of a sealed workflow: its sealed span rows (or
/// quarantine rows), the verdict row and the credential issuance records.
pub fn workflow_rows(mut sealed: Sealed, written_at: i64) -> WorkflowRows {
    let mut rows = WorkflowRows::default();
    match &sealed.storage {
        Storage::Spans => {
            debug_assert!(
                sealed.chain.is_some(),
                "span rows are built and chained by the sealer"
            );
            // Rows of replayed spans that ClickHouse already holds are
            // chained again, so that the head matches, but not written.
            let span_rows = std::mem::take(&mut sealed.span_rows);
            rows.spans = span_rows
                .into_iter()
                .zip(&sealed.workflow.steps)
                .filter(|(_, step)| !step.span.already_stored)
                .map(|(row, _)| row)
                .collect();
        }
        Storage::Quarantine(reason, detail) => {
            for step in sealed
                .workflow
                .steps
                .iter()
                .filter(|step| !step.span.already_stored)
            {
                let rejected = RejectedSpan::from_span(&step.span, *reason, detail.clone());
                rows.rejected.push(RejectedRow::new(rejected));
            }
        }
    }
    if sealed.verdict.status != Status::Incomplete {
        rows.credentials = credential_rows(&sealed);
    }
    rows.workflow = Some(workflow_row(&sealed, written_at));
    rows
}

/// Builds the `agent_spans` rows of a workflow segment as owned rows, in
/// step order, not yet chained.
pub fn span_rows(sealed: &Sealed) -> Vec<SpanRow> {
    let segment = SegmentColumns::of(sealed);
    segment
        .rows(sealed)
        .iter()
        .map(SpanColumns::to_row)
        .collect()
}

/// Values the span rows of a workflow segment borrow besides the sealed
/// workflow: the ids every row repeats, as hex built once per segment, and
/// the effective credentials of steps that were not checked.
pub struct SegmentColumns {
    trace_id: String,
    root_span_id: String,
    /// Checks of the steps after the last checked one, each with only the
    /// step's effective credential.
    unchecked: Vec<StepCheck>,
}

impl SegmentColumns {
    /// Builds the shared values of `sealed`'s rows.
    pub fn of(sealed: &Sealed) -> Self {
        let summary = &sealed.verdict.summary;
        let unchecked = sealed
            .workflow
            .steps
            .iter()
            .skip(sealed.checks.len())
            .map(|step| StepCheck {
                credential: Arc::new(
                    Credential::of(&step.span)
                        .filter(|_| step.kind != StepKind::Root)
                        .unwrap_or_else(|| summary.credential.clone()),
                ),
                ..StepCheck::default()
            })
            .collect();
        SegmentColumns {
            trace_id: sealed.workflow.trace_id.to_hex(),
            root_span_id: sealed.workflow.root_span_id.to_hex(),
            unchecked,
        }
    }

    /// Borrows the columns of each step's row, in step order, not yet
    /// chained.
    pub fn rows<'a>(&'a self, sealed: &'a Sealed) -> Vec<SpanColumns<'a>> {
        let checks = sealed.checks.iter().chain(&self.unchecked);
        sealed
            .workflow
            .steps
            .iter()
            .zip(&sealed.links)
            .zip(checks)
            .map(|((step, links), check)| span_columns(sealed, self, step, links, check))
            .collect()
    }
}

/// `HeaderHash` of the workflow, from the header columns its verdict row
/// stores. `workflow_row` checks in debug builds that it matches the hash
/// of the row's own columns.
pub fn header_hash(sealed: &Sealed) -> String {
    let summary = &sealed.verdict.summary;
    let credential = &summary.credential;
    let workflow_id = sealed.workflow.trace_id.to_hex();
    let root_span_id = sealed.workflow.root_span_id.to_hex();
    Header {
        workflow_id: &workflow_id,
        root_span_id: &root_span_id,
        origin_type: &summary.origin_type,
        origin_source: &summary.origin_source,
        task_spec: &summary.task_spec,
        authorized_by: &summary.authorized_by,
        origin_received_at: summary.received_at_unix_nano,
        agent_name: &summary.agent_name,
        agent_id: &summary.agent_id,
        agent_version: &summary.agent_version,
        credential_id: &credential.id,
        credential_issuer: &credential.issuer,
        credential_scopes: &credential.scopes,
        credential_issued_at: credential.issued_at_unix_nano,
        credential_expires_at: credential.expires_at_unix_nano,
    }
    .hash()
}

fn span_columns<'a>(
    sealed: &'a Sealed,
    segment: &'a SegmentColumns,
    step: &'a Step,
    links: &'a StepLinks,
    check: &'a StepCheck,
) -> SpanColumns<'a> {
    let span = &step.span;
    let summary = &sealed.verdict.summary;
    let workflow = &sealed.workflow;
    let credential = &check.credential;
    let redacted_kinds = crate::redact::redacted_kinds(span);
    let mut all_links: Vec<LinkColumns<'a>> =
        Vec::with_capacity(span.links.len() + links.causes.len());
    all_links.extend(span.links.iter().map(LinkColumns::of));
    all_links.extend(links.causes.iter().map(|cause| LinkColumns {
        trace_id: &segment.trace_id,
        span_id: IdText::of(Some(cause.span_id)),
        trace_state: "",
        attributes: Pairs::CausedBy(cause.basis.name()),
    }));
    let agent_name = step
        .agent_span
        .and_then(|agent| {
            workflow
                .steps
                .iter()
                .find(|other| other.span.span_id == agent)
        })
        .and_then(|agent| agent.facts.agent_name.as_deref())
        .or(step.facts.agent_name.as_deref())
        .unwrap_or(&summary.agent_name);
    let fact = |value: &'a Option<Str>| value.as_deref().unwrap_or_default();
    SpanColumns {
        timestamp: span.start_unix_nano as i64,
        trace_id: &segment.trace_id,
        span_id: IdText::of(Some(span.span_id)),
        parent_span_id: IdText::of(span.parent_span_id),
        trace_state: &span.trace_state,
        span_name: &span.name,
        span_kind: span_kind_name(span.kind),
        service_name: &span.resource.service_name,
        resource_attributes: Pairs::Values(&span.resource.attributes),
        scope_name: &span.scope.name,
        scope_version: &span.scope.version,
        span_attributes: Pairs::Values(&span.attributes),
        duration: span.duration_nanos(),
        status_code: status_code_name(span.status_code),
        status_message: &span.status_message,
        events: Events::Span(&span.events),
        links: Links::Items(all_links),
        workflow_root_span_id: &segment.root_span_id,
        step_index: links.step_index,
        step_kind: step.kind.name(),
        agent_name,
        agent_id: step.facts.agent_id.as_deref().unwrap_or(&summary.agent_id),
        agent_version: step
            .facts
            .agent_version
            .as_deref()
            .unwrap_or(&summary.agent_version),
        model_name: fact(&step.facts.request_model),
        model_version: fact(&step.facts.response_model),
        provider: fact(&step.facts.provider),
        origin_type: &summary.origin_type,
        origin_source: &summary.origin_source,
        task_spec: &summary.task_spec,
        authorized_by: &summary.authorized_by,
        credential_id: &credential.id,
        credential_issuer: &credential.issuer,
        credential_scopes: &credential.scopes,
        credential_issued_at: credential.issued_at_unix_nano,
        credential_expires_at: credential.expires_at_unix_nano,
        workflow_credential_id: &summary.credential.id,
        tool_name: fact(&step.facts.tool_name),
        tool_call_id: fact(&step.facts.tool_call_id),
        violations: check
            .violations
            .iter()
            .map(|violation| violation.code())
            .collect(),
        redacted_count: redacted_kinds.len() as u32,
        redacted_kinds: Cow::Owned(redacted_kinds),
        write_action: u8::from(check.write_action),
        sender: &span.sender,
        received_at: span.received_at_unix_nano,
        late: u8::from(workflow.is_late()),
        segment: workflow.segment,
        prev_hash: Cow::Borrowed(""),
        row_hash: Cow::Borrowed(""),
    }
}

fn workflow_row(sealed: &Sealed, written_at: i64) -> WorkflowRow {
    let workflow = &sealed.workflow;
    let verdict = &sealed.verdict;
    let summary = &verdict.summary;
    let root = workflow.root().map(|step| &step.span);
    let first = workflow.steps.first().map(|step| &step.span);
    let anchor = root.or(first);
    let credential = &summary.credential;
    let chain = sealed.chain.clone().unwrap_or_default();
    let mut row = WorkflowRow {
        workflow_id: workflow.trace_id.to_hex(),
        root_span_id: workflow.root_span_id.to_hex(),
        revision: workflow.revision,
        segment: workflow.segment,
        status: verdict.status.name().to_owned(),
        reasons: verdict.reasons.clone(),
        timestamp: anchor
            .map(|span| span.start_unix_nano as i64)
            .unwrap_or(written_at),
        duration: root.map(|span| span.duration_nanos()).unwrap_or(0),
        origin_type: summary.origin_type.clone(),
        origin_source: summary.origin_source.clone(),
        task_spec: summary.task_spec.clone(),
        authorized_by: summary.authorized_by.clone(),
        origin_received_at: summary.received_at_unix_nano,
        agent_name: summary.agent_name.clone(),
        agent_id: summary.agent_id.clone(),
        agent_version: summary.agent_version.clone(),
        agent_names: summary.agent_names.clone(),
        model_names: summary.model_names.clone(),
        model_versions: summary.model_versions.clone(),
        provider: summary.provider.clone(),
        credential_id: credential.id.clone(),
        credential_issuer: credential.issuer.clone(),
        credential_scopes: credential.scopes.clone(),
        credential_issued_at: credential.issued_at_unix_nano,
        credential_expires_at: credential.expires_at_unix_nano,
        step_count: summary.step_count,
        tools_used: summary.tools_used.clone(),
        violation_count: chain.violation_count,
        row_count: chain.row_count,
        header_hash: String::new(),
        chain_head: chain.head,
        sender: anchor
            .map(|span| span.sender.to_string())
            .unwrap_or_default(),
        received_at: anchor
            .map(|span| span.received_at_unix_nano)
            .unwrap_or(written_at),
        written_at,
        ledger_instance_id: String::new(),
        ledger_seq: 0,
    };
    // The sealer hashed the header of a sealed workflow already.
    row.header_hash = match &sealed.chain {
        Some(chain) => chain.header_hash.clone(),
        None => header_hash(sealed),
    };
    debug_assert_eq!(row.header_hash, Header::of(&row).hash());
    row
}

/// Issuance records among the workflow's steps.
fn credential_rows(sealed: &Sealed) -> Vec<CredentialRow> {
    let workflow_id = sealed.workflow.trace_id.to_hex();
    sealed
        .workflow
        .steps
        .iter()
        .filter_map(|step| {
            let credential = crate::validate::issuance(&step.span)?;
            Some(CredentialRow {
                credential_id: credential.id,
                workflow_id: workflow_id.clone(),
                span_id: step.span.span_id.to_hex(),
                issuer: credential.issuer,
                scopes: credential.scopes,
                issued_at: credential.issued_at_unix_nano,
                expires_at: credential.expires_at_unix_nano,
                issuer_service: step.span.resource.service_name.to_string(),
                sender: step.span.sender.to_string(),
                received_at: step.span.received_at_unix_nano,
                ledger_instance_id: String::new(),
                ledger_seq: 0,
            })
        })
        .collect()
}
