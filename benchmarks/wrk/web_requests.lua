-- wrk: requests read from a file, one a line: METHOD \t PATH \t COOKIE \t X-FORWARDED-FOR \t BODY
-- (empty fields allowed), sent in turn. Usage:
--   wrk ... -s web_requests.lua URL -- REQUESTS_FILE [LIMIT]
-- With LIMIT > 0 the run stops after LIMIT responses (each request line used once).
-- Prints one JSON line of results when done (latencies in microseconds).
local requests = {}
local index = 0
local limit = 0
local responses = 0

function init(args)
  limit = tonumber(args[2] or "0") or 0
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local method, path, cookie, forwarded, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t?(.*)$")
    local headers = {}
    if cookie ~= "" then headers["Cookie"] = cookie end
    if forwarded ~= "" then headers["X-Forwarded-For"] = forwarded end
    if body ~= "" then
      headers["Content-Type"] = "application/x-www-form-urlencoded"
    else
      body = nil
    end
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
  file:close()
end

function request()
  index = index % #requests + 1
  return requests[index]
end

if limit ~= nil then
  function response(status, headers, body)
    responses = responses + 1
    if limit > 0 and responses >= limit then
      wrk.thread:stop()
    end
  end
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
