using YamlDotNet.Core;

namespace LLMProxy.Configuration;

/// <summary>Collects every configuration error with its document position so they can be reported
/// together, in file order, instead of stopping at the first one.</summary>
internal sealed class ConfigErrorSink
{
    private readonly List<Entry> _entries = [];

    public int Count => _entries.Count;

    public void Add(Mark at, string path, string message) =>
        _entries.Add(new Entry(at.Line, at.Column, _entries.Count, new ConfigError(path, message)));

    /// <summary>Errors ordered by line, then column, then the order they were found.</summary>
    public IReadOnlyList<ConfigError> ToList() =>
        [.. _entries.OrderBy(e => e.Line).ThenBy(e => e.Column).ThenBy(e => e.Sequence).Select(e => e.Error)];

    private readonly record struct Entry(long Line, long Column, int Sequence, ConfigError Error);
}
