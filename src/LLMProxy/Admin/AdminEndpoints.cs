using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using LLMProxy.Forwarding;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Admin;

/// <summary>
/// The admin listener (SPEC §7, §16) as routed endpoints behind one guard: <c>/ping</c>, <c>/metrics</c> and the status
/// page <c>/</c> are open; <c>/health</c> and everything under <c>/api/v1</c> need <c>admin.token</c> when one is set.
/// An unknown path is 404, a known path with another method 405, a missing token 401 — each one JSON error (SPEC §6).
/// Nothing else is reachable: no debug or profiling endpoints.
/// </summary>
internal sealed class AdminEndpoints(RuntimeHolder holder, Hosting.ConfigReloader reloader, ILogger logger, TimeProvider time)
{
    private static readonly byte[] Pong = "success"u8.ToArray();
    private static readonly string[] Reads = [HttpMethods.Get, HttpMethods.Head];
    private static readonly string[] Actions = ["disable", "enable", "reset"];

    /// <summary>Whether a route needs the admin token: read by the one guard in front of every endpoint.</summary>
    private sealed record AdminRoute(bool Open);

    private static readonly AdminRoute OpenRoute = new(true), TokenRoute = new(false);

    private readonly LogThrottle _unauthorizedLog = new(time, TimeSpan.FromSeconds(10));

    /// <summary>Routes the admin app: the guard runs after routing chose an endpoint and before it executes.</summary>
    public void Map(WebApplication app)
    {
        app.UseRouting();
        app.Use(GuardAsync);
        app.MapMethods("/ping", Reads, PingAsync).WithMetadata(OpenRoute);
        app.MapMethods("/metrics", Reads, MetricsAsync).WithMetadata(OpenRoute);
        // The page holds no state and no data: the API calls it makes carry the token (SPEC §16).
        app.MapMethods("/", Reads, StatusPage.WriteAsync).WithMetadata(OpenRoute);
        app.MapMethods("/health", Reads, HealthAsync).WithMetadata(TokenRoute);
        app.MapMethods("/api/v1/upstreams", Reads, UpstreamsAsync).WithMetadata(TokenRoute);
        foreach (var action in Actions)
        {
            app.MapPost("/api/v1/upstreams/{name}/" + action, context => ActionAsync(context, action)).WithMetadata(TokenRoute);
        }
        app.MapMethods("/api/v1/config", Reads, ConfigAsync).WithMetadata(TokenRoute);
        if (reloader.Available)
        {
            app.MapPost("/api/v1/reload", ReloadAsync).WithMetadata(TokenRoute);
        }
    }

    private async Task GuardAsync(HttpContext context, RequestDelegate next)
    {
        var endpoint = context.GetEndpoint();
        if (endpoint?.Metadata.GetMetadata<AdminRoute>() is not { } route)
        {
            if (endpoint is null)
            {
                await WriteErrorAsync(context, StatusCodes.Status404NotFound, "not_found", "No such admin endpoint.");
                return;
            }
            // Routing's own 405 endpoint: it sets Allow; the body is ours.
            await endpoint.RequestDelegate!(context);
            await WriteErrorAsync(context, StatusCodes.Status405MethodNotAllowed, ProxyErrors.MethodNotAllowed,
                "Method not allowed on this admin endpoint.");
            return;
        }
        if (CrossOrigin(context, holder.Current))
        {
            Refused(context, "cross-origin action");
            await WriteErrorAsync(context, StatusCodes.Status403Forbidden, "forbidden", "Cross-origin admin actions are refused.");
            return;
        }
        if (RebindingSuspect(context, holder.Current))
        {
            Refused(context, "action through a host name without an admin token");
            await WriteErrorAsync(context, StatusCodes.Status403Forbidden, "forbidden",
                "Without admin.token, admin actions are accepted only on an IP address or localhost; set admin.token to act through a host name.");
            return;
        }
        if (!route.Open && !Authorized(context, holder.Current))
        {
            Refused(context, "no valid admin token");
            await ProxyErrors.WriteUnauthorizedAsync(context);
            return;
        }
        await next(context);
    }

    /// <summary>Counts a refused request; a log line at most every 10 s (a flood of refusals cannot flood the log).</summary>
    private void Refused(HttpContext context, string reason)
    {
        holder.Current.Metrics.AdminUnauthorized.Inc();
        if (_unauthorizedLog.TryEnter(out var occurrences))
        {
            Log.AdminUnauthorized(logger, Client(context), reason, occurrences);
        }
    }

