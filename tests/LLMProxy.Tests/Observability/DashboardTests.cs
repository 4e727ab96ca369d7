using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using LLMProxy.Cli;
using LLMProxy.Mock;
using LLMProxy.Tests.Configuration;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;

namespace LLMProxy.Tests.Observability;

/// <summary>
/// <c>deploy/grafana/llmproxy.json</c> and <c>deploy/prometheus/alerts.yaml</c> (SPEC §16) against what the proxy really
/// exports: every metric, label and exact label value their PromQL uses must be on <c>/metrics</c> after a run of the
/// demo's config (and, for the cluster's families, of the demo's config with a <c>cluster.redis</c> nobody answers), so a
/// renamed metric or label fails here instead of leaving an empty panel or an alert that never fires.
/// </summary>
public partial class DashboardTests
{
    private static string DashboardPath => Path.Combine(ConfigTestYaml.RepoRoot(), "deploy", "grafana", "llmproxy.json");
    private static string AlertsPath => Path.Combine(ConfigTestYaml.RepoRoot(), "deploy", "prometheus", "alerts.yaml");

    [Fact]
    public async Task DashboardAndAlerts_EveryMetricLabelAndValueTheyUse_IsExportedAfterADemoRun()
    {
        var (metrics, cluster) = await ScrapeAfterDemoTrafficAsync();
        // The cluster's families exist only with cluster.redis: that run's scrape adds them.
        Assert.Equal(0, Sample(cluster, "llmproxy_cluster_redis_up"));
        Assert.True(Sample(cluster, "llmproxy_cluster_fallbacks_total") > 0, "no request fell back to local state");
        var catalog = new MetricCatalog(metrics + "\n" + cluster);

        var expressions = DashboardExpressions().Concat(AlertRules().Select(r => (Where: "alert " + r.Name, r.Expr))).ToList();
        Assert.True(expressions.Count > 20, $"only {expressions.Count} expressions found: the readers below lost some");
        var problems = expressions.SelectMany(e => catalog.Check(e.Expr).Select(p => $"{e.Where}: {p}\n    {e.Expr}")).ToList();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void MetricCatalog_ReportsUnknownNames_MissingLabels_BareHistograms_UnexportedValues()
    {
        var catalog = new MetricCatalog("""
            # TYPE llmproxy_http_requests_total counter
            llmproxy_http_requests_total{forward="f",status="200"} 3
            # TYPE llmproxy_upstream_ttfb_seconds histogram
            llmproxy_upstream_ttfb_seconds_bucket{upstream="a",le="+Inf"} 1
            llmproxy_upstream_ttfb_seconds_sum{upstream="a"} 0.1
            llmproxy_upstream_ttfb_seconds_count{upstream="a"} 1
            # TYPE llmproxy_circuit_breaker_state_changes_total counter
            """);

        Assert.Empty(catalog.Check("""sum by (forward) (rate(llmproxy_http_requests_total{forward=~"$forward",status!~"2.."}[5m]))"""));
        Assert.Empty(catalog.Check("""histogram_quantile(0.99, sum by (le, upstream) (rate(llmproxy_upstream_ttfb_seconds_bucket{upstream=~".*"}[5m])))"""));
        Assert.Empty(catalog.Check("""sum by (job) (llmproxy_upstream_ttfb_seconds_count) / sum(llmproxy_upstream_ttfb_seconds_sum)"""));

        Assert.Contains("not exported", Assert.Single(catalog.Check("rate(llmproxy_http_request_total[5m])")));
        Assert.Contains("no label 'upstrem'", Assert.Single(catalog.Check("""llmproxy_upstream_ttfb_seconds_count{upstrem="a"}""")));
        Assert.Contains("use llmproxy_upstream_ttfb_seconds_bucket", Assert.Single(catalog.Check("llmproxy_upstream_ttfb_seconds")));
        Assert.Contains("matches no exported series", Assert.Single(catalog.Check("""llmproxy_http_requests_total{status="599"}""")));
        Assert.Contains("no series", Assert.Single(catalog.Check("llmproxy_circuit_breaker_state_changes_total")));
        Assert.Contains("'by (group)'", Assert.Single(catalog.Check("sum by (group) (llmproxy_http_requests_total)")));
        Assert.Contains("label_values", Assert.Single(catalog.Check("label_values(llmproxy_http_requests_total, group)")));
        // A name inside a label value is not a metric the expression reads.
        Assert.Empty(catalog.Check("""llmproxy_http_requests_total{forward!="llmproxy_nothing"}"""));
    }

    [Fact]
    public void Dashboard_IsAGrafanaExport_WithADatasourceInput_TheVariablesItUses_AndUniquePanels()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(DashboardPath));
        var root = doc.RootElement;
        Assert.Equal("DS_PROMETHEUS", root.GetProperty("__inputs")[0].GetProperty("name").GetString());
        Assert.Equal("prometheus", root.GetProperty("__inputs")[0].GetProperty("pluginId").GetString());
        Assert.True(root.GetProperty("schemaVersion").GetInt32() >= 36, "a Grafana 10/11 export");
        Assert.Equal(JsonValueKind.Null, root.GetProperty("id").ValueKind); // an import creates its own id
        Assert.False(string.IsNullOrEmpty(root.GetProperty("uid").GetString()));

