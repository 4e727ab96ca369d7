using System.Text.Json;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Hosting;

/// <summary>
/// The GC settings the shipped binary starts with (its runtimeconfig.json, next to llmproxy.dll). The runtime reads
/// <c>System.GC.Gen0MaxBudget</c> from there (GC.GetConfigurationVariables() reports it as GCGen0MaxBudget); without
/// the cap a 500-stream SSE burst left ~150 MB of gen0 committed (bench/RESULTS.md, "Issue 13: memory after a burst").
/// </summary>
public class GcSettingsTests
{
    private static JsonElement ConfigProperties()
    {
        var path = Path.ChangeExtension(ProxyProcess.DllPath, ".runtimeconfig.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties").Clone();
    }

    [Fact]
    public void ShippedRuntimeConfig_ServerGcWithFixedHeapsAndCappedGen0Budget()
    {
        var props = ConfigProperties();

        Assert.True(props.GetProperty("System.GC.Server").GetBoolean());
        Assert.False(props.GetProperty("System.GC.Concurrent").GetBoolean());
        Assert.Equal(0, props.GetProperty("System.GC.DynamicAdaptationMode").GetInt32());
        var budget = props.GetProperty("System.GC.Gen0MaxBudget").GetInt64();
        Assert.InRange(budget, 1L << 20, 16L << 20);
    }
}
