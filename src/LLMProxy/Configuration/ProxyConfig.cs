namespace LLMProxy.Configuration;

// Immutable configuration model. Shape and names follow the reference README §5 (camelCase YAML,
// durations in milliseconds). Every property documents its default; (ext) marks keys beyond the reference.

/// <summary>Root of the YAML file.</summary>
public sealed record ProxyConfig
{
    public required HttpServerConfig HttpServer { get; init; }
    public required IReadOnlyList<UpstreamConfig> Upstreams { get; init; }
    public required IReadOnlyList<UpstreamGroupConfig> UpstreamGroups { get; init; }
    /// <summary>(ext, SPEC §17) State shared by several instances; null (block absent) = every instance keeps its own.</summary>
    public ClusterConfig? Cluster { get; init; }
}

/// <summary><c>cluster</c>: what several instances share.</summary>
public sealed record ClusterConfig
{
    /// <summary><c>cluster.redis</c>; null = nothing shared.</summary>
    public RedisConfig? Redis { get; init; }
}

/// <summary><c>cluster.redis</c> (SPEC §17): the Redis that holds the shared limits, cool-downs, learned headroom and
/// disabled keys.</summary>
public sealed record RedisConfig
{
    /// <summary><c>redis://[user:pass@]host:port[/db]</c>, <c>rediss://…</c> (TLS), or a StackExchange.Redis
    /// connection string (<c>host:port,password=…,ssl=true</c>). Required. A secret: never printed.</summary>
    public required string Url { get; init; }
    /// <summary>Prefix of every key the proxy writes, so instances of different deployments can share one Redis.
    /// Default <c>llmproxy:</c>.</summary>
    public string Prefix { get; init; } = DefaultPrefix;
    /// <summary>How long a request waits for Redis (ms) before it decides on local state alone and the instance
    /// stops asking Redis until a background probe finds it back. Default 50.</summary>
    public int Timeout { get; init; } = DefaultTimeout;

    public const string DefaultPrefix = "llmproxy:";
    public const int DefaultTimeout = 50;

    /// <summary>A record prints its members: the URL may carry a password, so only its endpoints are shown.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Url = ").Append(Cluster.RedisUrl.Describe(Url)).Append(", Prefix = ").Append(Prefix)
            .Append(", Timeout = ").Append(Timeout);
        return true;
    }
}

/// <summary><c>httpServer</c>.</summary>
public sealed record HttpServerConfig
{
    public required IReadOnlyList<ForwardConfig> Forwards { get; init; }
    /// <summary>Admin listener; default port 9000 on 0.0.0.0.</summary>
    public AdminConfig Admin { get; init; } = new();
    /// <summary>(ext) Time allowed to drain in-flight requests on SIGTERM/SIGINT, ms. Default 30000.</summary>
    public int ShutdownTimeout { get; init; } = 30000;
}

/// <summary><c>httpServer.forwards[]</c>.</summary>
public sealed record ForwardConfig
{
    public required string Name { get; init; }
    /// <summary>Listen port 1-65535 (required).</summary>
    public required int Port { get; init; }
    /// <summary>Listen address. Default "0.0.0.0".</summary>
    public string Address { get; init; } = "0.0.0.0";
    public required string DefaultGroup { get; init; }
    /// <summary>Per-client-IP token bucket; null (block absent) = off.</summary>
    public RateLimitConfig? Ratelimit { get; init; }
    public ServerTimeoutConfig Timeout { get; init; } = new();
    /// <summary>(ext) CIDRs whose X-Forwarded-For is believed. Default none.</summary>
    public IReadOnlyList<string> TrustedProxies { get; init; } = [];
    /// <summary>(ext) Maximum request body in bytes. Default 64 MiB.</summary>
    public long MaxRequestBodySize { get; init; } = 64L * 1024 * 1024;
    /// <summary>(ext) Client connections open at once on this forward (≥ 1); one beyond it is closed as soon as it is
    /// accepted. Default 10000 (each takes a file descriptor: keep the sum over forwards below the open-file limit).</summary>
    public int MaxConnections { get; init; } = 10000;
    /// <summary>(ext) Routes by path prefix and/or model to a group other than <see cref="DefaultGroup"/>; the first
    /// match wins, no match goes to DefaultGroup. Default none (every request goes to DefaultGroup).</summary>
    public IReadOnlyList<RouteConfig> Routes { get; init; } = [];
    /// <summary>(ext, §13.6) <c>X-LLMProxy-Upstream</c> (the upstream's name) and <c>X-LLMProxy-Attempts</c> on every
    /// proxied answer. Default true.</summary>
    public bool DebugHeaders { get; init; } = true;
    /// <summary>(ext, §15) Client keys: when the list is present every request on this forward must present one of them
    /// (<c>Authorization: Bearer</c> or <c>x-api-key</c>). Default none (empty): no key is asked for.</summary>
    public IReadOnlyList<ClientKeyConfig> Keys { get; init; } = [];
}