        var variables = root.GetProperty("templating").GetProperty("list").EnumerateArray()
            .ToDictionary(v => v.GetProperty("name").GetString()!, v => v);
        Assert.Subset(variables.Keys.ToHashSet(), new HashSet<string> { "forward", "group", "upstream" });
        foreach (var v in variables.Values)
        {
            Assert.Equal("${DS_PROMETHEUS}", v.GetProperty("datasource").GetProperty("uid").GetString());
        }

        var panels = AllPanels(root).ToList();
        Assert.Equal(panels.Count, panels.Select(p => p.GetProperty("id").GetInt32()).Distinct().Count());
        var cells = new HashSet<(int, int)>();
        foreach (var p in panels)
        {
            var title = p.GetProperty("title").GetString();
            var grid = p.GetProperty("gridPos");
            int x = grid.GetProperty("x").GetInt32(), y = grid.GetProperty("y").GetInt32(), w = grid.GetProperty("w").GetInt32(), h = grid.GetProperty("h").GetInt32();
            Assert.True(x >= 0 && w > 0 && x + w <= 24, $"panel '{title}' is outside the 24-column grid");
            for (var cx = x; cx < x + w; cx++)
            {
                for (var cy = y; cy < y + h; cy++)
                {
                    Assert.True(cells.Add((cx, cy)), $"panel '{title}' overlaps another at ({cx},{cy})");
                }
            }
            if (p.GetProperty("type").GetString() == "row")
            {
                continue;
            }
            Assert.Equal("${DS_PROMETHEUS}", p.GetProperty("datasource").GetProperty("uid").GetString());
            Assert.True(p.GetProperty("targets").GetArrayLength() > 0, $"panel '{title}' has no query");
            foreach (var t in p.GetProperty("targets").EnumerateArray())
            {
                Assert.Equal("${DS_PROMETHEUS}", t.GetProperty("datasource").GetProperty("uid").GetString());
            }
        }

