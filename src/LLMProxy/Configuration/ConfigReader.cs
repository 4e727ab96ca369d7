using System.Net;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LLMProxy.Configuration;

/// <summary>Walks the YAML tree into the immutable records, checking types, ranges and per-object rules.
/// Rules that span objects (unique names, references, port clashes) need the whole document and run
/// afterwards in <see cref="ConfigCrossChecks"/> over the <see cref="References"/> collected here.
/// Hand-written rather than deserializer-based so every error carries its path and none stops the walk.</summary>
internal sealed class ConfigReader(ConfigReadContext ctx)
{
    private static readonly HttpServerConfig ServerDefaults = new() { Forwards = [] };
    private static readonly ForwardConfig ForwardDefaults = new() { Name = "", Port = 0, DefaultGroup = "" };
    private static readonly RateLimitConfig ForwardRateLimitDefaults = new();
    private static readonly ServerTimeoutConfig ServerTimeoutDefaults = new();
    private static readonly AdminConfig AdminDefaults = new();
    private static readonly BreakerConfig BreakerDefaults = new();
    private static readonly UpstreamRateLimitConfig UpstreamRateLimitDefaults = new();
    private static readonly GroupMemberConfig MemberDefaults = new() { Name = "" };
    private static readonly HttpClientConfig HttpClientDefaults = new();
    private static readonly ConnectConfig ConnectDefaults = new();
    private static readonly ClientTimeoutConfig ClientTimeoutDefaults = new();
    private static readonly RetryConfig RetryDefaults = new();

    /// <summary>Bounds weighted round-robin arithmetic; far above any sensible weight.</summary>
    private const int MaxWeight = 1_000_000;

    private static readonly string[] ProxySchemes = ["http", "https", "socks5", "socks5h", "socks4"];

    public ConfigReferences References { get; } = new();

    public ProxyConfig Read(YamlNode root)
    {
        if (root is not YamlMappingNode)
        {
            ctx.Error(root.Start, "",
                $"the configuration must be a mapping with httpServer, upstreams and upstreamGroups (got {YamlMap.Kind(root)})");
            return new ProxyConfig { HttpServer = ServerDefaults, Upstreams = [], UpstreamGroups = [] };
        }

        var map = YamlMap.Open(ctx, root, "", ConfigKeys.Root)!;
        var httpServer = map.Require("httpServer") ? ReadHttpServer(map.Map("httpServer", ConfigKeys.HttpServer)) : ServerDefaults;

        var upstreams = ReadList(map, "upstreams", "upstream", ConfigKeys.Upstream, ReadUpstream);
        var groups = ReadList(map, "upstreamGroups", "upstream group", ConfigKeys.Group, ReadGroup);
        return new ProxyConfig { HttpServer = httpServer, Upstreams = upstreams, UpstreamGroups = groups };
    }

    /// <summary>A required, non-empty list of mappings.</summary>
    private static List<T> ReadList<T>(YamlMap parent, string key, string what, string[] keys, Func<YamlMap, T> read)
    {
        var result = new List<T>();
        var items = parent.List(key, required: true);
        if (items is null) return result;
        if (items.Count == 0) parent.Error(key, $"must contain at least one {what}");
        foreach (var (node, path) in items)
        {
            if (parent.Item(node, path, keys) is { } item) result.Add(read(item));
        }
        return result;
    }

    private HttpServerConfig ReadHttpServer(YamlMap? m)
    {
        if (m is null) return ServerDefaults;

        var forwards = ReadList(m, "forwards", "forward", ConfigKeys.Forward, ReadForward);
        var admin = ReadAdmin(m);
        return new HttpServerConfig
        {
            Forwards = forwards,
            Admin = admin,
            ShutdownTimeout = m.Int("shutdownTimeout", ServerDefaults.ShutdownTimeout, 0),
        };
    }

    private ForwardConfig ReadForward(YamlMap m)
    {
        var name = m.RequiredString("name");
        References.Forwards.Add(new Located(name, m.PathOf("name"), m.At("name")));
        var port = m.RequiredInt("port", 1, 65535);
        var address = ReadAddress(m, ForwardDefaults.Address, out var addressValid);
        if (port > 0 && addressValid)
        {
            References.Listeners.Add(new Listener(m.PathOf("port"), $"forward '{name}'", address, port, m.At("port"), IsDefault: false));
        }
        var defaultGroup = m.RequiredString("defaultGroup");
        References.DefaultGroups.Add(new Located(defaultGroup, m.PathOf("defaultGroup"), m.At("defaultGroup")));

        RateLimitConfig? ratelimit = null;
        if (m.Map("ratelimit", ConfigKeys.ForwardRateLimit) is { } rl)
        {
            ratelimit = new RateLimitConfig
            {
                PerSecond = rl.Int("perSecond", ForwardRateLimitDefaults.PerSecond, 1),
                Burst = rl.Int("burst", ForwardRateLimitDefaults.Burst, 1),
            };
        }

        return new ForwardConfig
        {
            Name = name,
            Port = port,
            Address = address,
            DefaultGroup = defaultGroup,
            Ratelimit = ratelimit,
            Timeout = ReadServerTimeout(m),
            TrustedProxies = ReadTrustedProxies(m),
            MaxRequestBodySize = m.Long("maxRequestBodySize", ForwardDefaults.MaxRequestBodySize, 1),
            MaxConnections = m.Int("maxConnections", ForwardDefaults.MaxConnections, 1),
        };
    }

