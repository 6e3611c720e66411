-- Question: What did one workflow do: its verdict and origin, every step in
--   order with the steps that caused it and the credential and scopes it ran
--   under, and which of its spans are held in quarantine?
-- Controls: SOC 2 CC6.1, SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Parameter workflow_id: the workflow id, which is its trace id (32 hex digits)
-- Period: not used; the workflow id selects the rows.
-- Rows: one per stored step, by root span, segment and step index, each with
--   the newest verdict of its workflow; then one per quarantined span that
--   was never stored, with the quarantine reason and detail.
WITH
    lower({workflow_id:String}) AS workflow,
    (
        SELECT mapFromArrays(groupArray(SpanId), groupArray(StepIndex))
        FROM agent_spans
        WHERE TraceId = workflow
    ) AS step_index_of,
    verdicts AS (
        SELECT RootSpanId, Revision, Status, Reasons
        FROM agent_workflows
        WHERE WorkflowId = workflow
        ORDER BY Revision DESC, WrittenAt DESC
        LIMIT 1 BY RootSpanId
    )
SELECT *
FROM
(
    SELECT
        s.WorkflowRootSpanId AS RootSpanId,
        v.Status AS Status,
        v.Revision AS Revision,
        v.Reasons AS Reasons,
        toString(s.OriginType) AS OriginType,
        toString(s.OriginSource) AS OriginSource,
        s.AuthorizedBy AS AuthorizedBy,
        s.TaskSpec AS TaskSpec,
        s.Segment AS Segment,
        toNullable(s.StepIndex) AS StepIndex,
        s.Timestamp AS Timestamp,
        s.SpanId AS SpanId,
        s.ParentSpanId AS ParentSpanId,
        toString(s.StepKind) AS StepKind,
        toString(s.SpanName) AS SpanName,
        toString(s.AgentName) AS AgentName,
        toString(s.AgentVersion) AS AgentVersion,
        toString(s.ModelName) AS ModelName,
        toString(s.ModelVersion) AS ModelVersion,
        toString(s.ToolName) AS ToolName,
        s.ToolCallId AS ToolCallId,
        arrayMap(
            cause -> concat(
                if(mapContains(step_index_of, cause.1), concat('#', toString(step_index_of[cause.1])), cause.1),
                ' (', cause.2, ')'),
            arrayFilter(
                cause -> cause.2 != '',
                arrayZip(s.`Links.SpanId`, arrayMap(a -> a['agent_ledger.link.basis'], s.`Links.Attributes`)))
        ) AS CausedBy,
        s.CredentialId AS CredentialId,
        toString(s.CredentialIssuer) AS CredentialIssuer,
        s.CredentialScopes AS CredentialScopes,
        s.CredentialIssuedAt AS CredentialIssuedAt,
        s.CredentialExpiresAt AS CredentialExpiresAt,
        arrayMap(code -> toString(code), s.Violations) AS Violations,
        s.WriteAction AS WriteAction,
        s.RedactedCount AS RedactedCount,
        round(s.Duration / 1e6, 3) AS DurationMs,
        toString(s.StatusCode) AS StatusCode,
        s.Late AS Late,
        '' AS Quarantine,
        '' AS QuarantineDetail
    FROM agent_spans AS s
    LEFT JOIN verdicts AS v ON v.RootSpanId = s.WorkflowRootSpanId
    WHERE s.TraceId = workflow

    UNION ALL

    SELECT
        '', '', 0, [], '', '', '', '', 0, NULL,
        r.Timestamp, r.SpanId, r.ParentSpanId, '', toString(r.SpanName),
        '', '', '', '', '', '', [], '', '', [], NULL, NULL, [], 0, 0,
        round(r.Duration / 1e6, 3), toString(r.StatusCode), 0,
        toString(r.Reason), r.Detail
    FROM agent_rejected_spans AS r
    WHERE r.TraceId = workflow
        AND r.SpanId NOT IN (SELECT SpanId FROM agent_spans WHERE TraceId = workflow)
)
ORDER BY Quarantine != '', RootSpanId, Segment, StepIndex, Timestamp, SpanId
