using System.Security.Cryptography;
using System.Text;
using LLMProxy.Configuration;
using LLMProxy.Resilience;
using StackExchange.Redis;

namespace LLMProxy.Cluster;

/// <summary>What the shared state said about one attempt.</summary>
internal enum SharedVerdict
{
    /// <summary>Admitted by Redis, or decided locally because Redis is down or slow.</summary>
    Admitted,
    /// <summary>The upstream is cooling, disabled or out of a budget on the cluster: the local state now knows it too,
    /// and the attempt stage chooses again.</summary>
    UpstreamRefused,
    /// <summary>A client bucket (IP or client key) is empty on the cluster: the request is answered 429.</summary>
    ClientLimited,
}

/// <summary>What the cluster said about one attempt: the verdict, how long until a refusal may pass, the TPM tokens
/// reserved on the cluster when admitted (the upstream's, and the client key's), and — for
/// <see cref="SharedVerdict.ClientLimited"/> — whether the empty bucket or budget is a client key's (else a client IP's).</summary>
internal readonly record struct SharedAdmission(SharedVerdict Verdict, TimeSpan RetryAfter, long Reserved, bool ByClientKey = false,
    long ClientReserved = 0);

/// <summary>
/// One upstream's view of the shared state (SPEC §17): the keys and rates its scripts need, computed once. The local
/// state (<see cref="Runtime.UpstreamRuntime"/>'s buckets, cool-down, headroom, disabled flag) stays the source of every
/// decision the instance makes on its own; this adds the cluster's word on top — one script per attempt — and writes
/// what this instance learns (a 429, a bad key, headroom, real token usage) for the others, without waiting.
/// </summary>
internal sealed class SharedUpstream
{
    private readonly RedisCluster _cluster;
    private readonly RedisKey[] _keys;
    private readonly RedisKey[] _tpmKey, _offKey, _coolKey, _headKey;
    private readonly RedisKey _resetKey;
    private readonly RedisValue _rpsInterval, _rpsDepth, _rpmInterval, _rpmDepth, _tpmCap;
    private readonly long _capacity;

    /// <summary>The most an attempt adds to the tokens sent against learned headroom: a client's <c>max_tokens</c> makes
    /// the estimate up to <c>long.MaxValue / 2</c>, which Lua hands to <c>HINCRBY</c> as a float (a script error, and
    /// Redis marked down for every request); 2^32 is still more than any provider's remaining tokens.</summary>
    private const long MaxHeadroomEstimate = 1L << 32;

