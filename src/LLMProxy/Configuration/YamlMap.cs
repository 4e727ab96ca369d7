using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LLMProxy.Configuration;

/// <summary>Shared state of one load: where errors go and how <c>${VAR}</c> is resolved.</summary>
internal sealed class ConfigReadContext(ConfigErrorSink errors, Func<string, string?> env)
{
    public void Error(Mark at, string path, string message) => errors.Add(at, path, message);

    public int ErrorCount => errors.Count;

    /// <summary>The scalar's text with <c>${VAR}</c> expanded; null (error reported) if a variable is missing.</summary>
    public string? Expand(YamlScalarNode node, string path)
    {
        var expanded = EnvExpander.Expand(node.Value ?? "", env, out var error);
        if (error is not null) Error(node.Start, path, error);
        return expanded;
    }
}

/// <summary>A typed, path-aware view of one YAML mapping. Every accessor reports problems to the
/// context and returns a fallback instead of throwing, so one pass finds every error.
/// Unknown keys are reported when the mapping is opened.</summary>
internal sealed class YamlMap
{
    private const int MaxEchoLength = 60;

    private readonly ConfigReadContext _ctx;
    private readonly Dictionary<string, YamlNode> _values = new(StringComparer.Ordinal);

    private YamlMap(ConfigReadContext ctx, YamlMappingNode node, string path, bool sensitive)
    {
        _ctx = ctx;
        Path = path;
        End = EndOf(node);
        Sensitive = sensitive;
    }

    public string Path { get; }

    /// <summary>Where the mapping ends: problems with absent keys are placed here, after the keys that are present.</summary>
    public Mark End { get; }

    /// <summary>Values under a sensitive mapping (auth) are never echoed in messages.</summary>
    public bool Sensitive { get; }

    /// <summary>Opens a mapping; null (and no error) when the node is absent or YAML null.</summary>
    public static YamlMap? Open(ConfigReadContext ctx, YamlNode? node, string path, IReadOnlyList<string> keys, bool sensitive = false)
    {
        if (node is null || IsNull(node)) return null;
        if (node is not YamlMappingNode mapping)
        {
            ctx.Error(node.Start, path, $"must be a mapping (got {Kind(node)})");
            return null;
        }

        var map = new YamlMap(ctx, mapping, path, sensitive);
        foreach (var (keyNode, value) in Merged(ctx, mapping, path))
        {
            if (keyNode is not YamlScalarNode { Value: { } key })
            {
                ctx.Error(keyNode.Start, path, $"keys must be plain names (got {Kind(keyNode)})");
                continue;
            }
            if (!keys.Contains(key, StringComparer.Ordinal))
            {
                ctx.Error(keyNode.Start, ConfigPath.Child(path, ConfigPath.UnknownKey(key)), KeySuggester.UnknownKeyMessage(key, keys));
                continue;
            }
            map._values[key] = value;
        }
        return map;
    }

    /// <summary>
    /// The entries of a mapping with YAML merge keys applied (<c>&lt;&lt;: *base</c>, <c>&lt;&lt;: [*a, *b]</c>), as the
    /// reference's parser (gopkg.in/yaml.v3) applies them: a key written in the mapping wins over a merged one, an earlier
    /// mapping of a merge list over a later one, and a merged mapping brings its own merges along. Written here rather than
    /// with YamlDotNet's MergingParser, which refuses a merged key written again as a duplicate (the usual way to use a
    /// base) and throws an unexpected exception for an alias of anything but a mapping. Aliases are already resolved
    /// and paid for by <see cref="GuardedParser"/>, so this walk is bounded by the document's node budget.
    /// </summary>
    private static List<KeyValuePair<YamlNode, YamlNode>> Merged(ConfigReadContext ctx, YamlMappingNode mapping, string path)
    {
        var entries = new List<KeyValuePair<YamlNode, YamlNode>>(mapping.Children.Count);
        YamlNode? merge = null;
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in mapping.Children)
        {
            if (entry.Key is YamlScalarNode { Value: "<<", Style: ScalarStyle.Plain or ScalarStyle.Any })
            {
                merge = entry.Value;
                continue;
            }
            if (entry.Key is YamlScalarNode { Value: { } key }) written.Add(key);
            entries.Add(entry);
        }
        if (merge is null) return entries;

