using System.Buffers;
using System.Globalization;
using System.Text.Json;
using LLMProxy.Resilience;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Mock;

/// <summary>
/// Anthropic <c>POST /v1/messages</c> answers of the mock: a <c>message</c> JSON body, or the SSE sequence
/// <c>message_start</c> (input usage, <c>output_tokens: 1</c>) → <c>content_block_start</c> → <c>ping</c> →
/// <c>content_block_delta</c>… → <c>content_block_stop</c> → <c>message_delta</c> (cumulative output usage) →
/// <c>message_stop</c>. Written with <see cref="Utf8JsonWriter"/>: not on the benchmarks' path, so clarity wins.
/// Anthropic's <c>input_tokens</c> leaves out cache reads, so it is the prompt minus <see cref="Usage.CachedTokens"/>.
/// </summary>
internal sealed class MockAnthropic(HttpContext context, TimeProvider time, long id, JsonEncodedText model, Usage usage,
    int chunks, int intervalMs, int failAfter)
{
    private const string JsonContentType = "application/json";

    public async Task WriteAsync(int status, CancellationToken ct)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer, MockPayloads.RelaxedJson))
        {
            WriteMessage(w, MockPayloads.ContentText(chunks), "end_turn", usage.CompletionTokens);
        }
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = JsonContentType;
        response.ContentLength = buffer.WrittenCount;
        if (failAfter >= 0)
        {
            await response.Body.WriteAsync(buffer.WrittenMemory[..(buffer.WrittenCount / 2)], ct);
            await response.Body.FlushAsync(ct);
            await MockHandler.BreakConnectionAsync(context);
            return;
        }
        await response.Body.WriteAsync(buffer.WrittenMemory, ct);
    }

    public async Task StreamAsync(int status, CancellationToken ct)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await response.StartAsync(ct);

        await SendAsync("message_start", w =>
        {
            w.WriteString("type", "message_start");
            w.WritePropertyName("message");
            WriteMessage(w, null, null, 1);
        }, ct);
        await SendAsync("content_block_start", w =>
        {
            w.WriteString("type", "content_block_start");
            w.WriteNumber("index", 0);
            w.WriteStartObject("content_block");
            w.WriteString("type", "text");
            w.WriteString("text", "");
            w.WriteEndObject();
        }, ct);
        await SendAsync("ping", w => w.WriteString("type", "ping"), ct);
        for (int index = 0; index < chunks; index++)
        {
            if (index == failAfter)
            {
                await MockHandler.BreakConnectionAsync(context);
                return;
            }
            if (intervalMs > 0)
                await Task.Delay(TimeSpan.FromMilliseconds(intervalMs), time, ct);
            int word = index;
            await SendAsync("content_block_delta", w =>
            {
                w.WriteString("type", "content_block_delta");
                w.WriteNumber("index", 0);
                w.WriteStartObject("delta");
                w.WriteString("type", "text_delta");
                w.WriteString("text", MockPayloads.WordText(word));
                w.WriteEndObject();
            }, ct);
        }
        if (failAfter >= chunks)
        {
            await MockHandler.BreakConnectionAsync(context);
            return;
        }
        await SendAsync("content_block_stop", w =>
        {
            w.WriteString("type", "content_block_stop");
            w.WriteNumber("index", 0);
        }, ct);
        await SendAsync("message_delta", w =>
        {
            w.WriteString("type", "message_delta");
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", "end_turn");
            w.WriteNull("stop_sequence");
            w.WriteEndObject();
            w.WriteStartObject("usage");
            w.WriteNumber("output_tokens", usage.CompletionTokens);
            w.WriteEndObject();
        }, ct);
        await SendAsync("message_stop", w => w.WriteString("type", "message_stop"), ct);
    }

    private async Task SendAsync(string name, Action<Utf8JsonWriter> body, CancellationToken ct)
    {
        var writer = context.Response.BodyWriter;
        writer.Write("event: "u8);
        writer.Write(System.Text.Encoding.UTF8.GetBytes(name));
        writer.Write("\ndata: "u8);
        using (var w = new Utf8JsonWriter(writer, MockPayloads.RelaxedJson))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        writer.Write("\n\n"u8);
        await writer.FlushAsync(ct);
    }

    private void WriteMessage(Utf8JsonWriter w, string? text, string? stopReason, long outputTokens)
    {
        w.WriteStartObject();
        w.WriteString("id", string.Create(CultureInfo.InvariantCulture, $"msg_mock{id:D12}"));
        w.WriteString("type", "message");
        w.WriteString("role", "assistant");
        w.WriteString("model", model);
        w.WriteStartArray("content");
        if (text is not null)
        {
            w.WriteStartObject();
            w.WriteString("type", "text");
            w.WriteString("text", text);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (stopReason is null) w.WriteNull("stop_reason"); else w.WriteString("stop_reason", stopReason);
        w.WriteNull("stop_sequence");
        w.WriteStartObject("usage");
        w.WriteNumber("input_tokens", usage.PromptTokens - usage.CachedTokens);
        w.WriteNumber("cache_creation_input_tokens", 0);
        w.WriteNumber("cache_read_input_tokens", usage.CachedTokens);
        w.WriteNumber("output_tokens", outputTokens);
        w.WriteEndObject();
        w.WriteEndObject();
    }
}