    private AdminConfig ReadAdmin(YamlMap server)
    {
        var m = server.Map("admin", ConfigKeys.Admin);
        if (m is null)
        {
            References.Listeners.Add(new Listener(server.PathOf("admin.port"), "the admin listener", AdminDefaults.Address,
                AdminDefaults.Port, server.At("admin"), IsDefault: true));
            return AdminDefaults;
        }

        int? port = m.Has("port") ? m.OptionalInt("port", 1, 65535) : AdminDefaults.Port;
        var address = ReadAddress(m, AdminDefaults.Address, out var addressValid);
        if (port is { } listenPort && addressValid)
        {
            References.Listeners.Add(new Listener(m.PathOf("port"), "the admin listener", address, listenPort, m.At("port"), IsDefault: !m.Has("port")));
        }

        var token = m.String("token");
        if (token is not null)
        {
            if (string.IsNullOrWhiteSpace(token)) m.Error("token", "must not be empty (omit the key to leave admin APIs open)");
            else CheckHeaderSafe(m, "token", token);
        }

        return new AdminConfig { Port = port ?? AdminDefaults.Port, Address = address, Timeout = ReadServerTimeout(m), Token = token };
    }

    private static ServerTimeoutConfig ReadServerTimeout(YamlMap parent)
    {
        if (parent.Map("timeout", ConfigKeys.ServerTimeout) is not { } t) return ServerTimeoutDefaults;
        return new ServerTimeoutConfig
        {
            Idle = t.Int("idle", ServerTimeoutDefaults.Idle, 1),
            Read = t.Int("read", ServerTimeoutDefaults.Read, 1),
            Write = t.Int("write", ServerTimeoutDefaults.Write, 1),
        };
    }

    /// <summary>An IP literal or "localhost"; <paramref name="valid"/> is false when an error was reported.</summary>
    private static string ReadAddress(YamlMap m, string fallback, out bool valid)
    {
        valid = true;
        if (!m.Has("address")) return fallback;
        var text = m.String("address");
        if (text is null)
        {
            valid = false;
            return fallback;
        }
        var address = text.Trim();
        if (!ListenAddress.IsValid(address))
        {
            m.Error("address", $"must be an IP address or \"localhost\"{m.Got(YamlMap.Quote(text))}");
            valid = false;
        }
        return address;
    }

    private static List<string> ReadTrustedProxies(YamlMap m)
    {
        var result = new List<string>();
        foreach (var (node, path) in m.List("trustedProxies") ?? [])
        {
            var text = m.StringItem(node, path);
            if (text is null) continue;
            var entry = text.Trim();
            if (IPAddress.TryParse(entry, out _) || IPNetwork.TryParse(entry, out _)) result.Add(entry);
            else m.ErrorAt(node.Start, path, $"must be an IP address or CIDR such as 10.0.0.0/8{m.Got(YamlMap.Quote(text))}");
        }
        return result;
    }

    private UpstreamConfig ReadUpstream(YamlMap m)
    {
        var name = m.RequiredString("name");
        References.Upstreams.Add(new Located(name, m.PathOf("name"), m.At("name")));
        var url = m.RequiredString("url");
        if (url.Length > 0) CheckUrl(m, "url", url, ["http", "https"], "an absolute http or https URL");

        UpstreamRateLimitConfig? ratelimit = null;
        if (m.Map("ratelimit", ConfigKeys.UpstreamRateLimit) is { } rl)
        {
            ratelimit = new UpstreamRateLimitConfig
            {
                PerSecond = rl.Int("perSecond", UpstreamRateLimitDefaults.PerSecond, 1),
                Burst = rl.OptionalInt("burst", 1),
            };
        }

        return new UpstreamConfig
        {
            Name = name,
            Url = url,
            Auth = ReadAuth(m),
            Headers = ReadHeaders(m),
            Breaker = ReadBreaker(m),
            Ratelimit = ratelimit,
        };
    }

