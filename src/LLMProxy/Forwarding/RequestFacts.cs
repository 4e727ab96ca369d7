using System.Text;
using System.Text.Json;

namespace LLMProxy.Forwarding;

/// <summary>
/// What the proxy needs from a request's JSON body (SPEC §11), read once and shared by routing, budgets and token
/// accounting. <c>default</c> is "no facts": the body was not a JSON object, was cut short, or nested too deep.
/// </summary>
/// <remarks>
/// <para>Only top-level properties are read (and one level inside <c>stream_options</c> and <c>metadata</c>);
/// <c>model</c> inside messages or tools is never taken. Property names are compared after unescaping, as the
/// upstream's parser will (<c>"mod\u0065l"</c> is <c>model</c>).</para>
/// <para>A key given twice: the last one wins, as in the JSON parsers of the upstream APIs (Python, JavaScript),
/// so the proxy routes on the model the upstream will act on and <see cref="ModelRewrite"/> replaces that one.
/// A value of the wrong type clears the fact (<c>"model": 5</c> after <c>"model": "x"</c> leaves no model).</para>
/// <para>Strings are kept only when short (<see cref="MaxModelLength"/> for model, <see cref="MaxStringLength"/>
/// for the others) and free of control characters; anything else is treated as absent rather than cut, so a
/// truncated name can never match a glob or map key that the real one does not.</para>
/// </remarks>
internal readonly struct RequestFacts
{
    /// <summary>Longest model kept, in characters (the same bound as config model names).</summary>
    public const int MaxModelLength = 256;

    /// <summary>Longest <c>user</c>, <c>prompt_cache_key</c> or <c>metadata.user_id</c> kept, in characters.</summary>
    public const int MaxStringLength = 512;

    /// <summary>Deepest nesting read. Real API bodies stay far below (System.Text.Json's own default is 64); a body
    /// nested deeper gets no facts and is forwarded unchanged for the upstream to judge.</summary>
    public const int MaxDepth = 128;

    private static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    /// <summary>True when the body was a complete JSON object within the depth bound; false means no facts at all.</summary>
    public bool IsJsonObject { get; init; }

    /// <summary>Top-level <c>model</c> (unescaped), or null.</summary>
    public string? Model { get; init; }

    /// <summary>Whether the object has a top-level key equal to <c>model</c> ignoring case but not <c>model</c> itself
    /// (<c>"MODEL"</c>, <c>"Model"</c>, escaped or not). Go's <c>encoding/json</c> (Ollama, one-api and others) matches
    /// field names ignoring case, last one wins, so such an upstream could run a model the proxy never saw: the proxy
    /// refuses the request rather than route, authorize or budget on the wrong one.</summary>
    public bool HasModelVariant { get; init; }

    /// <summary>Top-level <c>stream</c> when it is <c>true</c> or <c>false</c>, otherwise null.</summary>
    public bool? Stream { get; init; }

    /// <summary>The largest non-negative integer among <c>max_tokens</c> (OpenAI completions, Anthropic),
    /// <c>max_completion_tokens</c> (OpenAI chat) and <c>max_output_tokens</c> (OpenAI responses); an upper bound
    /// for budgets when a client sends more than one. Null when none is present.</summary>
    public long? MaxOutputTokens { get; init; }

    /// <summary><c>stream_options.include_usage</c> when it is <c>true</c> or <c>false</c>, otherwise null.</summary>
    public bool? IncludeUsage { get; init; }

    /// <summary>Top-level <c>prompt_cache_key</c> (OpenAI), or null.</summary>
    public string? PromptCacheKey { get; init; }

    /// <summary>Top-level <c>user</c> (OpenAI), or null.</summary>
    public string? User { get; init; }

    /// <summary><c>metadata.user_id</c> (Anthropic), or null.</summary>
    public string? MetadataUserId { get; init; }

    /// <summary>Byte offset in the body of the <see cref="Model"/> string token, opening quote included.</summary>
    public int ModelTokenOffset { get; init; }

    /// <summary>Byte length of the <see cref="Model"/> token, both quotes included (escapes as written); 0 when there is none.</summary>
    public int ModelTokenLength { get; init; }

    /// <summary>True when <see cref="Model"/> was read from a string token that <see cref="ModelRewrite"/> can replace.</summary>
    public bool HasModelToken => ModelTokenLength > 0;

    /// <summary>Where <see cref="IncludeUsage"/> would splice <c>include_usage: true</c> into this body, found in the
    /// same pass (the last <c>stream_options</c> wins, as it does upstream); <see cref="UsageSplice.None"/> when the body
    /// already asks for usage or is not a JSON object.</summary>
    public UsageSplice UsageSplice { get; init; }

    /// <summary>Byte offset of <see cref="UsageSplice"/> in the body.</summary>
    public int UsageSpliceOffset { get; init; }

    /// <summary>Bytes <see cref="UsageSplice"/> replaces there (0 = an insertion).</summary>
    public int UsageSpliceLength { get; init; }

    /// <summary>Reads the facts of <paramref name="body"/> in one forward-only pass. Never throws: a body that is not
    /// a complete JSON object, has trailing data, or nests deeper than <see cref="MaxDepth"/> yields <c>default</c>.</summary>
    public static RequestFacts Read(ReadOnlySpan<byte> body)
    {
        // A UTF-8 BOM is not JSON to Utf8JsonReader; skip it and keep offsets relative to the whole body.
        var start = body.StartsWith(Utf8Bom) ? Utf8Bom.Length : 0;
        var json = body[start..];

        // Most non-JSON bodies (empty, form, multipart, plain text) are turned away without an exception.
        var first = json.IndexOfAnyExcept(" \t\r\n"u8);
        if (first < 0 || json[first] != (byte)'{') return default;

        try
        {
            return ReadObject(json, start);
        }
        catch (JsonException)
        {
            // Malformed, truncated, trailing data or too deep: the body goes upstream unchanged, with no facts.
            return default;
        }
    }

    private static RequestFacts ReadObject(ReadOnlySpan<byte> json, int baseOffset)
    {
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxDepth });
        reader.Read(); // StartObject, checked by the caller
        // Without stream_options, the member goes right after the root's opening brace.
        var splice = (Kind: UsageSplice.AddStreamOptions, Offset: baseOffset + (int)reader.TokenStartIndex + 1, Length: 0);

        string? model = null;
        var modelVariant = false;
        int modelOffset = 0, modelLength = 0;
        bool? stream = null, includeUsage = null;
        long? maxTokens = null, maxCompletionTokens = null, maxOutputTokens = null;
        string? promptCacheKey = null, user = null, metadataUserId = null;

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var key = Classify(ref reader);
            reader.Read();
            switch (key)
            {
                case Key.Model:
                    model = ReadString(ref reader, MaxModelLength);
                    (modelOffset, modelLength) = model is null ? (0, 0) : (baseOffset + (int)reader.TokenStartIndex, reader.ValueSpan.Length + 2);
                    break;
                case Key.ModelVariant:
                    modelVariant = true;
                    reader.Skip();
                    break;
                case Key.Stream:
                    stream = ReadBool(ref reader);
                    break;
                case Key.MaxTokens:
                    maxTokens = ReadCount(ref reader);
                    break;
                case Key.MaxCompletionTokens:
                    maxCompletionTokens = ReadCount(ref reader);
                    break;
                case Key.MaxOutputTokens:
                    maxOutputTokens = ReadCount(ref reader);
                    break;
                case Key.StreamOptions:
                    (includeUsage, splice) = ReadStreamOptions(ref reader, baseOffset);
                    break;
                case Key.Metadata:
                    metadataUserId = ReadMetadataUserId(ref reader);
                    break;
                case Key.PromptCacheKey:
                    promptCacheKey = ReadString(ref reader, MaxStringLength);
                    break;
                case Key.User:
                    user = ReadString(ref reader, MaxStringLength);
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        // The root object is closed; anything but whitespace after it makes Read throw (caught by the caller).
        if (reader.Read()) return default;

        return new RequestFacts
        {
            IsJsonObject = true,
            Model = model,
            HasModelVariant = modelVariant,
            ModelTokenOffset = modelOffset,
            ModelTokenLength = modelLength,
            Stream = stream,
            MaxOutputTokens = Max(Max(maxTokens, maxCompletionTokens), maxOutputTokens),
            IncludeUsage = includeUsage,
            PromptCacheKey = promptCacheKey,
            User = user,
            MetadataUserId = metadataUserId,
            UsageSplice = includeUsage == true ? UsageSplice.None : splice.Kind,
            UsageSpliceOffset = splice.Offset,
            UsageSpliceLength = splice.Length,
        };
    }

    private enum Key { Other, Model, ModelVariant, Stream, MaxTokens, MaxCompletionTokens, MaxOutputTokens, StreamOptions, Metadata, PromptCacheKey, User }

    /// <summary>Longest property name compared; every name the facts use is far shorter, so longer (or long
    /// escaped) names are skipped without unescaping them.</summary>
    private const int MaxNameLength = 128;

    private static Key Classify(ref Utf8JsonReader reader)
    {
        // ValueTextEquals unescapes, so an escaped name is recognised as the upstream's parser would.
        if (reader.ValueSpan.Length > MaxNameLength) return Key.Other;
        if (reader.ValueTextEquals("model"u8)) return Key.Model;
        if (reader.ValueTextEquals("stream"u8)) return Key.Stream;
        if (reader.ValueTextEquals("max_tokens"u8)) return Key.MaxTokens;
        if (reader.ValueTextEquals("max_completion_tokens"u8)) return Key.MaxCompletionTokens;
        if (reader.ValueTextEquals("max_output_tokens"u8)) return Key.MaxOutputTokens;
        if (reader.ValueTextEquals("stream_options"u8)) return Key.StreamOptions;
        if (reader.ValueTextEquals("metadata"u8)) return Key.Metadata;
        if (reader.ValueTextEquals("prompt_cache_key"u8)) return Key.PromptCacheKey;
        if (reader.ValueTextEquals("user"u8)) return Key.User;
        return IsModelVariant(ref reader) ? Key.ModelVariant : Key.Other;
    }

    /// <summary>Whether a name that is not <c>model</c> is <c>model</c> ignoring case, after unescaping. The letters of
    /// "model" have no case variants outside ASCII (unlike k and s, which Go also folds with K and ſ), so an ASCII
    /// comparison is the whole test. Most names are turned away by their length alone.</summary>
    private static bool IsModelVariant(ref Utf8JsonReader reader)
    {
        const int Length = 5; // "model"; as written, each character takes at most 6 bytes ("\uXXXX")
        var raw = reader.ValueSpan;
        if (!reader.ValueIsEscaped)
        {
            return raw.Length == Length && Ascii.EqualsIgnoreCase(raw, "model"u8);
        }
        if (raw.Length > Length * 6)
        {
            return false;
        }
        Span<byte> name = stackalloc byte[Length * 6];
        int written;
        try
        {
            written = reader.CopyString(name);
        }
        catch (InvalidOperationException)
        {
            // An escaped lone surrogate: no parser reads that as "model" (ValueTextEquals says false to it too).
            return false;
        }
        return written == Length && Ascii.EqualsIgnoreCase(name[..written], "model"u8);
    }

    /// <summary><c>stream_options.include_usage</c> (null when stream_options is not an object or lacks a boolean
    /// one) and where <c>include_usage: true</c> would go: replacing a value that is not <c>true</c>, inside the
    /// object, or replacing a <c>stream_options</c> that is not an object.</summary>
    private static (bool?, (UsageSplice, int, int)) ReadStreamOptions(ref Utf8JsonReader reader, int baseOffset)
    {
        var start = baseOffset + (int)reader.TokenStartIndex;
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            return (null, (UsageSplice.ReplaceStreamOptions, start, baseOffset + (int)reader.BytesConsumed - start));
        }
        bool? value = null;
        var splice = (UsageSplice.AddIncludeUsageFirst, start + 1, 0);
        while (NextProperty(ref reader, "include_usage"u8, out var wanted))
        {
            if (wanted)
            {
                var valueStart = baseOffset + (int)reader.TokenStartIndex;
                value = ReadBool(ref reader);
                splice = (UsageSplice.ReplaceIncludeUsage, valueStart, baseOffset + (int)reader.BytesConsumed - valueStart);
            }
            else
            {
                reader.Skip();
                if (splice.Item1 == UsageSplice.AddIncludeUsageFirst) splice.Item1 = UsageSplice.AddIncludeUsage;
            }
        }
        return (value, splice);
    }

    /// <summary><c>metadata.user_id</c>; null when metadata is not an object or lacks a usable string one.</summary>
    private static string? ReadMetadataUserId(ref Utf8JsonReader reader)
    {
        if (!EnterObject(ref reader)) return null;
        string? value = null;
        while (NextProperty(ref reader, "user_id"u8, out var wanted))
        {
            if (wanted) value = ReadString(ref reader, MaxStringLength);
            else reader.Skip();
        }
        return value;
    }

    /// <summary>True when the current value is an object (the reader stays on its start); otherwise skips it.</summary>
    private static bool EnterObject(ref Utf8JsonReader reader)
    {
        if (reader.TokenType == JsonTokenType.StartObject) return true;
        reader.Skip();
        return false;
    }

    /// <summary>Moves to the value of the object's next property; false at the object's end. Within one object the
    /// last occurrence of a name wins, as at the top level.</summary>
    private static bool NextProperty(ref Utf8JsonReader reader, ReadOnlySpan<byte> name, out bool wanted)
    {
        wanted = false;
        if (!reader.Read() || reader.TokenType != JsonTokenType.PropertyName) return false;
        wanted = reader.ValueSpan.Length <= MaxNameLength && reader.ValueTextEquals(name);
        reader.Read();
        return true;
    }

    /// <summary>A string no longer than <paramref name="maxChars"/> and without control characters, else null.
    /// Leaves the reader past the value (skipping it when it is an object or array).</summary>
    private static string? ReadString(ref Utf8JsonReader reader, int maxChars)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return null;
        }
        // No character takes more than 6 bytes as written ("\uXXXX"), so a longer token cannot fit: skip it
        // without decoding, which bounds what a hostile body can make the proxy allocate.
        if (reader.ValueSpan.Length > maxChars * 6) return null;
        string text;
        try
        {
            text = reader.GetString()!;
        }
        catch (InvalidOperationException)
        {
            // An escaped lone surrogate or invalid UTF-8: not a name anyone can route on.
            return null;
        }
        // Control characters (C0, DEL, C1 — char.IsControl's set) would let a client forge log lines or labels.
        if (text.Length > maxChars || text.AsSpan().ContainsAny(Observability.LogText.Controls)) return null;
        return text;
    }

    private static bool? ReadBool(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.True: return true;
            case JsonTokenType.False: return false;
            default:
                reader.Skip();
                return null;
        }
    }

    /// <summary>A non-negative integer that fits a long, else null (1.5, 1e3, -1, "100" are not token counts).</summary>
    private static long? ReadCount(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.Number)
        {
            reader.Skip();
            return null;
        }
        return reader.TryGetInt64(out var value) && value >= 0 ? value : null;
    }

    private static long? Max(long? a, long? b) => a is null ? b : b is null ? a : Math.Max(a.Value, b.Value);
}

/// <summary>How <c>stream_options.include_usage: true</c> is spliced into a request body (see <see cref="IncludeUsage"/>).</summary>
internal enum UsageSplice : byte
{
    /// <summary>Nothing to do: the body asks for usage already, or has no facts.</summary>
    None,
    /// <summary>Insert <c>"stream_options":{"include_usage":true},</c> after the root's opening brace.</summary>
    AddStreamOptions,
    /// <summary>Insert <c>"include_usage":true,</c> after the opening brace of a non-empty <c>stream_options</c>.</summary>
    AddIncludeUsage,
    /// <summary>Insert <c>"include_usage":true</c> into an empty <c>stream_options</c>.</summary>
    AddIncludeUsageFirst,
    /// <summary>Replace the value of <c>include_usage</c> (false, null, anything but true) with <c>true</c>.</summary>
    ReplaceIncludeUsage,
    /// <summary>Replace a <c>stream_options</c> that is not an object (null, a string) with <c>{"include_usage":true}</c>.</summary>
    ReplaceStreamOptions,
}
