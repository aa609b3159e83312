-- A keep-alive POST with a 1 KiB body, for benches/load.sh's `post` workload (the backend answers
-- 13 bytes). A request with a body goes through hyper's client in Fulcrum, not the plain exchange.
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