    public SharedUpstream(RedisCluster cluster, UpstreamConfig config, string? authorization)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(config);
        _cluster = cluster;
        Fingerprint = FingerprintOf(config, authorization);
        var root = cluster.Prefix + "up:" + config.Name + ":";
        // What belongs to the account — its cool-down, headroom and buckets, and the resets of those — is keyed by the
        // credential too: after a reload that rotates the key (another account), nothing of the old one is picked up
        // (SPEC §16). The key's health is keyed by name and holds the fingerprint, so that a rotated key is told apart.
        var account = root + Fingerprint + ":";
        _keys = [account + "cool", root + "off", account + "head", account + "rps", account + "rpm", account + "tpm", account + "reset"];
        (_coolKey, _offKey, _headKey, _tpmKey, _resetKey) = ([_keys[0]], [_keys[1]], [_keys[2]], [_keys[5]], _keys[6]);
        var limits = config.Ratelimit;
        (_rpsInterval, _rpsDepth) = limits is { } r ? Gcra(r.PerSecond, Math.Max(1, r.EffectiveBurst)) : (0, 0);
        (_rpmInterval, _rpmDepth) = limits?.RequestsPerMinute is { } rpm ? Gcra(rpm / 60.0, rpm) : (0, 0);
        _capacity = limits?.TokensPerMinute ?? 0;
        _tpmCap = _capacity;
    }

    /// <summary>Identifies the credential the proxy sends to this upstream (a truncated SHA-256, never the key): a key
    /// disabled on the cluster stays disabled only for the same credential, so a reload with a rotated key starts clean.</summary>
    public string Fingerprint { get; }

    /// <summary>GCRA interval and depth in µs for <paramref name="perSecond"/> with <paramref name="burst"/>.</summary>
    internal static (RedisValue Interval, RedisValue Depth) Gcra(double perSecond, int burst)
    {
        var interval = Math.Max(1.0, Math.Round(1_000_000 / perSecond));
        return (interval, interval * burst);
    }

    /// <summary>The hot path's one round trip: asks the cluster whether this attempt may go — the upstream not cooling,
    /// not disabled, not out of learned headroom, a per-second and per-minute token and <paramref name="estimate"/>
    /// TPM tokens available, each of <paramref name="clients"/> with a token, and <paramref name="clientTokens"/>'
    /// budget holding its tokens — and takes all of them at once. A refusal is applied to the local state (cool-down,
    /// disabled, a short block) so the next selection skips the upstream without asking again.</summary>
    /// <remarks>Admitted by Redis, <see cref="SharedAdmission.Reserved"/> is the upstream's reservation and
    /// <see cref="SharedAdmission.ClientReserved"/> the client key's, settled by whoever holds them
    /// (<see cref="SharedBudget.Settle"/>); both are 0 when decided locally.</remarks>
    public async ValueTask<SharedAdmission> AcquireAsync(Runtime.UpstreamRuntime upstream, bool trial,
        long estimate, List<SharedBucketTake>? clients, SharedBudgetTake? clientTokens = null)
    {
        var need = _capacity > 0 ? Math.Clamp(estimate, 0, _capacity) : 0;
        var keys = _keys;
        var clientCount = clients?.Count ?? 0;
        var budget = clientTokens is { Tokens: > 0 } wanted ? wanted.Budget : null;
        var clientNeed = budget is null ? 0 : Math.Min(clientTokens!.Value.Tokens, budget.Capacity);
        if (clientCount > 0 || budget is not null)
        {
            keys = new RedisKey[_keys.Length + clientCount + (budget is null ? 0 : 1)];
            _keys.CopyTo(keys, 0);
            if (budget is not null)
            {
                keys[^1] = budget.Key;
            }
        }
        var values = new RedisValue[10 + 2 * clientCount];
        values[0] = _rpsInterval;
        values[1] = _rpsDepth;
        values[2] = _rpmInterval;
        values[3] = _rpmDepth;
        values[4] = _tpmCap;
        values[5] = need;
        values[6] = trial ? "" : Fingerprint;
        values[7] = Math.Clamp(estimate, 0, MaxHeadroomEstimate);
        values[8] = budget is null ? 0 : budget.Capacity;
        values[9] = clientNeed;
        for (var i = 0; i < clientCount; i++)
        {
            var take = clients![i];
            keys[_keys.Length + i] = take.Key;
            values[10 + 2 * i] = take.Bucket.Interval;
            values[11 + 2 * i] = take.Bucket.Depth;
        }
        var result = await _cluster.EvaluateAsync(SharedScripts.Acquire, keys, values).ConfigureAwait(false);
        if (result is null || result.Resp2Type != ResultType.Array)
        {
            return new(SharedVerdict.Admitted, TimeSpan.Zero, 0);
        }
        int code;
        TimeSpan wait;
        RedisResult[] answer;
        try
        {
            answer = (RedisResult[])result!;
            code = (int)answer[0];
            wait = answer.Length > 1 ? TimeSpan.FromMilliseconds(Math.Clamp((long)answer[1], 1, (long)RetryAfter.MaxCoolDown.TotalMilliseconds)) : TimeSpan.Zero;
        }
        catch (Exception ex) when (ex is InvalidCastException or FormatException or OverflowException or IndexOutOfRangeException)
        {
            // Not what the script answers (another writer under this prefix?): decided locally, as when Redis is away.
            return new(SharedVerdict.Admitted, TimeSpan.Zero, 0);
        }
        switch (code)
        {
            case 0:
                return new(SharedVerdict.Admitted, TimeSpan.Zero, need, ClientReserved: clientNeed);
            case 1:
                upstream.CoolDown.Park(wait);
                SeenReset(answer);
                return new(SharedVerdict.UpstreamRefused, wait, 0);
            case 2:
                var reason = answer.Length > 2 ? Reason((string?)answer[2]) : "disabled";
                if (upstream.AdoptDisabled(reason) is { } disabled)
                {
                    Volatile.Write(ref _baseline, new EnableBaseline(disabled, answer.Length > 3 ? (string?)answer[3] ?? "" : ""));
                    Observability.Log.KeyDisabled(_cluster.Logger, upstream.Name, reason + " (found by another instance)");
                }
                return new(SharedVerdict.UpstreamRefused, TimeSpan.Zero, 0);
            case 3:
                upstream.BlockShared(wait);
                SeenReset(answer);
                return new(SharedVerdict.UpstreamRefused, wait, 0);
            case 4:
                // Which bucket (1-based into the takes): the caller answers for that kind of client limit.
                var which = answer.Length > 2 ? (int)answer[2] - 1 : 0;
                return new(SharedVerdict.ClientLimited, wait, 0, clients is { } c && which >= 0 && which < c.Count && c[which].Bucket.IsClientKey);
            case 5:
                return new(SharedVerdict.ClientLimited, wait, 0, ByClientKey: true);
            default:
                return new(SharedVerdict.Admitted, TimeSpan.Zero, 0);
        }
    }

    // A reason read back from Redis is shown in the admin API and logs: keep it to what this proxy writes.
    private static string Reason(string? text) =>
        text is { Length: > 0 and <= 64 } && text.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-') ? text : "disabled";

    /// <summary>Replaces a shared TPM reservation of <paramref name="reserved"/> by the real <paramref name="used"/>
    /// (0 = a refund), without waiting.</summary>
    public void Settle(long reserved, long used)
    {
        if (_capacity > 0 && reserved != used)
        {
            _cluster.Send(SharedScripts.Settle, _tpmKey, [_tpmCap, reserved - used]);
        }
    }

    /// <summary>Tells the cluster this upstream answered 429: every instance parks it for <paramref name="duration"/>.</summary>
    public void Park(TimeSpan duration)
    {
        if (duration > TimeSpan.Zero)
        {
            _cluster.Send(SharedScripts.Park, _coolKey, [(long)Math.Ceiling(duration.TotalMilliseconds)]);
        }
    }

    /// <summary>Tells the cluster this key is bad (SPEC §13.4), or disabled by its operator, without waiting; the answer
    /// — the id of the last enable the cluster holds — is the baseline against which an enable elsewhere is told.</summary>
    public void Disable(Runtime.KeyDisabled disabled) => _ = DisableAsync(disabled);

    private async Task DisableAsync(Runtime.KeyDisabled disabled)
    {
        var result = await _cluster.EvaluateAsync(SharedScripts.Disable, _offKey, [disabled.Reason, Fingerprint]).ConfigureAwait(false);
        if (result is { IsNull: false, Resp2Type: ResultType.BulkString })
        {
            Volatile.Write(ref _baseline, new EnableBaseline(disabled, (string?)result ?? ""));
        }
    }

    /// <summary>Tells the cluster an operator reset this upstream: its cool-down and learned headroom end everywhere —
    /// in Redis at once, in the other instances' copies at their next check (<see cref="ResetElsewhereAsync"/>).</summary>
    public void Reset() => _cluster.Send(SharedScripts.Reset, [_keys[0], _keys[2], _resetKey], [Guid.NewGuid().ToString("N")]);

    // The id of the operator's last reset when this upstream came to be held back here (null = not known yet): a
    // different one later means another instance's operator reset it since.
    private string? _resetSeen;

    private void SeenReset(RedisResult[] answer)
    {
        if (answer.Length > 2 && answer[2].Resp2Type == ResultType.BulkString)
        {
            Volatile.Write(ref _resetSeen, (string?)answer[2] ?? "");
        }
    }

    /// <summary>Whether an operator reset this upstream on another instance since it came to be held back here (a
    /// cool-down, a shared-budget block or learned headroom: copies of the cluster's that a reset ends). Read once a
    /// second while it is held back; the first read only learns the reset id.</summary>
    public async ValueTask<bool> ResetElsewhereAsync()
    {
        var (answered, value) = await _cluster.StringGetAsync(_resetKey).ConfigureAwait(false);
        if (!answered)
        {
            return false;
        }
        var id = value.IsNull ? "" : (string)value!;
        return Interlocked.Exchange(ref _resetSeen, id) is { } seen && seen != id;
    }

    /// <summary>This upstream is not held back here any more: the next hold learns the reset id afresh.</summary>
    public void NotHeld() => Volatile.Write(ref _resetSeen, null);

    /// <summary>Tells the cluster this key is good again (a trial passed, or an operator enabled it): a new enable id,
    /// which the other instances holding it disabled see change.</summary>
    public void Enable() => _cluster.Send(SharedScripts.Enable, _offKey, [Fingerprint, Guid.NewGuid().ToString("N")]);

    /// <summary>Writes back what this instance learned alone while Redis was away: its cool-down and disabled state.</summary>
    public void Republish(Runtime.UpstreamRuntime upstream, DateTimeOffset now)
    {
        if (upstream.CoolDown.Until is { } until && until > now)
        {
            Park(until - now);
        }
        if (upstream.Disabled is { } disabled)
        {
            Disable(disabled);
        }
    }

    private static readonly RedisValue[] OffFields = ["r", "f", "e"];

    // The id of the last enable the cluster held when this instance's disabled state began (or was last seen disabled
    // on the cluster): an enable anywhere writes a new one, so only a change is "enabled by another instance".
    private EnableBaseline? _baseline;

    private sealed record EnableBaseline(Runtime.KeyDisabled Disabled, string EnableId);

    /// <summary>Whether another instance enabled this key (for this credential) since it became <paramref name="disabled"/>
    /// here. Read once a second for keys disabled here, so a key enabled elsewhere comes back here too. Only an enable
    /// written after this disabled state began counts: a record Redis lost (flushed, evicted, a write it refused) never
    /// enables a key — it is written back instead — and least of all one its operator disabled (SPEC §13.4).</summary>
    public async ValueTask<bool> EnabledElsewhereAsync(Runtime.KeyDisabled disabled)
    {
        var (answered, values) = await _cluster.HashGetAsync(_offKey[0], OffFields).ConfigureAwait(false);
        if (!answered || values is not [var reason, var fingerprint, var enableId])
        {
            return false;
        }
        if (fingerprint.IsNull)
        {
            Disable(disabled);
            return false;
        }
        if (fingerprint != Fingerprint)
        {
            return false; // another credential's record: instances on different configs (a reload under way)
        }
        var id = enableId.IsNull ? "" : (string)enableId!;
        var baseline = Volatile.Read(ref _baseline);
        if (reason.IsNull && baseline is not null && baseline.Disabled == disabled)
        {
            return id != baseline.EnableId;
        }
        // Still disabled on the cluster — an enable from now on writes a new id — or enabled with no baseline for this
        // state (its own write never landed): then that enable may be older than this state, and is not taken for one.
        Volatile.Write(ref _baseline, new EnableBaseline(disabled, id));
        return false;
    }

    /// <summary>Shares what the provider said about this key's remaining limits (SPEC §13.1).</summary>
    public void Learn(Headroom learned, DateTimeOffset now)
    {
        static long Ms(DateTimeOffset? reset, DateTimeOffset now) =>
            reset is { } r && r > now ? (long)Math.Ceiling((r - now).TotalMilliseconds) : 0;
        var requestsMs = learned.RemainingRequests is null ? 0 : Ms(learned.RequestsReset, now);
        var tokensMs = learned.RemainingTokens is null ? 0 : Ms(learned.TokensReset, now);
        if (requestsMs == 0 && tokensMs == 0)
        {
            return;
        }
        _cluster.Send(SharedScripts.Learn, _headKey,
            [requestsMs > 0 ? learned.RemainingRequests!.Value : -1, requestsMs, tokensMs > 0 ? learned.RemainingTokens!.Value : -1, tokensMs]);
    }

    private static string FingerprintOf(UpstreamConfig config, string? authorization)
    {
        var text = new StringBuilder(config.Url).Append('\n').Append(authorization);
        foreach (var op in config.Headers)
        {
            text.Append('\n').Append(op.Op.ToString()).Append(':').Append(op.Key).Append('=').Append(op.Value);
        }
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return Convert.ToHexStringLower(hash.AsSpan(0, 8));
    }
}

