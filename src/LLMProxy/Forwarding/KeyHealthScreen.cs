using System.Net;
using System.Text.Json;

namespace LLMProxy.Forwarding;

/// <summary>
/// SPEC §13.4: whether an answer from an upstream where the proxy injects its own key says <i>this key</i> is bad —
/// 401, 402, 403, or a 429 whose body's error is <c>insufficient_quota</c> (OpenAI <c>error.code</c>/<c>error.type</c>)
/// or <c>billing_error</c>/<c>permission_error</c> (Anthropic <c>error.type</c>) — but not a 403 whose error code is
/// <c>model_not_found</c> (<see cref="Inspect403Async"/>). Only a 403's or 429's body is read, and only
/// up to <see cref="Bound"/> bytes; what was read is put back in front of the rest, so the client gets the answer
/// unchanged when it is passed on.
/// </summary>
internal static class KeyHealthScreen
{
    /// <summary>The most of a 403 or 429 body read to classify it; a longer body is no quota or model error as far as the
    /// proxy knows.</summary>
    public const int Bound = 16 * 1024;

    /// <summary>The reason for a bad-key status (<c>status_401</c>, …), or null when the status alone says nothing.</summary>
    public static string? StatusReason(int status) => status switch
    {
        401 => "status_401",
        402 => "status_402",
        403 => "status_403",
        _ => null,
    };

    /// <summary>What a 429's body says: the key's quota or billing reason (<see cref="Classify"/>), or that this request
    /// alone is more than the key's whole limit (<see cref="IsRequestTooLarge"/>).</summary>
    public readonly record struct Verdict(string? BadKey, bool RequestTooLarge);

    /// <summary>Reads at most <see cref="Bound"/> bytes of a 429 body and classifies it; the response's content is
    /// replaced by one that yields the bytes read and then the rest, with the same content headers.</summary>
    public static async ValueTask<Verdict> Inspect429Async(HttpResponseMessage response, CancellationToken cancellationToken) =>
        await ReadAsync(response, cancellationToken).ConfigureAwait(false) is { } body
            ? new Verdict(Classify(body.Span), IsRequestTooLarge(body.Span))
            : default;

    /// <summary>
    /// A 403 says the key is bad (<c>status_403</c>) unless its body's <c>error.code</c> is <c>model_not_found</c>: OpenAI
    /// answers so when the key's project may not use the model the client asked for — the key serves every other model,
    /// and disabling it would let any client take each key of a group out by naming a model none of them may use. Read
    /// as a 429's body is (bounded, put back for the client).
    /// </summary>
    public static async ValueTask<string?> Inspect403Async(HttpResponseMessage response, CancellationToken cancellationToken) =>
        await ReadAsync(response, cancellationToken).ConfigureAwait(false) is { } body && ErrorCode(body.Span) == "model_not_found"
            ? null
            : StatusReason(403);

    /// <summary>Up to <see cref="Bound"/> bytes of the body, when it ended within them (null otherwise); the response's
    /// content is replaced by one that yields the bytes read and then the rest, with the same content headers.</summary>
    private static async ValueTask<ReadOnlyMemory<byte>?> ReadAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var content = response.Content;
        if (content.Headers.ContentLength is > Bound)
        {
            return null;
        }
        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new byte[Bound];
        var length = 0;
        var ended = false;
        while (length < Bound)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                ended = true;
                break;
            }
            length += read;
        }
        response.Content = new PrefixedContent(content, buffer, length, ended ? null : stream);
        return ended ? buffer.AsMemory(0, length) : null;
    }

    /// <summary>
    /// Whether a 429 body is OpenAI's "Request too large for {model} … on tokens per min (TPM): Limit 30000, Requested
    /// 50000": the request needs more than the key's whole per-minute limit, so it fails on that key at any time and
    /// says nothing about the key's state. Cooling the key down for it let one client's oversized request (a huge
    /// <c>max_tokens</c>) take every key of a group out, and keep them out by repeating it.
    /// </summary>
    internal static bool IsRequestTooLarge(ReadOnlySpan<byte> body) =>
        ErrorField(body, "message")?.StartsWith("Request too large", StringComparison.OrdinalIgnoreCase) == true;

    /// <summary>The <c>error.code</c> string of an error body, or null.</summary>
    private static string? ErrorCode(ReadOnlySpan<byte> body) => ErrorField(body, "code");

    /// <summary>The string <c>error.{name}</c> of an error body, or null (not JSON, no such string).</summary>
    private static string? ErrorField(ReadOnlySpan<byte> body, string name)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object
                && error.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
                ? value.GetString()
                : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The quota/billing reason an error body gives, or null.</summary>
    internal static string? Classify(ReadOnlySpan<byte> body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("error", out var error) || error.ValueKind != JsonValueKind.Object)
            {
                return null;
            }
            return Reason(error, "code") ?? Reason(error, "type");
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static string? Reason(JsonElement error, string name) =>
        error.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            && value.GetString() is { } reason && reason is "insufficient_quota" or "billing_error" or "permission_error"
            ? reason
            : null;

    /// <summary>The bytes already read followed by the rest of the upstream's body (none when it had ended).</summary>
    private sealed class PrefixedContent(HttpContent inner, byte[] prefix, int length, Stream? rest) : ReplacedContent(inner)
    {
        protected override Task<Stream> OpenAsync(HttpContent inner, CancellationToken cancellationToken) =>
            Task.FromResult<Stream>(new PrefixedStream(prefix, length, rest, ownsRest: true));
    }
}
