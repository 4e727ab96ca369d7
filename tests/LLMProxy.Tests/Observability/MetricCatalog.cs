using System.Text.RegularExpressions;

namespace LLMProxy.Tests.Observability;

/// <summary>
/// What a <c>/metrics</c> scrape exports (families by their <c>TYPE</c> line, the label names and values of every sample
/// name), and a loose PromQL reader that lists what an expression uses that the scrape does not have: an unknown
/// <c>llmproxy_*</c> name, a histogram used without its <c>_bucket/_sum/_count</c> suffix, a family with no series, a
/// matcher or grouping label the family lacks, an exact matcher value never exported. Loose on purpose: it reads names,
/// selectors and label lists, not the grammar — enough that a renamed metric or label cannot rot a dashboard.
/// </summary>
internal sealed partial class MetricCatalog
{
    /// <summary>Labels Prometheus adds to every scraped series; a rule may group by them.</summary>
    private static readonly string[] TargetLabels = ["job", "instance"];

    private readonly Dictionary<string, string> _types = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<string, HashSet<string>>> _labels = new(StringComparer.Ordinal);

    public MetricCatalog(string metricsText)
    {
        foreach (var line in metricsText.Split('\n'))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                _types[parts[2]] = parts[3];
            }
        }
        foreach (var s in Parse(metricsText))
        {
            if (!_labels.TryGetValue(s.Name, out var labels))
            {
                _labels[s.Name] = labels = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
            }
            foreach (var (name, value) in s.Labels)
            {
                if (!labels.TryGetValue(name, out var values))
                {
                    labels[name] = values = new HashSet<string>(StringComparer.Ordinal);
                }
                values.Add(value);
            }
        }
    }

    /// <summary>Every problem of one PromQL expression (empty = it only uses what the scrape exports).</summary>
    public List<string> Check(string expr)
    {
        var problems = new List<string>();
        // Label values may hold anything (regexes, $variables): names are only read outside string literals.
        var code = StringLiteral().Replace(expr, "\"\"");
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match m in MetricName().Matches(code))
        {
            if (Resolve(m.Value, problems) is { } sample)
            {
                used.Add(sample);
            }
        }
        foreach (Match m in Selector().Matches(expr))
        {
            var sample = m.Groups["name"].Value;
            if (!used.Contains(sample))
            {
                continue;
            }
            var labels = _labels[sample];
            foreach (Match matcher in Matcher().Matches(m.Groups["matchers"].Value))
            {
                var (label, op, value) = (matcher.Groups["label"].Value, matcher.Groups["op"].Value, matcher.Groups["value"].Value);
                if (!labels.TryGetValue(label, out var values))
                {
                    problems.Add($"{sample} has no label '{label}' (it has: {string.Join(", ", labels.Keys)})");
                }
                else if (op == "=" && !value.Contains('$', StringComparison.Ordinal) && !values.Contains(value))
                {
                    problems.Add($"{sample}{{{label}=\"{value}\"}} matches no exported series (values: {string.Join(", ", values)})");
                }
            }
        }
        var available = used.SelectMany(s => _labels[s].Keys).Concat(TargetLabels).ToHashSet(StringComparer.Ordinal);
        foreach (Match clause in Grouping().Matches(code))
        {
            foreach (var label in clause.Groups["labels"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!available.Contains(label))
                {
                    problems.Add($"'{clause.Groups["kw"].Value} ({label})': no metric of the expression has label '{label}'");
                }
            }
        }
        foreach (Match lv in LabelValues().Matches(expr))
        {
            var sample = lv.Groups["name"].Value;
            if (used.Contains(sample) && !_labels[sample].ContainsKey(lv.Groups["label"].Value))
            {
                problems.Add($"label_values: {sample} has no label '{lv.Groups["label"].Value}'");
            }
        }
        return problems;
    }

    /// <summary>The sample name an identifier reads, or null (with a problem) when the scrape has no such series.</summary>
    private string? Resolve(string name, List<string> problems)
    {
        if (_types.TryGetValue(name, out var type))
        {
            if (type is "histogram" or "summary")
            {
                problems.Add($"{name} is a {type}: use {name}_bucket, _sum or _count");
                return null;
            }
        }
        else if (!IsPart(name, "_bucket", "histogram") && !IsPart(name, "_sum", "histogram", "summary") && !IsPart(name, "_count", "histogram", "summary"))
        {
            problems.Add($"{name} is not exported on /metrics");
            return null;
        }
        if (!_labels.ContainsKey(name))
        {
            problems.Add($"{name} is declared but has no series after the run (nothing to chart)");
            return null;
        }
        return name;
    }

    private bool IsPart(string name, string suffix, params string[] familyTypes) =>
        name.EndsWith(suffix, StringComparison.Ordinal)
        && _types.TryGetValue(name[..^suffix.Length], out var type) && familyTypes.Contains(type);

    [GeneratedRegex("\"(?:[^\"\\\\]|\\\\.)*\"")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"\bllmproxy_[a-z0-9_]+")]
    private static partial Regex MetricName();

    [GeneratedRegex(@"\b(?<name>llmproxy_[a-z0-9_]+)\s*\{(?<matchers>(?:[^}""]|""(?:[^""\\]|\\.)*"")*)\}")]
    private static partial Regex Selector();

    [GeneratedRegex(@"(?<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?<op>=~|!~|!=|=)\s*""(?<value>(?:[^""\\]|\\.)*)""")]
    private static partial Regex Matcher();

    [GeneratedRegex(@"\b(?<kw>by|without|on|ignoring|group_left|group_right)\s*\((?<labels>[^)]*)\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"label_values\(\s*(?<name>llmproxy_[a-z0-9_]+)[^,]*,\s*(?<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*\)")]
    private static partial Regex LabelValues();
}
