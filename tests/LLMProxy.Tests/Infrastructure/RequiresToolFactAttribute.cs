namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// A fact that needs an external program (e.g. <c>promtool</c> from Debian's <c>prometheus</c> package): skipped with the
/// reason when the program is not on PATH, unless <c>LLMPROXY_REQUIRE_TOOLS=1</c> (set by <c>.ci/run</c>, which installs
/// the tools) — then it runs and fails, so CI cannot pass by silently skipping.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RequiresToolFactAttribute : FactAttribute
{
    public RequiresToolFactAttribute(string tool, string package)
    {
        if (ExternalTool.Find(tool) is null && !ExternalTool.Required)
        {
            Skip = $"{tool} is not installed (apt-get install {package}); set LLMPROXY_REQUIRE_TOOLS=1 to fail instead of skipping";
        }
    }
}

public static class ExternalTool
{
    /// <summary>Whether missing tools fail the tests (<c>LLMPROXY_REQUIRE_TOOLS=1</c>).</summary>
    public static bool Required => Environment.GetEnvironmentVariable("LLMPROXY_REQUIRE_TOOLS") == "1";

    /// <summary>The full path of an executable on PATH, or null.</summary>
    public static string? Find(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var path = Path.Combine(dir, tool);
            if (File.Exists(path))
            {
                return path;
            }
        }
        return null;
    }
}
