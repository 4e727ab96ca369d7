using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace LLMProxy.Configuration;

/// <summary>Loads and validates the YAML configuration. Never throws for bad input: the result holds
/// either a config or every error found, each with its YAML path, ordered by position in the file.</summary>
public static class ConfigLoader
{
    /// <summary>Reads <paramref name="path"/>; an unreadable or missing file is one error with an empty path.</summary>
    /// <param name="env">Resolves <c>${VAR}</c>; defaults to <see cref="Environment.GetEnvironmentVariable(string)"/>.</param>
    public static ConfigLoadResult LoadFile(string path, Func<string, string?>? env = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string yaml;
        try
        {
            yaml = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return Failed(new ConfigError("", $"cannot read config file '{path}': {Reason(path, ex)}"));
        }
        return LoadYaml(yaml, env);
    }

    /// <summary>Parses and validates YAML text.</summary>
    /// <param name="env">Resolves <c>${VAR}</c>; defaults to <see cref="Environment.GetEnvironmentVariable(string)"/>.</param>
    public static ConfigLoadResult LoadYaml(string yaml, Func<string, string?>? env = null)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        env ??= Environment.GetEnvironmentVariable;

        if (!TryParse(yaml, out var stream, out var syntaxError)) return Failed(syntaxError);
        if (stream.Documents.Count == 0)
        {
            return Failed(new ConfigError("", "the configuration is empty (expected httpServer, upstreams and upstreamGroups)"));
        }

        var errors = new ConfigErrorSink();
        var ctx = new ConfigReadContext(errors, env);
        foreach (var extra in stream.Documents.Skip(1))
        {
            errors.Add(extra.RootNode.Start, "", $"only one YAML document is allowed (found {stream.Documents.Count})");
        }
        var reader = new ConfigReader(ctx);
        var config = reader.Read(stream.Documents[0].RootNode);
        ConfigCrossChecks.Run(reader.References, ctx);

        return errors.Count == 0 ? new ConfigLoadResult(config, []) : new ConfigLoadResult(null, errors.ToList());
    }

    private static bool TryParse(string yaml, out YamlStream stream, out ConfigError error)
    {
        stream = new YamlStream();
        error = new ConfigError("", "");
        var parser = new GuardedParser(new Parser(new StringReader(yaml)));
        try
        {
            stream.Load(parser);
            return true;
        }
        catch (YamlException ex)
        {
            error = new ConfigError("", $"invalid YAML at line {ex.Start.Line}, column {ex.Start.Column}: {ex.Message}");
        }
        // YamlDotNet reports some malformed input (e.g. an unclosed flow sequence) with non-YAML exceptions
        // and no position; this is the parse boundary, so map them to an error instead of escaping.
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            var at = parser.LastPosition;
            error = new ConfigError("", $"invalid YAML near line {at.Line}, column {at.Column}: the document is malformed (check brackets, quotes and indentation)");
        }
        return false;
    }

    private static string Reason(string path, Exception ex) => ex switch
    {
        FileNotFoundException => "file not found",
        DirectoryNotFoundException => "directory not found",
        UnauthorizedAccessException when Directory.Exists(path) => "it is a directory",
        UnauthorizedAccessException => "permission denied",
        _ => ex.Message,
    };

    private static ConfigLoadResult Failed(ConfigError error) => new(null, [error]);

    /// <summary>Sits between YamlDotNet's (iterative) parser and its (recursive) node loader: rejects
    /// absurd nesting before it can overflow the stack, and remembers the last position for errors
    /// that YamlDotNet raises without one.</summary>
    private sealed class GuardedParser(IParser inner) : IParser
    {
        /// <summary>A valid config nests about 6 levels; this leaves room for any sane file.</summary>
        private const int MaxDepth = 64;

        private int _depth;

        public Mark LastPosition { get; private set; } = Mark.Empty;

        public ParsingEvent? Current => inner.Current;

        public bool MoveNext()
        {
            var moved = inner.MoveNext();
            if (inner.Current is not { } current) return moved;

            LastPosition = current.End;
            if (current is MappingStart or SequenceStart && ++_depth > MaxDepth)
            {
                throw new YamlException(current.Start, current.End, $"nesting is deeper than {MaxDepth} levels");
            }
            if (current is MappingEnd or SequenceEnd) _depth--;
            return moved;
        }
    }
}