/// <summary>
/// A shared request bucket (GCRA) that many ids each have their own of — the seam for client limits on the cluster:
/// the forward's per-IP <c>ratelimit</c> today, a client key's <c>ratelimit</c> (SPEC §15) likewise. Its tokens are
/// taken in the same script as the attempt's upstream admission, so sharing a client limit adds no round trip.
/// </summary>
internal sealed class SharedBucket
{
    /// <param name="cluster">Where the buckets live.</param>
    /// <param name="scope">Names the limit (e.g. <c>fwd:main:ip</c>); ids are unique within it.</param>
    /// <param name="isClientKey">A client key's limit (its refusal is <c>429 client_key_rate_limited</c>-style, counted
    /// as <c>limit_type="client_key"</c>) rather than a client IP's.</param>
    public SharedBucket(RedisCluster cluster, string scope, double perSecond, int burst, bool isClientKey = false)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        IsClientKey = isClientKey;
        KeyPrefix = cluster.Prefix + "cl:" + scope + ":";
        (Interval, Depth) = SharedUpstream.Gcra(perSecond, Math.Max(1, burst));
    }

    public string KeyPrefix { get; }
    public bool IsClientKey { get; }
    public RedisValue Interval { get; }
    public RedisValue Depth { get; }

    /// <summary>A take of one token from <paramref name="id"/>'s bucket, to ride along with the next admission.</summary>
    public SharedBucketTake For(string id) => new(this, KeyPrefix + id);
}

