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
        string? yaml;
        try
        {
            yaml = ReadBounded(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return Failed(new ConfigError("", $"cannot read config file '{path}': {Reason(path, ex)}"));
        }
        if (yaml is null)
        {
            return Failed(new ConfigError("", $"config file '{path}' is larger than {SizeLimit} and was not read"));
        }
        return LoadYaml(yaml, env);
    }

    /// <summary>The file's text (UTF-8 unless a byte-order mark says otherwise), or null when it is over
    /// <see cref="ConfigLimits.MaxSize"/>: never reads more than one byte past the limit, so a huge file, a
    /// device or a pipe that never ends costs nothing.</summary>
    private static string? ReadBounded(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 1);
        if (file.CanSeek && file.Length > ConfigLimits.MaxSize) return null;
        var buffer = new byte[ConfigLimits.MaxSize + 1];
        var length = file.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        if (length > ConfigLimits.MaxSize) return null;
        using var reader = new StreamReader(new MemoryStream(buffer, 0, length), System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return reader.ReadToEnd();
    }

    private const string SizeLimit = "1 MiB (the limit)";

    /// <summary>Parses and validates YAML text.</summary>
    /// <param name="env">Resolves <c>${VAR}</c>; defaults to <see cref="Environment.GetEnvironmentVariable(string)"/>.</param>
    public static ConfigLoadResult LoadYaml(string yaml, Func<string, string?>? env = null)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        env ??= Environment.GetEnvironmentVariable;

        if (yaml.Length > ConfigLimits.MaxSize)
        {
            return Failed(new ConfigError("", $"the configuration is larger than {SizeLimit} and was not parsed"));
        }
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
        catch (ConfigLimitException ex)
        {
            error = new ConfigError("", $"configuration refused at line {ex.Start.Line}, column {ex.Start.Column}: {ex.Message}");
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
}
