-- wrk script for bench/segment.py: the same productViewed events as bench/events.lua, as
-- Segment calls (POST /v1/batch, track "Product Viewed") or as the collector's own
-- (POST /v1/events), in batches, each event with its own messageId.
--
--   BENCH_FORM    segment: /v1/batch with Basic auth (the write key as user name);
--                 events: /v1/events with a Bearer key                    (default segment)
--   BENCH_KEY     the write key, or the API key                            (default k)
--   BENCH_BATCH   events per request                                       (default 100)
--   BENCH_RUN     token in every messageId, unique per wrk run             (default r)
--   BENCH_EXPECT  if set, every response is checked against "STATUS BODY"; done() prints
--                 "BENCHCHECK ok=N bad=M" and the first bad response (as events.lua)

local form = os.getenv("BENCH_FORM") or "segment"
local key = os.getenv("BENCH_KEY") or "k"
local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
local run = os.getenv("BENCH_RUN") or "r"
local expect = os.getenv("BENCH_EXPECT")

-- base64 of "key:" for Basic auth
local function b64(data)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if form == "segment" then
  wrk.path = "/v1/batch"
  wrk.headers["Authorization"] = "Basic " .. b64(key .. ":")
else
  wrk.path = "/v1/events"
  wrk.headers["Authorization"] = "Bearer " .. key
end

local CONTEXT = '"context":{"page":{"url":"https://shop.example/p/ws01?color=green&size=L",'
  .. '"referrer":"https://shop.example/c/womens-tops","title":"WS01 green"},'
  .. '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
  .. 'Chrome/124.0.0.0 Safari/537.36 bench","locale":"en-US","timezone":"Europe/Kyiv"}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local n = 0
local prefix = run .. "-0-"

function init(args)
  prefix = run .. "-" .. tostring(tid) .. "-"
end

-- 1000 shoppers, buyer0..buyer999: bench/segment.py identified each (userId buyerN,
-- email buyerN@example.com) before the run, so both forms name the same contacts.
local function event()
  n = n + 1
  local id = prefix .. n
  local who = n % 1000
  if form == "segment" then
    return '{"type":"track","event":"Product Viewed","messageId":"' .. id .. '",'
      .. '"userId":"buyer' .. who .. '","timestamp":"2024-05-14T10:11:00.000Z",'
      .. '"properties":{"product_id":"WS01-L-Green","price":45.5,"currency":"USD",'
      .. '"variant":"green"},' .. CONTEXT .. '}'
  end
  return '{"type":"productViewed","messageId":"' .. id .. '",'
    .. '"timestamp":"2024-05-14T10:11:00.000Z",'
    .. '"contact":{"email":"buyer' .. who .. '@example.com","externalCustomerId":"buyer' .. who .. '"},'
    .. '"properties":{"productId":"WS01-L-Green","price":45.5,"currencyCode":"USD",'
    .. '"variant":"green"},' .. CONTEXT .. '}'
end

function request()
  local parts = {}
  for i = 1, batch do
    parts[i] = event()
  end
  local body = '{"batch":[' .. table.concat(parts, ",") .. ']'
  if form == "segment" then
    body = body .. ',"sentAt":"2024-05-14T10:11:00.000Z"'
  end
  return wrk.format(nil, nil, nil, body .. "}")
end

if expect then
  local want_status, want_body = expect:match("^(%d+) ?(.*)$")
  want_status = tonumber(want_status)
  ok, bad, sample = 0, 0, nil

  function response(status, headers, body)
    if status == want_status and body == want_body then
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
