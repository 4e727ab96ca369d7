namespace LLMProxy.Configuration;

/// <summary>The allowed keys of every YAML mapping (camelCase, as in the reference README §5 plus our
/// extensions). Anything else is an "unknown key" error, so a typo never silently disables a feature.</summary>
internal static class ConfigKeys
{
    public static readonly string[] Root = ["httpServer", "upstreams", "upstreamGroups", "cluster"];
    public static readonly string[] Cluster = ["redis"];
    public static readonly string[] Redis = ["url", "prefix", "timeout"];
    public static readonly string[] HttpServer = ["forwards", "admin", "shutdownTimeout"];
    public static readonly string[] Forward =
        ["name", "port", "address", "defaultGroup", "ratelimit", "timeout", "trustedProxies", "maxRequestBodySize", "routes", "maxConnections", "debugHeaders", "keys"];
    public static readonly string[] ClientKey = ["name", "key", "sha256", "ratelimit", "tokensPerMinute", "models"];
    public static readonly string[] ClientKeyRateLimit = ["perSecond", "burst"];
    public static readonly string[] Route = ["name", "path", "model", "group"];
    public static readonly string[] ForwardRateLimit = ["perSecond", "burst"];
    public static readonly string[] ServerTimeout = ["idle", "read", "write"];
    public static readonly string[] Admin = ["port", "address", "timeout", "token"];
    public static readonly string[] Upstream = ["name", "url", "auth", "headers", "breaker", "ratelimit", "models", "modelMap", "recheck"];
    public static readonly string[] Auth = ["type", "token", "username", "password"];
    public static readonly string[] Header = ["op", "key", "value"];
    public static readonly string[] Breaker = ["threshold", "cooldown", "maxRequests", "interval", "minRequests"];
    public static readonly string[] UpstreamRateLimit = ["perSecond", "burst", "requestsPerMinute", "tokensPerMinute", "maxConcurrent"];
    public static readonly string[] Group = ["name", "upstreams", "balance", "httpClient", "retry", "affinity"];
    public static readonly string[] GroupMember = ["name", "weight", "priority"];
    public static readonly string[] Affinity = ["keys"];
    public static readonly string[] Balance = ["strategy"];
    public static readonly string[] HttpClient = ["agent", "keepalive", "connect", "timeout", "proxy"];
    public static readonly string[] Connect = ["idleTotal", "idlePerHost", "maxPerHost"];
    public static readonly string[] ClientTimeout = ["connect", "request", "idle"];
    public static readonly string[] Proxy = ["url"];
    public static readonly string[] Retry = ["attempts", "statusCodes", "backoff"];

    /// <summary>Every key name that may appear anywhere in a config (used to check the documented default file).</summary>
    public static IEnumerable<string> All =>
        new[] { Root, HttpServer, Forward, Route, ForwardRateLimit, ServerTimeout, Admin, Upstream, Auth, Header, Breaker,
                UpstreamRateLimit, Group, GroupMember, Balance, HttpClient, Connect, ClientTimeout, Proxy, Retry, Affinity, ClientKey, ClientKeyRateLimit,
                Cluster, Redis }
            .SelectMany(k => k).Distinct(StringComparer.Ordinal);
}
