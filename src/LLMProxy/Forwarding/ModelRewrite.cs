using System.Text.Encodings.Web;
using System.Text.Json;

namespace LLMProxy.Forwarding;

/// <summary>
/// Writes another model name into a request body for one upstream (<c>upstreams[].modelMap</c>) by splicing: only the
/// bytes of the top-level <c>model</c> token found by <see cref="RequestFacts.Read"/> change; every other byte —
/// whitespace, key order, escapes, numbers as written — stays as the client sent it, so the upstream sees the
/// client's request with one value swapped. The new array's length is the new Content-Length.
/// </summary>
internal static class ModelRewrite
{
    /// <summary>The JSON string token (quotes included, UTF-8) for <paramref name="model"/>. Only what JSON requires is
    /// escaped (quote, backslash, control characters; non-BMP characters as surrogate escapes): the relaxed encoder's
    /// "unsafe" is about embedding in HTML, which a request body never is. Compute it once per mapping at compile
    /// time and pass it to <see cref="Rewrite(ReadOnlySpan{byte}, in RequestFacts, ReadOnlySpan{byte})"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="model"/> is not valid UTF-16 (config validation rules that out).</exception>
    public static byte[] EncodeModel(string model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var encoded = JsonEncodedText.Encode(model, JavaScriptEncoder.UnsafeRelaxedJsonEscaping).EncodedUtf8Bytes;
        var token = new byte[encoded.Length + 2];
        token[0] = (byte)'"';
        encoded.CopyTo(token.AsSpan(1));
        token[^1] = (byte)'"';
        return token;
    }

    /// <summary><paramref name="body"/> with its model token replaced by <paramref name="newModel"/>, JSON-encoded.</summary>
    public static byte[] Rewrite(ReadOnlySpan<byte> body, in RequestFacts facts, string newModel) =>
        Rewrite(body, facts, EncodeModel(newModel));

    /// <summary><paramref name="body"/> with its model token replaced by <paramref name="modelToken"/>, a complete JSON
    /// string token as made by <see cref="EncodeModel"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="facts"/> has no model token or was not read from
    /// <paramref name="body"/> — a caller bug, as the caller checks <see cref="RequestFacts.HasModelToken"/>.</exception>
    public static byte[] Rewrite(ReadOnlySpan<byte> body, in RequestFacts facts, ReadOnlySpan<byte> modelToken)
    {
        if (!facts.HasModelToken) throw new ArgumentException("the facts hold no model token to replace", nameof(facts));
        var start = facts.ModelTokenOffset;
        var end = start + facts.ModelTokenLength;
        if (start < 0 || end > body.Length || body[start] != (byte)'"' || body[end - 1] != (byte)'"')
        {
            throw new ArgumentException("the facts' model token is not in this body (facts read from another body?)", nameof(facts));
        }
        if (modelToken.Length < 2 || modelToken[0] != (byte)'"' || modelToken[^1] != (byte)'"')
        {
            throw new ArgumentException("the new model must be a JSON string token, quotes included (see EncodeModel)", nameof(modelToken));
        }

        var result = new byte[body.Length - facts.ModelTokenLength + modelToken.Length];
        body[..start].CopyTo(result);
        modelToken.CopyTo(result.AsSpan(start));
        body[end..].CopyTo(result.AsSpan(start + modelToken.Length));
        return result;
    }
}
