using System.Globalization;
using LLMProxy.Configuration;

namespace LLMProxy.Routing;

/// <summary>
/// A forward's <c>routes[]</c> compiled once per config: <see cref="Select"/> returns the index of the first route
/// that matches a request's path and model, or -1 for the forward's defaultGroup. Per request it only compares
/// spans against precomputed prefixes and globs: no allocation, no LINQ.
/// </summary>
/// <remarks>
/// Paths are matched case-sensitively (URL paths are, and the LLM APIs treat <c>/V1/messages</c> as unknown),
/// a whole segment at a time: prefix <c>/v1/messages</c> matches <c>/v1/messages</c>, <c>/v1/messages/batches</c>
/// and <c>/v1/messages?beta=true</c> but not <c>/v1/messagesX</c>. The path given is the one the proxy received
/// (ASP.NET Core's decoded <c>Request.Path</c>, optionally with its query). Models are matched with
/// <see cref="ModelGlob"/>, ignoring case.
/// </remarks>
internal sealed class RouteSelector
{
    /// <summary>A forward without routes: every request goes to defaultGroup.</summary>
    public static readonly RouteSelector Empty = new([]);

    private readonly Route[] _routes;

    /// <param name="routes">Validated routes (config validation rules out anything <see cref="ModelGlob.Parse"/> or
    /// <see cref="PathProblem"/> rejects).</param>
    public RouteSelector(IReadOnlyList<RouteConfig> routes)
    {
        ArgumentNullException.ThrowIfNull(routes);
        _routes = new Route[routes.Count];
        var labels = new string[routes.Count];
        var groups = new string[routes.Count];
        for (var i = 0; i < routes.Count; i++)
        {
            var route = routes[i];
            if (route.Path is null && route.Model is null) throw new ArgumentException($"route {i} has neither a path nor a model", nameof(routes));
            if (route.Path is not null && PathProblem(route.Path) is { } problem) throw new ArgumentException($"route {i} path {problem}", nameof(routes));
            _routes[i] = new Route(route.Path is null ? null : TrimTrailingSlashes(route.Path), route.Model is null ? null : ModelGlob.Parse(route.Model));
            labels[i] = route.Name ?? i.ToString(CultureInfo.InvariantCulture);
            groups[i] = route.Group;
        }
        Labels = labels;
        Groups = groups;
    }

    /// <summary>Number of routes.</summary>
    public int Count => _routes.Length;

    /// <summary>Each route's metric/log label: its <c>name</c>, or its index ("0", "1", ...) when it has none.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Each route's upstream group name.</summary>
    public IReadOnlyList<string> Groups { get; }

    /// <summary>Why <paramref name="path"/> cannot be a route's path prefix, or null when it can. Phrased to follow a
    /// config path ("must start with '/'").</summary>
    public static string? PathProblem(string? path)
    {
        if (string.IsNullOrEmpty(path) || path[0] != '/') return "must start with '/'";
        foreach (var c in path)
        {
            if (char.IsWhiteSpace(c) || char.IsControl(c)) return "must not contain whitespace or control characters";
            // A prefix is compared with the path only; a query or fragment in it could never match.
            if (c is '?' or '#') return $"must be a path without query or fragment ('{c}' is not allowed)";
        }
        return null;
    }

    /// <summary>Index of the first route matching <paramref name="path"/> and <paramref name="model"/>, or -1 when
    /// none does (use defaultGroup). A route with a model never matches a request whose body has none.</summary>
    /// <param name="path">The request path, with or without its query string.</param>
    /// <param name="model">The body's top-level model, or null when there is none (not JSON, no such key, not a string).</param>
    public int Select(ReadOnlySpan<char> path, string? model)
    {
        var routes = _routes;
        for (var i = 0; i < routes.Length; i++)
        {
            ref readonly var route = ref routes[i];
            if (route.Prefix is { } prefix && !IsSegmentPrefix(path, prefix)) continue;
            if (route.Model is { } glob && (model is null || !glob.IsMatch(model))) continue;
            return i;
        }
        return -1;
    }

    /// <summary>True when <paramref name="prefix"/> (no trailing '/') is the whole path or is followed by '/' or the query.</summary>
    private static bool IsSegmentPrefix(ReadOnlySpan<char> path, string prefix) =>
        path.StartsWith(prefix, StringComparison.Ordinal)
        && (path.Length == prefix.Length || path[prefix.Length] is '/' or '?');

    /// <summary>"/v1/messages/" is the same prefix as "/v1/messages"; "/" becomes "" and so matches every path.</summary>
    private static string TrimTrailingSlashes(string path) => path.TrimEnd('/');

    private readonly record struct Route(string? Prefix, ModelGlob? Model);
}
