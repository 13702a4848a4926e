-- wrk script: POST /api/features/get-online-features for ENTITIES random entities of
-- ENTITY_COUNT (environment), all 8 features of the `user` view. Each request draws its keys.
local n = tonumber(os.getenv("ENTITIES") or "1")
local pool = tonumber(os.getenv("ENTITY_COUNT") or "10000")
local features = '["user:f0","user:f1","user:f2","user:f3","user:f4","user:f5","user:f6","user:f7"]'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local keys = {}
  for i = 1, n do
    keys[i] = '"u' .. math.random(0, pool - 1) .. '"'
  end
  local body = '{"features":' .. features .. ',"entities":{"user_id":[' .. table.concat(keys, ",") .. ']}}'
  return wrk.format(nil, "/api/features/get-online-features", nil, body)
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    wrk.thread:stop()
  end
end
