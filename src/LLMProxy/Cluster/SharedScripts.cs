namespace LLMProxy.Cluster;

/// <summary>
/// The Lua scripts that keep the shared state consistent: each runs atomically in Redis, and every rate is computed in
/// Redis time (<c>redis.call('TIME')</c>, microseconds) — never an instance's clock, so instances whose clocks disagree
/// still share one bucket. Numbers go back to Redis through <c>string.format</c>: Lua's default conversion keeps only
/// 14 digits, too few for a microsecond timestamp.
/// <para>Keys of one upstream: <c>{prefix}up:{name}:off</c> (a key's health: the reason while disabled, the credential
/// fingerprint, the id of its last enable); and, for its account (<c>{prefix}up:{name}:{fingerprint}</c>, so that a
/// rotated credential starts clean), <c>:cool</c> (a 429 cool-down: the key's own TTL), <c>:head</c> (learned headroom
/// and what was sent since), <c>:rps</c> / <c>:rpm</c> (GCRA: the theoretical arrival time), <c>:tpm</c> (token
/// bucket: level and stamp), <c>:reset</c> (the id of the operator's last reset). A shared bucket of a client (IP or
/// client key) is <c>{prefix}cl:{id}</c> (GCRA); a client key's token budget is
/// <c>{prefix}cl:fwd:{forward}:tpm:{key name}</c> (level and stamp, as an upstream's <c>:tpm</c>). Every key expires
/// once it means nothing any more (a full bucket is the same as a missing one), except <c>:off</c> and <c>:reset</c>,
/// which are never deleted: a missing record is Redis having lost it, never an enable or a reset.</para>
/// </summary>
internal static class SharedScripts
{
    private const string Prelude = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local function f0(x) return string.format('%.0f', x) end
        local function ms(us) return math.ceil(us / 1000) end
        local function gcra(key, interval, depth)
          local tat = tonumber(redis.call('GET', key)) or now
          if tat < now then tat = now end
          local nxt = tat + interval
          if nxt - now > depth then return nil, nxt - now - depth end
          return nxt, 0
        end
        local function put(key, nxt)
          redis.call('SET', key, f0(nxt), 'PX', ms(nxt - now) + 1)
        end
        local function level(key, cap)
          local v = redis.call('HMGET', key, 'l', 's')
          if not v[1] then return cap end
          local l = tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60000000
          if l > cap then return cap end
          return l
        end
        """;

    /// <summary>
    /// One attempt's admission, the hot path's only round trip. KEYS: cool, off, head, rps, rpm, tpm, reset, then one
    /// key per client bucket, then — with a client key's token budget — that budget's key. ARGV: rps interval and depth (µs;
    /// interval 0 = none), rpm interval and depth, TPM capacity (0 = none), tokens to reserve, credential fingerprint
    /// ("" = a key-health trial: not refused for being disabled), estimated tokens (headroom accounting), the client
    /// key's TPM capacity (0 = none) and tokens to reserve on it, then interval and depth per client bucket.
    /// Client limits are checked first, everything is checked before anything is taken, so a refusal takes nothing.
    /// Returns {0} admitted, {1, ms, reset id} cooling, {2, 0, reason, enable id} disabled, {3, ms, reset id} out of a
    /// budget (rate, TPM or learned headroom), {4, ms, i} client bucket i empty, {5, ms} the client key's token budget
    /// short. The reset id (the operator's last reset, "" = none) tells a copied refusal from one a reset ended since.
    /// </summary>
    public const string Acquire = Prelude + "\n" + """
        local ccap, cneed = tonumber(ARGV[9]), tonumber(ARGV[10])
        local n = #KEYS - 7
        if ccap > 0 then n = n - 1 end
        local clients = {}
        for i = 1, n do
          local nxt, wait = gcra(KEYS[7 + i], tonumber(ARGV[9 + 2 * i]), tonumber(ARGV[10 + 2 * i]))
          if not nxt then return {4, ms(wait), i} end
          clients[i] = nxt
        end
        local cl
        if ccap > 0 then
          cl = level(KEYS[#KEYS], ccap)
          if cl < cneed then return {5, ms((cneed - cl) * 60000000 / ccap)} end
        end
        local function reset() return redis.call('GET', KEYS[7]) or '' end
        local cool = redis.call('PTTL', KEYS[1])
        if cool > 0 then return {1, cool, reset()} end
        if ARGV[7] ~= '' then
          local off = redis.call('HMGET', KEYS[2], 'r', 'f', 'e')
          if off[1] and off[2] == ARGV[7] then return {2, 0, off[1], off[3] or ''} end
        end
        local est = tonumber(ARGV[8])
        local h = redis.call('HMGET', KEYS[3], 'rq', 'rqAt', 'tk', 'tkAt', 'sq', 'st')
        if h[1] then
          local sq, st = tonumber(h[5]) or 0, tonumber(h[6]) or 0
          local blocked = 0
          local rq, rqAt, tk, tkAt = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
          if rq >= 0 and rq - sq <= 0 and rqAt > now then blocked = rqAt end
          if tk >= 0 and tk - st < math.max(1, est) and tkAt > now and tkAt > blocked then blocked = tkAt end
          if blocked > 0 then return {3, ms(blocked - now), reset()} end
        end
        local rps, rpm
        if tonumber(ARGV[1]) > 0 then
          local nxt, wait = gcra(KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2]))
          if not nxt then return {3, ms(wait), reset()} end
          rps = nxt
        end
        if tonumber(ARGV[3]) > 0 then
          local nxt, wait = gcra(KEYS[5], tonumber(ARGV[3]), tonumber(ARGV[4]))
          if not nxt then return {3, ms(wait), reset()} end
          rpm = nxt
        end
        local cap, need = tonumber(ARGV[5]), tonumber(ARGV[6])
        local l
        if cap > 0 then
          l = level(KEYS[6], cap)
          if l < need then return {3, ms((need - l) * 60000000 / cap), reset()} end
        end
        for i = 1, n do put(KEYS[7 + i], clients[i]) end
        if ccap > 0 and cneed > 0 then
          redis.call('HSET', KEYS[#KEYS], 'l', string.format('%.6f', cl - cneed), 's', f0(now))
          redis.call('PEXPIRE', KEYS[#KEYS], 121000)
        end
        if rps then put(KEYS[4], rps) end
        if rpm then put(KEYS[5], rpm) end
        if cap > 0 and need > 0 then
          redis.call('HSET', KEYS[6], 'l', string.format('%.6f', l - need), 's', f0(now))
          redis.call('PEXPIRE', KEYS[6], 121000)
        end
        if h[1] then
          redis.call('HINCRBY', KEYS[3], 'sq', 1)
          redis.call('HINCRBY', KEYS[3], 'st', est)
        end
        return {0}
        """;

    /// <summary>Settles a TPM reservation (an upstream's or a client key's): KEYS tpm; ARGV capacity, reserved − used
    /// (negative takes the shortfall). The level stays within ±capacity: a hostile usage block cannot lock a key out
    /// for hours.</summary>
    public const string Settle = Prelude + "\n" + """
        local cap = tonumber(ARGV[1])
        local l = level(KEYS[1], cap) + tonumber(ARGV[2])
        if l > cap then l = cap end
        if l < -cap then l = -cap end
        redis.call('HSET', KEYS[1], 'l', string.format('%.6f', l), 's', f0(now))
        redis.call('PEXPIRE', KEYS[1], 121000)
        return 0
        """;

    /// <summary>A 429 cool-down: KEYS cool; ARGV ms. Extends, never shortens, one in force.</summary>
    public const string Park = """
        local ms = tonumber(ARGV[1])
        if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
        return 0
        """;

    /// <summary>A key disabled as bad: KEYS off; ARGV reason, fingerprint. The first reason for a credential stays,
    /// except that an operator's (<c>admin</c>) replaces it. Returns the id of the last enable held ("" = none).</summary>
    public const string Disable = """
        local off = redis.call('HMGET', KEYS[1], 'r', 'f', 'e')
        if not off[1] or off[2] ~= ARGV[2] or ARGV[1] == 'admin' then redis.call('HSET', KEYS[1], 'r', ARGV[1], 'f', ARGV[2]) end
        return off[3] or ''
        """;

    /// <summary>A key enabled again: KEYS off; ARGV fingerprint, a new enable id. Written, not deleted: a missing record
    /// is Redis having lost it, never an enable (a disabled record for another credential is left alone).</summary>
    public const string Enable = """
        local off = redis.call('HMGET', KEYS[1], 'r', 'f')
        if off[1] and off[2] ~= ARGV[1] then return 0 end
        redis.call('HDEL', KEYS[1], 'r')
        redis.call('HSET', KEYS[1], 'f', ARGV[1], 'e', ARGV[2])
        return 0
        """;

    /// <summary>An operator's reset: KEYS cool, head, reset; ARGV a new reset id — the cool-down and the learned
    /// headroom are forgotten, and the instances holding a copy of either see the reset id change. The id never
    /// expires: a missing one read as a change would end copies no reset ended.</summary>
    public const string Reset = """
        redis.call('DEL', KEYS[1], KEYS[2])
        redis.call('SET', KEYS[3], ARGV[1])
        return 0
        """;

    /// <summary>Learned headroom: KEYS head; ARGV remaining requests, ms to their reset, remaining tokens, ms to their
    /// reset (-1 remaining = unknown). Resets become Redis-time instants; what was sent since restarts at zero.</summary>
    public const string Learn = Prelude + "\n" + """
        local rqMs, tkMs = tonumber(ARGV[2]), tonumber(ARGV[4])
        redis.call('HSET', KEYS[1], 'rq', ARGV[1], 'rqAt', f0(now + rqMs * 1000), 'tk', ARGV[3], 'tkAt', f0(now + tkMs * 1000), 'sq', 0, 'st', 0)
        redis.call('PEXPIRE', KEYS[1], math.max(rqMs, tkMs, 1))
        return 0
        """;

    /// <summary>Takes one token from a shared GCRA bucket: KEYS bucket; ARGV interval, depth (µs). Returns {0} or
    /// {1, ms until one is available}. What the admission script does for client buckets, alone (tests, and callers
    /// with no attempt to ride along).</summary>
    public const string Take = Prelude + "\n" + """
        local nxt, wait = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
        if not nxt then return {1, ms(wait)} end
        put(KEYS[1], nxt)
        return {0}
        """;
}
