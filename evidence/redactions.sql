-- Question: Which secrets did agent-ledger redact from spans before storing
--   them, of which kind, and in which agents' steps?
-- Controls: SOC 2 CC6.1, SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Period: the step's start time (Timestamp).
-- Rows: one per kind of secret and agent. Redactions counts redacted values
--   (RedactedKinds has one entry per value); the values themselves are never
--   stored.
SELECT
    toString(arrayJoin(RedactedKinds)) AS Kind,
    AgentName,
    count() AS Redactions,
    uniqExact(TraceId, SpanId) AS Steps,
    uniqExact(TraceId, WorkflowRootSpanId) AS Workflows,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen
FROM agent_spans
WHERE RedactedCount > 0
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY Kind, AgentName
ORDER BY Kind, AgentName
