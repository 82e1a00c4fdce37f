-- wrk: POST bodies read from a file of hex lines (one DER request a line), in turn.
-- Usage: wrk ... -s post_bodies.lua URL -- BODIES_FILE CONTENT_TYPE [PATH]
-- Prints one JSON line of results when done (latencies in microseconds).
local requests = {}
local index = 0

function init(args)
  local content_type = args[2] or "application/octet-stream"
  local path = args[3] or "/"
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local body = line:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end)
    requests[#requests + 1] = wrk.format("POST", path, { ["Content-Type"] = content_type }, body)
  end
  file:close()
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "p50_us": %d, "p90_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean))
end