/// <summary>(ext, §15) <c>httpServer.forwards[].keys[]</c>: one key handed to a client of this forward.</summary>
public sealed record ClientKeyConfig
{
    /// <summary>Label in metrics (<c>client</c>) and the access line, unique within the forward (required). Never the key.</summary>
    public required string Name { get; init; }
    /// <summary>The key itself (supports <c>${ENV}</c>); exactly one of <see cref="Key"/> and <see cref="Sha256"/>.</summary>
    public string? Key { get; init; }
    /// <summary>Lower-case hex SHA-256 of the key's UTF-8 bytes, for configs that must not hold the key itself.</summary>
    public string? Sha256 { get; init; }
    /// <summary>Requests per second this key may make (token bucket); null (block absent) = unlimited.</summary>
    public ClientKeyRateLimitConfig? Ratelimit { get; init; }
    /// <summary>LLM tokens per minute this key may spend (reserve an estimate, settle to the answer's usage); null = unlimited.</summary>
    public long? TokensPerMinute { get; init; }
    /// <summary>Globs (<c>*</c>, <c>?</c>, case-insensitive) of the models this key may ask for; null (absent) = any.</summary>
    public IReadOnlyList<string>? Models { get; init; }

    /// <summary>Longest key accepted, in the config and from a client (a longer presented key is refused unhashed).</summary>
    public const int MaxKeyLength = 1024;
    /// <summary>Shortest <see cref="Key"/> accepted: anything shorter can be guessed.</summary>
    public const int MinKeyLength = 16;

    /// <summary>A record prints its members: the key never, only its name (the same as metrics and logs show).</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Name = ").Append(Name);
        return true;
    }
}

/// <summary>(ext, §15) <c>keys[].ratelimit</c>: perSecond default 100, burst default = perSecond.</summary>
public sealed record ClientKeyRateLimitConfig
{
    public int PerSecond { get; init; } = 100;
    /// <summary>Bucket size; null means equal to PerSecond.</summary>
    public int? Burst { get; init; }
    public int EffectiveBurst => Burst ?? PerSecond;
}

/// <summary>(ext) <c>httpServer.forwards[].routes[]</c>: requests that match go to <see cref="Group"/>. A route has a
/// path, a model or both; with both, both must match.</summary>
public sealed record RouteConfig
{
    /// <summary>Label in metrics and logs, unique within the forward. Default none: the route is labelled by
    /// its index in the list ("0", "1", ...).</summary>
    public string? Name { get; init; }
    /// <summary>Path prefix starting with '/', matched whole segments at a time and case-sensitively
    /// (<c>/v1/messages</c> matches <c>/v1/messages/batches</c>, not <c>/v1/messagesX</c>); a trailing '/' is
    /// ignored. Default none: any path.</summary>
    public string? Path { get; init; }
    /// <summary>Glob (<c>*</c>, <c>?</c>) on the top-level <c>model</c> of the JSON body, case-insensitive; a
    /// request without a model never matches it. Default none: any model, or none.</summary>
    public string? Model { get; init; }
    /// <summary>The upstream group that serves matching requests (required).</summary>
    public required string Group { get; init; }
}

/// <summary>Forward <c>ratelimit</c>: perSecond default 100, burst default 200.</summary>
public sealed record RateLimitConfig
{
    public int PerSecond { get; init; } = 100;
    public int Burst { get; init; } = 200;
}

/// <summary>Server-side timeouts (ms): idle 60000, read 30000, write 30000; 0 in the file means the default (as in the reference).</summary>
public sealed record ServerTimeoutConfig
{
    public int Idle { get; init; } = 60000;
    public int Read { get; init; } = 30000;
    public int Write { get; init; } = 30000;
}

/// <summary><c>httpServer.admin</c>.</summary>
public sealed record AdminConfig
{
    public int Port { get; init; } = 9000;
    public string Address { get; init; } = "0.0.0.0";
    public ServerTimeoutConfig Timeout { get; init; } = new();
    /// <summary>(ext) Bearer token required for admin APIs other than /ping and /metrics. Default none.</summary>
    public string? Token { get; init; }

    /// <summary>A record prints its members: the token redacted.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Port = ").Append(Port).Append(", Address = ").Append(Address)
            .Append(", Token = ").Append(Token is null ? "(none)" : Secrets.Redact(Token));
        return true;
    }
}

public enum AuthType { None, Bearer, Basic }

