namespace LLMProxy.Mock;

/// <summary>
/// Request headers that script the mock per request, and the headers it answers with. A per-request header
/// applies to any path and method that carries it and wins over <see cref="MockOptions"/>; an unparsable or
/// out-of-range value is ignored. Evaluation order: latency → status → echo → route.
/// </summary>
public static class MockHeaders
{
    /// <summary>Request: answer with this status (200-599). A non-2xx status gets an OpenAI-style JSON error
    /// body (<c>{"error":{"message","type","param","code"}}</c>), 429 also <c>Retry-After: 1</c>; a 2xx status
    /// is used as the success status of a chat completion. Overrides <see cref="MockOptions.Status"/> and
    /// <see cref="MockOptions.FailRate"/>.</summary>
    public const string Status = "X-Mock-Status";

    /// <summary>Request: delay in ms before the response headers. Overrides <see cref="MockOptions.LatencyMs"/>.</summary>
    public const string LatencyMs = "X-Mock-Latency-Ms";

    /// <summary>Request: number of content chunks (and completion tokens). Overrides <see cref="MockOptions.Chunks"/>.</summary>
    public const string Chunks = "X-Mock-Chunks";

    /// <summary>Request: gap in ms before each streamed content chunk. Overrides <see cref="MockOptions.ChunkIntervalMs"/>.</summary>
    public const string ChunkIntervalMs = "X-Mock-Chunk-Interval-Ms";

    /// <summary>Request: abort the connection (<c>HttpContext.Abort()</c>) after N streamed content chunks
    /// (0 = right after the role chunk), so the client sees a broken body, not a clean end. A non-streamed
    /// completion sends its headers and half its body, then aborts.</summary>
    public const string FailMidStream = "X-Mock-Fail-Mid-Stream";

    /// <summary>Request: with value <c>1</c>, answer 200 with JSON describing the received request:
    /// <c>{"name","method","path","query","protocol","headers":{"Name":["v1","v2"]},"bodyLength"}</c>.</summary>
    public const string Echo = "X-Mock-Echo";

    /// <summary>Request: answer with the provider's error body for this error type/code (lowercase letters and
    /// underscores, at most 64): <c>insufficient_quota</c> (default status 429), <c>billing_error</c> (402),
    /// <c>permission_error</c> (403), any other (400, or <see cref="Status"/> when given). The body is OpenAI's
    /// <c>{"error":{"message","type","param","code"}}</c>, or Anthropic's <c>{"type":"error","error":{"type","message"}}</c>
    /// on <c>/v1/messages</c>.</summary>
    public const string Error = "X-Mock-Error";

    /// <summary>Request: cached prompt tokens to report (a part of the prompt tokens; OpenAI
    /// <c>prompt_tokens_details.cached_tokens</c>, Anthropic <c>cache_read_input_tokens</c>). Default 0.</summary>
    public const string CachedTokens = "X-Mock-Cached-Tokens";

    /// <summary>Request: reasoning tokens to report (OpenAI <c>completion_tokens_details.reasoning_tokens</c>), added to
    /// the completion tokens. Default 0.</summary>
    public const string ReasoningTokens = "X-Mock-Reasoning-Tokens";

    /// <summary>Request headers <c>X-Mock-Ratelimit-{Limit,Remaining,Reset}-{Requests,Tokens}</c> are answered as the
    /// provider's rate-limit headers: OpenAI <c>x-ratelimit-{limit,remaining,reset}-{requests,tokens}</c> (values as
    /// given, e.g. <c>6m0s</c>) or, on <c>/v1/messages</c>, Anthropic <c>anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}</c>
    /// (a reset duration becomes the RFC 3339 time it ends). On every answer, errors included.</summary>
    public const string RatelimitPrefix = "X-Mock-Ratelimit-";

    /// <summary>Response: <see cref="MockOptions.Name"/> of the mock that answered; on every response.</summary>
    public const string Name = "X-Mock-Name";
}