    private static AuthConfig ReadAuth(YamlMap upstream)
    {
        // Sensitive: no message under auth ever echoes a value.
        if (upstream.Map("auth", ConfigKeys.Auth, sensitive: true) is not { } a) return new AuthConfig();

        var type = a.Enum("type", AuthType.None, ConfigNames.AuthTypes);
        var token = a.String("token");
        var username = a.String("username");
        var password = a.String("password");

        if (type == AuthType.Bearer) RequireSecret(a, "token", token, "bearer");
        if (type == AuthType.Basic)
        {
            RequireSecret(a, "username", username, "basic");
            RequireSecret(a, "password", password, "basic");
            if (username is not null && username.Contains(':', StringComparison.Ordinal))
            {
                a.Error("username", "must not contain ':' (not allowed in basic authentication)");
            }
        }
        foreach (var (key, value) in new[] { ("token", token), ("username", username), ("password", password) })
        {
            if (value is not null) CheckHeaderSafe(a, key, value);
        }

        return new AuthConfig { Type = type, Token = token, Username = username, Password = password };
    }

    private static void RequireSecret(YamlMap auth, string key, string? value, string type)
    {
        if (!auth.Has(key)) auth.Error(key, $"required when auth.type is {type}");
        else if (value is not null && string.IsNullOrWhiteSpace(value)) auth.Error(key, $"must not be empty when auth.type is {type}");
    }

    private static List<HeaderOpConfig> ReadHeaders(YamlMap upstream)
    {
        var result = new List<HeaderOpConfig>();
        foreach (var (node, path) in upstream.List("headers") ?? [])
        {
            if (upstream.Item(node, path, ConfigKeys.Header) is not { } h) continue;

            var op = HeaderOp.Insert;
            var opKnown = h.Require("op") && h.TryEnum("op", ConfigNames.HeaderOps, out op);
            var key = h.RequiredString("key");
            if (key.Length > 0 && !IsHeaderName(key))
            {
                h.Error("key", $"must be a valid HTTP header name{h.Got(YamlMap.Quote(key))}");
            }
            var value = h.String("value");
            if (opKnown && op != HeaderOp.Remove && !h.Has("value"))
            {
                h.Error("value", $"required when op is {ConfigNames.Of(ConfigNames.HeaderOps, op)}");
            }
            if (value is not null) CheckHeaderSafe(h, "value", value);
            result.Add(new HeaderOpConfig { Op = op, Key = key, Value = value });
        }
        return result;
    }

    private static BreakerConfig? ReadBreaker(YamlMap upstream)
    {
        if (upstream.Map("breaker", ConfigKeys.Breaker) is not { } b) return null;
        return new BreakerConfig
        {
            Threshold = b.Double("threshold", BreakerDefaults.Threshold, 0.01, 1.0),
            Cooldown = b.Int("cooldown", BreakerDefaults.Cooldown, 1),
            MaxRequests = b.Int("maxRequests", BreakerDefaults.MaxRequests, 1),
            Interval = b.Int("interval", BreakerDefaults.Interval, 1),
            MinRequests = b.Int("minRequests", BreakerDefaults.MinRequests, 1),
        };
    }

    private UpstreamGroupConfig ReadGroup(YamlMap m)
    {
        var name = m.RequiredString("name");
        References.Groups.Add(new Located(name, m.PathOf("name"), m.At("name")));

        var memberNames = new List<Located>();
        var members = ReadList(m, "upstreams", "upstream", ConfigKeys.GroupMember, member =>
        {
            var memberName = member.RequiredString("name");
            memberNames.Add(new Located(memberName, member.PathOf("name"), member.At("name")));
            return new GroupMemberConfig { Name = memberName, Weight = member.Int("weight", MemberDefaults.Weight, 1, MaxWeight) };
        });
        References.Members.AddRange(memberNames);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var located in memberNames)
        {
            if (located.Value.Length > 0 && !seen.Add(located.Value))
            {
                ctx.Error(located.At, located.Path, $"upstream '{located.Value}' is listed more than once in this group");
            }
        }

        var strategy = m.Map("balance", ConfigKeys.Balance) is { } balance
            ? balance.Enum("strategy", BalanceStrategy.RoundRobin, ConfigNames.Strategies)
            : BalanceStrategy.RoundRobin;

