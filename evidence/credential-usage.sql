-- Question: Which credentials did agents use in the period, issued by whom,
--   with which scopes and lifetime, for how many steps, and were any used
--   outside their validity?
-- Controls: SOC 2 CC6.1, SOC 2 CC6.2, SOC 2 CC6.3, HIPAA 164.312(b)
-- Period: the step's start time (Timestamp).
-- Rows: one per credential as described on the steps (id, issuer, scopes,
--   issued and expiry times); a credential id described two ways appears
--   twice. StepsOutsideValidity counts steps that started before IssuedAt or
--   after ExpiresAt. IssuanceRecorded is 1 when an issuing service recorded
--   the credential (agent_credentials).
SELECT
    CredentialId,
    CredentialIssuer AS Issuer,
    CredentialScopes AS Scopes,
    CredentialIssuedAt AS IssuedAt,
    CredentialExpiresAt AS ExpiresAt,
    dateDiff('second', CredentialIssuedAt, CredentialExpiresAt) AS LifetimeSeconds,
    min(Timestamp) AS FirstUsed,
    max(Timestamp) AS LastUsed,
    count() AS Steps,
    uniqExact(TraceId, WorkflowRootSpanId) AS Workflows,
    arraySort(groupUniqArray(toString(AgentName))) AS Agents,
    countIf(ifNull(Timestamp < CredentialIssuedAt OR Timestamp > CredentialExpiresAt, 0)) AS StepsOutsideValidity,
    toUInt8(CredentialId IN (SELECT CredentialId FROM agent_credentials)) AS IssuanceRecorded
FROM agent_spans
WHERE CredentialId != ''
    AND StepKind != 'context'
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY CredentialId, Issuer, Scopes, IssuedAt, ExpiresAt
ORDER BY CredentialId, IssuedAt
