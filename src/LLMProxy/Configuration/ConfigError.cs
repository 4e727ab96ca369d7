using LLMProxy.Observability;

namespace LLMProxy.Configuration;

/// <summary>One configuration problem: YAML path plus message, e.g.
/// <c>upstreams[1].breaker.threshold: must be between 0.01 and 1.0 (got 2)</c>.</summary>
public sealed record ConfigError
{
    /// <summary>Both parts are escaped (<see cref="LogText.Escape"/>): whatever the file contained, an error
    /// prints as one line on stderr, in a log line or in the reload API's answer.</summary>
    public ConfigError(string path, string message)
    {
        Path = LogText.Escape(path);
        Message = LogText.Escape(message);
    }

    public string Path { get; }
    public string Message { get; }

    public override string ToString() => Path.Length == 0 ? Message : $"{Path}: {Message}";
}

/// <summary>Result of loading: either a config or the complete list of errors.</summary>
public sealed record ConfigLoadResult(ProxyConfig? Config, IReadOnlyList<ConfigError> Errors)
{
    public bool Success => Config is not null && Errors.Count == 0;
}
