namespace LLMProxy.Forwarding;

/// <summary>
/// SPEC §11's known API shapes — OpenAI <c>/v1/chat/completions</c>, <c>/v1/completions</c>, <c>/v1/responses</c>,
/// <c>/v1/embeddings</c> and Anthropic <c>/v1/messages</c> — told by the path the client sent, as the request's facts
/// are read, or by where it goes: on a forward that can reach an upstream whose url is such an endpoint (the client's
/// path is replaced there), every request with a body counts, or any path would reach it unbudgeted. Only these are LLM calls whose tokens a TPM budget reserves and settles (SPEC §13.1); a file upload, a
/// batch or <c>/v1/messages/count_tokens</c> reserves nothing and counts against request budgets only.
/// </summary>
/// <remarks>Matched on the path's last segments, ignoring case as <see cref="IncludeUsage.IsCompletionsPath"/> does, so
/// the same shapes behind a prefix (Azure's <c>/openai/deployments/d/chat/completions</c>, a gateway's
/// <c>/openai/v1/chat/completions</c>) count too; <c>/completions</c> covers chat completions.</remarks>
internal static class ApiShapes
{
    /// <summary>Whether <paramref name="path"/> (the client's, without its query) is one of the known LLM API shapes.</summary>
    public static bool IsLlmCall(string? path)
    {
        if (path is null)
        {
            return false;
        }
        var p = path.AsSpan().TrimEnd('/'); // a trailing slash reaches the same endpoint on most servers
        return p.EndsWith("/completions", StringComparison.OrdinalIgnoreCase)
            || p.EndsWith("/v1/messages", StringComparison.OrdinalIgnoreCase) // not the Assistants' /threads/{id}/messages
            || p.EndsWith("/responses", StringComparison.OrdinalIgnoreCase)
            || p.EndsWith("/embeddings", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Whether <paramref name="path"/> (the client's) is Anthropic's Messages API, whose streams name every event.</summary>
    public static bool IsAnthropicMessages(string? path) =>
        path is not null && path.AsSpan().TrimEnd('/').EndsWith("/v1/messages", StringComparison.OrdinalIgnoreCase);
}