/// <summary>The providers' real error bodies for <see cref="MockHeaders.Error"/> and for non-2xx statuses on <c>/v1/messages</c>.</summary>
internal static class MockErrors
{
    /// <summary>Lowercase letters and underscores, 1-64: safe to put in a JSON body as it is.</summary>
    public static bool IsErrorType(string value) =>
        value.Length is > 0 and <= 64 && value.All(static c => c is (>= 'a' and <= 'z') or '_');

    public static int DefaultStatus(string type) => type switch
    {
        "insufficient_quota" => 429,
        "rate_limit_exceeded" or "rate_limit_error" => 429,
        "billing_error" => 402,
        "permission_error" => 403,
        "authentication_error" or "invalid_api_key" => 401,
        "overloaded_error" => 529,
        "api_error" or "server_error" => 500,
        _ => 400,
    };

    public static byte[] Body(string type, bool anthropic, string mockName, int status)
    {
        string message = type switch
        {
            "insufficient_quota" => "You exceeded your current quota, please check your plan and billing details.",
            "billing_error" => "Your credit balance is too low to access the Anthropic API.",
            "permission_error" => "Your API key does not have permission to use the specified resource.",
            _ => $"mock '{mockName}' answered {status} {type}",
        };
        return anthropic ? AnthropicBody(type, message) : OpenAiBody(type, message);
    }

    /// <summary>Anthropic's error type for a status (their documented table).</summary>
    public static byte[] Anthropic(int status, string mockName)
    {
        string type = status switch
        {
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            >= 500 => "api_error",
            _ => "invalid_request_error",
        };
        return AnthropicBody(type, $"mock '{mockName}' answered {status}");
    }

    private static byte[] OpenAiBody(string type, string message)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer, MockPayloads.RelaxedJson))
        {
            w.WriteStartObject();
            w.WriteStartObject("error");
            w.WriteString("message", message);
            w.WriteString("type", type);
            w.WriteNull("param");
            w.WriteString("code", type);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static byte[] AnthropicBody(string type, string message)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer, MockPayloads.RelaxedJson))
        {
            w.WriteStartObject();
            w.WriteString("type", "error");
            w.WriteStartObject("error");
            w.WriteString("type", type);
            w.WriteString("message", message);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>Echoes <c>X-Mock-Ratelimit-*</c> request headers as the provider's rate-limit headers
/// (see <see cref="MockHeaders.RatelimitPrefix"/>).</summary>
internal static class MockRateLimits
{
    private static readonly (string Kind, string What)[] Pairs =
        [("limit", "requests"), ("remaining", "requests"), ("reset", "requests"), ("limit", "tokens"), ("remaining", "tokens"), ("reset", "tokens")];

    public static void Echo(IHeaderDictionary request, IHeaderDictionary response, bool anthropic, TimeProvider time)
    {
        if (request.Count == 0)
            return;
        foreach (var (kind, what) in Pairs)
        {
            if (!request.TryGetValue(string.Concat(MockHeaders.RatelimitPrefix, kind, "-", what), out var raw))
                continue;
            string value = raw.ToString();
            // Printable ASCII only, short: it goes back out as a header value.
            if (value.Length is 0 or > 64 || !value.All(static c => c is >= ' ' and <= '~'))
                continue;
            if (!anthropic)
            {
                response[string.Concat("x-ratelimit-", kind, "-", what)] = value;
                continue;
            }
            if (kind == "reset" && RetryAfter.TryParseGoDuration(value, out var after))
            {
                // Anthropic sends when the bucket is full again, as an RFC 3339 time.
                value = time.GetUtcNow().Add(after).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
            }
            response[string.Concat("anthropic-ratelimit-", what, "-", kind)] = value;
        }
    }
}
