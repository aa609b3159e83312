-- A keep-alive POST with a 1 KiB body, for benches/load.sh's `post` workload (the backend answers
-- 13 bytes).
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