    /// <summary>A state-changing request a browser sent from another site's page (CSRF): with no admin token set, a form on
    /// any web page the operator opens could otherwise disable keys. Browsers send <c>Origin</c> on every POST; the status
    /// page's own requests carry this listener's origin. Clients without <c>Origin</c> (curl, scripts) are unaffected.
    /// With a token set the token is the guard (a browser never attaches it by itself, so another site's page cannot send
    /// it): behind a TLS-terminating or Host-rewriting reverse proxy the page's origin is not what this listener sees, and
    /// comparing them refused every action of the operator's own page.</summary>
    private static bool CrossOrigin(HttpContext context, ProxyRuntime runtime)
    {
        var request = context.Request;
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || request.Headers.Origin.Count == 0
            || runtime.Config.HttpServer.Admin.Token is { Length: > 0 })
        {
            return false;
        }
        var origin = request.Headers.Origin.ToString();
        return !Uri.TryCreate(origin, UriKind.Absolute, out var uri)
            || !string.Equals(uri.Authority, request.Host.Value, StringComparison.OrdinalIgnoreCase)
            || !string.Equals(uri.Scheme, request.Scheme, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// A state-changing request, with no admin token set, addressed to a host name rather than an IP address or localhost:
    /// what a DNS-rebinding page looks like (its own name, re-pointed at this listener, so its Origin matches its Host and
    /// the cross-origin check passes). With a token set the token is the guard; reads stay open to names (the data is
    /// redacted, and probes and dashboards address hosts by name).
    /// </summary>
    private static bool RebindingSuspect(HttpContext context, ProxyRuntime runtime)
    {
        var request = context.Request;
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || runtime.Config.HttpServer.Admin.Token is { Length: > 0 })
        {
            return false;
        }
        var host = request.Host.Host.Trim('[', ']');
        return !(System.Net.IPAddress.TryParse(host, out _)
            || host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
            || host.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Constant time whatever the length: both sides are hashed first, so neither content nor length leaks.</summary>
    private static bool Authorized(HttpContext context, ProxyRuntime runtime)
    {
        if (runtime.Config.HttpServer.Admin.Token is not { Length: > 0 } token)
        {
            return true;
        }
        if (!Forwarding.BearerToken.TryParse(context.Request.Headers.Authorization, out var presented))
        {
            return false;
        }
        var given = SHA256.HashData(Encoding.UTF8.GetBytes(presented.ToString()));
        return CryptographicOperations.FixedTimeEquals(given, SHA256.HashData(Encoding.UTF8.GetBytes(token)));
    }

    /// <summary>Who acted, for the log line: the admin client's address (never its token).</summary>
    private static string Client(HttpContext context) => context.Connection.RemoteIpAddress?.ToString() ?? "unknown";

    private static async Task PingAsync(HttpContext context)
    {
        context.Response.ContentType = "text/plain; charset=utf-8";
        context.Response.ContentLength = Pong.Length;
        await context.Response.Body.WriteAsync(Pong);
    }

    private async Task MetricsAsync(HttpContext context)
    {
        var runtime = holder.Current;
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        runtime.RefreshBudgetMetrics();
        await runtime.Metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
    }

    private Task UpstreamsAsync(HttpContext context)
    {
        var runtime = holder.Current;
        return WriteJsonAsync(context, StatusCodes.Status200OK, json => UpstreamsReport.Write(json, runtime));
    }

    private Task ConfigAsync(HttpContext context)
    {
        var runtime = holder.Current;
        return WriteJsonAsync(context, StatusCodes.Status200OK, json => ConfigReport.Write(json, runtime.Config));
    }

    /// <summary><c>POST /api/v1/upstreams/{name}/disable|enable|reset</c> on the configuration in force; answers the
    /// upstream's state after the action.</summary>
    private async Task ActionAsync(HttpContext context, string action)
    {
        var runtime = holder.Current;
        var name = UpstreamName(context, action);
        if (!runtime.Upstreams.TryGetValue(name, out var upstream))
        {
            runtime.Metrics.AdminActions.WithLabels(action, "not_found").Inc();
            Log.AdminAction(logger, action, LogText.Escape(name.Length > 64 ? name[..64] : name), Client(context), "no such upstream");
            await WriteErrorAsync(context, StatusCodes.Status404NotFound, "upstream_not_found", $"No upstream named {JsonSerializer.Serialize(name)}.");
            return;
        }
        switch (action)
        {
            case "disable": upstream.AdminDisable(); break;
            case "enable": upstream.AdminEnable(); break;
            default: upstream.AdminReset(); break;
        }
        runtime.Metrics.AdminActions.WithLabels(action, "ok").Inc();
        Log.AdminAction(logger, action, upstream.Name, Client(context), "done");
        var now = runtime.Time.GetUtcNow();
        await WriteJsonAsync(context, StatusCodes.Status200OK, json =>
        {
            json.WritePropertyName("upstream");
            UpstreamsReport.WriteUpstream(json, upstream, now);
        });
    }

    /// <summary>The upstream name as the client escaped it. The server decodes every escape in the path but <c>%2F</c>, and
    /// decodes <c>%25</c> too, so the route value cannot tell <c>a%2Fb</c> (the name <c>a/b</c>) from <c>a%252Fb</c> (the
    /// name <c>a%2Fb</c>); the raw request target can, once it is checked to be the segment routing saw.</summary>
    private static string UpstreamName(HttpContext context, string action)
    {
        var routed = context.GetRouteValue("name") as string ?? "";
        if (!routed.Contains('%', StringComparison.Ordinal))
        {
            return routed; // no escape survived decoding: nothing ambiguous
        }
        var path = (context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? "").Split('?', 2)[0];
        var suffix = "/" + action;
        if (!path.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
        {
            return routed;
        }
        var rest = path[..^suffix.Length];
        var segment = rest[(rest.LastIndexOf('/') + 1)..];
        // The server's own decoding of the segment (every escape but %2F) must give the routed value.
        var asRouted = string.Join("%2F", segment.Split(["%2F", "%2f"], StringSplitOptions.None).Select(Uri.UnescapeDataString));
        return string.Equals(asRouted, routed.Replace("%2f", "%2F", StringComparison.Ordinal), StringComparison.Ordinal)
            ? Uri.UnescapeDataString(segment)
            : routed;
    }

    private async Task ReloadAsync(HttpContext context)
    {
        // Reading and validating the file is blocking work; keep it off the admin connection's thread.
        var outcome = await Task.Run(reloader.Reload, context.RequestAborted);
        var result = outcome.Applied ? "ok" : "rejected";
        holder.Current.Metrics.AdminActions.WithLabels("reload", result).Inc();
        Log.AdminAction(logger, "reload", "config", Client(context), outcome.Applied ? "applied" : "rejected");
        await WriteJsonAsync(context, outcome.Applied ? StatusCodes.Status200OK : StatusCodes.Status400BadRequest, json =>
        {
            json.WriteBoolean("reloaded", outcome.Applied);
            json.WriteStartArray("errors");
            foreach (var error in outcome.Errors)
            {
                json.WriteStringValue(error);
            }
            json.WriteEndArray();
        });
    }

    /// <summary>One SPEC §6 error body, keeping headers already set (a 405's Allow).</summary>
    private static Task WriteErrorAsync(HttpContext context, int status, string code, string message)
    {
        var body = ProxyErrors.Body(code, message);
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = body.Length;
        return context.Response.Body.WriteAsync(body, 0, body.Length, context.RequestAborted);
    }

    /// <summary>One JSON object as the whole response, with its Content-Length; never cached (live state).</summary>
    private static async Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> writeProperties)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            writeProperties(json);
            json.WriteEndObject();
        }
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        context.Response.ContentLength = buffer.Length;
        buffer.Position = 0;
        await buffer.CopyToAsync(context.Response.Body, context.RequestAborted);
    }

