using System.Globalization;
using System.Text;

namespace LLMProxy.Configuration;

/// <summary>The short human-readable summary printed by <c>llmproxy -t</c>. Shows hosts rather than
/// full URLs (paths and queries may carry keys) and only redacted credentials.</summary>
public static class ConfigSummary
{
    public static string Summarize(ProxyConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        var s = new StringBuilder();
        var admin = c.HttpServer.Admin;

        s.Append(CultureInfo.InvariantCulture, $"forwards ({c.HttpServer.Forwards.Count}):").AppendLine();
        foreach (var f in c.HttpServer.Forwards)
        {
            var limit = f.Ratelimit is { } rl ? $"ratelimit {rl.PerSecond}/s burst {rl.Burst}" : "no ratelimit";
            var routes = f.Routes.Count > 0 ? $", {f.Routes.Count} route(s)" : "";
            // Client keys by name only: never a key or its digest.
            var keys = f.Keys.Count > 0 ? $", client keys: {string.Join(", ", f.Keys.Select(k => k.Name))}" : "";
            s.Append(CultureInfo.InvariantCulture, $"  {f.Name}  {Endpoint(f.Address, f.Port)} -> {f.DefaultGroup}  ({limit}{routes}{keys})").AppendLine();
        }
        var token = admin.Token is null ? "open" : "token " + Secrets.Redact(admin.Token);
        s.Append(CultureInfo.InvariantCulture, $"admin: {Endpoint(admin.Address, admin.Port)}  ({token})").AppendLine();

        s.Append(CultureInfo.InvariantCulture, $"upstream groups ({c.UpstreamGroups.Count}):").AppendLine();
        foreach (var g in c.UpstreamGroups)
        {
            var strategy = g.Balance.Strategy;
            var weighted = strategy == LoadBalancing.WeightedRoundRobinPolicy.PolicyName;
            var members = string.Join(", ", g.Upstreams.Select(m => weighted ? $"{m.Name}×{m.Weight}" : m.Name));
            var proxy = g.HttpClient.Proxy is { } p ? $", via proxy {Host(p.Url)}" : "";
            s.Append(CultureInfo.InvariantCulture,
                $"  {g.Name}  {strategy}  [{members}]  (retry {g.Retry.Attempts} attempts{proxy})").AppendLine();
        }

        s.Append(CultureInfo.InvariantCulture, $"upstreams ({c.Upstreams.Count}):").AppendLine();
        foreach (var u in c.Upstreams)
        {
            var extras = new List<string> { Auth(u.Auth) };
            if (u.Breaker is { } b) extras.Add($"breaker {b.Threshold.ToString(CultureInfo.InvariantCulture)}");
            if (u.Ratelimit is { } rl)
            {
                extras.Add($"ratelimit {rl.PerSecond}/s");
                if (rl.RequestsPerMinute is { } rpm) extras.Add($"{rpm} rpm");
                if (rl.TokensPerMinute is { } tpm) extras.Add($"{tpm} tpm");
                if (rl.MaxConcurrent is { } max) extras.Add($"max {max} concurrent");
            }
            if (u.Headers.Count > 0) extras.Add($"{u.Headers.Count} header rule(s)");
            if (u.Models is { } models) extras.Add($"{models.Count} model glob(s)");
            if (u.ModelMap is { } map) extras.Add($"{map.Count} model mapping(s)");
            s.Append(CultureInfo.InvariantCulture, $"  {u.Name}  {Host(u.Url)}  ({string.Join(", ", extras)})").AppendLine();
        }
        if (c.Cluster?.Redis is { } redis)
        {
            // Endpoints only: the url's user and password never appear.
            s.Append(CultureInfo.InvariantCulture,
                $"cluster: redis {Cluster.RedisUrl.Describe(redis.Url)}  (prefix {redis.Prefix}, timeout {redis.Timeout} ms)").AppendLine();
        }
        return s.ToString();
    }

    private static string Endpoint(string address, int port) =>
        address.Contains(':', StringComparison.Ordinal) ? $"[{address}]:{port}" : $"{address}:{port}";

    private static string Auth(AuthConfig auth) => auth.Type switch
    {
        AuthType.Bearer => "bearer " + Secrets.Redact(auth.Token),
        AuthType.Basic => $"basic {auth.Username}:{Secrets.Redact(auth.Password)}",
        _ => "no auth",
    };

    /// <summary>scheme://host[:port] only — never user info, path or query.</summary>
    private static string Host(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.GetLeftPart(UriPartial.Scheme) + uri.Authority : "(invalid url)";
}
