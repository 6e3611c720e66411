-- Question: How many workflows were rejected or left incomplete, on which
--   day, and for which reason?
-- Controls: SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Period: the workflow's start time (Timestamp of its root, or of its first
--   span when the root never arrived).
-- Rows: one per day, status and reason, counting only the newest verdict
--   revision of each workflow, so a workflow that was incomplete and became
--   valid when its root arrived is not counted. Span ids in reasons are
--   replaced by <span id> so that equal reasons group together.
WITH newest AS
(
    SELECT WorkflowId, RootSpanId, Status, Reasons, Timestamp
    FROM agent_workflows
    ORDER BY Revision DESC, WrittenAt DESC
    LIMIT 1 BY WorkflowId, RootSpanId
)
SELECT
    toDate(Timestamp) AS Day,
    toString(Status) AS Status,
    replaceRegexpAll(
        arrayJoin(if(empty(Reasons), ['no reason recorded'], Reasons)),
        '\\b[0-9a-f]{16}\\b', '<span id>') AS Reason,
    count() AS Workflows,
    arraySort(groupUniqArray(10)(WorkflowId)) AS ExampleWorkflowIds
FROM newest
WHERE Status IN ('rejected', 'incomplete')
    AND Timestamp >= {from:DateTime64(9, 'UTC')}
    AND Timestamp < {to:DateTime64(9, 'UTC')}
GROUP BY Day, Status, Reason
ORDER BY Day, Status, Reason
