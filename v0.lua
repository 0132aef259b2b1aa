local out = {}
          local a = 1
          local k = 1
          local i = 0
          local now, stamp = nil, nil
          local function clock()
            if not now then
              local t = redis.call('TIME')
              now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
              stamp = string.format('%d', now)
            end
            return now
          end
          while ARGV[a] do
            local op = ARGV[a]
            local key = KEYS[k]
            i = i + 1
            if op == 'get' then
              out[i] = redis.call('GET', key)
              a = a + 1
              k = k + 1
            elseif op == 'win' then
              local limit = tonumber(ARGV[a + 1])
              local span = ARGV[a + 2]
              local window = tonumber(span)
              a = a + 3
              k = k + 1
              local now = clock()
              local oldest = tonumber(redis.call('LINDEX', key, 0))
              while oldest and oldest <= now - window do
                redis.call('LPOP', key)
                oldest = tonumber(redis.call('LINDEX', key, 0))
              end
              local count = redis.call('RPUSH', key, stamp)
              local allowed = 1
              if count > limit then
                redis.call('RPOP', key)
                count = count - 1
                allowed = 0
              else
                redis.call('PEXPIRE', key, span)
                oldest = oldest or now
              end
              local reset = window
              if oldest then reset = oldest + window - now end
              out[i] = {allowed, count, reset}
            elseif op == 'incr' then
              local v = redis.call('INCRBY', key, ARGV[a + 1])
              local ttl = tonumber(ARGV[a + 2])
              a = a + 3
              k = k + 1
              if ttl > 0 and redis.call('PTTL', key) == -1 then
                redis.call('PEXPIRE', key, ttl)
              end
              out[i] = v
            elseif op == 'tget' then
              local entries, uses, seq = KEYS[k], KEYS[k + 1], KEYS[k + 2]
              local field = ARGV[a + 1]
              local ttl = tonumber(ARGV[a + 2])
              local prefix = ARGV[a + 3]
              local generation = ARGV[a + 4]
              a = a + 5
              k = k + 3
              local value = false
              local used = redis.call('ZSCORE', uses, field)
              if used then
                used = tonumber(used)
                local now = clock()
                if used < (now - ttl) * 1000 then
                  redis.call('HDEL', entries, field)
                  redis.call('ZREM', uses, field)
                else
                  if used < (now - math.min(1000, ttl / 10)) * 1000 then
                    redis.call('ZADD', uses, now * 1000 + redis.call('INCR', seq) % 1000, field)
                  end
                  value = redis.call('HGET', entries, field)
                end
              end
              local versions = {}
              if value then
                local header = string.sub(value, 1, (string.find(value, '\n', 1, true) or 1) - 1)
                for pair in string.gmatch(header, '%S+') do
                  local tag = string.match(pair, '^(.*)=[^=]*$') or pair
                  versions[#versions + 1] = redis.call('GET', prefix .. tag) or '0'
                end
              end
              out[i] = {value, versions, redis.call('GET', prefix .. generation) or '0'}
            else
              return redis.error_reply('unknown batch step ' .. tostring(op))
            end
          end
          return out