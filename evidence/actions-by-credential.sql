-- Question: Which actions ran under one credential in the period: when, in
--   which workflow, by which agent, with which tool, and triggered from
--   where?
-- Controls: SOC 2 CC6.1, SOC 2 CC6.3, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Parameter credential_id: the credential id, as sent in agent_ledger.credential.id
-- Period: the step's start time (Timestamp).
-- Rows: one per step whose effective credential is credential_id, oldest
--   first. Context spans (the request above a workflow root) are left out.
SELECT
    Timestamp,
    TraceId AS WorkflowId,
    WorkflowRootSpanId AS RootSpanId,
    StepIndex,
    StepKind,
    SpanName,
    AgentName,
    AgentVersion,
    ModelVersion,
    ToolName,
    WriteAction,
    OriginType,
    OriginSource,
    AuthorizedBy,
    CredentialIssuer,
    CredentialScopes,
    Violations
FROM agent_spans
WHERE CredentialId = {credential_id:String}
    AND StepKind != 'context'
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
ORDER BY Timestamp, WorkflowId, StepIndex