    private Task HealthAsync(HttpContext context)
    {
        var runtime = holder.Current;
        // 503 when some group has no member up (every key disabled or its breaker open); a group only out of budget
        // or cooling down is up (GroupRuntime.HasHealthyMember) and shows "available": false.
        var healthy = runtime.Groups.Values.All(g => g.HasHealthyMember());
        return WriteJsonAsync(context, healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable, json =>
        {
            json.WriteStartArray("groups");
            foreach (var group in runtime.Groups.Values)
            {
                json.WriteStartObject();
                json.WriteString("name", group.Name);
                json.WriteString("strategy", group.StrategyLabel);
                json.WriteBoolean("available", group.HasAlternative(default));
                json.WriteBoolean("healthy", group.HasHealthyMember());
                json.WriteStartArray("upstreams");
                foreach (var u in group.Members)
                {
                    WriteHealthUpstream(json, u, runtime.Time.GetUtcNow());
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteString("status", healthy ? "ok" : "unavailable");
        });
    }

    private static void WriteHealthUpstream(Utf8JsonWriter json, UpstreamRuntime u, DateTimeOffset now)
    {
        json.WriteStartObject();
        json.WriteString("name", u.Name);
        // Host only: the url's path or query could carry a key.
        json.WriteString("host", u.Host);
        json.WriteString("breaker", u.Breaker is { } b ? ProxyRuntime.StateLabel(b.State) : "disabled");
        UpstreamsReport.WriteTimeOrNull(json, "coolingUntil", u.CoolDown.Until);
        UpstreamsReport.WriteDisabled(json, u);
        json.WriteNumber("inFlight", u.InFlight);
        json.WriteBoolean("available", u.Check() == Unavailability.None);
        UpstreamsReport.WriteBudgets(json, u, now);
        json.WriteEndObject();
    }
}
