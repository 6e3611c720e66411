-- Question: Which origin sources triggered which agents, and which tools did
--   those agents call?
-- Controls: SOC 2 CC6.1, SOC 2 CC7.2, ISO 27001 A.8.15
-- Period: the step's start time (Timestamp).
-- Rows: one per origin type, origin source and agent, from stored steps.
SELECT
    OriginType,
    OriginSource,
    AgentName,
    uniqExact(TraceId, WorkflowRootSpanId) AS Workflows,
    arraySort(groupUniqArrayIf(toString(ToolName), ToolName != '')) AS Tools,
    countIf(StepKind = 'tool') AS ToolCalls,
    countIf(WriteAction = 1) AS WriteActions,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen
FROM agent_spans
WHERE StepKind != 'context'
    AND AgentName != ''
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY OriginType, OriginSource, AgentName
ORDER BY OriginType, OriginSource, AgentName
