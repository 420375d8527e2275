-- 0004_job_output_name (PostgreSQL): the output folder a job was submitted with, so that a submit
-- (or a retry) checks under the submit lock that no live job of the same user, on any host,
-- writes to that folder, or to one inside or around it.
-- Shipped migrations are frozen: never edit this file, add 0005_... instead (additive only).
-- NULL: the automatic job-<id> folder. Jobs from before this migration get the name their
-- params hold; a griditd of an older version inserts NULL (its own check still applies).

ALTER TABLE job ADD COLUMN output_name text CHECK (output_name IS NULL OR length(output_name) > 0);

UPDATE job SET output_name = params::jsonb ->> 'output'
 WHERE jsonb_typeof(params::jsonb -> 'output') = 'string' AND length(params::jsonb ->> 'output') > 0;
