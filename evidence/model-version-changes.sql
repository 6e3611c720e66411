-- Question: When did each agent's model version change, and how many
--   workflows ran on the version before and on the version after?
-- Controls: SOC 2 CC8.1, ISO 27001 A.8.15
-- Period: the workflow's first model call (Timestamp).
-- Rows: one per change, by agent, model and time. Workflows are ordered by
--   their first model call; a change is a workflow whose model version
--   (gen_ai.response.model of its first call) differs from the previous
--   workflow's. WorkflowsBefore counts the run of workflows on the old
--   version up to the change, WorkflowsAfter the run on the new version up
--   to the next change. A return to an earlier version is a change too.
WITH
    per_workflow AS
    (
        SELECT
            toString(AgentName) AS Agent,
            toString(ModelName) AS Model,
            TraceId,
            WorkflowRootSpanId,
            min(Timestamp) AS Started,
            argMin(toString(ModelVersion), Timestamp) AS Version
        FROM agent_spans
        WHERE StepKind = 'inference'
            AND ModelVersion != ''
            AND AgentName != ''
            AND Timestamp >= {from:DateTime64(9, 'UTC')}
            AND Timestamp < {to:DateTime64(9, 'UTC')}
        GROUP BY Agent, Model, TraceId, WorkflowRootSpanId
    ),
    flagged AS
    (
        SELECT
            *,
            lagInFrame(Version, 1, '') OVER w AS Previous,
            if(Previous != '' AND Previous != Version, 1, 0) AS Changed
        FROM per_workflow
        WINDOW w AS (PARTITION BY Agent, Model ORDER BY Started, TraceId
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ),
    runs AS
    (
        SELECT
            Agent,
            Model,
            Version,
            Started,
            sum(Changed) OVER (PARTITION BY Agent, Model ORDER BY Started, TraceId
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS Run
        FROM flagged
    ),
    run_summary AS
    (
        SELECT Agent, Model, Run, any(Version) AS Version, min(Started) AS FirstSeen, count() AS Workflows
        FROM runs
        GROUP BY Agent, Model, Run
    ),
    paired AS
    (
        SELECT
            Agent,
            Model,
            Run,
            FirstSeen,
            lagInFrame(Version, 1, '') OVER r AS PreviousVersion,
            Version,
            lagInFrame(Workflows, 1, 0) OVER r AS PreviousWorkflows,
            Workflows
        FROM run_summary
        WINDOW r AS (PARTITION BY Agent, Model ORDER BY Run
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
SELECT
    Agent AS AgentName,
    Model AS ModelName,
    FirstSeen AS ChangedAt,
    PreviousVersion,
    Version AS NewVersion,
    PreviousWorkflows AS WorkflowsBefore,
    Workflows AS WorkflowsAfter
FROM paired
WHERE Run > 0
ORDER BY AgentName, ModelName, ChangedAt
