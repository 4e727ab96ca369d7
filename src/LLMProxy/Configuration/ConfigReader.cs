using System.Buffers;
using System.Globalization;
using System.Net;
using LLMProxy.LoadBalancing;
using LLMProxy.Routing;
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
    private static readonly BalanceConfig BalanceDefaults = new();

    /// <summary>Bounds weighted round-robin arithmetic; far above any sensible weight.</summary>
    private const int MaxWeight = 1_000_000;
    /// <summary>Bounds member priorities (either sign); far beyond any sensible number of tiers.</summary>
    private const int MaxPriority = 1_000_000;

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
        var cluster = map.Map("cluster", ConfigKeys.Cluster) is { } c ? ReadCluster(c) : null;
        return new ProxyConfig { HttpServer = httpServer, Upstreams = upstreams, UpstreamGroups = groups, Cluster = cluster };
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

    private static ClusterConfig ReadCluster(YamlMap cluster)
    {
        if (cluster.Map("redis", ConfigKeys.Redis) is not { } r) return new ClusterConfig();
        var url = r.RequiredString("url");
        // The url may hold a password: an error names what is wrong, never the text.
        if (url.Length > 0 && !Cluster.RedisUrl.TryParse(url, out _, out var problem)) r.Error("url", problem!);
        var prefix = r.String("prefix") ?? RedisConfig.DefaultPrefix;
        if (prefix.Length > 64 || prefix.Any(ch => char.IsWhiteSpace(ch) || char.IsControl(ch)))
        {
            r.Error("prefix", "must be at most 64 characters without spaces or control characters" + r.Got(YamlMap.Quote(prefix)));
        }
        return new ClusterConfig
        {
            Redis = new RedisConfig { Url = url, Prefix = prefix, Timeout = r.Int("timeout", RedisConfig.DefaultTimeout, 1, 10_000) },
        };
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
            Routes = ReadRoutes(m),
            MaxConnections = m.Int("maxConnections", ForwardDefaults.MaxConnections, 1),
            DebugHeaders = m.Bool("debugHeaders", ForwardDefaults.DebugHeaders),
            Keys = ReadClientKeys(m),
        };
    }

    /// <summary>(ext, §15) <c>keys</c>: every problem of every key with its path; a key's value is never echoed. Names
    /// label metrics and the access line, so they are plain words; two entries naming the same key (by its SHA-256,
    /// whether written as <c>key</c> or <c>sha256</c>) are refused, since the second could never be told apart.</summary>
    private List<ClientKeyConfig> ReadClientKeys(YamlMap forward)
    {
        var result = new List<ClientKeyConfig>();
        var items = forward.List("keys");
        if (items is null) return result;
        if (items.Count == 0) forward.Error("keys", "must list at least one key (omit the key to let every client in)");

        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var digests = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (node, path) in items)
        {
            if (forward.Item(node, path, ConfigKeys.ClientKey) is not { } k) continue;

            var name = k.RequiredString("name");
            if (name.Length > 0)
            {
                if (ClientKeyNameProblem(name) is { } problem) k.Error("name", problem + k.Got(YamlMap.Quote(name)));
                else if (names.TryGetValue(name, out var first)) k.Error("name", $"duplicate key name '{name}' (first defined at {first})");
                else names[name] = k.PathOf("name");
            }

            // Sensitive: no message here shows the key, only positions and lengths.
            var key = k.String("key");
            var sha256 = k.String("sha256");
            string? digest = null;
            if (k.Has("key") == k.Has("sha256"))
            {
                k.ErrorAt(node.Start, path, "give exactly one of key and sha256");
            }
            else if (key is not null)
            {
                if (key.Length < ClientKeyConfig.MinKeyLength || key.Length > ClientKeyConfig.MaxKeyLength)
                {
                    k.Error("key", $"must be {ClientKeyConfig.MinKeyLength} to {ClientKeyConfig.MaxKeyLength} characters long (got {key.Length}); a short key can be guessed");
                }
                else if (key.AsSpan().IndexOfAnyExcept(KeyChars) is var bad and >= 0)
                {
                    k.Error("key", $"must be visible ASCII without spaces, as a client sends it in a header; {Offending(key, bad)}");
                }
                else
                {
                    digest = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(key)));
                }
            }
            else if (sha256 is not null)
            {
                var hex = sha256.Trim();
                if (hex.Length != 64 || !hex.All(char.IsAsciiHexDigit))
                {
                    k.Error("sha256", $"must be the 64 hex digits of the key's SHA-256 (e.g. from `printf %s \"$KEY\" | sha256sum`; got {hex.Length} characters)");
                }
                else
                {
                    digest = hex.ToLowerInvariant();
                    sha256 = digest;
                }
            }
            if (digest is not null)
            {
                var keyPath = k.PathOf(key is not null ? "key" : "sha256");
                if (digests.TryGetValue(digest, out var first)) k.Error(key is not null ? "key" : "sha256", $"the same key as {first}: each client needs its own key");
                else digests[digest] = keyPath;
            }

            ClientKeyRateLimitConfig? ratelimit = null;
            if (k.Map("ratelimit", ConfigKeys.ClientKeyRateLimit) is { } rl)
            {
                ratelimit = new ClientKeyRateLimitConfig
                {
                    PerSecond = rl.Int("perSecond", new ClientKeyRateLimitConfig().PerSecond, 1),
                    Burst = rl.OptionalInt("burst", 1),
                };
            }
            var tpm = k.Has("tokensPerMinute") ? k.Long("tokensPerMinute", 0, 1, UpstreamRateLimitConfig.MaxTokensPerMinute) : (long?)null;
            var models = ReadModels(k, out _);

            result.Add(new ClientKeyConfig
            {
                Name = name,
                Key = key is not null && digest is not null ? key : null,
                Sha256 = key is null ? sha256 : null,
                Ratelimit = ratelimit,
                TokensPerMinute = tpm is > 0 ? tpm : null,
                Models = models,
            });
        }
        return result;
    }

    /// <summary>Why a client key name cannot label a metric or an access-line field, or null.</summary>
    internal static string? ClientKeyNameProblem(string name) =>
        name.Length > 64 ? "must be at most 64 characters"
        : name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.') ? null
        : "must use only letters, digits, '_', '-' and '.' (it is a metric label and an access-line field)";

    /// <summary>Visible ASCII (no space): what a bearer token or an x-api-key value can hold.</summary>
    private static readonly SearchValues<char> KeyChars = SearchValues.Create(string.Concat(Enumerable.Range(0x21, 0x7f - 0x21).Select(c => (char)c)));

    private List<RouteConfig> ReadRoutes(YamlMap forward)
    {
        var result = new List<RouteConfig>();
        var items = forward.List("routes");
        if (items is null) return result;

        var named = new List<(Located Name, int Index)>();
        for (var i = 0; i < items.Count; i++)
        {
            var (node, path) = items[i];
            if (forward.Item(node, path, ConfigKeys.Route) is not { } r) continue;

            var name = r.String("name");
            if (name is not null)
            {
                if (string.IsNullOrWhiteSpace(name)) r.Error("name", "must not be empty (omit the key to label the route by its index)");
                else if (name.Any(char.IsControl)) r.Error("name", "must not contain control characters");
                else named.Add((new Located(name, r.PathOf("name"), r.At("name")), i));
            }

            var routePath = r.String("path");
            if (routePath is not null && RouteSelector.PathProblem(routePath) is { } pathProblem)
            {
                r.Error("path", pathProblem + r.Got(YamlMap.Quote(routePath)));
            }
            var model = r.String("model");
            if (model is not null && ModelGlob.Validate(model) is { } modelProblem)
            {
                r.Error("model", modelProblem + r.Got(YamlMap.Quote(model)));
            }
            if (!r.Has("path") && !r.Has("model"))
            {
                r.ErrorAt(node.Start, path, "empty route: give it a path, a model or both (a route matching every request is what defaultGroup is for)");
            }

            var group = r.RequiredString("group");
            References.RouteGroups.Add(new Located(group, r.PathOf("group"), r.At("group")));
            result.Add(new RouteConfig { Name = name, Path = routePath, Model = model, Group = group });
        }

        UniqueRouteLabels(items, named);
        return result;
    }

    /// <summary>Route names label metrics, and an unnamed route is labelled by its index, so a name may neither
    /// repeat nor equal the index of an unnamed route.</summary>
    private void UniqueRouteLabels(IReadOnlyList<(YamlNode Node, string Path)> items, List<(Located Name, int Index)> named)
    {
        var namedIndexes = named.Select(n => n.Index).ToHashSet();
        var first = new Dictionary<string, Located>(StringComparer.Ordinal);
        foreach (var (name, _) in named)
        {
            if (first.TryGetValue(name.Value, out var earlier))
            {
                ctx.Error(name.At, name.Path, $"duplicate route name '{name.Value}' (first defined at {earlier.Path})");
                continue;
            }
            first[name.Value] = name;
            if (int.TryParse(name.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                && index < items.Count && !namedIndexes.Contains(index)
                && name.Value == index.ToString(CultureInfo.InvariantCulture))
            {
                ctx.Error(name.At, name.Path,
                    $"route name '{name.Value}' is also the label of the unnamed route {items[index].Path}; name that route or choose another name");
            }
        }
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
            // A request's Authorization value is read without the whitespace around it: such a token could never match.
            else if (token.Trim(' ', '\t').Length != token.Length) m.Error("token", "must not start or end with a space or tab (no request could present it)");
            else CheckNoControl(m, "token", token);
        }

        return new AdminConfig { Port = port ?? AdminDefaults.Port, Address = address, Timeout = ReadServerTimeout(m), Token = token };
    }

    private static ServerTimeoutConfig ReadServerTimeout(YamlMap parent)
    {
        if (parent.Map("timeout", ConfigKeys.ServerTimeout) is not { } t) return ServerTimeoutDefaults;
        return new ServerTimeoutConfig
        {
            Idle = t.IntZeroIsDefault("idle", ServerTimeoutDefaults.Idle),
            Read = t.IntZeroIsDefault("read", ServerTimeoutDefaults.Read),
            Write = t.IntZeroIsDefault("write", ServerTimeoutDefaults.Write),
        };
    }

    /// <summary>An IP literal or "localhost"; <paramref name="valid"/> is false when an error was reported.</summary>
    private static string ReadAddress(YamlMap m, string fallback, out bool valid)
    {
        valid = true;
        // "" is the default, as in the reference.
        if (!m.Has("address") || m.IsEmptyString("address")) return fallback;
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

        var models = ReadModels(m, out var modelsValid);
        UpstreamRateLimitConfig? ratelimit = null;
        if (m.Map("ratelimit", ConfigKeys.UpstreamRateLimit) is { } rl)
        {
            ratelimit = new UpstreamRateLimitConfig
            {
                PerSecond = rl.Int("perSecond", UpstreamRateLimitDefaults.PerSecond, 1),
                Burst = rl.OptionalInt("burst", 1),
                RequestsPerMinute = rl.OptionalInt("requestsPerMinute", 1),
                TokensPerMinute = rl.Has("tokensPerMinute") ? rl.Long("tokensPerMinute", 0, 1, UpstreamRateLimitConfig.MaxTokensPerMinute) : null,
                MaxConcurrent = rl.OptionalInt("maxConcurrent", 1),
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
            Models = models,
            ModelMap = ReadModelMap(m, models, modelsValid),
            Recheck = m.Int("recheck", UpstreamConfig.DefaultRecheck, 0),
        };
    }

    /// <summary><c>models</c> (of an upstream or a client key): null when absent (any model); an empty list is an error, as it would allow nothing.
    /// <paramref name="valid"/> is false when an error was reported, so later checks do not repeat its consequences.</summary>
    private static List<string>? ReadModels(YamlMap upstream, out bool valid)
    {
        var errorsBefore = upstream.ErrorCount;
        valid = true;
        var items = upstream.List("models");
        if (items is null)
        {
            valid = upstream.ErrorCount == errorsBefore;
            return null;
        }
        if (items.Count == 0) upstream.Error("models", "must list at least one model glob (omit the key to serve any model)");
        var result = new List<string>();
        foreach (var (node, path) in items)
        {
            var text = upstream.StringItem(node, path);
            if (text is null) continue;
            if (ModelGlob.Validate(text) is { } problem) upstream.ErrorAt(node.Start, path, problem + upstream.Got(YamlMap.Quote(text)));
            else result.Add(text);
        }
        valid = upstream.ErrorCount == errorsBefore;
        return result;
    }

    /// <summary><c>modelMap</c>: exact model names (compared ignoring case) to the names sent upstream. Null when
    /// absent or empty. A key that a valid <c>models</c> does not admit could never be used, so it is an error.</summary>
    private static Dictionary<string, string>? ReadModelMap(YamlMap upstream, List<string>? models, bool modelsValid)
    {
        var entries = upstream.Entries("modelMap");
        if (entries is null) return null;

        var map = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var firstPath = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var admitted = modelsValid ? models?.Select(ModelGlob.Parse).ToList() : null;
        foreach (var (key, valueNode, at, path) in entries)
        {
            var keyOk = false;
            if (ModelGlob.NameProblem(key) is { } keyProblem)
            {
                upstream.ErrorAt(at, path, "model name " + keyProblem);
            }
            else if (key.AsSpan().IndexOfAny('*', '?') >= 0)
            {
                upstream.ErrorAt(at, path, "keys are exact model names, not globs (route by glob with routes[].model, filter with models)");
            }
            else if (firstPath.TryGetValue(key, out var earlier))
            {
                upstream.ErrorAt(at, path, $"duplicate model (keys are compared ignoring case; first defined at {earlier})");
            }
            else
            {
                keyOk = true;
                firstPath[key] = path;
                if (admitted is not null && !admitted.Any(glob => glob.IsMatch(key)))
                {
                    upstream.ErrorAt(at, path, $"no entry of {upstream.PathOf("models")} matches this model, so the mapping could never apply (add it to models or remove it)");
                }
            }

            var value = upstream.StringItem(valueNode, path);
            if (value is null) continue;
            if (ModelGlob.NameProblem(value) is { } valueProblem)
            {
                upstream.ErrorAt(valueNode.Start, path, valueProblem + upstream.Got(YamlMap.Quote(value)));
            }
            else if (keyOk)
            {
                map[key] = value;
            }
        }
        return map.Count == 0 ? null : map;
    }

    private static AuthConfig ReadAuth(YamlMap upstream)
    {
        // Sensitive: no message under auth ever echoes a value.
        if (upstream.Map("auth", ConfigKeys.Auth, sensitive: true) is not { } a) return new AuthConfig();

        // "" is none, as in the reference (its validation allows '' beside none, bearer and basic).
        var type = a.IsEmptyString("type") ? AuthType.None : a.Enum("type", AuthType.None, ConfigNames.AuthTypes);
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
        // The token goes on the wire as it is; basic credentials are base64-encoded (as UTF-8, like the
        // reference), so any text works there and only control characters (a newline from a secret file) are mistakes.
        if (token is not null) CheckHeaderValue(a, "token", token);
        if (username is not null) CheckNoControl(a, "username", username);
        if (password is not null) CheckNoControl(a, "password", password);

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
                h.Error("key", $"must be a valid HTTP header name: letters, digits and !#$%&'*+-.^_`|~ (RFC 9110 token){h.Got(YamlMap.Quote(key))}");
            }
            else if (ProxyManagedHeaders.TryGetValue(key, out var why))
            {
                h.Error("key", $"{key} cannot be changed by a header rule: {why}");
            }
            var value = h.String("value");
            if (opKnown && op != HeaderOp.Remove && !h.Has("value"))
            {
                h.Error("value", $"required when op is {ConfigNames.Of(ConfigNames.HeaderOps, op)}");
            }
            if (value is not null) CheckHeaderValue(h, "value", value);
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
            return new GroupMemberConfig
            {
                Name = memberName,
                Weight = member.Int("weight", MemberDefaults.Weight, 1, MaxWeight),
                Priority = member.Int("priority", MemberDefaults.Priority, -MaxPriority, MaxPriority),
            };
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

        // Strategies are registered policies, not an enum: the registry the runtime builds balancers from is the list
        // a name is checked against, so a name accepted here always has a policy.
        var strategy = m.Map("balance", ConfigKeys.Balance) is { } balance
            ? balance.Name("strategy", BalanceDefaults.Strategy, LoadBalancingPolicies.BuiltIn.Names)
            : BalanceDefaults.Strategy;

        return new UpstreamGroupConfig
        {
            Name = name,
            Upstreams = members,
            Balance = new BalanceConfig { Strategy = strategy },
            HttpClient = ReadHttpClient(m),
            Retry = ReadRetry(m),
            Affinity = ReadAffinity(m),
        };
    }

    private static AffinityConfig? ReadAffinity(YamlMap group)
    {
        if (group.Map("affinity", ConfigKeys.Affinity) is not { } a) return null;
        var keys = new List<string>();
        if (a.List("keys", required: true) is { } items)
        {
            if (items.Count == 0) a.Error("keys", "must list at least one key (header:<name> or body:<field>)");
            foreach (var (node, path) in items)
            {
                if (a.StringItem(node, path) is not { } text) continue;
                if (AffinityKey.TryParse(text, out _, out var error)) keys.Add(text);
                else a.ErrorAt(node.Start, path, error + a.Got(YamlMap.Quote(text)));
            }
        }
        return new AffinityConfig { Keys = keys };
    }

    private static HttpClientConfig ReadHttpClient(YamlMap group)
    {
        if (group.Map("httpClient", ConfigKeys.HttpClient) is not { } c) return HttpClientDefaults;

        // "" is the default, as in the reference; blanks would send an empty User-Agent.
        var agent = c.IsEmptyString("agent") ? HttpClientDefaults.Agent : c.String("agent") ?? HttpClientDefaults.Agent;
        if (string.IsNullOrWhiteSpace(agent)) c.Error("agent", "must not be blank (omit the key or give \"\" to use the default)");
        else CheckHeaderValue(c, "agent", agent);

        var connect = ConnectDefaults;
        if (c.Map("connect", ConfigKeys.Connect) is { } cn)
        {
            connect = new ConnectConfig
            {
                IdleTotal = cn.IntZeroIsDefault("idleTotal", ConnectDefaults.IdleTotal),
                IdlePerHost = cn.IntZeroIsDefault("idlePerHost", ConnectDefaults.IdlePerHost),
                MaxPerHost = cn.IntZeroIsDefault("maxPerHost", ConnectDefaults.MaxPerHost),
            };
        }

        var timeout = ClientTimeoutDefaults;
        if (c.Map("timeout", ConfigKeys.ClientTimeout) is { } t)
        {
            timeout = new ClientTimeoutConfig
            {
                Connect = t.IntZeroIsDefault("connect", ClientTimeoutDefaults.Connect),
                Request = t.IntZeroIsDefault("request", ClientTimeoutDefaults.Request),
                Idle = t.IntZeroIsDefault("idle", ClientTimeoutDefaults.Idle),
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
            Keepalive = c.Int("keepalive", HttpClientDefaults.Keepalive, 0, HttpClientConfig.MaxKeepalive,
                why: "the TCP keep-alive idle time is set in whole seconds and Linux allows at most 32767 s"),
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
        m.Error(key, $"must be {expected}{m.Got(YamlMap.Quote(ShownUrl(text)))}");
    }

    /// <summary>A URL as an error message may show it: user info hidden up to the last '@' (so a password holding
    /// '@', '/' or '?' is hidden whole), query and fragment cut (API keys live there). Over-hides, never leaks.</summary>
    internal static string ShownUrl(string url)
    {
        var at = url.LastIndexOf('@');
        if (at >= 0)
        {
            var scheme = url.IndexOf("://", StringComparison.Ordinal);
            var start = scheme >= 0 && scheme < at ? scheme + 3 : 0;
            url = url[..start] + "***" + url[at..];
        }
        var cut = url.AsSpan().IndexOfAny('?', '#');
        return cut < 0 ? url : url[..(cut + 1)] + "…";
    }

    /// <summary>Header values go on the wire as written: a line break would be header injection, and .NET refuses
    /// any other control character or non-ASCII text in a header — on every request, so it is a config error.
    /// The message gives the position and code point only: the value may be a secret.</summary>
    private static void CheckHeaderValue(YamlMap m, string key, string value)
    {
        var bad = value.AsSpan().IndexOfAnyExcept(HeaderValueChars);
        if (bad >= 0)
        {
            m.Error(key, $"must be printable ASCII, as it is sent in an HTTP header (no line breaks, control characters or non-ASCII text); {Offending(value, bad)}");
        }
    }

    private static void CheckNoControl(YamlMap m, string key, string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            if (char.IsControl(value[i]) && value[i] != '\t')
            {
                m.Error(key, $"must not contain line breaks or other control characters; {Offending(value, i)}");
                return;
            }
        }
    }

    private static string Offending(string value, int index) =>
        $"character {index + 1} is U+{(int)value[index]:X4}" + (value[index] is '\r' or '\n' ? " (a line break)" : char.IsControl(value[index]) ? " (a control character)" : "");

    /// <summary>HTAB, space and visible ASCII: RFC 9110 field-value characters that .NET will send.</summary>
    private static readonly SearchValues<char> HeaderValueChars =
        SearchValues.Create("\t" + string.Concat(Enumerable.Range(0x20, 0x7f - 0x20).Select(c => (char)c)));

    /// <summary>Headers a rule must not touch, because the proxy or the HTTP stack owns them (RFC 9110 §7.6.1).</summary>
    private static readonly Dictionary<string, string> ProxyManagedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Host"] = "the proxy sets it from the upstream url (put the host you need in url)",
        ["Content-Length"] = "the proxy sets it from the request body",
        ["Transfer-Encoding"] = "it is hop-by-hop: the proxy strips it and frames each connection itself",
        ["Connection"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
        ["Keep-Alive"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
        ["Proxy-Connection"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
        ["TE"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
        ["Trailer"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
        ["Upgrade"] = "it is hop-by-hop: the proxy strips it and manages each connection itself",
    };

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
    public List<Located> RouteGroups { get; } = [];
    public List<Located> Members { get; } = [];
    public List<Listener> Listeners { get; } = [];
}
