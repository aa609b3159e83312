-- A small POST with a body, for benches/instructions.sh (REQUEST=benches/post.lua): a request
-- with a body goes through hyper's client, not the plain exchange a bodyless GET takes.
wrk.method = "POST"
wrk.body = "hello"
wrk.headers["Content-Type"] = "text/plain"
