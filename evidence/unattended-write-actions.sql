-- Question: Which workflows performed write actions without a human who
--   authorized them?
-- Controls: SOC 2 CC6.1, SOC 2 CC6.3, SOC 2 CC7.2, ISO 27001 A.8.15
-- Period: the start time (Timestamp) of the write steps.
-- Rows: one per workflow with at least one step marked as a write action
--   (WriteAction = 1) and no authorizing principal
--   (agent_ledger.origin.authorized_by), by its first write.
SELECT
    TraceId AS WorkflowId,
    WorkflowRootSpanId AS RootSpanId,
    min(Timestamp) AS FirstWriteAt,
    max(Timestamp) AS LastWriteAt,
    count() AS WriteSteps,
    arraySort(groupUniqArray(toString(ToolName))) AS WriteTools,
    arraySort(groupUniqArray(toString(AgentName))) AS Agents,
    arraySort(groupUniqArray(CredentialId)) AS Credentials,
    any(OriginType) AS OriginType,
    any(OriginSource) AS OriginSource,
    any(TaskSpec) AS TaskSpec
FROM agent_spans
WHERE WriteAction = 1
    AND AuthorizedBy = ''
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY WorkflowId, RootSpanId
ORDER BY FirstWriteAt, WorkflowId
