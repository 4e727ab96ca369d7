using System.Globalization;
using System.Text.RegularExpressions;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// Metrics asserted as parsed values: one exact series (<c>name{labels}</c>) or the sum of a family, never a
/// substring of the text. Imported everywhere by GlobalUsings.
/// </summary>
public static partial class MetricsText
{
    /// <summary>Value of one exact series (<c>name{labels}</c>), 0 when absent. As in Prometheus, a label with an empty
    /// value is no label: <c>client=""</c> (a request without a client key) matches a series written without it.</summary>
    public static double Sample(string metrics, string series)
    {
        series = WithoutEmptyLabels(series);
        foreach (var raw in metrics.Split('\n'))
        {
            var line = raw.Contains("=\"\"", StringComparison.Ordinal) ? WithoutEmptyLabels(raw) : raw;
            if (line.StartsWith(series, StringComparison.Ordinal) && line.Length > series.Length && line[series.Length] == ' ')
            {
                return double.Parse(line.AsSpan(series.Length + 1).Trim(), CultureInfo.InvariantCulture);
            }
        }
        return 0;
    }

    /// <summary>The series with every <c>name=""</c> label left out (a quote inside a value is escaped, so <c>=""</c>
    /// only ever ends an empty label); <c>name{}</c> becomes <c>name</c>.</summary>
    public static string WithoutEmptyLabels(string series) =>
        EmptyLabel().Replace(series, "").Replace("{,", "{", StringComparison.Ordinal).Replace("{}", "", StringComparison.Ordinal);

    [GeneratedRegex(""",?[a-zA-Z_][a-zA-Z0-9_]*=""(?=[,}])""")]
    private static partial Regex EmptyLabel();

    /// <summary>The text <c>/metrics</c> would serve for <paramref name="registry"/>, without a listener (unit tests).</summary>
    public static async Task<string> ExportAsync(Prometheus.CollectorRegistry registry)
    {
        using var exported = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(exported);
        return System.Text.Encoding.UTF8.GetString(exported.ToArray());
    }

    /// <summary>Sum over every series of a family (counter or gauge, not histogram parts).</summary>
    public static double Sum(string metrics, string family)
    {
        var total = 0.0;
        foreach (var line in metrics.Split('\n'))
        {
            if (line.StartsWith(family + "{", StringComparison.Ordinal) || line.StartsWith(family + " ", StringComparison.Ordinal))
            {
                var space = line.LastIndexOf(' ');
                total += double.Parse(line.AsSpan(space + 1).Trim(), CultureInfo.InvariantCulture);
            }
        }
        return total;
    }

    /// <summary>Asserts one series' value; on failure shows every series of its family.</summary>
    public static void AssertSample(string metrics, string series, double expected)
    {
        var actual = Sample(metrics, series);
        Assert.True(actual == expected, $"{series}: expected {expected}, got {actual}\n{Lines(metrics, series[..series.IndexOf('{', StringComparison.Ordinal)])}");
    }

    /// <summary>
    /// Waits until one series reaches its expected value. The client can see a response end before the proxy has
    /// accounted for it (the body is on the wire before the handler returns), so a scrape right after a response
    /// may be a moment early; a count that overshoots never matches and fails.
    /// </summary>
    public static async Task AssertSampleAsync(HttpClient admin, string series, double expected)
    {
        var metrics = "";
        await Eventually.WaitUntilAsync(async () => Sample(metrics = await admin.GetStringAsync("/metrics"), series) == expected,
            TimeSpan.FromSeconds(5), () => Task.FromResult($"{series}: expected {expected}, got {Sample(metrics, series)}\n" +
                Lines(metrics, series[..series.IndexOf('{', StringComparison.Ordinal)])));
    }

    /// <summary>Every sample line: its name (histogram parts keep their suffix), labels and value.</summary>
    public static List<MetricSeries> Parse(string metrics)
    {
        var series = new List<MetricSeries>();
        foreach (var line in metrics.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            var match = SampleLine().Match(line);
            Assert.True(match.Success, "unparsable metrics line: " + line);
            var labels = LabelPair().Matches(match.Groups["labels"].Value).ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
            series.Add(new MetricSeries(match.Groups["name"].Value, labels, double.Parse(match.Groups["value"].Value, CultureInfo.InvariantCulture)));
        }
        return series;
    }

    [GeneratedRegex("""^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})? (?<value>\S+)( \d+)?$""")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();

    /// <summary>Every series of a family, for failure messages.</summary>
    public static string Lines(string metrics, string family) =>
        string.Join('\n', metrics.Split('\n').Where(l => l.StartsWith(family, StringComparison.Ordinal)));
}

/// <summary>One parsed sample line of the Prometheus text format.</summary>
public sealed record MetricSeries(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
{
    public string? Label(string name) => Labels.GetValueOrDefault(name);
}
