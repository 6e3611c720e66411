-- Question: Which steps ran without the authority they needed: with an
--   expired, not yet valid or unknown credential, or outside its scopes?
-- Controls: SOC 2 CC6.1, SOC 2 CC6.3, SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Period: the step's start time (Timestamp).
-- Rows: one per step with at least one violation code (credential_expired,
--   credential_not_yet_valid, unknown_credential, scope_violation,
--   scope_exceeds_issuance), oldest first.
SELECT
    Timestamp,
    TraceId AS WorkflowId,
    WorkflowRootSpanId AS RootSpanId,
    StepIndex,
    StepKind,
    SpanName,
    AgentName,
    ToolName,
    WriteAction,
    Violations,
    CredentialId,
    CredentialIssuer,
    CredentialScopes,
    CredentialIssuedAt,
    CredentialExpiresAt,
    OriginType,
    OriginSource,
    AuthorizedBy
FROM agent_spans
WHERE notEmpty(Violations)
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
ORDER BY Timestamp, WorkflowId, StepIndex