/// <summary><c>upstreams[]</c>.</summary>
public sealed record UpstreamConfig
{
    public required string Name { get; init; }
    /// <summary>Absolute http/https URL. With a path it is the full endpoint; without, a base URL.</summary>
    public required string Url { get; init; }
    public AuthConfig Auth { get; init; } = new();
    public IReadOnlyList<HeaderOpConfig> Headers { get; init; } = [];
    /// <summary>Circuit breaker; null (block absent) = off.</summary>
    public BreakerConfig? Breaker { get; init; }
    /// <summary>Upstream token bucket; null (block absent) = off.</summary>
    public UpstreamRateLimitConfig? Ratelimit { get; init; }
    /// <summary>(ext) Globs (<c>*</c>, <c>?</c>, case-insensitive) of the models a client may ask this upstream
    /// for; a group skips it for any other model. Null (key absent) = any model, and requests without one.</summary>
    public IReadOnlyList<string>? Models { get; init; }
    /// <summary>(ext) Requested model → model name written into the body sent to this upstream. Keys are exact
    /// names compared ignoring case, like every model match; a model without an entry is sent unchanged.
    /// Null (key absent or empty mapping) = no rewriting.</summary>
    public IReadOnlyDictionary<string, string>? ModelMap { get; init; }
    /// <summary>(ext) SPEC §13.4: ms between single trial requests to a key disabled as bad (401/402/403, quota or
    /// billing 429); 0 = never (only a reload that changes this upstream brings it back). Default 600000.</summary>
    public int Recheck { get; init; } = DefaultRecheck;

    public const int DefaultRecheck = 600_000;

    /// <summary>A record prints its members: only the name, the URL with its query values, user info and key-like
    /// path segments hidden (as the admin config report shows it), and the redacted credentials.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Name = ").Append(Name).Append(", Url = ").Append(Admin.ConfigReport.SafeUrl(Url))
            .Append(", Auth = ").Append(Auth);
        return true;
    }
}

/// <summary><c>upstreams[].auth</c>: type none (default) / bearer (token) / basic (username+password).</summary>
public sealed record AuthConfig
{
    public AuthType Type { get; init; } = AuthType.None;
    public string? Token { get; init; }
    public string? Username { get; init; }
    public string? Password { get; init; }

    /// <summary>A record prints its members: token and password redacted.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Type = ").Append(Type);
        if (Token is not null)
        {
            builder.Append(", Token = ").Append(Secrets.Redact(Token));
        }
        if (Username is not null)
        {
            builder.Append(", Username = ").Append(Username).Append(", Password = ").Append(Secrets.Redact(Password));
        }
        return true;
    }
}

public enum HeaderOp { Insert, Replace, Remove }

/// <summary><c>upstreams[].headers[]</c>: op insert/replace/remove, key, value (not for remove).</summary>
public sealed record HeaderOpConfig
{
    public required HeaderOp Op { get; init; }
    public required string Key { get; init; }
    public string? Value { get; init; }

    /// <summary>A record prints its members: a header value may be a key (<c>x-api-key</c>), so it is redacted.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Op = ").Append(Op).Append(", Key = ").Append(Key);
        if (Value is not null)
        {
            builder.Append(", Value = ").Append(Secrets.Redact(Value));
        }
        return true;
    }
}

/// <summary><c>upstreams[].breaker</c>: threshold 0.5, cooldown 30000, maxRequests 3, interval 10000, minRequests (ext) 10.</summary>
public sealed record BreakerConfig
{
    public double Threshold { get; init; } = 0.5;
    public int Cooldown { get; init; } = 30000;
    public int MaxRequests { get; init; } = 3;
    public int Interval { get; init; } = 10000;
    public int MinRequests { get; init; } = 10;
}

/// <summary><c>upstreams[].ratelimit</c>: perSecond 100, burst (ext) defaults to perSecond.</summary>
public sealed record UpstreamRateLimitConfig
{
    public int PerSecond { get; init; } = 100;
    /// <summary>(ext) Bucket size; null means equal to PerSecond.</summary>
    public int? Burst { get; init; }
    public int EffectiveBurst => Burst ?? PerSecond;
    /// <summary>(ext) Requests per minute (SPEC §13.1): a bucket of this many requests refilling continuously over a
    /// minute, beside the per-second one. Null (default) = no RPM budget.</summary>
    public int? RequestsPerMinute { get; init; }
    /// <summary>(ext) LLM tokens per minute: each request reserves an estimate (body bytes ÷ 4 plus its max-output
    /// field, or 1,024) and settles to the usage the answer reports. Null (default) = no TPM budget.</summary>
    public long? TokensPerMinute { get; init; }
    /// <summary>(ext) Requests in flight at once on this upstream. Null (default) = unbounded.</summary>
    public int? MaxConcurrent { get; init; }

