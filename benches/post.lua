-- A small POST with a body, for benches/instructions.sh (REQUEST=benches/post.lua): the body
-- comes whole with its head and goes to the backend in the same write as the head.
wrk.method = "POST"
wrk.body = "hello"
wrk.headers["Content-Type"] = "text/plain"
