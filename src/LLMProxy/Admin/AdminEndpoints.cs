using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using LLMProxy.Forwarding;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Prometheus;

namespace LLMProxy.Admin;

/// <summary>
/// The admin listener: <c>/ping</c>, <c>/metrics</c> (always open) and <c>/health</c> (behind
/// <c>admin.token</c> when set). Nothing else is reachable: no debug or profiling endpoints.
/// </summary>
internal sealed class AdminEndpoints(ProxyRuntime runtime)
{
    private static readonly byte[] Pong = "success"u8.ToArray();
    private readonly byte[]? _token = runtime.Config.HttpServer.Admin.Token is { Length: > 0 } t ? Encoding.UTF8.GetBytes(t) : null;

    public async Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value;
        var isRead = HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method);
        switch (path)
        {
            case "/ping" when isRead:
                context.Response.ContentType = "text/plain; charset=utf-8";
                context.Response.ContentLength = Pong.Length;
                await context.Response.Body.WriteAsync(Pong);
                return;
            case "/metrics" when isRead:
                context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
                await runtime.Metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
                return;
            case "/health" when isRead:
                if (!Authorized(context))
                {
                    await ProxyErrors.WriteAsync(context, StatusCodes.Status401Unauthorized, ProxyErrors.Unauthorized);
                    return;
                }
                await WriteHealthAsync(context);
                return;
            default:
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
        }
    }

    private bool Authorized(HttpContext context)
    {
        if (_token is null)
        {
            return true;
        }
        var header = context.Request.Headers.Authorization.ToString();
        const string prefix = "Bearer ";
        if (!header.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        var given = Encoding.UTF8.GetBytes(header[prefix.Length..].Trim());
        return CryptographicOperations.FixedTimeEquals(given, _token);
    }

    private async Task WriteHealthAsync(HttpContext context)
    {
        var healthy = true;
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartArray("groups");
            foreach (var group in runtime.Groups.Values)
            {
                var available = group.HasAlternative(0);
                healthy &= available;
                json.WriteStartObject();
                json.WriteString("name", group.Name);
                json.WriteString("strategy", group.StrategyLabel);
                json.WriteBoolean("available", available);
                json.WriteStartArray("upstreams");
                foreach (var u in group.Members)
                {
                    WriteUpstream(json, u);
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteString("status", healthy ? "ok" : "unavailable");
            json.WriteEndObject();
        }
        context.Response.StatusCode = healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = buffer.Length;
        buffer.Position = 0;
        await buffer.CopyToAsync(context.Response.Body, context.RequestAborted);
    }

    private static void WriteUpstream(Utf8JsonWriter json, UpstreamRuntime u)
    {
        json.WriteStartObject();
        json.WriteString("name", u.Name);
        // Host only: the url's path or query could carry a key.
        json.WriteString("host", u.Host);
        json.WriteString("breaker", u.Breaker is { } b ? ProxyRuntime.StateLabel(b.State) : "disabled");
        if (u.CoolDown.Until is { } until)
        {
            json.WriteString("coolingUntil", until);
        }
        else
        {
            json.WriteNull("coolingUntil");
        }
        json.WriteNumber("inFlight", u.InFlight);
        json.WriteBoolean("available", u.Check() == Unavailability.None);
        json.WriteEndObject();
    }
}