/// <summary>One token to take from one id's shared bucket.</summary>
internal readonly record struct SharedBucketTake(SharedBucket Bucket, RedisKey Key);

/// <summary>
/// A client key's <c>tokensPerMinute</c> on the cluster (SPEC §15, §17): one token bucket (level and stamp, in Redis
/// time) that every instance reserves from with the first attempt's admission — no round trip of its own — and
/// settles to the real usage, or refunds, without waiting, through the same script as an upstream's TPM.
/// </summary>
internal sealed class SharedBudget
{
    private readonly RedisCluster _cluster;
    private readonly RedisKey[] _key;
    private readonly RedisValue _capacity;

    /// <param name="scope">Names the budget (e.g. <c>fwd:main:tpm:team_a</c>), unique on the cluster's prefix.</param>
    /// <param name="perMinute">Capacity and refill per minute, as the local budget's.</param>
    public SharedBudget(RedisCluster cluster, string scope, long perMinute)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentOutOfRangeException.ThrowIfLessThan(perMinute, 1);
        _cluster = cluster;
        Key = cluster.Prefix + "cl:" + scope;
        _key = [Key];
        Capacity = perMinute;
        _capacity = perMinute;
    }

    public RedisKey Key { get; }
    public long Capacity { get; }

    /// <summary>Replaces a reservation of <paramref name="reserved"/> by the real <paramref name="used"/> (0 = a refund),
    /// without waiting; skipped (and counted) while Redis is away.</summary>
    public void Settle(long reserved, long used)
    {
        if (reserved != used)
        {
            _cluster.Send(SharedScripts.Settle, _key, [_capacity, reserved - used]);
        }
    }
}

/// <summary>Tokens to reserve on a client key's shared budget with the next admission (at most its capacity).</summary>
internal readonly record struct SharedBudgetTake(SharedBudget Budget, long Tokens);
