-- 0005_job_output_name: the output folder a job was submitted with, so that a submit (or a retry)
-- checks in its own transaction that no live job of the same user writes to that folder, or to
-- one inside or around it (before, only the submitting griditd's own check stood guard).
-- Shipped migrations are frozen: never edit this file, add 0006_... instead.
-- NULL: the automatic job-<id> folder. Jobs from before this migration get the name their
-- params hold.

ALTER TABLE job ADD COLUMN output_name TEXT CHECK (output_name IS NULL OR length(output_name) > 0);

UPDATE job SET output_name = json_extract(params, '$.output')
 WHERE json_type(params, '$.output') = 'text' AND length(json_extract(params, '$.output')) > 0;
