-- wrk script for the POST latency test (bench scenario 3):
--   wrk -t1 -c16 -d8s -s bench/post.lua http://127.0.0.1:PORT -- ORIGIN_BASE IMAGE_SIZE
-- Every request is a job of 10 distinct image URLs; answers other than 202 are counted.

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

function init(args)
  base = args[1] or "http://127.0.0.1:9"
  size = args[2] or "1024"
  counter = 0
  non202 = 0
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local urls = {}
  for i = 0, 9 do
    urls[#urls + 1] = string.format('"%s/img/%s/%d%08d%d.jpg"', base, size, tid, counter, i)
  end
  return wrk.format("POST", "/v1/images/upload", nil, '{"urls": [' .. table.concat(urls, ", ") .. ']}')
end

function response(status, headers, body)
  if status ~= 202 then
    non202 = non202 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non202") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '\nBENCH-JSON {"count": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"non202": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, bad, e.connect + e.read + e.write + e.timeout))
end