        List<YamlMappingNode>? sources = merge switch
        {
            YamlMappingNode single => [single],
            YamlSequenceNode list when list.Children.All(item => item is YamlMappingNode) => [.. list.Children.Cast<YamlMappingNode>()],
            _ => null,
        };
        if (sources is null)
        {
            ctx.Error(merge.Start, ConfigPath.Child(path, ConfigPath.UnknownKey("<<")),
                $"a merge key takes a mapping or a list of mappings, e.g. <<: *base (got {Kind(merge)})");
            return entries;
        }
        foreach (var source in sources)
        {
            foreach (var entry in Merged(ctx, source, path))
            {
                if (entry.Key is not YamlScalarNode { Value: { } key } || written.Add(key)) entries.Add(entry);
            }
        }
        return entries;
    }

    /// <summary>Like <see cref="Open"/> but a missing/null node is an error (used for list items).</summary>
    public static YamlMap? OpenItem(ConfigReadContext ctx, YamlNode node, string path, IReadOnlyList<string> keys)
    {
        if (IsNull(node))
        {
            ctx.Error(node.Start, path, "must be a mapping (got an empty item)");
            return null;
        }
        return Open(ctx, node, path, keys);
    }

    /// <summary>YAML core-schema null: an empty or <c>~</c>/<c>null</c> plain scalar.</summary>
    public static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    /// <summary>YamlDotNet sets a collection's End to its Start, so take the end of its last descendant.</summary>
    private static Mark EndOf(YamlNode node) => node switch
    {
        YamlMappingNode { Children.Count: > 0 } m => EndOf(m.Children[m.Children.Count - 1].Value),
        YamlSequenceNode { Children.Count: > 0 } s => EndOf(s.Children[^1]),
        _ => node.End,
    };

    public static string Kind(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        _ when IsNull(node) => "an empty value",
        _ => "a single value",
    };

    public string PathOf(string key) => ConfigPath.Child(Path, key);

    /// <summary>The value node, or null when the key is absent or its value is YAML null.</summary>
    public YamlNode? Node(string key) => _values.TryGetValue(key, out var node) && !IsNull(node) ? node : null;

    public bool Has(string key) => Node(key) is not null;

    /// <summary>Position of the key's value, or the end of this mapping when the key is absent.</summary>
    public Mark At(string key) => Node(key)?.Start ?? End;

    public void Error(string key, string message) => _ctx.Error(At(key), PathOf(key), message);

    /// <summary>Errors reported so far in this load (by any map), to tell whether a read added one.</summary>
    public int ErrorCount => _ctx.ErrorCount;

    public void ErrorAt(Mark at, string path, string message) => _ctx.Error(at, path, message);

    /// <summary>Reports <c>required</c> when the key is absent or null.</summary>
    public bool Require(string key)
    {
        if (Has(key)) return true;
        Error(key, "required");
        return false;
    }

    public YamlMap? Map(string key, IReadOnlyList<string> keys, bool sensitive = false) =>
        Open(_ctx, Node(key), PathOf(key), keys, Sensitive || sensitive);

    /// <summary>The items of a list with their paths; null when absent (an error if required) or not a list.</summary>
    public IReadOnlyList<(YamlNode Node, string Path)>? List(string key, bool required = false)
    {
        var node = Node(key);
        if (node is null)
        {
            if (required) Error(key, "required");
            return null;
        }
        if (node is not YamlSequenceNode sequence)
        {
            Error(key, $"must be a list (got {Kind(node)})");
            return null;
        }
        return [.. sequence.Children.Select((item, i) => (item, ConfigPath.Index(PathOf(key), i)))];
    }

    public YamlMap? Item(YamlNode node, string path, IReadOnlyList<string> keys) => OpenItem(_ctx, node, path, keys);

    /// <summary>The entries of a mapping whose keys are data (model names), not config keys: each key's text, its
    /// value node, where the key is and its path <c>parent.key["name"]</c>. Null when absent or not a mapping
    /// (error reported). Keys are taken literally (no <c>${VAR}</c>): they are names, and only values are expanded.</summary>
    public IReadOnlyList<(string Key, YamlNode Value, Mark At, string Path)>? Entries(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is not YamlMappingNode mapping)
        {
            Error(key, $"must be a mapping (got {Kind(node)})");
            return null;
        }
        var result = new List<(string, YamlNode, Mark, string)>();
        foreach (var (keyNode, value) in Merged(_ctx, mapping, PathOf(key)))
        {
            if (keyNode is not YamlScalarNode { Value: { } name })
            {
                _ctx.Error(keyNode.Start, PathOf(key), $"keys must be plain names (got {Kind(keyNode)})");
                continue;
            }
            result.Add((name, value, keyNode.Start, $"{PathOf(key)}[{Quote(name)}]"));
        }
        return result;
    }

    /// <summary>A string scalar (env-expanded); null when absent or invalid.</summary>
    public string? String(string key) => ScalarText(key, "a string");

    /// <summary>A required, non-blank string; "" (error reported) otherwise.</summary>
    public string RequiredString(string key)
    {
        if (!Require(key)) return "";
        var text = String(key);
        if (text is null) return "";
        if (string.IsNullOrWhiteSpace(text)) Error(key, "must not be empty");
        return text;
    }

    /// <param name="why">Appended to the message for a value above <paramref name="max"/>: why the maximum is what it is.</param>
    public int Int(string key, int fallback, int min, int max = int.MaxValue, string? why = null) =>
        Node(key) is { } node && TryInteger(node, PathOf(key), min, max, out var value, why) ? (int)value : fallback;

    /// <summary>An integer of at least 1 where 0, as in the reference, means "absent: use <paramref name="fallback"/>".</summary>
    public int IntZeroIsDefault(string key, int fallback, int max = int.MaxValue) =>
        Int(key, fallback, 0, max) is var value && value == 0 ? fallback : value;

    /// <summary>True when the key holds a quoted empty string (<c>""</c>), which the reference reads as the key's default.
    /// (A plain empty value is YAML null, i.e. absent, already.)</summary>
    public bool IsEmptyString(string key) => _values.TryGetValue(key, out var node) && node is YamlScalarNode { Value: "" };

    public int? OptionalInt(string key, int min, int max = int.MaxValue) =>
        Node(key) is { } node && TryInteger(node, PathOf(key), min, max, out var value) ? (int)value : null;

    public int RequiredInt(string key, int min, int max = int.MaxValue) => Require(key) ? Int(key, 0, min, max) : 0;

    public long Long(string key, long fallback, long min, long max = long.MaxValue) =>
        Node(key) is { } node && TryInteger(node, PathOf(key), min, max, out var value) ? value : fallback;

    public double Double(string key, double fallback, double min, double max)
    {
        var text = ScalarText(key, "a number");
        if (text is null) return fallback;
        if (!double.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value))
        {
            Error(key, $"must be a number{Got(Quote(text))}");
            return fallback;
        }
        if (value < min || value > max)
        {
            Error(key, $"must be between {FormatBound(min)} and {FormatBound(max)}{Got(text.Trim())}");
            return fallback;
        }
        return value;
    }

    /// <summary><c>true</c> or <c>false</c> (any case); absent gives <paramref name="fallback"/>.</summary>
    public bool Bool(string key, bool fallback)
    {
        var text = ScalarText(key, "true or false");
        if (text is null) return fallback;
        if (bool.TryParse(text.Trim(), out var value)) return value;
        Error(key, $"must be true or false{Got(Quote(text))}");
        return fallback;
    }

    public T Enum<T>(string key, T fallback, IReadOnlyList<KeyValuePair<string, T>> names) where T : struct, Enum =>
        TryEnum(key, names, out var value) ? value : fallback;

    /// <summary>False when the key is absent or its value is not one of <paramref name="names"/> (error reported).</summary>
    public bool TryEnum<T>(string key, IReadOnlyList<KeyValuePair<string, T>> names, out T value) where T : struct, Enum
    {
        value = default;
        var text = ScalarText(key, "a string");
        if (text is null) return false;
        foreach (var (name, candidate) in names)
        {
            if (string.Equals(name, text.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                value = candidate;
                return true;
            }
        }
        Error(key, $"must be one of {string.Join(", ", names.Select(n => n.Key))}{Got(Quote(text))}");
        return false;
    }

    /// <summary>
    /// A value that must be one of <paramref name="names"/> (any case), returned as listed there; absent gives
    /// <paramref name="fallback"/>. An unknown value lists every name and suggests the nearest, like an unknown key.
    /// </summary>
    public string Name(string key, string fallback, IReadOnlyList<string> names)
    {
        var text = ScalarText(key, "a string");
        if (text is null) return fallback;
        var trimmed = text.Trim();
        foreach (var name in names)
        {
            if (string.Equals(name, trimmed, StringComparison.OrdinalIgnoreCase)) return name;
        }
        var hint = KeySuggester.Suggest(trimmed, names) is { } near ? $"; did you mean '{near}'?" : "";
        Error(key, $"must be one of {string.Join(", ", names)}{Got(Quote(text))}{hint}");
        return fallback;
    }

    /// <summary>A list item that must be an integer in [min, max].</summary>
    public bool TryInteger(YamlNode node, string path, long min, long max, out long value) => TryInteger(node, path, min, max, out value, why: null);

    private bool TryInteger(YamlNode node, string path, long min, long max, out long value, string? why)
    {
        value = 0;
        var text = ScalarText(node, path, "an integer");
        if (text is null) return false;
        var trimmed = text.Trim();
        if (!long.TryParse(trimmed, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value))
        {
            // Digits that overflow are a range problem, not a type problem.
            var digits = trimmed.TrimStart('-', '+');
            _ctx.Error(node.Start, path, digits.Length > 0 && digits.All(char.IsAsciiDigit)
                ? RangeMessage(min, max, trimmed, above: !trimmed.StartsWith('-'), why)
                : $"must be an integer{Got(Quote(text))}");
            return false;
        }
        if (value < min || value > max)
        {
            _ctx.Error(node.Start, path, RangeMessage(min, max, value.ToString(CultureInfo.InvariantCulture), above: value > max, why));
            return false;
        }
        return true;
    }

    /// <summary>A list item that must be a string (env-expanded); null when invalid (error reported).</summary>
    public string? StringItem(YamlNode node, string path) => ScalarText(node, path, "a string");

    /// <summary>" (got X)" — or nothing under a sensitive mapping, so secrets never reach a message.</summary>
    public string Got(string shown) => Sensitive ? "" : $" (got {shown})";

    /// <summary>The text in double quotes, shortened to 60 characters, with backslashes, quotes and anything
    /// unprintable escaped (<see cref="Observability.LogText.Escape"/>).</summary>
    public static string Quote(string text)
    {
        var shown = text.Length > MaxEchoLength ? text[..(MaxEchoLength - 3)] + "..." : text;
        return "\"" + Observability.LogText.Escape(shown.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal)) + "\"";
    }

    /// <summary>A key without a real upper bound (only the type's) names the bound the value broke: "at least" the
    /// minimum when below it, "at most" the type's maximum when above it.</summary>
    private string RangeMessage(long min, long max, string shown, bool above, string? why) =>
        (max != int.MaxValue && max != long.MaxValue ? $"must be between {min} and {max}"
            : above ? $"must be at most {max}"
            : $"must be at least {min}") + Got(shown) + (above && why is not null ? ": " + why : "");

    private static string FormatBound(double value) =>
        value == Math.Floor(value) ? value.ToString("0.0", CultureInfo.InvariantCulture) : value.ToString("R", CultureInfo.InvariantCulture);

    private string? ScalarText(string key, string expected) =>
        Node(key) is { } node ? ScalarText(node, PathOf(key), expected) : null;

    private string? ScalarText(YamlNode node, string path, string expected)
    {
        if (node is not YamlScalarNode scalar || IsNull(node))
        {
            _ctx.Error(node.Start, path, $"must be {expected} (got {Kind(node)})");
            return null;
        }
        return _ctx.Expand(scalar, path);
    }
}
