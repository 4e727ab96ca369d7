using System.Globalization;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Hosting;

/// <summary>
/// Every client connection (up to <c>maxConnections</c> per forward) and every upstream connection (up to <c>maxPerHost</c>
/// per upstream host and group) holds a file descriptor. When the caps allow more than the open-file limit, a flood runs
/// the process out of descriptors before any cap refuses anything; accepting then pauses (<see cref="PatientSocketTransport"/>)
/// but nobody is served. This warns at start. The .NET runtime already raises the soft limit to the hard limit when the
/// process starts, so the limit read here is the hard one (<c>ulimit -Hn</c>, <c>docker run --ulimit nofile=…</c>).
/// </summary>
internal static class FileDescriptorBudget
{
    /// <summary>Descriptors the process uses besides proxied connections: runtime, assemblies, listeners, admin clients.</summary>
    public const int Reserve = 256;

    public static long Needed(ProxyConfig config) =>
        config.HttpServer.Forwards.Sum(f => (long)f.MaxConnections) + UpstreamConnections(config) + Reserve;

    /// <summary>The most upstream connections the pools can hold at once: <c>maxPerHost</c> per distinct host of each group.</summary>
    public static long UpstreamConnections(ProxyConfig config)
    {
        var upstreamHosts = config.Upstreams.ToDictionary(u => u.Name, u => Uri.TryCreate(u.Url, UriKind.Absolute, out var uri) ? uri.Authority : u.Url,
            StringComparer.Ordinal);
        return config.UpstreamGroups.Sum(g => (long)g.HttpClient.Connect.MaxPerHost
            * g.Upstreams.Select(m => upstreamHosts.GetValueOrDefault(m.Name, m.Name)).Distinct(StringComparer.OrdinalIgnoreCase).Count());
    }

    /// <summary>The soft "Max open files" of <c>/proc/self/limits</c>; null when unknown or unlimited.</summary>
    public static long? ParseOpenFileLimit(string procLimits)
    {
        foreach (var line in procLimits.Split('\n'))
        {
            if (!line.StartsWith("Max open files", StringComparison.Ordinal))
            {
                continue;
            }
            var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return fields.Length > 0 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var soft) ? soft : null;
        }
        return null;
    }

    /// <summary>This process's open-file limit; null when unknown (not Linux) or unlimited.</summary>
    public static long? ReadOpenFileLimit()
    {
        try
        {
            return ParseOpenFileLimit(File.ReadAllText("/proc/self/limits"));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null; // not Linux
        }
    }

    public static void Check(ProxyConfig config, long? limit, ILogger logger)
    {
        var needed = Needed(config);
        if (limit is { } known && known < needed)
        {
            Log.OpenFileLimitLow(logger, known, needed, Reserve, DescriptorCeiling.ForwardCeiling(known, UpstreamConnections(config)));
        }
    }
}
