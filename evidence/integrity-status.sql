-- Question: Is the audit trail sealed and verified: when did each instance
--   last sign a checkpoint, with which key, how many ledger entries are not
--   yet covered by one, and what did the verify runs find?
-- Controls: SOC 2 CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b)
-- Period: SignedAt for checkpoints, ReceivedAt for ledger entries, StartedAt
--   for verify runs.
-- Rows: one 'checkpoint' row per instance with ledger entries or checkpoints
--   in the period, then one 'verify_run' row per verify run. AgeSeconds is
--   the time from At to the end of the period, or to now when that is
--   earlier. EntriesUncovered counts ledger entries after the instance's
--   last checkpoint in the period.
WITH
    least(now64(9), {to:DateTime64(9, 'UTC')}) AS period_end,
    entries AS
    (
        SELECT InstanceId, groupArray(Seq) AS Seqs
        FROM agent_ledger_entries
        WHERE ReceivedAt >= {from:DateTime64(9, 'UTC')} AND ReceivedAt < {to:DateTime64(9, 'UTC')}
        GROUP BY InstanceId
    ),
    checkpoints AS
    (
        SELECT
            InstanceId,
            count() AS Checkpoints,
            max(SignedAt) AS LastSignedAt,
            arraySort(groupUniqArray(KeyId)) AS KeyIds,
            max(LastSeq) AS LastSeq
        FROM agent_ledger_checkpoints
        WHERE SignedAt >= {from:DateTime64(9, 'UTC')} AND SignedAt < {to:DateTime64(9, 'UTC')}
        GROUP BY InstanceId
    )
SELECT *
FROM
(
    SELECT
        'checkpoint' AS Kind,
        toString(if(c.InstanceId != '', c.InstanceId, e.InstanceId)) AS InstanceId,
        if(c.Checkpoints > 0, toNullable(c.LastSignedAt), NULL) AS At,
        if(c.Checkpoints > 0, toNullable(dateDiff('second', c.LastSignedAt, period_end)), NULL) AS AgeSeconds,
        c.KeyIds AS KeyIds,
        c.Checkpoints AS Checkpoints,
        c.LastSeq AS LastSeq,
        toUInt64(length(arrayFilter(seq -> seq > c.LastSeq OR c.Checkpoints = 0, e.Seqs))) AS EntriesUncovered,
        '' AS Result,
        toUInt64(0) AS Findings,
        CAST(map(), 'Map(String, UInt64)') AS FindingCounts,
        '' AS Detail
    FROM entries AS e
    FULL OUTER JOIN checkpoints AS c ON c.InstanceId = e.InstanceId

    UNION ALL

    SELECT
        'verify_run',
        toString(InstanceId),
        toNullable(StartedAt),
        toNullable(dateDiff('second', StartedAt, period_end)),
        KeyIds,
        toUInt64(CheckpointsChecked),
        toUInt64(0),
        toUInt64(0),
        toString(Result),
        Findings,
        CAST(FindingCounts, 'Map(String, UInt64)'),
        concat(
            'run ', RunId, ': ', toString(RowsChecked), ' rows, ', toString(EntriesChecked), ' entries, ',
            toString(CheckpointsChecked), ' checkpoints checked',
            if(WorkflowId != '', concat(', workflow ', WorkflowId), ''))
    FROM agent_verify_runs
    WHERE StartedAt >= {from:DateTime64(9, 'UTC')} AND StartedAt < {to:DateTime64(9, 'UTC')}
)
ORDER BY Kind, InstanceId, At
