using System.Text;
using LLMProxy.Cluster;
using LLMProxy.Configuration;
using LLMProxy.Forwarding;
using LLMProxy.Routing;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;
using LLMProxy.Resilience;

namespace LLMProxy.Runtime;

/// <summary>Why an upstream cannot take a request right now.</summary>
internal enum Unavailability
{
    None = 0,
    /// <summary>The key was disabled as bad (SPEC §13.4) and no trial is due. Ranked below the others, so a group with
    /// some member only rate-limited still answers 429 with Retry-After.</summary>
    Disabled = 1,
    /// <summary>Parked after a 429, out of upstream rate-limit tokens or of a budget (RPM, TPM, concurrency, learned
    /// provider headroom): an account signal.</summary>
    RateLimited = 2,
    /// <summary>Breaker open or half-open with every trial slot taken.</summary>
    BreakerOpen = 3,
}

/// <summary>
/// One configured upstream, compiled: the request-building facts computed once, plus the live state
/// (breaker, 429 cool-down, token bucket, in-flight count) shared by every forward and group using it.
/// </summary>
internal sealed class UpstreamRuntime
{
    /// <summary>Retry-After given when only <c>maxConcurrent</c> keeps a key out: when a slot frees is unknown.</summary>
    internal static readonly TimeSpan ConcurrencyRetry = TimeSpan.FromSeconds(1);

    private int _inFlight;
    private readonly TimeProvider _time;
    private Headroom? _learned;
    // Requests and estimated tokens sent since the provider last told its headroom: what it has not counted yet.
    private long _sentSinceLearned, _tokensSinceLearned, _outputSinceLearned;

    public UpstreamRuntime(UpstreamConfig config, TimeProvider time)
    {
        _time = time;
        Config = config;
        Name = config.Name;
        var uri = new Uri(config.Url, UriKind.Absolute);
        IsFullEndpoint = uri.AbsolutePath.Length > 1;
        UrlHasQuery = uri.Query.Length > 0;
        // Full endpoint: kept as written. Base URL: scheme://authority plus any path prefix, no trailing slash.
        Url = IsFullEndpoint
            ? uri.GetLeftPart(UriPartial.Path)
            : uri.GetLeftPart(UriPartial.Authority);
        Query = uri.Query;
        Host = uri.Authority;
        EndpointIsLlmCall = IsFullEndpoint && Forwarding.ApiShapes.IsLlmCall(uri.AbsolutePath);
        Authorization = config.Auth.Type switch
        {
            AuthType.Bearer => "Bearer " + config.Auth.Token,
            AuthType.Basic => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{config.Auth.Username}:{config.Auth.Password}")),
            _ => null,
        };
        HeaderOps = [.. config.Headers];
        HeaderOpCredentials = [.. HeaderOps.Select(op => Forwarding.UpstreamTransformer.Credentials.Of(op.Key))];
        InjectsCredentials = Authorization is not null
            || HeaderOps.Where((op, i) => op.Op is HeaderOp.Insert or HeaderOp.Replace && (HeaderOpCredentials[i] & Forwarding.UpstreamTransformer.Credentials.Keys) != 0).Any();
        Recheck = TimeSpan.FromMilliseconds(config.Recheck);
        _models = config.Models is { } models ? [.. models.Select(ModelGlob.Parse)] : null;
        // Each mapping's JSON token is encoded once; a request only splices it in.
        _modelMap = config.ModelMap?.ToDictionary(m => m.Key, m => ModelRewrite.EncodeModel(m.Value), StringComparer.OrdinalIgnoreCase);
        Breaker = config.Breaker is { } b ? new CircuitBreaker(b, time) : null;
        CoolDown = new CoolDown(time);
        _sharedBlock = new CoolDown(time);
        Recent = new RecentCounter(time);
        Limiter = config.Ratelimit is { } r ? TokenBucketLimiter.For(r, time) : null;
        if (config.Ratelimit is { } budgets)
        {
            Rpm = budgets.RequestsPerMinute is { } rpm ? new TokenBucketLimiter(rpm / 60.0, rpm, time) : null;
            Tpm = budgets.TokensPerMinute is { } tpm ? new TokenBudget(tpm, time) : null;
            MaxConcurrent = budgets.MaxConcurrent ?? int.MaxValue;
        }
        else
        {
            MaxConcurrent = int.MaxValue;
        }
    }

