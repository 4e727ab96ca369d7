namespace LLMProxy.Forwarding;

/// <summary>
/// SPEC §13.2: an OpenAI chat/completions stream whose client did not ask for usage is sent upstream with
/// <c>stream_options.include_usage: true</c>, so every stream is counted, and the extra usage-only chunk that brings is
/// taken out again by <see cref="UsageChunkFilter"/> before the client sees it. The body is spliced like
/// <see cref="ModelRewrite"/> does: the bytes <see cref="RequestFacts"/> located change, every other byte stays as the
/// client sent it, and both splices compose in one copy when an upstream's <c>modelMap</c> also applies.
/// </summary>
internal static class IncludeUsage
{
    private static readonly byte[] StreamOptionsMember = "\"stream_options\":{\"include_usage\":true},"u8.ToArray();
    private static readonly byte[] IncludeUsageMember = "\"include_usage\":true,"u8.ToArray();
    private static readonly byte[] IncludeUsageOnly = "\"include_usage\":true"u8.ToArray();
    private static readonly byte[] True = "true"u8.ToArray();
    private static readonly byte[] StreamOptionsObject = "{\"include_usage\":true}"u8.ToArray();

    /// <summary>Whether the proxy adds <c>include_usage</c> to this request: a streamed OpenAI chat or text completion
    /// (path ending in <c>/chat/completions</c> or <c>/completions</c>) whose body does not set it to true.</summary>
    public static bool Applies(string? path, in RequestFacts facts) =>
        facts.Stream == true && facts.UsageSplice != UsageSplice.None && IsCompletionsPath(path);

    /// <summary>Paths whose streams can carry OpenAI's usage-only chunk.</summary>
    public static bool IsCompletionsPath(string? path) =>
        path is not null && path.EndsWith("/completions", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether a forward that would not otherwise buffer bodies buffers this one to read its facts: a JSON body
    /// (<c>Content-Type: application/json</c>, as the OpenAI SDKs send) to a <c>/completions</c> path. Any other body
    /// keeps streaming to its single attempt as before.</summary>
    public static bool MayApply(string? path, string? contentType) =>
        IsCompletionsPath(path) && contentType is not null
        && contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
        && (contentType.Length == "application/json".Length || contentType["application/json".Length] is ';' or ' ');

    /// <summary>The body to send: <paramref name="body"/> with include_usage spliced in when <paramref name="inject"/>,
    /// and the model token replaced when <paramref name="modelToken"/> is not empty; null when neither applies.</summary>
    public static byte[]? Compose(ReadOnlySpan<byte> body, in RequestFacts facts, bool inject, ReadOnlySpan<byte> modelToken)
    {
        if (!inject)
        {
            return modelToken.IsEmpty ? null : ModelRewrite.Rewrite(body, facts, modelToken);
        }
        var usage = new Edit(facts.UsageSpliceOffset, facts.UsageSpliceLength, Replacement(facts.UsageSplice));
        if (usage.Offset < 0 || usage.Offset + usage.Length > body.Length)
        {
            throw new ArgumentException("the facts' usage splice is not in this body (facts read from another body?)", nameof(facts));
        }
        if (modelToken.IsEmpty)
        {
            return Splice(body, usage, default, []);
        }
        if (!facts.HasModelToken) throw new ArgumentException("the facts hold no model token to replace", nameof(facts));
        var model = new Edit(facts.ModelTokenOffset, facts.ModelTokenLength, null);
        // The two never overlap: one is inside stream_options or at the root's brace, the other is the model's value.
        return usage.Offset < model.Offset ? Splice(body, usage, model, modelToken) : Splice(body, model, usage, modelToken);
    }

    private static byte[] Replacement(UsageSplice kind) => kind switch
    {
        UsageSplice.AddStreamOptions => StreamOptionsMember,
        UsageSplice.AddIncludeUsage => IncludeUsageMember,
        UsageSplice.AddIncludeUsageFirst => IncludeUsageOnly,
        UsageSplice.ReplaceIncludeUsage => True,
        UsageSplice.ReplaceStreamOptions => StreamOptionsObject,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "no usage splice to make"),
    };

    /// <summary>One edit; a null <see cref="Bytes"/> stands for the model token passed beside it.</summary>
    private readonly record struct Edit(int Offset, int Length, byte[]? Bytes);

    /// <summary>Applies <paramref name="first"/> then <paramref name="second"/> (a later offset, or none when its
    /// length and bytes are default) in one copy.</summary>
    private static byte[] Splice(ReadOnlySpan<byte> body, Edit first, Edit second, ReadOnlySpan<byte> modelToken)
    {
        var hasSecond = second.Bytes is not null || second.Length > 0;
        ReadOnlySpan<byte> a = first.Bytes ?? modelToken;
        ReadOnlySpan<byte> b = hasSecond ? second.Bytes ?? modelToken : [];
        var result = new byte[body.Length - first.Length + a.Length - (hasSecond ? second.Length - b.Length : 0)];
        var at = 0;
        body[..first.Offset].CopyTo(result);
        at += first.Offset;
        a.CopyTo(result.AsSpan(at));
        at += a.Length;
        var rest = first.Offset + first.Length;
        if (hasSecond)
        {
            body[rest..second.Offset].CopyTo(result.AsSpan(at));
            at += second.Offset - rest;
            b.CopyTo(result.AsSpan(at));
            at += b.Length;
            rest = second.Offset + second.Length;
        }
        body[rest..].CopyTo(result.AsSpan(at));
        return result;
    }
}