        return new UpstreamGroupConfig
        {
            Name = name,
            Upstreams = members,
            Balance = new BalanceConfig { Strategy = strategy },
            HttpClient = ReadHttpClient(m),
            Retry = ReadRetry(m),
        };
    }

    private static HttpClientConfig ReadHttpClient(YamlMap group)
    {
        if (group.Map("httpClient", ConfigKeys.HttpClient) is not { } c) return HttpClientDefaults;

        var agent = c.String("agent") ?? HttpClientDefaults.Agent;
        if (string.IsNullOrWhiteSpace(agent)) c.Error("agent", "must not be empty (omit the key to use the default)");
        else CheckHeaderSafe(c, "agent", agent);

        var connect = ConnectDefaults;
        if (c.Map("connect", ConfigKeys.Connect) is { } cn)
        {
            connect = new ConnectConfig
            {
                IdleTotal = cn.Int("idleTotal", ConnectDefaults.IdleTotal, 1),
                IdlePerHost = cn.Int("idlePerHost", ConnectDefaults.IdlePerHost, 1),
                MaxPerHost = cn.Int("maxPerHost", ConnectDefaults.MaxPerHost, 1),
            };
        }

        var timeout = ClientTimeoutDefaults;
        if (c.Map("timeout", ConfigKeys.ClientTimeout) is { } t)
        {
            timeout = new ClientTimeoutConfig
            {
                Connect = t.Int("connect", ClientTimeoutDefaults.Connect, 1),
                Request = t.Int("request", ClientTimeoutDefaults.Request, 1),
                Idle = t.Int("idle", ClientTimeoutDefaults.Idle, 1),
            };
        }

        ProxyServerConfig? proxy = null;
        if (c.Map("proxy", ConfigKeys.Proxy) is { } p)
        {
            var url = p.RequiredString("url");
            if (url.Length > 0) CheckUrl(p, "url", url, ProxySchemes, "an absolute URL with scheme " + string.Join(", ", ProxySchemes));
            proxy = new ProxyServerConfig { Url = url };
        }

        return new HttpClientConfig
        {
            Agent = agent,
            Keepalive = c.Int("keepalive", HttpClientDefaults.Keepalive, 0),
            Connect = connect,
            Timeout = timeout,
            Proxy = proxy,
        };
    }

    private static RetryConfig ReadRetry(YamlMap group)
    {
        if (group.Map("retry", ConfigKeys.Retry) is not { } r) return RetryDefaults;

        var statusCodes = RetryDefaults.StatusCodes;
        if (r.List("statusCodes") is { } items)
        {
            var codes = new List<int>();
            foreach (var (node, path) in items)
            {
                if (r.TryInteger(node, path, 100, 599, out var code)) codes.Add((int)code);
            }
            statusCodes = codes;
        }

        return new RetryConfig
        {
            Attempts = r.Int("attempts", RetryDefaults.Attempts, 1, 10),
            StatusCodes = statusCodes,
            Backoff = r.Int("backoff", RetryDefaults.Backoff, 0),
        };
    }

    private static void CheckUrl(YamlMap m, string key, string text, string[] schemes, string expected)
    {
        if (Uri.TryCreate(text.Trim(), UriKind.Absolute, out var uri)
            && schemes.Contains(uri.Scheme, StringComparer.OrdinalIgnoreCase)
            && uri.Host.Length > 0)
        {
            return;
        }
        m.Error(key, $"must be {expected}{m.Got(YamlMap.Quote(WithoutUserInfo(text)))}");
    }

    /// <summary>Hides <c>user:password@</c> so a credential in a malformed URL never reaches a message.</summary>
    private static string WithoutUserInfo(string url)
    {
        var scheme = url.IndexOf("://", StringComparison.Ordinal);
        var at = url.IndexOf('@', StringComparison.Ordinal);
        if (at < 0) return url;
        var start = scheme >= 0 && scheme < at ? scheme + 3 : 0;
        return url[..start] + "***" + url[at..];
    }

    /// <summary>Header values go on the wire verbatim, so line breaks would be header injection.</summary>
    private static void CheckHeaderSafe(YamlMap m, string key, string value)
    {
        if (value.Any(c => char.IsControl(c) && c != '\t'))
        {
            m.Error(key, "must not contain line breaks or other control characters");
        }
    }

    private static bool IsHeaderName(string name) =>
        name.All(c => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal));
}

/// <summary>A name or reference with where it was written, for the cross-object checks.</summary>
internal readonly record struct Located(string Value, string Path, Mark At);

/// <summary>A listening socket (forward or admin) for the port-clash check.</summary>
internal readonly record struct Listener(string Path, string Owner, string Address, int Port, Mark At, bool IsDefault);

/// <summary>Everything the cross-object checks need, collected during the walk.</summary>
internal sealed class ConfigReferences
{
    public List<Located> Forwards { get; } = [];
    public List<Located> Upstreams { get; } = [];
    public List<Located> Groups { get; } = [];
    public List<Located> DefaultGroups { get; } = [];
    public List<Located> Members { get; } = [];
    public List<Listener> Listeners { get; } = [];
}
