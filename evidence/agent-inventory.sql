-- Question: Which agents ran in the period, in which versions, on which
--   models and model versions, when were they first and last seen, and how
--   many workflows did each run?
-- Controls: SOC 2 CC6.1, SOC 2 CC8.1, ISO 27001 A.8.15
-- Period: the step's start time (Timestamp).
-- Rows: one per agent name and version, from stored steps; each step counts
--   for the agent of its nearest invoke_agent span, or the workflow's agent.
SELECT
    AgentName,
    AgentVersion,
    arraySort(groupUniqArrayIf(toString(ModelName), ModelName != '')) AS Models,
    arraySort(groupUniqArrayIf(toString(ModelVersion), ModelVersion != '')) AS ModelVersions,
    arraySort(groupUniqArrayIf(toString(Provider), Provider != '')) AS Providers,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen,
    uniqExact(TraceId, WorkflowRootSpanId) AS Workflows,
    countIf(StepKind = 'inference') AS ModelCalls,
    countIf(StepKind = 'tool') AS ToolCalls
FROM agent_spans
WHERE StepKind != 'context'
    AND AgentName != ''
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY AgentName, AgentVersion
ORDER BY AgentName, AgentVersion
