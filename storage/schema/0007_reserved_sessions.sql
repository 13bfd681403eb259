-- 0007: reserved for the sessions branch (issue 10), which ships the real 0007.
-- Migrations are numbered 1..n without gaps, so this branch carries an empty
-- placeholder; on merge the sessions migration replaces this file.
SELECT 1;
