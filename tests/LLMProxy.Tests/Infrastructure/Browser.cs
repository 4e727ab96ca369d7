using Microsoft.Playwright;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// A test that needs the system chromium (Debian's <c>chromium</c> package; Playwright never downloads a browser here).
/// Without <c>/usr/bin/chromium</c> it is skipped with the reason — unless <c>LLMPROXY_REQUIRE_BROWSER=1</c> (CI), where
/// a missing browser must fail the run instead of hiding the tests.
/// </summary>
public sealed class BrowserFactAttribute : FactAttribute
{
    public BrowserFactAttribute()
    {
        if (!File.Exists(Browser.ChromiumPath) && !Browser.Required)
        {
            Skip = $"{Browser.ChromiumPath} is not installed (apt-get install chromium); set LLMPROXY_REQUIRE_BROWSER=1 to fail instead of skipping";
        }
    }
}

/// <summary>Headless system chromium driven by Playwright's bundled node driver (works offline).</summary>
public sealed class Browser : IAsyncDisposable
{
    public const string ChromiumPath = "/usr/bin/chromium";

    public static bool Required => Environment.GetEnvironmentVariable("LLMPROXY_REQUIRE_BROWSER") == "1";

    private static readonly string[] Args =
    [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
    ];

    private readonly IPlaywright _playwright;

    private Browser(IPlaywright playwright, IBrowser chromium)
    {
        _playwright = playwright;
        Chromium = chromium;
    }

    public IBrowser Chromium { get; }

    public static async Task<Browser> LaunchAsync()
    {
        Assert.True(File.Exists(ChromiumPath), $"LLMPROXY_REQUIRE_BROWSER=1 but {ChromiumPath} is missing: apt-get install -y chromium");
        var playwright = await Playwright.CreateAsync();
        try
        {
            var chromium = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ChromiumPath,
                Headless = true,
                Args = Args,
                Timeout = 60_000,
            });
            return new Browser(playwright, chromium);
        }
        catch
        {
            playwright.Dispose();
            throw;
        }
    }

    /// <summary>A fresh page (own context: no shared storage between tests) with a bounded wait for every action.</summary>
    public async Task<IPage> NewPageAsync(int width = 1280, int height = 900)
    {
        var context = await Chromium.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = width, Height = height } });
        var page = await context.NewPageAsync();
        page.SetDefaultTimeout(20_000);
        return page;
    }

    /// <summary>The repository's root (where LLMProxy.slnx is), or null when the tests run from elsewhere.</summary>
    public static string? RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "LLMProxy.slnx")))
            {
                return dir.FullName;
            }
        }
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        await Chromium.CloseAsync();
        _playwright.Dispose();
    }
}
