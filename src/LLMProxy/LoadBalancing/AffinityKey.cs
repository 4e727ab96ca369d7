using System.Diagnostics.CodeAnalysis;

namespace LLMProxy.LoadBalancing;

/// <summary>Where an <c>affinity.keys</c> entry reads its value from.</summary>
internal enum AffinitySource
{
    /// <summary><c>header:&lt;name&gt;</c>: the request header's first value.</summary>
    Header,
    /// <summary><c>body:prompt_cache_key</c> (OpenAI).</summary>
    PromptCacheKey,
    /// <summary><c>body:user</c> (OpenAI).</summary>
    User,
    /// <summary><c>body:metadata.user_id</c> (Anthropic).</summary>
    MetadataUserId,
}

/// <summary>
/// One compiled <c>upstreamGroups[].affinity.keys</c> entry (SPEC §13.5). Body keys are limited to the facts the
/// request's body is read for (§11), so a key accepted by validation is always one the proxy can produce.
/// </summary>
internal readonly record struct AffinityKey(AffinitySource Source, string? HeaderName)
{
    public const string HeaderPrefix = "header:";
    public const string BodyPrefix = "body:";

    /// <summary>The accepted <c>body:</c> keys, as validation lists them.</summary>
    public static readonly IReadOnlyList<string> BodyKeys = ["prompt_cache_key", "user", "metadata.user_id"];

    public bool IsBody => Source != AffinitySource.Header;

    /// <summary>Parses <c>header:&lt;token&gt;</c> or <c>body:&lt;fact&gt;</c> (prefix case-insensitive; body fact names
    /// exact, like the JSON keys they name); <paramref name="error"/> says what is wrong otherwise.</summary>
    public static bool TryParse(string text, out AffinityKey key, [NotNullWhen(false)] out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        key = default;
        if (text.StartsWith(HeaderPrefix, StringComparison.OrdinalIgnoreCase))
        {
            var name = text[HeaderPrefix.Length..];
            if (name.Length == 0 || name.Length > 256 || !IsToken(name))
            {
                error = "must name a header after 'header:' (letters, digits and !#$%&'*+-.^_`|~)";
                return false;
            }
            key = new AffinityKey(AffinitySource.Header, name);
            error = null;
            return true;
        }
        if (text.StartsWith(BodyPrefix, StringComparison.OrdinalIgnoreCase))
        {
            AffinitySource? source = text[BodyPrefix.Length..] switch
            {
                "prompt_cache_key" => AffinitySource.PromptCacheKey,
                "user" => AffinitySource.User,
                "metadata.user_id" => AffinitySource.MetadataUserId,
                _ => null,
            };
            if (source is { } s)
            {
                key = new AffinityKey(s, null);
                error = null;
                return true;
            }
            error = "must be body:" + string.Join(", body:", BodyKeys);
            return false;
        }
        error = "must start with 'header:' or 'body:'";
        return false;
    }

    private static bool IsToken(string name)
    {
        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c)))
            {
                return false;
            }
        }
        return true;
    }
}
