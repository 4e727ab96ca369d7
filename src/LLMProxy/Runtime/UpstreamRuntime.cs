using System.Text;
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
    /// <summary>Parked after a 429 or out of upstream rate-limit tokens (an account signal).</summary>
    RateLimited = 1,
    /// <summary>Breaker open or half-open with every trial slot taken.</summary>
    BreakerOpen = 2,
}

/// <summary>
/// One configured upstream, compiled: the request-building facts computed once, plus the live state
/// (breaker, 429 cool-down, token bucket, in-flight count) shared by every forward and group using it.
/// </summary>
internal sealed class UpstreamRuntime
{
    private int _inFlight;

    public UpstreamRuntime(UpstreamConfig config, TimeProvider time)
    {
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
        Authorization = config.Auth.Type switch
        {
            AuthType.Bearer => "Bearer " + config.Auth.Token,
            AuthType.Basic => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{config.Auth.Username}:{config.Auth.Password}")),
            _ => null,
        };
        HeaderOps = [.. config.Headers];
        _models = config.Models is { } models ? [.. models.Select(ModelGlob.Parse)] : null;
        // Each mapping's JSON token is encoded once; a request only splices it in.
        _modelMap = config.ModelMap?.ToDictionary(m => m.Key, m => ModelRewrite.EncodeModel(m.Value), StringComparer.OrdinalIgnoreCase);
        Breaker = config.Breaker is { } b ? new CircuitBreaker(b, time) : null;
        CoolDown = new CoolDown(time);
        Limiter = config.Ratelimit is { } r ? TokenBucketLimiter.For(r, time) : null;
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
    /// <summary>Full endpoint (without query) or base (scheme://authority).</summary>
    public string Url { get; }
    /// <summary>The url's own query including '?', or empty.</summary>
    public string Query { get; }
    public bool UrlHasQuery { get; }
    public string Host { get; }
    /// <summary>Precomputed Authorization header value, null for auth type none.</summary>
    public string? Authorization { get; }
    public HeaderOpConfig[] HeaderOps { get; }
    public CircuitBreaker? Breaker { get; }
    public CoolDown CoolDown { get; }
    public TokenBucketLimiter? Limiter { get; }
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Cheap availability check used while selecting; takes nothing.</summary>
    public Unavailability Check()
    {
        if (Breaker is { IsAvailable: false })
        {
            return Unavailability.BreakerOpen;
        }
        if (CoolDown.IsCooling || Limiter is { HasToken: false })
        {
            return Unavailability.RateLimited;
        }
        return Unavailability.None;
    }

    /// <summary>Earliest moment this upstream may be available again (null when it is available now).</summary>
    public DateTimeOffset? AvailableAt(TimeProvider time)
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
    public UpstreamLease? TryLease(int index, MemberMetrics metrics)
    {
        if (Breaker is { } b && !b.TryAcquire())
        {
            return null;
        }
        // RateLimiter's lease shape, so a shared (distributed) limiter can take this one's place.
        var tokens = Limiter?.AttemptAcquire();
        if (tokens is { IsAcquired: false })
        {
            tokens.Dispose();
            Breaker?.Release();
            return null;
        }
        Interlocked.Increment(ref _inFlight);
        metrics.InFlight.Inc();
        return new UpstreamLease(this, index, metrics, tokens);
    }

    /// <summary>Ends a lease (only <see cref="UpstreamLease.Dispose"/> calls this).</summary>
    internal void Release(AttemptVerdict verdict)
    {
        Interlocked.Decrement(ref _inFlight);
        if (Breaker is not { } b)
        {
            return;
        }
        switch (verdict)
        {
            case AttemptVerdict.Failure: b.RecordFailure(); break;
            case AttemptVerdict.Success: b.RecordSuccess(); break;
            default: b.Release(); break;
        }
    }
}
