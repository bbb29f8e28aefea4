-- wrk script for bench/ingest.py: POST /v1/events with productViewed events built per
-- request, each with its own messageId.
--
-- Settings come from the environment, not from init(args): wrk decides whether to hand
-- responses to Lua by looking for a global response() right after loading this file,
-- before init() runs, so the check switch has to be known at load time.
--
--   BENCH_KEY     API key sent as "Authorization: Bearer <key>"             (default k)
--   BENCH_BATCH   0: one event per request; N: {"batch": [N events]}       (default 0)
--   BENCH_MSGID   1: every event has a unique messageId; 0: events have none (default 1)
--   BENCH_RUN     token in every messageId; unique per wrk run, so runs sharing a spool
--                 never repeat an id                                       (default r)
--   BENCH_EXPECT  if set, check every response against "STATUS" or "STATUS BODY";
--                 done() prints "BENCHCHECK ok=N bad=M" and the first bad response.
--                 Costs wrk CPU, so ingest.py only sets it for the warm-up.

local key = os.getenv("BENCH_KEY") or "k"
local batch = tonumber(os.getenv("BENCH_BATCH") or "0")
local with_id = (os.getenv("BENCH_MSGID") or "1") == "1"
local run = os.getenv("BENCH_RUN") or "r"
local expect = os.getenv("BENCH_EXPECT")

wrk.method = "POST"
wrk.path = "/v1/events"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

-- One event, cut where the per-event values (messageId, email) go. About 520 bytes with a messageId.
local HEAD = '{"type":"productViewed",'
local ID_OPEN = '"messageId":"'
local ID_CLOSE = '",'
local EMAIL_OPEN = '"contact":{"email":"buyer'
local TAIL = '@example.com"},'
  .. '"properties":{"productId":"WS01-L-Green","price":45.5,"isInStock":1,'
  .. '"color":["green"],"currencyCode":"USD"},'
  .. '"context":{"page":{"url":"https://shop.example/p/ws01?color=green&size=L",'
  .. '"referrer":"https://shop.example/c/womens-tops","title":"WS01 green"},'
  .. '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
  .. 'Chrome/124.0.0.0 Safari/537.36 bench","locale":"en-US","timezone":"Europe/Kyiv"}}'

-- main state: number the threads so each has its own messageId prefix
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- thread state
local n = 0
local prefix = run .. "-0-"

function init(args)
  prefix = run .. "-" .. tostring(tid) .. "-"
end

local function event()
  n = n + 1
  local id = ""
  if with_id then
    id = ID_OPEN .. prefix .. n .. ID_CLOSE
  end
  -- 1000 different contacts: the spool's ordering keys differ, as on a real shop
  return HEAD .. id .. EMAIL_OPEN .. (n % 1000) .. TAIL
end

function request()
  local body
  if batch > 0 then
    local parts = {}
    for i = 1, batch do
      parts[i] = event()
    end
    body = '{"batch":[' .. table.concat(parts, ",") .. "]}"
  else
    body = event()
  end
  return wrk.format(nil, nil, nil, body)
end

if expect then
  local want_status, want_body = expect:match("^(%d+) ?(.*)$")
  want_status = tonumber(want_status)
  if want_body == "" then
    want_body = nil
  end
  -- globals, so done() can collect them with thread:get()
  ok, bad, sample = 0, 0, nil

  function response(status, headers, body)
    if status == want_status and (want_body == nil or body == want_body) then
      ok = ok + 1
    else
      bad = bad + 1
      if sample == nil then
        sample = tostring(status) .. " " .. tostring(body)
      end
    end
  end

  function done(summary, latency, requests)
    local total_ok, total_bad, first = 0, 0, nil
    for _, t in ipairs(threads) do
      total_ok = total_ok + (t:get("ok") or 0)
      total_bad = total_bad + (t:get("bad") or 0)
      first = first or t:get("sample")
    end
    io.write(string.format("BENCHCHECK ok=%d bad=%d\n", total_ok, total_bad))
    if first then
      io.write("BENCHSAMPLE " .. (first:sub(1, 400):gsub("\n", " ")) .. "\n")
    end
  end
end