        var builtIns = new HashSet<string> { "__rate_interval", "__interval", "__range" };
        foreach (var (where, expr) in DashboardExpressions())
        {
            foreach (Match m in Variable().Matches(expr))
            {
                Assert.True(variables.ContainsKey(m.Groups[1].Value) || builtIns.Contains(m.Groups[1].Value), $"{where}: ${m.Groups[1].Value} is not a dashboard variable");
            }
        }
        // What the issue asks the dashboard to show, each on a panel.
        string[] shown =
        [
            "llmproxy_http_requests_total", "llmproxy_http_request_duration_seconds_bucket", "llmproxy_upstream_ttfb_seconds_bucket",
            "llmproxy_upstream_tokens_total", "llmproxy_circuit_breaker_state", "llmproxy_upstream_cooldowns_total", "llmproxy_upstream_disabled",
            "llmproxy_upstream_budget_limit", "llmproxy_retries_total", "llmproxy_group_available_upstreams",
            "llmproxy_cluster_redis_up", "llmproxy_cluster_fallbacks_total",
        ];
        var all = string.Join("\n", DashboardExpressions().Select(e => e.Expr));
        Assert.All(shown, name => Assert.Matches($@"\b{name}\b", all));
        Assert.Contains("sum by (client, type) (rate(llmproxy_upstream_tokens_total", all, StringComparison.Ordinal); // tokens/s per client key (SPEC §15)
    }

    [Fact]
    public void Alerts_EveryRuleHasADuration_ASeverity_ASummaryAndADescription_AndCoversTheAskedCases()
    {
        var rules = AlertRules();
        Assert.Equal(rules.Count, rules.Select(r => r.Name).Distinct().Count());
        foreach (var r in rules)
        {
            Assert.True(r.For is not null && Duration().IsMatch(r.For), $"{r.Name}: for '{r.For}' is not a Prometheus duration");
            Assert.Contains(r.Severity, new[] { "critical", "warning", "info" });
            Assert.False(string.IsNullOrWhiteSpace(r.Summary), $"{r.Name}: no summary");
            Assert.False(string.IsNullOrWhiteSpace(r.Description), $"{r.Name}: no description");
            Assert.True(Balanced(r.Expr), $"{r.Name}: unbalanced brackets in {r.Expr}");
        }
        // All keys of a group unavailable, a key disabled, error ratio, budget above 90 %, breaker open for long.
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_group_available_upstreams == 0", StringComparison.Ordinal));
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_upstream_disabled == 1", StringComparison.Ordinal));
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_http_requests_total{status=~\"5..\"}", StringComparison.Ordinal));
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_upstream_budget_limit", StringComparison.Ordinal) && r.Expr.Contains("> 0.9", StringComparison.Ordinal));
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_circuit_breaker_state == 2", StringComparison.Ordinal));
        // SPEC §17: an instance that lost its Redis enforces every limit alone.
        Assert.Contains(rules, r => r.Expr.Contains("llmproxy_cluster_redis_up == 0", StringComparison.Ordinal) && r.For == "2m" && r.Severity == "warning");
    }

    [RequiresToolFact("promtool", "prometheus")]
    public async Task Alerts_PromtoolCheckRules_Passes()
    {
        var (code, output) = await RunAsync(ExternalTool.Find("promtool") ?? "promtool", "check", "rules", AlertsPath);
        Assert.True(code == 0, "promtool check rules failed:\n" + output);
        Assert.Contains($"SUCCESS: {AlertRules().Count} rules found", output);
    }

    [RequiresToolFact("promtool", "prometheus")]
    public async Task Alerts_PromtoolTestRules_EachAlertFiresOnItsScenario()
    {
        var tests = Path.Combine(ConfigTestYaml.RepoRoot(), "deploy", "prometheus", "alerts.test.yaml");
        var (code, output) = await RunAsync(ExternalTool.Find("promtool") ?? "promtool", "test", "rules", tests);
        Assert.True(code == 0, "promtool test rules failed:\n" + output);
        Assert.Contains("SUCCESS", output);
    }

    /// <summary>Every panel query is valid PromQL: promtool parses them as recording rules, with Grafana's variables replaced
    /// by what Grafana sends (<c>$__rate_interval</c> a duration, a multi-value variable a regex).</summary>
    [RequiresToolFact("promtool", "prometheus")]
    public async Task Dashboard_EveryPanelQuery_ParsesAsPromQl()
    {
        var queries = DashboardExpressions().Where(e => e.Where.StartsWith("panel", StringComparison.Ordinal)).ToList();
        var rules = new System.Text.StringBuilder("groups:\n  - name: dashboard\n    rules:\n");
        for (var i = 0; i < queries.Count; i++)
        {
            var expr = queries[i].Expr.Replace("$__rate_interval", "5m", StringComparison.Ordinal).Replace("$__range", "1h", StringComparison.Ordinal);
            expr = Variable().Replace(expr, ".*");
            rules.Append(CultureInfo.InvariantCulture, $"      - record: dashboard_query_{i}\n        expr: {JsonSerializer.Serialize(expr)}\n");
        }
        var file = Path.Combine(Path.GetTempPath(), $"llmproxy-dashboard-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(file, rules.ToString());
        try
        {
            var (code, output) = await RunAsync(ExternalTool.Find("promtool") ?? "promtool", "check", "rules", file);
            Assert.True(code == 0, "a dashboard query is not valid PromQL:\n" + output);
            Assert.Contains($"SUCCESS: {queries.Count} rules found", output);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>The demo's config (as <see cref="DemoConfigTests"/> runs it), with its flaky account failing every time so
    /// its breaker opens: after the run every family the dashboard charts has series — a disabled key, a budget, retries,
    /// breaker transitions, tokens. Then the same config with <c>cluster.redis</c> on a loopback port where nothing
    /// listens, and a few requests: the cluster's families (Redis down, fallbacks counted).</summary>
    private static async Task<(string Metrics, string Cluster)> ScrapeAfterDemoTrafficAsync()
    {
        var mocks = new List<MockServer>
        {
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-a" }),
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-b" }),
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-c-flaky", Status = 500 }),
        };
        mocks.AddRange(await DemoCommand.StartExtraAccountsAsync());
        try
        {
            await using var proxy = await TestProxy.StartAsync(DemoCommand.DemoConfig(3000, 9000, mocks));
            var metrics = "";
            for (var i = 0; i < 40 && Sum(metrics, "llmproxy_circuit_breaker_state_changes_total") == 0; i++)
            {
                using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
                metrics = await proxy.Admin.GetStringAsync("/metrics");
            }
            Assert.True(Sum(metrics, "llmproxy_circuit_breaker_state_changes_total") > 0, "the failing account's breaker never opened");
            await ReliabilityKit.AssertIdleAsync(proxy.Admin);
            metrics = await proxy.Admin.GetStringAsync("/metrics");

            await using var alone = await TestProxy.StartAsync(DemoCommand.DemoConfig(3000, 9000, mocks)
                + $"\ncluster:\n  redis:\n    url: \"redis://127.0.0.1:{ClosedPort()}\"\n");
            for (var i = 0; i < 3; i++)
            {
                using var r = await alone.Client.SendAsync(ReliabilityKit.Chat());
                Assert.Equal(HttpStatusCode.OK, r.StatusCode); // decided on local state: Redis never answers
            }
            return (metrics, await alone.Admin.GetStringAsync("/metrics"));
        }
        finally
        {
            foreach (var m in mocks)
            {
                await m.DisposeAsync();
            }
        }
    }

    // A loopback port nothing listens on (taken, then released).
    private static int ClosedPort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    private static IEnumerable<JsonElement> AllPanels(JsonElement root)
    {
        foreach (var p in root.GetProperty("panels").EnumerateArray())
        {
            yield return p;
            if (p.TryGetProperty("panels", out var nested))
            {
                foreach (var n in nested.EnumerateArray())
                {
                    yield return n;
                }
            }
        }
    }

    /// <summary>Every PromQL expression of the dashboard: panel queries and variable queries.</summary>
    private static List<(string Where, string Expr)> DashboardExpressions()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(DashboardPath));
        var list = new List<(string, string)>();
        foreach (var p in AllPanels(doc.RootElement))
        {
            if (p.TryGetProperty("targets", out var targets))
            {
                foreach (var t in targets.EnumerateArray())
                {
                    list.Add(($"panel '{p.GetProperty("title").GetString()}' {t.GetProperty("refId").GetString()}", t.GetProperty("expr").GetString()!));
                }
            }
        }
        foreach (var v in doc.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray())
        {
            list.Add(($"variable ${v.GetProperty("name").GetString()}", v.GetProperty("definition").GetString()!));
        }
        return list;
    }

    private sealed record AlertRule(string Name, string Expr, string? For, string? Severity, string? Summary, string? Description);

    private static List<AlertRule> AlertRules()
    {
        var doc = Assert.Single(YamlDocs.LoadAll(File.ReadAllText(AlertsPath)));
        var rules = new List<AlertRule>();
        foreach (var group in YamlDocs.List(doc.GetValueOrDefault("groups"), "groups"))
        {
            Assert.False(string.IsNullOrEmpty(YamlDocs.Str(group, "name")), "a rule group without a name");
            foreach (var rule in YamlDocs.List(YamlDocs.At(group, "rules"), "rules"))
            {
                var name = YamlDocs.Str(rule, "alert") ?? throw new Xunit.Sdk.XunitException("a rule without 'alert': " + rule);
                rules.Add(new AlertRule(name, YamlDocs.Str(rule, "expr") ?? throw new Xunit.Sdk.XunitException(name + ": no expr"),
                    YamlDocs.Str(rule, "for"), YamlDocs.Str(rule, "labels", "severity"),
                    YamlDocs.Str(rule, "annotations", "summary"), YamlDocs.Str(rule, "annotations", "description")));
            }
        }
        return rules;
    }

    private static bool Balanced(string expr)
    {
        var stack = new Stack<char>();
        var code = Regex.Replace(expr, "\"(?:[^\"\\\\]|\\\\.)*\"", "\"\"");
        foreach (var c in code)
        {
            if (c is '(' or '[' or '{')
            {
                stack.Push(c);
            }
            else if (c is ')' or ']' or '}')
            {
                if (stack.Count == 0 || stack.Pop() != (c == ')' ? '(' : c == ']' ? '[' : '{'))
                {
                    return false;
                }
            }
        }
        return stack.Count == 0;
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    [GeneratedRegex(@"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)")]
    private static partial Regex Variable();

    [GeneratedRegex(@"^([0-9]+(ms|s|m|h|d|w|y))+$")]
    private static partial Regex Duration();
}
