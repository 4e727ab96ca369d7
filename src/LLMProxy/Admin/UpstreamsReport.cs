using System.Text.Json;
using LLMProxy.Resilience;
using LLMProxy.Runtime;

namespace LLMProxy.Admin;

/// <summary>
/// <c>GET /api/v1/upstreams</c> (SPEC §16): every group and, per member, its state, breaker, cool-down, disabled state,
/// in-flight, priority, budgets used/limit, learned headroom with reset times, requests and tokens in the last minute and
/// the last error. Names and hosts only — never a url's path or query, a key or a header value.
/// </summary>
internal static class UpstreamsReport
{
    public static void Write(Utf8JsonWriter json, ProxyRuntime runtime)
    {
        var now = runtime.Time.GetUtcNow();
        // The server's clock, so a page computes countdowns without trusting the browser's.
        json.WriteString("now", now);
        json.WriteStartArray("groups");
        foreach (var group in runtime.Groups.Values)
        {
            json.WriteStartObject();
            json.WriteString("name", group.Name);
            json.WriteString("strategy", group.StrategyLabel);
            json.WriteBoolean("available", group.HasAlternative(default));
            json.WriteStartArray("upstreams");
            for (var i = 0; i < group.Members.Length; i++)
            {
                var member = group.Config.Upstreams[i];
                WriteUpstream(json, group.Members[i], now, member.Priority, member.Weight);
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }

    /// <summary>One upstream's live state as an object; priority and weight are its membership's in a group.</summary>
    public static void WriteUpstream(Utf8JsonWriter json, UpstreamRuntime u, DateTimeOffset now, int? priority = null, int? weight = null)
    {
        json.WriteStartObject();
        json.WriteString("name", u.Name);
        json.WriteString("host", u.Host);
        json.WriteString("state", State(u));
        json.WriteBoolean("available", u.Check() == Unavailability.None);
        if (priority is { } p)
        {
            json.WriteNumber("priority", p);
        }
        if (weight is { } w)
        {
            json.WriteNumber("weight", w);
        }
        WriteBreaker(json, u.Breaker);
        WriteTimeOrNull(json, "coolingUntil", u.CoolDown.Until);
        WriteDisabled(json, u);
        json.WriteNumber("inFlight", u.InFlight);
        WriteBudgets(json, u, now);
        json.WriteStartObject("lastMinute");
        json.WriteNumber("requests", u.Recent.Requests);
        json.WriteNumber("tokens", u.Recent.Tokens);
        json.WriteEndObject();
        if (u.LastError is { } error)
        {
            json.WriteStartObject("lastError");
            json.WriteString("kind", error.Kind);
            json.WriteNumber("status", error.Status);
            json.WriteString("at", error.At);
            json.WriteEndObject();
        }
        else
        {
            json.WriteNull("lastError");
        }
        json.WriteEndObject();
    }

    /// <summary>One word for the page: disabled, then open, cooling, half-open, closed (the first that holds).</summary>
    public static string State(UpstreamRuntime u)
    {
        if (u.Disabled is not null)
        {
            return "disabled";
        }
        var breaker = u.Breaker?.State ?? CircuitState.Closed;
        if (breaker == CircuitState.Open)
        {
            return "open";
        }
        if (u.CoolDown.IsCooling)
        {
            return "cooling";
        }
        return breaker == CircuitState.HalfOpen ? "half-open" : "closed";
    }

    private static void WriteBreaker(Utf8JsonWriter json, CircuitBreaker? breaker)
    {
        if (breaker is null)
        {
            json.WriteNull("breaker");
            return;
        }
        json.WriteStartObject("breaker");
        var state = breaker.State;
        json.WriteString("state", state switch { CircuitState.Open => "open", CircuitState.HalfOpen => "half-open", _ => "closed" });
        var (requests, failures) = breaker.Window;
        json.WriteNumber("windowRequests", requests);
        json.WriteNumber("windowFailures", failures);
        json.WriteNumber("threshold", breaker.Threshold);
        WriteTimeOrNull(json, "halfOpenAt", breaker.RetryAt);
        json.WriteEndObject();
    }

    public static void WriteTimeOrNull(Utf8JsonWriter json, string name, DateTimeOffset? at)
    {
        if (at is { } value)
        {
            json.WriteString(name, value);
        }
        else
        {
            json.WriteNull(name);
        }
    }

    /// <summary>SPEC §13.4: null, or why and since when the key is disabled; <c>nextTrial</c> only when one will come.</summary>
    public static void WriteDisabled(Utf8JsonWriter json, UpstreamRuntime u)
    {
        if (u.Disabled is not { } disabled)
        {
            json.WriteNull("disabled");
            return;
        }
        json.WriteStartObject("disabled");
        json.WriteString("reason", disabled.Reason);
        json.WriteString("since", disabled.Since);
        WriteTimeOrNull(json, "nextTrial", u.Recheck > TimeSpan.Zero && !disabled.ByAdmin ? disabled.NextTrial : null);
        json.WriteEndObject();
    }

    /// <summary>SPEC §13.1: each configured budget as used/limit, and what the provider last said.</summary>
    public static void WriteBudgets(Utf8JsonWriter json, UpstreamRuntime u, DateTimeOffset now)
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
        // Anthropic's separate input and output limits, only when the provider reports them.
        if (learned.InputTokens is { } input)
        {
            WriteLearned(json, "remainingInputTokens", "inputTokensReset", input.Remaining, input.Reset, now);
        }
        if (learned.OutputTokens is { } output)
        {
            WriteLearned(json, "remainingOutputTokens", "outputTokensReset", output.Remaining, output.Reset, now);
        }
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
