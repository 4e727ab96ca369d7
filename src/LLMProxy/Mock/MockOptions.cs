namespace LLMProxy.Mock;

/// <summary>
/// Behaviour of the built-in OpenAI- and Anthropic-compatible mock upstream (<c>llmproxy mock</c>, <c>llmproxy demo</c>,
/// tests, benchmarks). Options-level behaviour (<see cref="LatencyMs"/>, <see cref="Status"/>,
/// <see cref="FailRate"/>, <see cref="Chunks"/>, <see cref="ChunkIntervalMs"/>) shapes chat completions and Anthropic messages only,
/// so <c>/v1/models</c>, <c>/ping</c> and <c>/health</c> stay fast and healthy. Per-request
/// <see cref="MockHeaders"/> override it for the request that carries them.
/// </summary>
public sealed record MockOptions
{
    /// <summary>Listen address (IP literal, <c>localhost</c> or <c>*</c>). Default "127.0.0.1".</summary>
    public string Address { get; init; } = "127.0.0.1";

    /// <summary>Listen port 0-65535; 0 binds an ephemeral port (see <see cref="MockServer.Port"/>). Default 8080.</summary>
    public int Port { get; init; } = 8080;

    /// <summary>Delay before the response headers of a chat completion, ms. Default 0.</summary>
    public int LatencyMs { get; init; }

    /// <summary>Status of chat completions; a non-2xx status answers an OpenAI-style JSON error
    /// (429 adds <c>Retry-After: 1</c>). Default 200.</summary>
    public int Status { get; init; } = 200;

    /// <summary>Fraction 0..1 of chat completions answered 500 with a JSON error. Default 0.</summary>
    public double FailRate { get; init; }

    /// <summary>Content chunks of a streamed answer (also the completion token count and the number of
    /// words in a non-streamed answer). Default 10.</summary>
    public int Chunks { get; init; } = 10;

    /// <summary>Gap before each streamed content chunk, ms. Default 20.</summary>
    public int ChunkIntervalMs { get; init; } = 20;

    /// <summary>Echoed in the <c>X-Mock-Name</c> response header and in error messages, so a test can see
    /// which upstream answered. Default "mock".</summary>
    public string Name { get; init; } = "mock";

    /// <summary>Tokens per minute each API key may use (0 = no limit). Enforced like a provider: a bucket per key
    /// (<c>Authorization</c>, <c>x-api-key</c> or <c>api-key</c> value; without one, all such requests share a key) holding
    /// this many tokens and refilling continuously; each completion is charged the usage it reports; one that does not fit
    /// is answered 429 <c>rate_limit_exceeded</c> with <c>retry-after</c>. Default 0.</summary>
    public long TokensPerMinute { get; init; }

    /// <summary>Requests per minute each API key may make (0 = no limit); as <see cref="TokensPerMinute"/>. Default 0.</summary>
    public int RequestsPerMinute { get; init; }

    /// <summary>With a limit set, whether answers carry the key's real <c>x-ratelimit-{limit,remaining,reset}-*</c> headers
    /// (<c>anthropic-ratelimit-*</c> on <c>/v1/messages</c>); false = only <c>retry-after</c> on a 429, like an
    /// API that does not tell its headroom. Default true.</summary>
    public bool RateLimitHeaders { get; init; } = true;

    /// <summary>Source of randomness for <see cref="FailRate"/>; inject a seeded one for deterministic tests
    /// (access is serialized, so a plain <see cref="System.Random"/> is safe). Default <see cref="Random.Shared"/>.</summary>
    public Random Random { get; init; } = Random.Shared;

    /// <summary>Clock for delays and <c>created</c> timestamps. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Every problem with these options, one line each (e.g. <c>port: must be between 0 and 65535 (got -1)</c>);
    /// empty when valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Address))
            errors.Add("address: must not be empty");
        else if (!MockServer.TryParseAddress(Address, out _))
            errors.Add($"address: must be an IP address, 'localhost' or '*' (got {Address})");
        if (Port is < 0 or > 65535)
            errors.Add($"port: must be between 0 and 65535 (got {Port})");
        if (LatencyMs < 0)
            errors.Add($"latencyMs: must be >= 0 (got {LatencyMs})");
        if (Status is < 200 or > 599)
            errors.Add($"status: must be between 200 and 599 (got {Status})");
        if (double.IsNaN(FailRate) || FailRate is < 0 or > 1)
            errors.Add($"failRate: must be between 0 and 1 (got {FailRate})");
        if (Chunks < 0)
            errors.Add($"chunks: must be >= 0 (got {Chunks})");
        if (ChunkIntervalMs < 0)
            errors.Add($"chunkIntervalMs: must be >= 0 (got {ChunkIntervalMs})");
        if (TokensPerMinute < 0)
            errors.Add($"tpm: must be >= 0 (got {TokensPerMinute})");
        if (RequestsPerMinute < 0)
            errors.Add($"rpm: must be >= 0 (got {RequestsPerMinute})");
        if (Name is null || !Name.All(static c => c is >= ' ' and <= '~'))
            errors.Add($"name: must be printable ASCII, it is sent as a header value (got {Name})");
        return errors;
    }
}