    private readonly ModelGlob[]? _models;
    private readonly Dictionary<string, byte[]>? _modelMap;

    public string Name { get; }
    /// <summary>Whether <c>models</c> or <c>modelMap</c> is set: only then does the request's model matter here.</summary>
    public bool HasModelRules => _models is not null || _modelMap is not null;

    /// <summary>Whether this upstream serves <paramref name="model"/> (<c>models</c> globs; absent = any). A request
    /// without a model (e.g. <c>GET /v1/models</c>) is served by every member.</summary>
    public bool Serves(string? model)
    {
        if (_models is null || model is null)
        {
            return true;
        }
        foreach (var glob in _models)
        {
            if (glob.IsMatch(model))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The JSON token of the model to send instead of <paramref name="model"/> (<c>modelMap</c>), or null.</summary>
    public byte[]? MappedModel(string? model) =>
        model is not null && _modelMap is not null && _modelMap.TryGetValue(model, out var token) ? token : null;
    public UpstreamConfig Config { get; }
    /// <summary>True when the url has a path: the client's path is replaced by it.</summary>
    public bool IsFullEndpoint { get; }
    /// <summary>The url is a full endpoint of a known LLM API shape: whatever path the client sent, it gets an LLM call.</summary>
    public bool EndpointIsLlmCall { get; }
    /// <summary>Full endpoint (without query) or base (scheme://authority).</summary>
    public string Url { get; }
    /// <summary>The url's own query including '?', or empty.</summary>
    public string Query { get; }
    public bool UrlHasQuery { get; }
    /// <summary>The destination of the last request sent here, for the next one to the same path and query.</summary>
    internal Forwarding.UpstreamDestination? LastDestination;
    public string Host { get; }
    /// <summary>Precomputed Authorization header value, null for auth type none.</summary>
    public string? Authorization { get; }
    public HeaderOpConfig[] HeaderOps { get; }
    /// <summary>Per header op, the credential header it edits (UpstreamTransformer.Credentials bits; 0 for any other),
    /// found once here rather than by name per request.</summary>
    public int[] HeaderOpCredentials { get; }
    /// <summary>Whether the proxy sends its own key here (auth bearer/basic, or a header op inserting or replacing
    /// <c>Authorization</c>, <c>x-api-key</c> or <c>api-key</c>): only then can an answer say the key is bad (SPEC §13.4) —
    /// and only when that request carried them and no client's (<see cref="Forwarding.Attempt.OwnCredentials"/>).</summary>
    public bool InjectsCredentials { get; }
    /// <summary><c>recheck</c>: the wait between trials of a disabled key; zero = never.</summary>
    public TimeSpan Recheck { get; }

    private KeyDisabled? _disabled;
    private int _trialTaken;

    /// <summary>Why and since when this key is disabled (SPEC §13.4); null while it is enabled.</summary>
    public KeyDisabled? Disabled => Volatile.Read(ref _disabled);

    /// <summary>False while the key is disabled for good until someone acts: by an operator, or as bad with
    /// <c>recheck: 0</c> (no trial ever). Every other unavailability ends by itself.</summary>
    public bool RecoversByItself => Volatile.Read(ref _disabled) is not { } d || !d.ByAdmin && Recheck > TimeSpan.Zero;

    /// <summary>Disables this key for <paramref name="reason"/> (e.g. <c>status_401</c>, <c>insufficient_quota</c>).
    /// A key already disabled keeps its first reason and time unless <paramref name="trial"/> failed, which restarts
    /// the wait for the next one. A key the operator disabled stays so (only <see cref="AdminEnable"/> ends that).</summary>
    public void Disable(string reason, bool trial = false)
    {
        if (SetDisabled(reason, trial, byAdmin: false) is { } disabled)
        {
            Shared?.Disable(disabled);
        }
    }

    /// <summary>Disables this key because the cluster says another instance found it bad, or its operator disabled it
    /// (SPEC §17): like <see cref="Disable"/> (or <see cref="AdminDisable"/> for reason <c>admin</c>, so no trial
    /// undoes an operator's decision), without telling the cluster again. Null when it was already disabled, else the
    /// disabled state it starts.</summary>
    public KeyDisabled? AdoptDisabled(string reason) => SetDisabled(reason, trial: false, byAdmin: reason == AdminReason);

    /// <summary>Ends the disabled state <paramref name="disabled"/> because another instance enabled the key on the
    /// cluster (its trial passed, or an operator enabled it there), without telling the cluster again. False when this
    /// key is no longer in that state (enabled meanwhile, or disabled anew).</summary>
    public bool AdoptEnabled(KeyDisabled disabled)
    {
        if (Interlocked.CompareExchange(ref _disabled, null, disabled) != disabled)
        {
            return false;
        }
        Volatile.Write(ref _trialTaken, 0);
        return true;
    }

    private KeyDisabled? SetDisabled(string reason, bool trial, bool byAdmin)
    {
        var now = _time.GetUtcNow();
        var current = Volatile.Read(ref _disabled);
        if (current is not null && (!trial || current.ByAdmin))
        {
            return null;
        }
        var next = byAdmin
            ? new KeyDisabled(AdminReason, now, DateTimeOffset.MaxValue, ByAdmin: true)
            : new KeyDisabled(reason, current?.Since ?? now, now + Recheck);
        // Compare-and-swap: an operator's disable or enable that lands meanwhile wins over this automatic one.
        if (Interlocked.CompareExchange(ref _disabled, next, current) == current)
        {
            Volatile.Write(ref _trialTaken, 0);
            return next;
        }
        return null;
    }

    /// <summary>Ends a trial of a disabled key: a 2xx answer enables it, anything else keeps it disabled and restarts
    /// the wait for the next trial.</summary>
    public void EndTrial(bool success)
    {
        var current = Volatile.Read(ref _disabled);
        if (current is { ByAdmin: true })
        {
            // The operator disabled it while the trial was out: the trial's answer changes nothing.
            Volatile.Write(ref _trialTaken, 0);
        }
        else if (success)
        {
            if (current is not null && Interlocked.CompareExchange(ref _disabled, null, current) == current)
            {
                Shared?.Enable();
            }
            Volatile.Write(ref _trialTaken, 0);
        }
        else if (current is not null)
        {
            Disable(current.Reason, trial: true);
        }
    }

    /// <summary>Gives a taken trial back without a verdict (its answer was to a client's credentials, not the key's).</summary>
    public void ReturnTrial() => Volatile.Write(ref _trialTaken, 0);

    /// <summary>Whether a disabled key's trial is due and not taken by another request.</summary>
    private bool TrialDue(KeyDisabled d) =>
        !d.ByAdmin && Recheck > TimeSpan.Zero && _time.GetUtcNow() >= d.NextTrial && Volatile.Read(ref _trialTaken) == 0;
    /// <summary>Disabled by the operator (admin API, reason <c>admin</c>): no trial is ever let through; only
    /// <see cref="AdminEnable"/> or a reload that changes this upstream brings it back.</summary>
    public void AdminDisable()
    {
        var disabled = new KeyDisabled(AdminReason, _time.GetUtcNow(), DateTimeOffset.MaxValue, ByAdmin: true);
        Volatile.Write(ref _disabled, disabled);
        Volatile.Write(ref _trialTaken, 0);
        Shared?.Disable(disabled); // SPEC §17: an operator's decision holds on every instance
    }

    /// <summary>Enabled by the operator: ends any disabled state, the operator's or key health's (SPEC §13.4).</summary>
    public void AdminEnable()
    {
        Volatile.Write(ref _disabled, null);
        Volatile.Write(ref _trialTaken, 0);
        Shared?.Enable();
    }

    /// <summary>Reset by the operator: breaker closed, 429 cool-down ended, learned provider headroom forgotten. A disabled
    /// key stays disabled (that is <see cref="AdminEnable"/>'s job).</summary>
    public void AdminReset()
    {
        Breaker?.Reset();
        Shared?.Reset(); // the cluster's cool-down and learned headroom too; the shared buckets are not the operator's to refill
        AdoptReset();
    }

    /// <summary>Reset by the operator on another instance (SPEC §17): the 429 cool-down, the shared-budget block and
    /// the learned headroom held here end too — copies of what the reset ended on the cluster. The breaker stays: each
    /// instance's own.</summary>
    public void AdoptReset()
    {
        CoolDown.Clear();
        _sharedBlock.Clear();
        Volatile.Write(ref _learned, null);
        Interlocked.Exchange(ref _sentSinceLearned, 0);
        Interlocked.Exchange(ref _tokensSinceLearned, 0);
        Interlocked.Exchange(ref _outputSinceLearned, 0);
    }

    /// <summary>Whether a 429 cool-down, a shared-budget block or learned headroom keeps this upstream out now: what an
    /// operator's reset ends.</summary>
    public bool HeldByResettable =>
        CoolDown.IsCooling || _sharedBlock.IsCooling
        || Volatile.Read(ref _learned) is { } learned
            && learned.Blocks(1, _time.GetUtcNow(), SentSinceLearned);

    /// <summary>The disabled reason of a key disabled through the admin API.</summary>
    public const string AdminReason = "admin";

    private LastError? _lastError;

    /// <summary>The last failed attempt on this upstream (kind, status, when); null until one failed.</summary>
    public LastError? LastError => Volatile.Read(ref _lastError);

    /// <summary>Remembers a failed attempt for the admin API (failure paths only: one small object each).</summary>
    public void RecordError(string kind, int status) => Volatile.Write(ref _lastError, new LastError(kind, status, _time.GetUtcNow()));

    /// <summary>Requests sent and tokens reported in the last minute (admin API, status page).</summary>
    public RecentCounter Recent { get; }
    public CircuitBreaker? Breaker { get; }
    public CoolDown CoolDown { get; }

    private volatile bool _replaced;

    /// <summary>A reload removed this upstream or gave its name a new config: requests still in flight end on it, but its
    /// breaker no longer speaks for the name (its transitions are not the series, log lines or counts of the one in force).</summary>
    public bool Replaced
    {
        get => _replaced;
        set => _replaced = value;
    }

    /// <summary>This upstream's shared state when <c>cluster.redis</c> is set (SPEC §17); null otherwise.</summary>
    public SharedUpstream? Shared { get; private set; }

    /// <summary>Shares this upstream's limits and health through <paramref name="cluster"/> (once, when compiled).</summary>
    public void AttachShared(RedisCluster cluster) => Shared ??= new SharedUpstream(cluster, Config, Authorization);

    // The cluster said a budget is empty until then: the same extend-never-shorten deadline as the 429 cool-down.
    private readonly CoolDown _sharedBlock;

    /// <summary>Keeps this upstream out of selection for <paramref name="duration"/> because the cluster's shared
    /// budgets (rate, TPM or learned headroom) are empty: the next requests choose another member without asking.</summary>
    public void BlockShared(TimeSpan duration) => _sharedBlock.Park(duration);

    public TokenBucketLimiter? Limiter { get; }
    /// <summary><c>ratelimit.requestsPerMinute</c>: capacity = the value, refilled over a minute; null when not set.</summary>
    public TokenBucketLimiter? Rpm { get; }
    /// <summary><c>ratelimit.tokensPerMinute</c>, reserve-then-settle; null when not set.</summary>
    public TokenBudget? Tpm { get; }
    /// <summary><c>ratelimit.maxConcurrent</c>; <see cref="int.MaxValue"/> when not set.</summary>
    public int MaxConcurrent { get; }
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>What the provider's last answer with rate-limit headers said (null until one did).</summary>
    public Headroom? Learned => Volatile.Read(ref _learned);

    /// <summary>Learns the provider's headroom from an answer's headers (kept until the next answer that has them);
    /// returns what was learned (null when the headers held nothing usable).</summary>
    public Headroom? Learn(System.Net.Http.Headers.HttpResponseHeaders headers)
    {
        var learned = Headroom.Parse(headers, _time.GetUtcNow());
        if (learned is not null)
        {
            Volatile.Write(ref _learned, learned);
            Shared?.Learn(learned, _time.GetUtcNow());
            // Approximate on purpose: requests still in flight may or may not be in the provider's numbers.
            Interlocked.Exchange(ref _sentSinceLearned, 0);
            Interlocked.Exchange(ref _tokensSinceLearned, 0);
            Interlocked.Exchange(ref _outputSinceLearned, 0);
        }
        return learned;
    }

    /// <summary>Cheap availability check used while selecting, for a request estimated at <paramref name="tokens"/>
    /// LLM tokens (0 = "any request at all"); takes nothing.</summary>
    public Unavailability Check(TokenNeed tokens = default)
    {
        if (Volatile.Read(ref _disabled) is { } disabled && !TrialDue(disabled))
        {
            return Unavailability.Disabled;
        }
        if (Breaker is { IsAvailable: false })
        {
            return Unavailability.BreakerOpen;
        }
        if (CoolDown.IsCooling || Limiter is { HasToken: false } || !HasBudget(tokens)
            || _sharedBlock.IsCooling)
        {
            return Unavailability.RateLimited;
        }
        return Unavailability.None;
    }

    private bool HasBudget(TokenNeed tokens) =>
        Volatile.Read(ref _inFlight) < MaxConcurrent
        && Rpm is not { HasToken: false }
        && (Tpm is null || Tpm.Covers(tokens.Total))
        && (Volatile.Read(ref _learned) is not { } learned || !learned.Blocks(tokens, _time.GetUtcNow(), SentSinceLearned));

    /// <summary>LLM tokens this upstream may still take now (<c>least_loaded</c>'s tie-break, SPEC §13.3): the least of its
    /// declared TPM budget left and what the provider last said remains (less what went out since);
    /// <see cref="long.MaxValue"/> when neither limits it.</summary>
    public long TokenHeadroom
    {
        get
        {
            var declared = Tpm?.Available ?? long.MaxValue;
            return Volatile.Read(ref _learned)?.TokensLeft(_time.GetUtcNow(), SentSinceLearned) is { } learned && learned < declared
                ? learned
                : declared;
        }
    }

    /// <summary>What went out since the provider last told its headroom: what its numbers do not count yet.</summary>
    private Headroom.Sent SentSinceLearned => new(Interlocked.Read(ref _sentSinceLearned), Interlocked.Read(ref _tokensSinceLearned),
        Interlocked.Read(ref _outputSinceLearned));

    /// <summary>Earliest moment this upstream may be available again for a request of <paramref name="tokens"/>
    /// (null when it is available now).</summary>
    public DateTimeOffset? AvailableAt(TimeProvider time, TokenNeed tokens = default)
    {
        var now = time.GetUtcNow();
        DateTimeOffset? at = null;
        if (Rpm is { HasToken: false } rpm)
        {
            Later(ref at, now + rpm.TimeUntilToken);
        }
        if (Tpm is { } tpm && tpm.TimeUntil(tokens.Total) is { Ticks: > 0 } wait)
        {
            Later(ref at, now + wait);
        }
        if (Volatile.Read(ref _learned)?.BlockedUntil(tokens, now, SentSinceLearned) is { } learned)
        {
            Later(ref at, learned);
        }
        if (Volatile.Read(ref _inFlight) >= MaxConcurrent)
        {
            Later(ref at, now + ConcurrencyRetry);
        }
        if (_sharedBlock.Until is { } shared)
        {
            Later(ref at, shared);
        }
        if (Volatile.Read(ref _disabled) is { ByAdmin: false } disabled && Recheck > TimeSpan.Zero && disabled.NextTrial > now)
        {
            Later(ref at, disabled.NextTrial);
        }
        return ResilienceAvailableAt(time) is { } other ? Max(other, at) : at;
    }

    private static void Later(ref DateTimeOffset? at, DateTimeOffset candidate)
    {
        if (at is null || candidate > at)
        {
            at = candidate;
        }
    }

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset? b) => b is { } v && v > a ? v : a;

    /// <summary>When the breaker, the 429 cool-down and the per-second bucket let this upstream take a request again.</summary>
    private DateTimeOffset? ResilienceAvailableAt(TimeProvider time)
    {
        DateTimeOffset? at = null;
        if (Breaker is { IsAvailable: false, RetryAt: { } r })
        {
            at = r;
        }
        if (CoolDown.Until is { } c && (at is null || c > at))
        {
            at = c;
        }
        if (Limiter is { HasToken: false } limiter)
        {
            var t = time.GetUtcNow() + limiter.TimeUntilToken;
            if (at is null || t > at)
            {
                at = t;
            }
        }
        return at;
    }

    /// <summary>Reserves this upstream for one attempt — a half-open trial slot, a rate-limit token and an in-flight
    /// count — as one lease; null when it cannot take the attempt right now.</summary>
    /// <remarks>Budgets (SPEC §13.1) are taken in the same lease: a concurrency slot, the TPM reservation of
    /// <paramref name="estimate"/> tokens and an RPM token. Refundable parts are taken first, so a refusal further on
    /// gives them back; provider headroom is only checked (<see cref="Check"/>), never reserved.</remarks>
    public UpstreamLease? TryLease(int index, MemberMetrics metrics, TokenNeed estimate = default)
    {
        // A disabled key takes only its one due trial; the claim is given back if the rest of the lease fails.
        var trial = false;
        if (Volatile.Read(ref _disabled) is { } disabled)
        {
            if (!TrialDue(disabled) || Interlocked.CompareExchange(ref _trialTaken, 1, 0) != 0)
            {
                return null;
            }
            trial = true;
        }
        var breakerTrial = 0;
        if (Breaker is { } b && !b.TryAcquire(out breakerTrial))
        {
            ReturnTrial(trial);
            return null;
        }
        if (!TryEnter())
        {
            Breaker?.Release(breakerTrial);
            ReturnTrial(trial);
            return null;
        }
        var reserved = Tpm?.TryReserve(estimate.Total) ?? 0;
        // RateLimiter's lease shape, so a shared (distributed) limiter can take this one's place.
        var tokens = reserved < 0 ? null : Limiter?.AttemptAcquire();
        if (reserved < 0 || tokens is { IsAcquired: false } || (Rpm is { } rpm && !rpm.TryTake(out _)))
        {
            tokens?.Dispose();
            if (reserved > 0)
            {
                Tpm!.Refund(reserved);
            }
            Interlocked.Decrement(ref _inFlight);
            Breaker?.Release(breakerTrial);
            ReturnTrial(trial);
            return null;
        }
        if (Volatile.Read(ref _learned) is not null)
        {
            Interlocked.Increment(ref _sentSinceLearned);
            Interlocked.Add(ref _tokensSinceLearned, estimate.Total);
            Interlocked.Add(ref _outputSinceLearned, estimate.Output);
        }
        metrics.InFlight.Inc();
        Recent.AddRequest();
        return new UpstreamLease(this, index, metrics, tokens, reserved) { IsTrial = trial, BreakerTrial = breakerTrial };
    }

    private void ReturnTrial(bool trial)
    {
        if (trial)
        {
            Volatile.Write(ref _trialTaken, 0);
        }
    }

    /// <summary>Takes an in-flight slot, within <see cref="MaxConcurrent"/>.</summary>
    private bool TryEnter()
    {
        var seen = Volatile.Read(ref _inFlight);
        while (true)
        {
            if (seen >= MaxConcurrent)
            {
                return false;
            }
            var was = Interlocked.CompareExchange(ref _inFlight, seen + 1, seen);
            if (was == seen)
            {
                return true;
            }
            seen = was;
        }
    }

    /// <summary>Ends a lease (only <see cref="UpstreamLease.Dispose"/> calls this).</summary>
    internal void Release(AttemptVerdict verdict, int breakerTrial)
    {
        Interlocked.Decrement(ref _inFlight);
        if (Breaker is not { } b)
        {
            return;
        }
        switch (verdict)
        {
            case AttemptVerdict.Failure: b.RecordFailure(breakerTrial); break;
            case AttemptVerdict.Success: b.RecordSuccess(breakerTrial); break;
            default: b.Release(breakerTrial); break;
        }
    }
}

/// <summary>A key disabled as bad (SPEC §13.4): the reason, when it was first disabled, and when its next trial is due
/// (meaningless with <c>recheck: 0</c>).</summary>
internal sealed record KeyDisabled(string Reason, DateTimeOffset Since, DateTimeOffset NextTrial, bool ByAdmin = false);

/// <summary>A failed attempt as the admin API shows it: the error kind (the <c>error</c> label of
/// <c>llmproxy_upstream_errors_total</c>), the upstream's status (0 = no answer) and when.</summary>
internal sealed record LastError(string Kind, int Status, DateTimeOffset At);
