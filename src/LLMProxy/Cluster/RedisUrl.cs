using System.Globalization;
using StackExchange.Redis;

namespace LLMProxy.Cluster;

/// <summary>
/// Reads <c>cluster.redis.url</c>: <c>redis://[user:pass@]host[:port][/db]</c> (<c>rediss://</c> for TLS), or else a
/// StackExchange.Redis connection string. Errors never quote the text (it may hold a password); <see cref="Describe"/>
/// shows endpoints only.
/// </summary>
internal static class RedisUrl
{
    /// <summary>Parses <paramref name="text"/> into client options (without the proxy's connection policy — see
    /// <see cref="RedisCluster"/>). False with a message that names the problem, never the text.</summary>
    public static bool TryParse(string text, out ConfigurationOptions? options, out string? error)
    {
        options = null;
        error = null;
        text = text.Trim();
        if (text.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("rediss://", StringComparison.OrdinalIgnoreCase))
        {
            return TryParseUrl(text, out options, out error);
        }
        if (text.Contains("://", StringComparison.Ordinal))
        {
            error = "must be a redis:// or rediss:// URL, or a StackExchange.Redis connection string (host:port,password=…)";
            return false;
        }
        try
        {
            options = ConfigurationOptions.Parse(text);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or NotSupportedException)
        {
            error = "is not a valid StackExchange.Redis connection string (host:port,option=value,…)";
            return false;
        }
        if (options.EndPoints.Count == 0)
        {
            error = "names no Redis endpoint (host:port)";
            options = null;
            return false;
        }
        return true;
    }

    private static bool TryParseUrl(string text, out ConfigurationOptions? options, out string? error)
    {
        options = null;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Host.Length == 0)
        {
            error = "is not a valid redis:// URL (redis://[user:password@]host[:port][/db])";
            return false;
        }
        if (uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            error = "must not have a query or fragment (redis://[user:password@]host[:port][/db])";
            return false;
        }
        var db = -1;
        var path = uri.AbsolutePath.Trim('/');
        if (path.Length > 0 && (!int.TryParse(path, NumberStyles.None, CultureInfo.InvariantCulture, out db) || db > 15))
        {
            error = "has a database that is not a number from 0 to 15 (redis://host:port/0)";
            return false;
        }
        var result = new ConfigurationOptions { Ssl = uri.Scheme.Equals("rediss", StringComparison.OrdinalIgnoreCase) };
        result.EndPoints.Add(uri.Host.Trim('[', ']'), uri.IsDefaultPort || uri.Port < 0 ? 6379 : uri.Port);
        if (db >= 0)
        {
            result.DefaultDatabase = db;
        }
        if (uri.UserInfo.Length > 0)
        {
            // user:password (ACL), or :password / password alone (requirepass).
            var colon = uri.UserInfo.IndexOf(':', StringComparison.Ordinal);
            var user = colon < 0 ? "" : Uri.UnescapeDataString(uri.UserInfo[..colon]);
            var password = Uri.UnescapeDataString(colon < 0 ? uri.UserInfo : uri.UserInfo[(colon + 1)..]);
            if (user.Length > 0)
            {
                result.User = user;
            }
            if (password.Length > 0)
            {
                result.Password = password;
            }
        }
        if (result.Ssl)
        {
            result.SslHost = uri.Host;
        }
        options = result;
        error = null;
        return true;
    }

    /// <summary>What logs and <c>-t</c> may show: the endpoints, TLS and database — never user or password.</summary>
    public static string Describe(string text)
    {
        if (!TryParse(text, out var options, out _))
        {
            return "(invalid)";
        }
        var endpoints = string.Join(",", options!.EndPoints.Select(Format));
        var db = options.DefaultDatabase is { } d ? "/" + d.ToString(CultureInfo.InvariantCulture) : "";
        return (options.Ssl ? "rediss://" : "redis://") + endpoints + db;
    }

    private static string Format(System.Net.EndPoint endpoint) => endpoint switch
    {
        System.Net.DnsEndPoint dns => $"{dns.Host}:{dns.Port}",
        System.Net.IPEndPoint ip => ip.ToString(),
        _ => endpoint.ToString() ?? "?",
    };
}
