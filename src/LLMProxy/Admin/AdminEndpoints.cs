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
/// The admin listener: <c>/ping</c>, <c>/metrics</c> (always open), <c>/health</c> and
/// <c>POST /api/v1/reload</c> (behind <c>admin.token</c> when set). Nothing else is reachable: no debug or
/// profiling endpoints.
/// </summary>
internal sealed class AdminEndpoints(RuntimeHolder holder, Hosting.ConfigReloader reloader)
{
    private static readonly byte[] Pong = "success"u8.ToArray();

    public async Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value;
        var isRead = HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method);
        var runtime = holder.Current;
        switch (path)
        {
            case "/ping" when isRead:
                context.Response.ContentType = "text/plain; charset=utf-8";
                context.Response.ContentLength = Pong.Length;
                await context.Response.Body.WriteAsync(Pong);
                return;
            case "/metrics" when isRead:
                context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
                runtime.RefreshBudgetMetrics();
                await runtime.Metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
                return;
            case "/health" when isRead:
                if (!Authorized(context, runtime))
                {
                    await ProxyErrors.WriteUnauthorizedAsync(context);
                    return;
                }
                await WriteHealthAsync(context, runtime);
                return;
            case "/api/v1/reload" when HttpMethods.IsPost(context.Request.Method) && reloader.Available:
                if (!Authorized(context, runtime))
                {
                    await ProxyErrors.WriteUnauthorizedAsync(context);
                    return;
                }
                await WriteReloadAsync(context);
                return;
            default:
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
        }
    }

    private static bool Authorized(HttpContext context, ProxyRuntime runtime)
    {
        if (runtime.Config.HttpServer.Admin.Token is not { Length: > 0 } token)
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
        return CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(token));
    }

    private async Task WriteReloadAsync(HttpContext context)
    {
        // Reading and validating the file is blocking work; keep it off the admin connection's thread.
        var outcome = await Task.Run(reloader.Reload, context.RequestAborted);
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

    /// <summary>One JSON object as the whole response, with its Content-Length.</summary>
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
        context.Response.ContentLength = buffer.Length;
        buffer.Position = 0;
        await buffer.CopyToAsync(context.Response.Body, context.RequestAborted);
    }

    private static Task WriteHealthAsync(HttpContext context, ProxyRuntime runtime)
    {
        var healthy = runtime.Groups.Values.All(g => g.HasAlternative(0));
        return WriteJsonAsync(context, healthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable, json =>
        {
            json.WriteStartArray("groups");
            foreach (var group in runtime.Groups.Values)
            {
                json.WriteStartObject();
                json.WriteString("name", group.Name);
                json.WriteString("strategy", group.StrategyLabel);
                json.WriteBoolean("available", group.HasAlternative(0));
                json.WriteStartArray("upstreams");
                foreach (var u in group.Members)
                {
                    WriteUpstream(json, u, runtime.Time.GetUtcNow());
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteString("status", healthy ? "ok" : "unavailable");
        });
    }

    private static void WriteUpstream(Utf8JsonWriter json, UpstreamRuntime u, DateTimeOffset now)
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
        if (u.Disabled is { } disabled)
        {
            // SPEC §13.4: the key was disabled as bad; nextTrial only when recheck lets one through.
            json.WriteStartObject("disabled");
            json.WriteString("reason", disabled.Reason);
            json.WriteString("since", disabled.Since);
            if (u.Recheck > TimeSpan.Zero)
            {
                json.WriteString("nextTrial", disabled.NextTrial);
            }
            else
            {
                json.WriteNull("nextTrial");
            }
            json.WriteEndObject();
        }
        else
        {
            json.WriteNull("disabled");
        }
        json.WriteNumber("inFlight", u.InFlight);
        json.WriteBoolean("available", u.Check() == Unavailability.None);
        WriteBudgets(json, u, now);
        json.WriteEndObject();
    }

    /// <summary>SPEC §13.1: each configured budget as used/limit, and what the provider last said.</summary>
    private static void WriteBudgets(Utf8JsonWriter json, UpstreamRuntime u, DateTimeOffset now)
    {
        json.WriteStartObject("budgets");
        if (u.Rpm is { } rpm)
        {
            WriteBudget(json, "requestsPerMinute", rpm.Burst - rpm.AvailableTokens, rpm.Burst);
        }
        if (u.Tpm is { } tpm)
        {
            WriteBudget(json, "tokensPerMinute", tpm.Capacity - tpm.Available, tpm.Capacity);
        }
        if (u.MaxConcurrent != int.MaxValue)
        {
            WriteBudget(json, "concurrent", u.InFlight, u.MaxConcurrent);
        }
        json.WriteEndObject();
        if (u.Learned is not { } learned)
        {
            json.WriteNull("learned");
            return;
        }
        json.WriteStartObject("learned");
        WriteLearned(json, "remainingRequests", "requestsReset", learned.RemainingRequests, learned.RequestsReset, now);
        WriteLearned(json, "remainingTokens", "tokensReset", learned.RemainingTokens, learned.TokensReset, now);
        json.WriteEndObject();
    }

    private static void WriteBudget(Utf8JsonWriter json, string name, long used, long limit)
    {
        json.WriteStartObject(name);
        json.WriteNumber("used", used);
        json.WriteNumber("limit", limit);
        json.WriteEndObject();
    }

    private static void WriteLearned(Utf8JsonWriter json, string remainingName, string resetName, long? remaining, DateTimeOffset? reset, DateTimeOffset now)
    {
        // A reset in the past means the provider's numbers no longer hold: shown as unknown.
        if (remaining is { } r && reset is { } at && at > now)
        {
            json.WriteNumber(remainingName, r);
            json.WriteString(resetName, at);
        }
        else
        {
            json.WriteNull(remainingName);
            json.WriteNull(resetName);
        }
    }
}