    /// <summary>Largest <see cref="TokensPerMinute"/> accepted (10^12).</summary>
    public const long MaxTokensPerMinute = 1_000_000_000_000;
}

/// <summary><c>upstreamGroups[]</c>.</summary>
public sealed record UpstreamGroupConfig
{
    public required string Name { get; init; }
    public required IReadOnlyList<GroupMemberConfig> Upstreams { get; init; }
    public BalanceConfig Balance { get; init; } = new();
    public HttpClientConfig HttpClient { get; init; } = new();
    /// <summary>(ext) Retry/failover policy.</summary>
    public RetryConfig Retry { get; init; } = new();
    /// <summary>(ext, §13.5) Prompt-cache affinity; null (default) = none, every request goes by the strategy.</summary>
    public AffinityConfig? Affinity { get; init; }
}

/// <summary><c>upstreamGroups[].upstreams[]</c>: name, weight (default 1, ≥ 1), priority (default 0).</summary>
public sealed record GroupMemberConfig
{
    public required string Name { get; init; }
    public int Weight { get; init; } = 1;
    /// <summary>(ext, §13.3) Tier of this member; higher is preferred. The strategy chooses only among the highest tier
    /// that has an available member. Default 0 (every member in one tier).</summary>
    public int Priority { get; init; }
}

/// <summary>(ext, §13.5) <c>upstreamGroups[].affinity</c>.</summary>
public sealed record AffinityConfig
{
    /// <summary>Where a request's session key is read, first present wins: <c>header:&lt;name&gt;</c>,
    /// <c>body:prompt_cache_key</c>, <c>body:user</c>, <c>body:metadata.user_id</c>. Required, at least one.</summary>
    public required IReadOnlyList<string> Keys { get; init; }
}

/// <summary><c>upstreamGroups[].balance</c>.</summary>
public sealed record BalanceConfig
{
    /// <summary>Name of a registered balancing policy, as registered (lower case): roundrobin (default) /
    /// weighted_roundrobin / random / iphash. Validated at load, so the runtime always finds it.</summary>
    public string Strategy { get; init; } = "roundrobin";
}

/// <summary><c>upstreamGroups[].httpClient</c>.</summary>
public sealed record HttpClientConfig
{
    /// <summary>User-Agent used when the client sent none. Default "LLMProxy/1.0".</summary>
    public string Agent { get; init; } = "LLMProxy/1.0";
    /// <summary>TCP keep-alive time (ms); 0 disables keep-alive probes. Default 60000, at most <see cref="MaxKeepalive"/>.</summary>
    public int Keepalive { get; init; } = 60000;

    /// <summary>Largest <see cref="Keepalive"/>: it becomes TCP_KEEPIDLE in whole seconds, and Linux refuses more than
    /// 32767 s (every connect would fail). The probe interval set beside it, a quarter of that, stays below its own 32767 s cap.</summary>
    public const int MaxKeepalive = 32_767_000;
    public ConnectConfig Connect { get; init; } = new();
    public ClientTimeoutConfig Timeout { get; init; } = new();
    public ProxyServerConfig? Proxy { get; init; }
}

/// <summary><c>httpClient.connect</c>: idleTotal 100, idlePerHost 10, maxPerHost 50; 0 in the file means the default (as in the reference).</summary>
public sealed record ConnectConfig
{
    public int IdleTotal { get; init; } = 100;
    public int IdlePerHost { get; init; } = 10;
    public int MaxPerHost { get; init; } = 50;
}

/// <summary><c>httpClient.timeout</c> (ms): connect 10000, request 300000 (time to headers and every idle gap), idle 60000;
/// 0 in the file means the default (as in the reference).</summary>
public sealed record ClientTimeoutConfig
{
    public int Connect { get; init; } = 10000;
    public int Request { get; init; } = 300000;
    public int Idle { get; init; } = 60000;
}

/// <summary><c>httpClient.proxy</c>: url (http/https/socks5).</summary>
public sealed record ProxyServerConfig
{
    public required string Url { get; init; }

    /// <summary>A record prints its members: the proxy URL without its user info.</summary>
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("Url = ").Append(Admin.ConfigReport.SafeUrl(Url));
        return true;
    }
}

/// <summary>(ext) <c>upstreamGroups[].retry</c>: attempts 3 (bounded by group size), statusCodes [429,500,502,503,504], backoff 0 ms.</summary>
public sealed record RetryConfig
{
    public int Attempts { get; init; } = 3;
    public IReadOnlyList<int> StatusCodes { get; init; } = [429, 500, 502, 503, 504];
    public int Backoff { get; init; }
}
